"""WebSocket connections to agents: sipbridge is the client.

:class:`AgentConnection` wraps one ``websockets`` client connection around the call's
sans-I/O agent session (native or Twilio protocol): frames from the agent are fed to the
session, whose events go to the call, and whatever the session wants to say back (mark
echoes, transfer results) is sent at once. Caller audio is written straight to the
transport, without a queue of ours: :meth:`AgentConnection.send_frame` builds the masked
frame itself (RFC 6455 §5.2, §5.3) with a masking key from a pool filled by one
``os.urandom`` call per 1,024 frames (still the strong source §5.3 asks for, without a
getrandom system call per frame) and the C ``apply_mask`` of ``websockets``.

Back-pressure: an agent that stops reading makes the kernel's socket buffer and then the
transport's buffer grow. Above :data:`WRITE_BUFFER_CAP` bytes waiting, caller audio for
that agent is dropped (counted in :attr:`AgentConnection.dropped_frames`); when the buffer
has stayed above the cap for :data:`STALLED_SECONDS`, the connection is aborted and the
call handles it like any lost agent connection (one reconnection, else ``agent_lost``).

Fairness and rate: at most :data:`FRAMES_PER_TURN` frames from one agent are handled per
turn of the event loop (reading pauses while a backlog waits), and every message takes a
token of the session's :class:`~sipbridge.agent.limits.MessageRate`; an agent over it gets
its connection failed (1008) and the call a
:class:`~sipbridge.agent.events.RateExceeded` event.

:class:`EndpointHealth` is shared by all calls of a server: it orders an agent's URLs
round-robin over the healthy ones and takes an endpoint that keeps failing out of
rotation for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedOK, InvalidURI, WebSocketException
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event, State
from websockets.uri import parse_uri

from sipbridge.agent.events import AgentEvent, RateExceeded
from sipbridge.agent.limits import MessageRate
from sipbridge.agent.session import Session

try:  # the C speedup websockets ships; its pure-Python twin otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - wheels ship the speedup
    from websockets.utils import apply_mask

log = logging.getLogger("sipbridge.agent")

# An endpoint that failed this many times in a row is down: skipped for FIRST_COOLDOWN
# seconds, then tried again by the next call (a probe); each failed probe doubles the
# wait, up to COOLDOWN_SECONDS. An agent that restarts for a second is back in a second.
FAILURES_BEFORE_COOLDOWN = 3
FIRST_COOLDOWN_SECONDS = 1.0
COOLDOWN_SECONDS = 30.0
MAX_MESSAGE_BYTES = 2**22
# Bytes waiting to be written to one agent above which its caller audio is dropped (about
# 16 s of 8 kHz PCM16 in native frames), and how long that may last before the connection
# is given up.
WRITE_BUFFER_CAP = 256 * 1024
# Keepalive: a ping this often, and the connection is lost when its pong is this late.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
STALLED_SECONDS = 5.0
# Frames from one agent handled per turn of the event loop: a read of 256 KiB can hold
# thousands of small messages, and other calls' audio must not wait for all of them.
# The rest waits (the socket is not read meanwhile) for the next turn.
FRAMES_PER_TURN = 64

_OPCODE_TEXT = 0x81  # FIN + text (RFC 6455 §5.2)
_OPCODE_BINARY = 0x82  # FIN + binary
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class _MaskKeys:
    """Client masking keys (RFC 6455 §5.3: unpredictable, from a strong source) handed
    out 4 bytes at a time from one ``os.urandom`` block."""

    _BLOCK = 4096

    def __init__(self) -> None:
        self._block = os.urandom(self._BLOCK)
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos >= self._BLOCK:
            self._block = os.urandom(self._BLOCK)
            pos = 0
        self._pos = pos + 4
        return self._block[pos : pos + 4]


_MASK_KEYS = _MaskKeys()


def masked_frame(first_byte: int, payload: bytes, key: bytes) -> bytes:
    """One client-to-server frame (RFC 6455 §5.2): FIN and opcode in ``first_byte``, the
    mask bit, the length, the masking key and the masked payload."""
    length = len(payload)
    if length < 126:
        header = bytes((first_byte, 0x80 | length))
    elif length < 65536:
        header = _HEADER_16.pack(first_byte, 0xFE, length)
    else:
        header = _HEADER_64.pack(first_byte, 0xFF, length)
    return header + key + apply_mask(payload, key)


class AgentUnreachable(Exception):
    """No WebSocket to the agent could be opened in time."""


@dataclass
class _EndpointState:
    failures: int = 0
    skip_until: float = 0.0
    cooldown: float = 0.0  # the last wait while down; 0: up


@dataclass
class EndpointHealth:
    """Round-robin over an agent's healthy endpoints, with a cooldown for failing ones."""

    _states: dict[str, _EndpointState] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)
    # Called when an endpoint goes down or comes back (the server's health state).
    on_change: Callable[[], None] | None = None

    def order(self, agent: str, urls: list[str], now: float) -> list[str]:
        """The URLs to try for a new call, best first; cooled-down endpoints are left out."""
        if not urls:
            return []
        start = self._next.get(agent, 0) % len(urls)
        self._next[agent] = start + 1
        rotated = urls[start:] + urls[:start]
        return [url for url in rotated if self._state(url).skip_until <= now]

    def down_until(self, urls: Iterable[str], now: float) -> float:
        """When the first of ``urls`` may be tried again if every one is cooling down at
        ``now`` (no call could reach any of them before); 0.0 when one may be tried now,
        or ``urls`` is empty. Endpoints never tried count as up."""
        until = math.inf
        for url in urls:
            state = self._states.get(url)
            if state is None or state.skip_until <= now:
                return 0.0
            until = min(until, state.skip_until)
        return 0.0 if until == math.inf else until

    def succeeded(self, url: str) -> None:
        state = self._state(url)
        was_down = bool(state.cooldown)
        if was_down:
            log.info("event=agent_endpoint_up url=%s", url)  # once per outage
        state.failures = 0
        state.skip_until = 0.0
        state.cooldown = 0.0
        if was_down and self.on_change is not None:
            self.on_change()

    def failed(self, url: str, now: float) -> None:
        state = self._state(url)
        state.failures += 1
        if state.failures < FAILURES_BEFORE_COOLDOWN:
            return
        if not state.cooldown:
            state.cooldown = FIRST_COOLDOWN_SECONDS
            log.warning("event=agent_endpoint_down url=%s retry_after_s=%g", url, state.cooldown)
        elif state.skip_until <= now:  # a failed probe: wait twice as long
            state.cooldown = min(state.cooldown * 2, COOLDOWN_SECONDS)
        else:
            return  # a call that started before the outage was noticed: no new wait
        state.skip_until = now + state.cooldown
        if self.on_change is not None:
            self.on_change()

    def _state(self, url: str) -> _EndpointState:
        state = self._states.get(url)
        if state is None:
            state = self._states[url] = _EndpointState()
        return state


