"""The asyncio side of ``sipbridge call``: sockets, timers and the 20 ms media clock around
the sans-I/O :class:`~sipbridge.client.signaling.ClientCall` and
:class:`~sipbridge.client.audio.CallAudio`.

:func:`place_call` runs one call to the end and returns a :class:`CallResult`; every step
goes to ``say`` as one line as it happens (the CLI prints them, ``sipbridge demo``
prefixes them). SIP goes over UDP (one socket, connected to the server), TCP or TLS (one
connection, framed by :class:`~sipbridge.sip.framing.StreamFramer`); RTP and RTCP over a
pair of UDP ports (even, odd: RFC 3550 §11).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipbridge.client.audio import AudioReport, CallAudio, local_rate, probe_signal
from sipbridge.client.report import ExitCode, Explanation, exit_code, explain
from sipbridge.client.signaling import (
    ANSWER_LIMIT,
    Answered,
    AuthRetry,
    CallConfig,
    CallState,
    ClientCall,
    Ended,
    EndReason,
    Provisional,
    RequestReceived,
)
from sipbridge.sdp.negotiate import NoCommonCodec, build_offer, negotiate
from sipbridge.sdp.session import SdpError, parse_sdp
from sipbridge.sip.framing import FramingError, StreamAddress, StreamFramer, Transport

__all__ = ["CallOptions", "CallResult", "CallRunner", "parse_server", "place_call"]

Say = Callable[[str], None]
FRAME = 0.020
MAX_CATCH_UP = 5  # frames sent back to back after a stall of our loop; the rest skipped


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What ``sipbridge call`` was asked to do (checked by the CLI)."""

    number: str
    host: str
    port: int
    transport: Transport = Transport.UDP
    codec: str = "pcmu"
    signal: bytes | None = None  # PCM16 at local_rate(codec); None: the built-in probe
    record: Path | None = None
    duration: float = 5.0
    dtmf: str = ""
    dtmf_at: float = 1.0
    from_user: str = "sipbridge"
    username: str | None = None
    password: str | None = None
    ca_bundle: Path | None = None
    insecure: bool = False
    answer_timeout: float = 30.0
    user_agent: str = "sipbridge-call"


@dataclass
class CallResult:
    code: ExitCode
    call_id: str = ""
    ended: Ended | None = None
    audio: AudioReport | None = None
    explanation: Explanation | None = None
    answered_ms: float | None = None  # INVITE to 200 OK
    steps: list[str] = field(default_factory=list)


def parse_server(text: str, transport: Transport) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[IPv6]:PORT`` or a bare IPv6 address; the port defaults to 5060
    (5061 for TLS). ValueError with the reason."""
    default = 5061 if transport is Transport.TLS else 5060
    text = text.strip()
    if not text:
        raise ValueError("--server is empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPv6] or [IPv6]:PORT")
        port_text = rest[1:]
    elif text.count(":") > 1:
        host, port_text = text, ""  # a bare IPv6 address
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be 1-65535")
        return host, int(port_text)
    return host, default


async def _resolve(host: str, port: int) -> tuple[int, str]:
    """(family, address) of ``host``, IPv4 first."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
    )
    if not infos:
        raise OSError(f"{host} does not resolve")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, address = infos[0]
    return family, str(address[0])


def _rtp_pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    """An even RTP port and the RTCP port above it (RFC 3550 §11), bound on ``host``."""
    for _ in range(64):
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, random.randrange(20000, 60000, 2)))
        except OSError:
            rtp.close()
            continue
        port = rtp.getsockname()[1]
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise OSError(f"no free pair of UDP ports for RTP/RTCP on {host}")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(
        self, receive: Callable[[bytes, Any], None], error: Callable[[Exception], None]
    ) -> None:
        self._receive = receive
        self._error = error

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._error(exc)


