"""RTP sockets for calls: port allocation, receive path and the paced 20 ms send clock.

The hot path lives here: :meth:`RtpEndpoint.datagram_received` (one call per
caller packet) and :meth:`RtpEndpoint._tick` (one call per 20 ms frame). Both
avoid logging, parsing beyond the fixed RTP header, and allocation beyond the
bytes objects they hand on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sipbridge.codecs import get_codec
from sipbridge.codecs.base import Decoder, Encoder
from sipbridge.rtp.packet import RtpError, parse_rtp_header
from sipbridge.rtp.stream import RtpSender

log = logging.getLogger("sipbridge.media")

Address = tuple[str, int]
FRAME_SECONDS = 0.020


class PortsExhausted(Exception):
    """No free even RTP port is left in the configured range."""


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


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's RTP socket.

    Caller packets of the negotiated payload type are decoded to PCM16 and
    handed to ``on_audio`` as they arrive (no buffering). Every 20 ms
    ``next_frame()`` supplies the agent's PCM16 frame (or silence), which is
    encoded and sent: the outbound stream never stops while the call is up.
    Symmetric RTP (RFC 4961): once caller packets arrive, we send to their
    source; until then, to the SDP address.
    """

    def __init__(
        self,
        *,
        codec: str,
        payload_type: int,
        remote: Address,
        on_audio: Callable[[bytes], None],
        next_frame: Callable[[], bytes],
    ) -> None:
        info = get_codec(codec)
        self.codec = info.name
        self.payload_type = payload_type
        self.remote = remote
        self._remote_learned = False
        self._on_audio = on_audio
        self._next_frame = next_frame
        self._decoder: Decoder = info.decoder_factory()
        self._encoder: Encoder = info.encoder_factory()
        self._sender = RtpSender(
            ssrc=random.getrandbits(32),
            payload_type=payload_type,
            samples_per_frame=info.clock_rate // 50,
            initial_sequence=random.getrandbits(16),
            initial_timestamp=random.getrandbits(32),
        )
        self.stats = MediaStats()
        self.last_packet_at: float | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- socket callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:  # hot path
        try:
            pt, _seq, _ts, _ssrc, _marker, start, end = parse_rtp_header(data)
        except RtpError:
            self.stats.dropped_in += 1
            return
        if pt != self.payload_type:
            # telephone-event and comfort noise are handled by later work;
            # RTCP on a muxed port also lands here.
            self.stats.dropped_in += 1
            return
        if not self._remote_learned or addr != self.remote:
            self.remote = (addr[0], addr[1])
            self._remote_learned = True
        self.stats.packets_in += 1
        self.stats.bytes_in += end - start
        if self._loop is not None:
            self.last_packet_at = self._loop.time()
        self._on_audio(self._decoder.decode(data[start:end]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable before the caller's media starts is normal.
        pass

    # -- pacing -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the 20 ms send clock (absolute schedule, so it does not drift)."""
        self._loop = loop
        self._next_tick = loop.time()
        self._tick()

    def update_remote(self, remote: Address) -> None:
        """New SDP address (re-INVITE); symmetric RTP relearns from the next packet."""
        self.remote = remote
        self._remote_learned = False

    def _tick(self) -> None:  # hot path
        transport = self._transport
        loop = self._loop
        if transport is None or loop is None or transport.is_closing():
            return
        payload = self._encoder.encode(self._next_frame())
        transport.sendto(self._sender.packet(payload), self.remote)
        self.stats.packets_out += 1
        self.stats.bytes_out += len(payload)
        self._next_tick += FRAME_SECONDS
        now = loop.time()
        if self._next_tick < now - 0.2:
            # The loop stalled for longer than 10 frames: resynchronise rather
            # than bursting the backlog at the caller.
            self._next_tick = now + FRAME_SECONDS
        self._timer = loop.call_at(self._next_tick, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def open_rtp_endpoint(
    loop: asyncio.AbstractEventLoop,
    allocator: RtpPortAllocator,
    host: str,
    factory: Callable[[], RtpEndpoint],
    attempts: int = 20,
) -> tuple[RtpEndpoint, int]:
    """Bind an RTP socket on a free even port; raises PortsExhausted when none binds."""
    for _ in range(attempts):
        port = allocator.acquire()
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                factory, local_addr=(host, port), family=socket.AF_INET
            )
        except OSError:
            allocator.release(port)
            continue
        return protocol, port
    raise PortsExhausted("could not bind any RTP port in the configured range")
