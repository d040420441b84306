"""RTP and RTCP sockets for calls: port allocation, the receive path and the 20 ms clock.

The hot path lives here: :meth:`RtpEndpoint.datagram_received` (one call per caller
packet) and :meth:`RtpEndpoint._tick` (one call per 20 ms frame). Both stay free of
logging and of parsing beyond the fixed RTP header; the protocol work is done by the
sans-I/O pieces they drive (jitter buffer, decoder with concealment, resampler, RFC 4733
DTMF, RFC 3550 statistics).

Caller → agent, per packet: telephone-event payloads go to the DTMF receiver; audio
updates the receiver statistics and enters the jitter buffer, which is drained at once
(a packet next in sequence is released immediately). Each released packet is decoded,
each gap concealed (PLC, or Opus FEC when the next packet is there), resampled to the
agent's rate and handed to ``on_audio``.

Agent → caller, per 20 ms tick: drain the jitter buffer (a gap past its deadline becomes
concealment), end DTMF digits whose end packets were lost, then send either the DTMF
sender's event packets or one audio frame (agent audio or silence), resampled and
encoded. Every 250 ticks (5 s) an RTCP sender report goes out (RFC 3550 §6.2).

SRTP (RFC 3711, keys from SDES, RFC 4568): when the endpoint has an ``srtp`` session, a
received datagram is authenticated and decrypted first, before the RTP header is parsed
and before strict-RTP source learning sees it. A packet that fails (wrong key, forged,
replayed) is dropped and counted like any other dropped packet, so packets without the
caller's key can neither be played to the agent nor move our media to another address.
Our packets are protected right before ``sendto``; RTCP on port + 1 is SRTCP both ways.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sipbridge.codecs import get_codec
from sipbridge.codecs.base import ConcealingDecoder, Encoder
from sipbridge.media.dtmf import DigitPressed, DtmfError, DtmfReceiver, DtmfSender
from sipbridge.media.jitter import Frame, JitterBuffer
from sipbridge.media.plc import with_concealment
from sipbridge.media.quality import ReceiverStats, estimate_mos, mouth_to_ear_delay_ms
from sipbridge.media.resample import Resampler
from sipbridge.rtp.packet import RtpError, parse_rtp_header
from sipbridge.rtp.rtcp import (
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from sipbridge.rtp.srtp import SrtpSession
from sipbridge.rtp.stream import RtpSender
from sipbridge.sdp.negotiate import Negotiated

Address = tuple[str, int]
FRAME_SECONDS = 0.020
# Strict RTP: a new source address takes over only after this many consecutive audio
# packets from it (a NAT rebinding keeps sending; an injected burst is dropped).
SOURCE_SWITCH_PACKETS = 5
RTCP_EVERY_TICKS = 250  # RFC 3550 §6.2: about every 5 s for a two-party session


class PortsExhausted(Exception):
    """No free even RTP port (with its RTCP port) is left in the configured range."""


class RtpPortAllocator:
    """Hands out even RTP ports from ``[low, high]`` (RFC 3550 §11: RTP even, RTCP odd).

    A port is reserved until :meth:`release`. Ports the OS refuses to bind
    (used by another program) are skipped when the socket is opened.
    """

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        self._free = list(range(first, high, 2))
        random.shuffle(self._free)
        self._used: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        if not self._free:
            raise PortsExhausted("no free RTP port in the configured range")
        port = self._free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.insert(0, port)


@dataclass
class MediaStats:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_in: int = 0
    concealed_ms: int = 0
    rtt_ms: float | None = None
    source_changes: int = 0


@dataclass(frozen=True)
class MediaQuality:
    """What a call's record keeps of its media (RFC 3550 receiver figures + E-model MOS)."""

    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    packets_lost: int
    loss_percent: float
    jitter_ms: float
    rtt_ms: float | None
    concealed_ms: int
    mos: float