class _Stream(asyncio.Protocol):
    def __init__(self, receive: Callable[[bytes], None], lost: Callable[[], None]) -> None:
        self._receive = receive
        self._lost = lost
        self._framer = StreamFramer()
        # uvloop's TLS transport is no asyncio.Transport, but it has write() and close().
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages, pong = self._framer.feed(data)
        except FramingError:
            if self.transport is not None:
                self.transport.close()
            return
        if pong and self.transport is not None:
            self.transport.write(pong)
        for message in messages:
            self._receive(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class CallRunner:
    """One call in progress: feeds the sans-I/O pieces and sends what they produce.
    :meth:`run` places the call and returns its result; :meth:`interrupt` (a Ctrl-C
    handler) hangs it up early, a second one gives up at once."""

    def __init__(self, options: CallOptions, say: Say) -> None:
        self.options = options
        self._say = say
        self.loop = asyncio.get_running_loop()
        self.steps: list[str] = []
        self.done = asyncio.Event()
        self.call: ClientCall | None = None
        self.audio: CallAudio | None = None
        self.ended: Ended | None = None
        self.failure: Explanation | None = None
        self.interrupted = False
        self._send_sip: Callable[[bytes], None] = lambda data: None
        self._timer: asyncio.TimerHandle | None = None
        self._hangup_at: asyncio.TimerHandle | None = None
        self._media_task: asyncio.Task[None] | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._started = 0.0
        self.answered_ms: float | None = None
        self._announced_audio = False
        self._announced_dtmf = False
        self._closers: list[Callable[[], None]] = []

    def say(self, line: str) -> None:
        self.steps.append(line)
        self._say(line)

    def elapsed(self) -> str:
        return f"+{(self.loop.time() - self._started) * 1000:5.0f} ms"

    # ---------------------------------------------------------------- set-up

    async def open(self) -> CallConfig:
        """Resolve, open the SIP transport and the RTP ports; our CallConfig."""
        options = self.options
        family, address = await _resolve(options.host, options.port)
        transport = options.transport
        if transport is Transport.UDP:
            sip, _ = await self.loop.create_datagram_endpoint(
                lambda: _Datagrams(lambda data, _addr: self.receive_sip(data), self._sip_error),
                remote_addr=(address, options.port),
                family=family,
            )
            self._closers.append(sip.close)
            self._send_sip = lambda data: sip.sendto(data)
            local = sip.get_extra_info("sockname")
            server: tuple[str, int] = (address, options.port)
        else:
            context = None
            if transport is Transport.TLS:
                context = ssl.create_default_context(
                    cafile=str(options.ca_bundle) if options.ca_bundle else None
                )
                if options.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
            stream, _protocol = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Stream(self.receive_sip, self._connection_lost),
                    address,
                    options.port,
                    ssl=context,
                    server_hostname=options.host if context is not None else None,
                ),
                timeout=10,
            )
            self._closers.append(stream.close)
            self._send_sip = stream.write
            local = stream.get_extra_info("sockname")
            server = StreamAddress(address, options.port, transport, target=(address, options.port))
        local_host = str(local[0])
        rtp_sock, rtcp_sock = _rtp_pair(family, local_host)
        rtp, _ = await self.loop.create_datagram_endpoint(
            lambda: _Datagrams(self.receive_rtp, lambda exc: None), sock=rtp_sock
        )
        rtcp, _ = await self.loop.create_datagram_endpoint(
            lambda: _Datagrams(self.receive_rtcp, lambda exc: None), sock=rtcp_sock
        )
        self._rtp, self._rtcp = rtp, rtcp
        self._closers += [rtp.close, rtcp.close]
        offer = build_offer(
            [options.codec], local_host, rtp_sock.getsockname()[1], random.getrandbits(31)
        ).serialize()
        return CallConfig(
            number=options.number,
            server_host=options.host,
            server_port=options.port,
            server=server,
            transport=transport,
            local_host=local_host,
            local_port=int(local[1]),
            sdp=offer,
            from_user=options.from_user,
            username=options.username,
            password=options.password,
            user_agent=options.user_agent,
        )

    async def run(self) -> CallResult:
        """Run the call to its end. Never raises for what the network or the server
        does: a local failure is :attr:`ExitCode.ERROR` with the reason."""
        options = self.options
        try:
            try:
                config = await self.open()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                message = _local_error(options, exc)
                self.say(f"!! {message}")
                explanation = Explanation(ExitCode.ERROR, message)
                return CallResult(ExitCode.ERROR, explanation=explanation, steps=self.steps)
            if self.interrupted:  # Ctrl-C while connecting: no INVITE
                return CallResult(ExitCode.INTERRUPTED, steps=self.steps)
            self.start(config)
            await self.done.wait()
        finally:
            self.close()
        return _result(self)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._hangup_at is not None:
            self._hangup_at.cancel()
        if self._media_task is not None:
            self._media_task.cancel()
        for close in self._closers:
            close()

    # ---------------------------------------------------------------- SIP

    def start(self, config: CallConfig) -> None:
        self.call = ClientCall(config)
        self._started = self.loop.time()
        invite_to = f"sip:{config.number}@{self.options.host}:{config.server_port}"
        self.say(
            f"{self.elapsed()}  -> INVITE {invite_to} over {config.transport.value} "
            f"from {config.local_host}:{config.local_port}, offering "
            f"{self.options.codec.upper()} + telephone-event"
        )
        self.call.start(self.loop.time())
        self.flush()
        # The longest we let it ring: then CANCEL (before Timer B ends the transaction).
        self.loop.call_later(min(self.options.answer_timeout, ANSWER_LIMIT - 1), self._no_answer)

    def _no_answer(self) -> None:
        call = self.call
        if call is not None and call.state in (CallState.CALLING, CallState.RINGING):
            self.say(
                f"{self.elapsed()}  no answer after {self.options.answer_timeout:.0f} s: CANCEL"
            )
            call.hangup(self.loop.time())
            self.flush()

    def receive_sip(self, data: bytes) -> None:
        if self.call is not None:
            self.call.receive(data, self.loop.time())
            self.flush()

    def _sip_error(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected UDP socket: nothing listens there.
        call = self.call
        early = call is not None and call.state in (CallState.CALLING, CallState.CANCELLING)
        if isinstance(exc, ConnectionRefusedError) and early and self.failure is None:
            self.failure = Explanation(
                ExitCode.NO_RESPONSE,
                f"nothing listens on {self.options.host}:{self.options.port}/udp "
                "(ICMP port unreachable)",
                "start `sipbridge serve` there, or give the right --server HOST:PORT",
            )
            self.say(f"{self.elapsed()}  !! {self.failure.message}")
            self.done.set()

    def _connection_lost(self) -> None:
        call = self.call
        if call is not None and not call.done and self.failure is None:
            self.failure = Explanation(
                ExitCode.NO_RESPONSE if call.state is CallState.CALLING else ExitCode.FAILED,
                f"the server closed the {self.options.transport.value} connection",
                "see the server's log",
            )
            self.say(f"{self.elapsed()}  !! {self.failure.message}")
            self.done.set()

    def flush(self) -> None:
        call = self.call
        if call is None:
            return
        for data, _ in call.datagrams_to_send():
            self._send_sip(data)
        for event in call.events():
            self._event(event)
        for data, _ in call.datagrams_to_send():  # what acting on the events queued
            self._send_sip(data)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = call.get_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
        if call.done:
            self.done.set()

    def _on_timer(self) -> None:
        self._timer = None
        if self.call is not None:
            self.call.handle_timer(self.loop.time())
            self.flush()

    def hangup(self) -> None:
        if self.call is not None:
            self.call.hangup(self.loop.time())
            self.flush()

    def interrupt(self) -> None:
        """Ctrl-C: hang up (CANCEL or BYE); a second one gives up at once."""
        if self.interrupted or self.call is None:
            self.interrupted = True
            self.done.set()
            return
        self.interrupted = True
        self.say(f"{self.elapsed()}  interrupted: hanging up")
        self.hangup()

    def _event(self, event: object) -> None:
        t = self.elapsed()
        if isinstance(event, Provisional):
            self.say(f"{t}  <- {event.status} {event.reason}")
        elif isinstance(event, AuthRetry):
            self.say(
                f'{t}  <- {event.status} challenge (realm "{event.realm}", '
                f"{event.algorithm}): INVITE again with credentials"
            )
        elif isinstance(event, Answered):
            self.answered_ms = (event.at - self._started) * 1000
            self.say(f"{t}  <- {event.status} {event.reason}: answered; -> ACK")
            self._answered(event)
        elif isinstance(event, RequestReceived):
            self.say(f"{t}  <- {event.method} from the server; -> {event.status}")
        elif isinstance(event, Ended):
            self.ended = event
            self._stop_media()
            if event.why is EndReason.REMOTE_HANGUP:
                self.say(f"{t}  call ended by the server (the agent hung up, or it timed out)")
            elif event.why is EndReason.HANGUP:
                answer = "no answer" if event.bye_status is None else str(event.bye_status)
                self.say(f"{t}  <- {answer} to our BYE: call ended")
            elif event.why in (EndReason.REJECTED, EndReason.AUTH_FAILED):
                self.say(f"{t}  <- {event.status} {event.reason}")
            elif event.why is EndReason.CANCELLED:
                self.say(f"{t}  <- {event.status} {event.reason}: cancelled")
            elif event.why is EndReason.TIMEOUT:
                cancelled = self.call is not None and self.call.cancel_sent
                # RFC 3261 §9.1: after our CANCEL the INVITE gets 64*T1 more for its 487.
                when = "after our CANCEL" if cancelled else f"within {ANSWER_LIMIT:.0f} s"
                self.say(f"{t}  no final response to the INVITE {when}")

    # ---------------------------------------------------------------- media

    def _answered(self, event: Answered) -> None:
        options = self.options
        try:
            negotiated = negotiate(parse_sdp(event.sdp), [options.codec])
        except (SdpError, NoCommonCodec) as exc:
            self.failure = Explanation(
                ExitCode.FAILED, f"the server's SDP answer is not usable: {exc}", ""
            )
            self.say(f"{self.elapsed()}  !! {self.failure.message}; -> BYE")
            self.hangup()
            return
        rate = local_rate(negotiated.codec)
        signal = options.signal
        if signal is None:
            signal = probe_signal(rate, options.duration)
        self.audio = CallAudio(
            negotiated, signal=signal, rate=rate, dtmf=options.dtmf, dtmf_at=options.dtmf_at
        )
        self.say(
            f"{self.elapsed()}  media: {negotiated.codec.upper()}/{negotiated.clock_rate} "
            f"to {negotiated.remote_address}:{negotiated.remote_port}"
            + (
                f", telephone-event {negotiated.telephone_event_pt}"
                if negotiated.telephone_event_pt is not None
                else ", no telephone-event"
            )
        )
        now = self.loop.time()
        self.audio.start(now)
        self._media_task = self.loop.create_task(self._media(now))
        self._hangup_at = self.loop.call_at(now + options.duration, self._duration_over)

    def _duration_over(self) -> None:
        call = self.call
        if call is not None and call.state is CallState.ANSWERED:
            self.say(f"{self.elapsed()}  {self.options.duration:g} s over: -> BYE")
            self.hangup()

    async def _media(self, start: float) -> None:
        audio = self.audio
        assert audio is not None and self._rtp is not None and self._rtcp is not None
        due = start
        while True:
            now = self.loop.time()
            if now < due:
                await asyncio.sleep(due - now)
                continue
            behind = int((now - due) / FRAME)
            if behind > MAX_CATCH_UP:
                audio.session.skip(behind - MAX_CATCH_UP)
                due += (behind - MAX_CATCH_UP) * FRAME
            for packet in audio.tick(now):
                self._rtp.sendto(packet, audio.remote)
            due += FRAME
            if now >= audio.rtcp_due:
                report = audio.rtcp_report(now, time.time())
                if report is not None:
                    self._rtcp.sendto(report, audio.rtcp_remote)
            self._announce()

    def _announce(self) -> None:
        audio = self.audio
        if audio is None:
            return
        if not self._announced_audio and audio.first_audio_at is not None:
            self._announced_audio = True
            started = audio.started or audio.first_audio_at
            self.say(
                f"{self.elapsed()}  <- agent audio, {_fmt_ms(audio.first_audio_at - started)} "
                "after the answer"
            )
        if not self._announced_dtmf and (audio.dtmf_sent or audio.dtmf_refused):
            if audio.dtmf_refused:
                self._announced_dtmf = True
                self.say(f"{self.elapsed()}  !! DTMF not sent: the answer has no telephone-event")
            elif not audio.session.sending_dtmf:
                self._announced_dtmf = True
                self.say(
                    f"{self.elapsed()}  -> DTMF {audio.dtmf_sent} sent as RFC 4733 events "
                    f"(payload type {audio.session.telephone_event_pt})"
                )

    def receive_rtp(self, data: bytes, addr: Any) -> None:
        if self.audio is not None:
            self.audio.receive(data, addr, self.loop.time())
            if not self._announced_audio:
                self._announce()

    def receive_rtcp(self, data: bytes, addr: Any) -> None:
        if self.audio is not None:
            self.audio.receive_rtcp(data, addr, self.loop.time(), time.time())

    def _stop_media(self) -> None:
        if self._media_task is not None:
            self._media_task.cancel()
            self._media_task = None
        if self._hangup_at is not None:
            self._hangup_at.cancel()
            self._hangup_at = None
        self._announce()


async def place_call(options: CallOptions, say: Say) -> CallResult:
    """Place one call and run it to its end (see :class:`CallRunner`)."""
    return await CallRunner(options, say).run()


def _local_error(options: CallOptions, exc: BaseException) -> str:
    where = f"{options.host}:{options.port}"
    name = options.transport.value
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of {where} was not accepted ({exc.verify_message}): "
            "pass --ca-bundle with its CA, or --insecure to skip the check"
        )
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with {where} failed: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {where} over {name} (connection refused)"
    if isinstance(exc, TimeoutError):
        return f"no {name} connection to {where} within 10 s"
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return f"cannot reach {where} over {name}: {detail}"