@dataclass(frozen=True)
class Closed:
    """How the agent's connection ended: ``clean`` when the agent closed it normally."""

    clean: bool
    detail: str


def ssl_context(url: str, ca_bundle: str | None) -> ssl.SSLContext | None:
    """Certificate-verifying TLS for wss:// (with the agent's own CA bundle if given)."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class AgentConnection(asyncio.Protocol):
    """One call's connection to its agent.

    Use :meth:`open` (raises :class:`AgentUnreachable`), then :meth:`send_frame`;
    :meth:`run` waits until the connection ends and says how; :meth:`close` ends it.

    It is the asyncio protocol of its own TCP (or TLS) connection and drives the
    ``websockets`` sans-I/O :class:`~websockets.client.ClientProtocol`: bytes from the
    agent are parsed in :meth:`data_received`, and each message goes to the session at
    once, with no reader task, queue or coroutine resumption per frame. Pings every
    :data:`PING_INTERVAL` seconds; a pong missing after :data:`PING_TIMEOUT` ends the
    connection as lost.
    """

    def __init__(
        self,
        session: Session,
        on_events: Callable[[list[AgentEvent]], None],
        on_first_audio: Callable[[], None] | None = None,
        *,
        on_message: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._on_message = on_message
        self.url: str | None = None
        self._on_events = on_events
        self._on_first_audio = on_first_audio
        self._protocol: ClientProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._opened: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[Closed] | None = None
        self._closed = False
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._fragment_bytes = 0
        self._ping: asyncio.TimerHandle | None = None
        self._pong_due: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped_frames = 0  # caller audio not sent: the agent was not reading
        self._over_cap_since: float | None = None
        limits = session.limits
        self._rate = MessageRate(limits.message_rate, limits.message_burst, time.monotonic())
        self._over_rate = False
        self._backlog: deque[Event] = deque()  # parsed, not yet handled

    async def open(
        self,
        url: str,
        timeout: float,
        *,
        token: str | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + timeout
        try:
            wsuri = parse_uri(url)
        except InvalidURI as exc:
            raise AgentUnreachable(f"cannot connect to {url}: {exc}") from exc
        # No extensions offered: audio does not compress, deflate costs CPU and latency.
        protocol = ClientProtocol(wsuri, max_size=MAX_MESSAGE_BYTES)
        request = protocol.connect()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        protocol.send_request(request)  # no User-Agent: no software name on the wire
        self._protocol = protocol
        self._opened = loop.create_future()
        self._ended = loop.create_future()
        context = ssl_context(url, ca_bundle)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: self,
                    wsuri.host,
                    wsuri.port,
                    ssl=context,
                    server_hostname=wsuri.host if context is not None else None,
                ),
                max(deadline - loop.time(), 0.001),
            )
            await asyncio.wait_for(asyncio.shield(self._opened), max(deadline - loop.time(), 0.001))
        except TimeoutError as exc:
            self._abort()
            raise AgentUnreachable(f"no WebSocket to {url} within {timeout:g} s") from exc
        except (OSError, WebSocketException, ValueError, ssl.SSLError) as exc:
            self._abort()
            raise AgentUnreachable(f"cannot connect to {url}: {exc}") from exc
        self.url = url
        self._closed = False
        self._ping = loop.call_later(PING_INTERVAL, self._send_ping)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write_pending()

    def data_received(self, data: bytes) -> None:  # hot path: agent audio and messages
        protocol = self._protocol
        if protocol is None:
            return
        protocol.receive_data(data)
        events = protocol.events_received()
        if self._backlog or len(events) > FRAMES_PER_TURN:
            self._backlog.extend(events)
            self._drain()
            return
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):
                self._handshake_done(protocol)
        self._after_events(protocol)

    def _drain(self, everything: bool = False) -> None:
        """Handle up to :data:`FRAMES_PER_TURN` frames of the backlog (all of them with
        ``everything``); while some are left, the socket is not read and the rest waits
        for the next turn of the loop."""
        protocol = self._protocol
        if protocol is None:
            self._backlog.clear()
            return
        backlog = self._backlog
        for _ in range(len(backlog) if everything else min(len(backlog), FRAMES_PER_TURN)):
            event = backlog.popleft()
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):
                self._handshake_done(protocol)
        transport = self._transport
        if backlog and self._loop is not None:
            if transport is not None and transport.is_reading():
                transport.pause_reading()
            self._loop.call_soon(self._drain)
        elif transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()
        self._after_events(protocol)

    def _after_events(self, protocol: ClientProtocol) -> None:
        self._write_pending()
        if protocol.close_expected() and self._transport is not None and not self._backlog:
            self._transport.close()

    def eof_received(self) -> bool | None:
        if self._protocol is not None:
            self._protocol.receive_eof()
            self._write_pending()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._backlog:
            self._drain(everything=True)  # what the agent sent before it went
        self._closed = True
        self._cancel_timers()
        protocol = self._protocol
        if protocol is not None and protocol.state is not State.CLOSED:
            protocol.receive_eof()
        opened = self._opened
        if opened is not None and not opened.done():
            opened.set_exception(
                OSError(f"connection closed during the handshake ({exc or 'by the agent'})")
            )
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(self._how_it_ended(exc))

    def _handshake_done(self, protocol: ClientProtocol) -> None:
        opened = self._opened
        if opened is None or opened.done():
            return
        if protocol.handshake_exc is not None:
            opened.set_exception(protocol.handshake_exc)
        else:
            opened.set_result(None)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CONT:
            if self._fragment_opcode is None:
                return  # the protocol has already failed the connection
            self._fragments.append(bytes(frame.data))
            self._fragment_bytes += len(frame.data)
            if self._fragment_bytes > MAX_MESSAGE_BYTES:
                self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            if not frame.fin:
                return
            opcode, data = self._fragment_opcode, b"".join(self._fragments)
            self._fragments, self._fragment_opcode, self._fragment_bytes = [], None, 0
        elif opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            data = bytes(frame.data)
            if not frame.fin:
                self._fragment_opcode = opcode
                self._fragments = [data]
                self._fragment_bytes = len(data)
                return
        else:
            if opcode is Opcode.PONG and self._pong_due is not None:
                self._pong_due.cancel()
                self._pong_due = None
            return  # ping (answered by the protocol), close (handled by it)
        self._message(opcode, data)

    def _message(self, opcode: Opcode, data: bytes) -> None:
        if not self._rate.allow(time.monotonic()) or self._over_rate:
            self._rate_exceeded()
            return
        session = self.session
        if opcode is Opcode.TEXT:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
            events = session.receive_text(text)
        else:
            events = session.receive_binary(data)
            if self._on_first_audio is not None:
                self._on_first_audio()
                self._on_first_audio = None
        if events:
            self._on_events(events)
        self.flush_session()
        if self._on_message is not None:
            self._on_message()

    def _rate_exceeded(self) -> None:
        """More messages than the session's limits allow: the call ends (once), the
        connection is closed (1008) and nothing more from it is read."""
        if self._over_rate:
            return
        self._over_rate = True
        limits = self.session.limits
        self._on_events([RateExceeded(limits.message_rate, limits.message_burst)])
        self._fail(CloseCode.POLICY_VIOLATION, "message rate exceeded")

    def _fail(self, code: CloseCode, reason: str) -> None:
        protocol = self._protocol
        if protocol is not None:
            protocol.fail(code, reason)
            self._write_pending()

    def _write_pending(self) -> None:
        protocol = self._protocol
        transport = self._transport
        if protocol is None or transport is None:
            return
        for data in protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()

    def _how_it_ended(self, exc: Exception | None) -> Closed:
        protocol = self._protocol
        if protocol is None:
            return Closed(False, "agent connection lost")
        closed = protocol.close_exc
        if isinstance(closed, ConnectionClosedOK):
            return Closed(True, f"agent closed the connection ({closed})")
        detail = str(exc) if exc is not None and protocol.close_rcvd is None else str(closed)
        return Closed(False, f"agent connection lost ({detail})")

    # -- keepalive ---------------------------------------------------------------------

    def _send_ping(self) -> None:
        protocol = self._protocol
        loop = self._loop
        if protocol is None or loop is None or protocol.state is not State.OPEN:
            return
        protocol.send_ping(os.urandom(4))
        self._write_pending()
        self._pong_due = loop.call_later(PING_TIMEOUT, self._ping_timed_out)
        self._ping = loop.call_later(PING_INTERVAL, self._send_ping)

    def _ping_timed_out(self) -> None:
        log.warning("event=agent_ping_timeout url=%s", self.url)
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _cancel_timers(self) -> None:
        for handle in (self._ping, self._pong_due):
            if handle is not None:
                handle.cancel()
        self._ping = self._pong_due = None

    def _abort(self) -> None:
        self._cancel_timers()
        if self._transport is not None:
            self._transport.abort()

    # -- sending -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        protocol = self._protocol
        return protocol is not None and not self._closed and protocol.state is State.OPEN

    def send_frame(self, frame: str | bytes) -> None:
        """Send one frame now (hot path for caller audio: never awaits); see the module
        docstring for the framing and for what happens when the agent does not read."""
        protocol = self._protocol
        transport = self._transport
        if protocol is None or transport is None or self._closed:
            return
        if protocol.state is not State.OPEN:
            return
        if transport.get_write_buffer_size() > WRITE_BUFFER_CAP:
            self._agent_not_reading(transport)
            return
        self._over_cap_since = None
        if isinstance(frame, bytes):
            transport.write(masked_frame(_OPCODE_BINARY, frame, _MASK_KEYS.take()))
        else:
            transport.write(masked_frame(_OPCODE_TEXT, frame.encode(), _MASK_KEYS.take()))

    def _agent_not_reading(self, transport: asyncio.WriteTransport) -> None:
        self.dropped_frames += 1
        now = time.monotonic()
        if self._over_cap_since is None:
            self._over_cap_since = now
            log.warning(
                "event=agent_not_reading url=%s buffered=%d note=dropping caller audio",
                self.url,
                transport.get_write_buffer_size(),
            )
        elif now - self._over_cap_since >= STALLED_SECONDS:
            log.warning("event=agent_stalled url=%s stalled_s=%g", self.url, STALLED_SECONDS)
            self._closed = True
            transport.abort()  # run() ends with the connection lost

    async def send_text(self, text: str) -> None:
        """Send a control message (start, stop)."""
        self.send_frame(text)

    def flush_session(self) -> None:
        """Send whatever the session has to say (mark echoes, transfer results...)."""
        for text in self.session.data_to_send():
            self.send_frame(text)

    async def run(self) -> Closed:
        """Wait until the connection ends; say how."""
        assert self._ended is not None
        return await asyncio.shield(self._ended)

    async def close(self) -> None:
        """Close the WebSocket (RFC 6455 §7.1.2), waiting at most 2 s for the agent."""
        protocol = self._protocol
        transport = self._transport
        if protocol is None or transport is None:
            return
        self._closed = True
        if protocol.state is State.OPEN:
            protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self._write_pending()
        ended = self._ended
        if ended is not None and not ended.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), 2.0)
        if not transport.is_closing():
            transport.abort()
        self._cancel_timers()