class _RtcpSocket(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEndpoint) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.owner.rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's RTP socket (and its RTCP companion); see the module docstring.

    ``on_audio`` gets caller PCM16 at ``agent_rate`` (any length, in order, gaps
    concealed); ``on_dtmf`` gets each caller key press once; ``next_frame`` returns the
    agent's next 20 ms of PCM16 at ``agent_rate``. Symmetric RTP (RFC 4961): once caller
    packets arrive, we send to their source; until then, to the SDP address. ``srtp``
    (replaceable at any time, e.g. by a re-INVITE) makes it SRTP/SRTCP both ways.
    """

    def __init__(
        self,
        *,
        negotiated: Negotiated,
        agent_rate: int,
        on_audio: Callable[[bytes], None],
        next_frame: Callable[[], bytes],
        on_dtmf: Callable[[DigitPressed], None] | None = None,
        srtp: SrtpSession | None = None,
    ) -> None:
        self.srtp = srtp
        self.remote: Address = (negotiated.remote_address, negotiated.remote_port)
        self._remote_learned = False
        self._rtcp_remote: Address = (negotiated.remote_address, negotiated.remote_port + 1)
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._next_frame = next_frame
        self.agent_rate = agent_rate
        self.stats = MediaStats()
        self.last_packet_at: float | None = None
        self.sending = True
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: _RtcpSocket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remote_ssrc: int | None = None
        self._candidate: Address | None = None
        self._candidate_count = 0
        self.set_codec(negotiated)

    def set_codec(self, negotiated: Negotiated) -> None:
        """(Re)build the codec chain for ``negotiated`` (at set-up and on a codec change)."""
        info = get_codec(negotiated.codec)
        self.codec = info.name
        self.payload_type = negotiated.payload_type
        self.telephone_event_pt = negotiated.telephone_event_pt
        rate = info.audio_rate_for(self.agent_rate)
        self._codec_rate = rate
        self._clock_rate = info.clock_rate
        self._decoder: ConcealingDecoder = with_concealment(info.decoder(rate), rate)
        self._encoder: Encoder = info.encoder(rate)
        self._to_agent = Resampler(rate, self.agent_rate)
        self._from_agent = Resampler(self.agent_rate, rate)
        # Packets in order are released at once; a missing one is waited for at least one
        # frame, so a short stall of our own loop is not mistaken for loss.
        self._jitter = JitterBuffer(info.clock_rate, min_delay_ms=20.0)
        self._receiver = ReceiverStats(info.clock_rate)
        self._dtmf_rx = DtmfReceiver(info.clock_rate)
        self._dtmf_tx = DtmfSender(info.clock_rate)
        previous = getattr(self, "_sender", None)
        self._sender = RtpSender(
            ssrc=previous.ssrc if previous is not None else random.getrandbits(32),
            payload_type=negotiated.payload_type,
            samples_per_frame=info.timestamp_increment(20),
            initial_sequence=previous.sequence if previous is not None else random.getrandbits(16),
            initial_timestamp=random.getrandbits(32),
        )

    # -- socket callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:  # hot path
        srtp = self.srtp
        if srtp is not None:
            # RFC 3711 §3.3: authenticate first (see the module docstring for why this
            # comes before strict RTP).
            plain = srtp.unprotect(data)
            if plain is None:
                self.stats.dropped_in += 1
                return
            data = plain
        try:
            pt, seq, ts, ssrc, marker, start, end = parse_rtp_header(data)
        except RtpError:
            self.stats.dropped_in += 1
            return
        loop = self._loop
        now = loop.time() if loop is not None else 0.0
        if pt == self.payload_type:
            if addr != self.remote or not self._remote_learned:
                if not self._accept_source(addr):
                    self.stats.dropped_in += 1
                    return
            elif self._candidate is not None:
                self._candidate = None  # the known source spoke: no takeover in progress
            self._remote_ssrc = ssrc
            self.stats.packets_in += 1
            self.stats.bytes_in += end - start
            self.last_packet_at = now
            self._receiver.update(seq, ts, now, end - start)
            self._jitter.push(seq, ts, data[start:end], now, ssrc=ssrc)
            self._drain(now)
        elif pt == self.telephone_event_pt and self._on_dtmf is not None:
            if self._remote_learned and addr != self.remote:
                self.stats.dropped_in += 1  # strict RTP: events only from the caller's source
                return
            self.last_packet_at = now
            try:
                digits = self._dtmf_rx.receive(data[start:end], ts, marker, now)
            except DtmfError:
                self.stats.dropped_in += 1  # a malformed RFC 4733 payload
                return
            for digit in digits:
                self._on_dtmf(digit)
        else:
            # Comfort noise, other payload types, RTCP on a muxed port: not for us.
            self.stats.dropped_in += 1

    def _accept_source(self, addr: Address) -> bool:
        """Symmetric RTP (RFC 4961) with strict RTP: the first source is learned; a
        different one takes over only after SOURCE_SWITCH_PACKETS consecutive packets
        (NAT rebinding), so injected or bled packets from elsewhere are dropped."""
        if not self._remote_learned:
            self.remote = (addr[0], addr[1])
            self._remote_learned = True
            return True
        if self._candidate == addr:
            self._candidate_count += 1
        else:
            self._candidate = (addr[0], addr[1])
            self._candidate_count = 1
        if self._candidate_count < SOURCE_SWITCH_PACKETS:
            return False
        self.remote = self._candidate
        self._rtcp_remote = (addr[0], addr[1] + 1)
        self._candidate = None
        self.stats.source_changes += 1
        return True

    def _drain(self, now: float) -> None:  # hot path
        jitter = self._jitter
        decoder = self._decoder
        while (event := jitter.pop(now)) is not None:
            if isinstance(event, Frame):
                pcm = decoder.decode(event.payload)
            else:
                samples = event.duration * self._codec_rate // self._clock_rate
                if samples <= 0:
                    continue
                self.stats.concealed_ms += samples * 1000 // self._codec_rate
                if event.next_payload is not None and event.count:
                    pcm = decoder.decode_fec(event.next_payload, samples)
                else:
                    pcm = decoder.conceal(samples)
            self._on_audio(self._to_agent.process(pcm))

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        """Caller RTCP: note their sender reports (for LSR/DLSR) and our round trip time."""
        srtp = self.srtp
        if srtp is not None:
            plain = srtp.unprotect_rtcp(data)  # RFC 3711 §3.4
            if plain is None:
                return
            data = plain
        try:
            packets = parse_compound(data)
        except RtcpError:
            return
        now = self._loop.time() if self._loop is not None else 0.0
        self._rtcp_remote = (addr[0], addr[1])
        arrival = ntp_timestamp(time.time())
        for packet in packets:
            blocks: tuple[ReportBlock, ...] = ()
            if isinstance(packet, SenderReport):
                self._receiver.sender_report(packet.ntp_timestamp, now)
                blocks = packet.reports
            elif isinstance(packet, ReceiverReport):
                blocks = packet.reports
            for block in blocks:
                if block.ssrc == self._sender.ssrc:
                    rtt = round_trip_time(block, arrival)
                    if rtt is not None:
                        self.stats.rtt_ms = rtt * 1000

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable before the caller's media starts is normal.
        pass

    def attach_rtcp(self, rtcp: _RtcpSocket) -> None:
        self._rtcp = rtcp

    # -- pacing -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the 20 ms send clock (absolute schedule, so it does not drift)."""
        self._loop = loop
        self._next_tick = loop.time()
        self._tick()

    def update_remote(self, remote: Address) -> None:
        """New SDP address (re-INVITE): signalled by the caller, so symmetric RTP learns
        the source afresh from the next packet."""
        if remote == self.remote and self._remote_learned:
            return  # unchanged (hold, codec change): keep the learned source
        self.remote = remote
        self._rtcp_remote = (remote[0], remote[1] + 1)
        self._remote_learned = False
        self._candidate = None

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> bool:
        """Queue RFC 4733 events for ``digits``; False when the caller did not offer
        telephone-event (nothing can be sent)."""
        if self.telephone_event_pt is None:
            return False
        self._dtmf_tx.queue(digits, duration_ms)
        return True

    def _tick(self) -> None:  # hot path
        transport = self._transport
        loop = self._loop
        if transport is None or loop is None or transport.is_closing():
            return
        now = loop.time()
        self._drain(now)
        if self._on_dtmf is not None:
            for digit in self._dtmf_rx.poll(now):
                self._on_dtmf(digit)
        frame = self._next_frame()  # always consumed: the agent's audio keeps its pace
        sender = self._sender
        srtp = self.srtp
        events = self._dtmf_tx.tick(sender.timestamp) if self._dtmf_tx.active else None
        if events is not None:
            te = self.telephone_event_pt
            assert te is not None
            if self.sending:
                for event in events:
                    raw = sender.event_packet(te, event.timestamp, event.marker, event.payload)
                    packet = raw if srtp is None else srtp.protect(raw)
                    if packet is not None:
                        transport.sendto(packet, self.remote)
                        self.stats.packets_out += 1
            sender.skip()
        elif self.sending:
            payload = self._encoder.encode(self._from_agent.process(frame))
            raw = sender.packet(payload)
            audio = raw if srtp is None else srtp.protect(raw)
            if audio is not None:
                transport.sendto(audio, self.remote)
                self.stats.packets_out += 1
                self.stats.bytes_out += len(payload)
        else:
            # On hold (our direction recvonly/inactive): nothing goes out; RFC 3550 §5.1
            # the timestamp keeps running, sequence numbers do not.
            sender.skip()
        self._ticks += 1
        if self._ticks % RTCP_EVERY_TICKS == 0:
            self._send_rtcp(now)
        self._next_tick += FRAME_SECONDS
        if self._next_tick < now - 0.2:
            # The loop stalled for longer than 10 frames: resynchronise rather
            # than bursting the backlog at the caller.
            self._next_tick = now + FRAME_SECONDS
        self._timer = loop.call_at(self._next_tick, self._tick)

    def _send_rtcp(self, now: float) -> None:
        """RFC 3550 §6.4.1 sender report with a reception report and our CNAME."""
        rtcp = self._rtcp
        if rtcp is None or rtcp.transport is None or rtcp.transport.is_closing():
            return
        sender = self._sender
        reports: tuple[ReportBlock, ...] = ()
        if self._remote_ssrc is not None and self._receiver.received:
            reports = (self._receiver.report_block(self._remote_ssrc, now),)
        packet = serialize_compound(
            [
                SenderReport(
                    ssrc=sender.ssrc,
                    ntp_timestamp=ntp_timestamp(time.time()),
                    rtp_timestamp=sender.timestamp,
                    packet_count=sender.packets_sent & 0xFFFFFFFF,
                    octet_count=sender.octets_sent & 0xFFFFFFFF,
                    reports=reports,
                ),
                SourceDescription.cname(sender.ssrc, f"sipbridge-{sender.ssrc:08x}"),
            ]
        )
        if self.srtp is not None:
            protected = self.srtp.protect_rtcp(packet)  # RFC 3711 §3.4
            if protected is None:
                return
            packet = protected
        rtcp.transport.sendto(packet, self._rtcp_remote)

    def quality(self) -> MediaQuality:
        """The call's media figures so far (for the call record and metrics)."""
        receiver = self._receiver
        delay = mouth_to_ear_delay_ms(
            self.codec, jitter_buffer_ms=self._jitter.delay_ms, rtt_ms=self.stats.rtt_ms
        )
        return MediaQuality(
            packets_in=self.stats.packets_in,
            packets_out=self.stats.packets_out,
            bytes_in=self.stats.bytes_in,
            bytes_out=self.stats.bytes_out,
            packets_lost=max(receiver.lost, 0),
            loss_percent=round(receiver.loss_percent, 2),
            jitter_ms=round(receiver.jitter_ms, 2),
            rtt_ms=None if self.stats.rtt_ms is None else round(self.stats.rtt_ms, 1),
            concealed_ms=self.stats.concealed_ms,
            mos=round(estimate_mos(self.codec, receiver.loss_percent, delay), 2),
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._rtcp is not None and self._rtcp.transport is not None:
            self._rtcp.transport.close()
            self._rtcp = None


async def open_rtp_endpoint(
    loop: asyncio.AbstractEventLoop,
    allocator: RtpPortAllocator,
    host: str,
    factory: Callable[[], RtpEndpoint],
    attempts: int = 20,
) -> tuple[RtpEndpoint, int]:
    """Bind RTP on a free even port and RTCP on the next one; PortsExhausted when none binds."""
    for _ in range(attempts):
        port = allocator.acquire()
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                factory, local_addr=(host, port), family=socket.AF_INET
            )
        except OSError:
            allocator.release(port)
            continue
        rtcp = _RtcpSocket(protocol)
        try:
            await loop.create_datagram_endpoint(
                functools.partial(_same, rtcp), local_addr=(host, port + 1), family=socket.AF_INET
            )
        except OSError:
            protocol.close()
            allocator.release(port)
            continue
        protocol.attach_rtcp(rtcp)
        return protocol, port
    raise PortsExhausted("could not bind any RTP/RTCP port pair in the configured range")


def _same(rtcp: _RtcpSocket) -> _RtcpSocket:
    return rtcp


__all__ = [
    "MediaQuality",
    "MediaStats",
    "PortsExhausted",
    "RtpEndpoint",
    "RtpPortAllocator",
    "open_rtp_endpoint",
]