def _result(run: CallRunner) -> CallResult:
    call = run.call
    call_id = call.call_id if call is not None else ""
    audio = run.audio.report() if run.audio is not None else None
    if run.audio is not None and run.options.record is not None:
        run.options.record.write_bytes(run.audio.recording())
    ended = run.ended
    explanation = run.failure
    if explanation is None and audio is None and ended is not None:
        realm = call.challenged.realm if call is not None and call.challenged else None
        explanation = explain(
            ended,
            number=run.options.number,
            server=f"{run.options.host}:{run.options.port}",
            transport=run.options.transport.value,
            credentials=run.options.username is not None,
            realm=realm,
        )
    if explanation is not None:
        code = explanation.code
        if run.interrupted and audio is None:
            code = ExitCode.INTERRUPTED
    else:
        code = exit_code(ended, audio)
        if code is ExitCode.NO_AUDIO:
            explanation = Explanation(
                code,
                "the call was answered but no agent audio came back",
                "is the agent sending audio? `sipbridge calls show ID` shows the call's "
                "events; a server behind NAT needs `serve --public-ip`",
            )
    return CallResult(
        code=code,
        call_id=call_id,
        ended=ended,
        audio=audio,
        explanation=explanation,
        answered_ms=run.answered_ms,
        steps=run.steps,
    )
