"""RTP sockets: port allocation, the 20 ms clock, symmetric RTP, bad packets."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import RtpPacket, parse_rtp_header
from sipbridge.runtime.media import (
    PortsExhausted,
    RtpEndpoint,
    RtpPortAllocator,
    open_rtp_endpoint,
)
from tests.support.sipp import free_udp_port


def test_allocator_hands_out_even_ports_and_takes_them_back() -> None:
    allocator = RtpPortAllocator(10001, 10010)
    ports = {allocator.acquire() for _ in range(allocator.available)}
    assert ports == {10002, 10004, 10006, 10008}
    with pytest.raises(PortsExhausted):
        allocator.acquire()
    allocator.release(10004)
    allocator.release(10004)  # twice is harmless
    assert allocator.acquire() == 10004
    with pytest.raises(PortsExhausted):
        allocator.acquire()


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, tuple[str, int], float]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append((data, addr, asyncio.get_running_loop().time()))


async def open_endpoint(
    remote: tuple[str, int], frames: list[bytes], received: list[bytes]
) -> tuple[RtpEndpoint, int]:
    loop = asyncio.get_running_loop()
    low = free_udp_port()
    allocator = RtpPortAllocator(low, low + 1)

    def next_frame() -> bytes:
        return frames.pop(0) if frames else bytes(320)

    return await open_rtp_endpoint(
        loop,
        allocator,
        "127.0.0.1",
        lambda: RtpEndpoint(
            codec="pcmu",
            payload_type=0,
            remote=remote,
            on_audio=received.append,
            next_frame=next_frame,
        ),
    )


async def test_paced_stream_with_agent_audio_then_silence() -> None:
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    remote = peer_transport.get_extra_info("sockname")
    tone = bytes([0x10, 0x20]) * 160
    endpoint, _port = await open_endpoint(remote, [tone, tone], [])
    endpoint.start(loop)
    await asyncio.sleep(0.5)
    endpoint.close()
    peer_transport.close()
    packets = [RtpPacket.parse(data) for data, _, _ in peer.packets]
    assert 20 <= len(packets) <= 27
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert len({p.ssrc for p in packets}) == 1
    for a, b in itertools.pairwise(packets):
        assert (b.sequence - a.sequence) % 65536 == 1
        assert (b.timestamp - a.timestamp) % 2**32 == 160
    ulaw = get_codec("pcmu").encoder()
    assert packets[0].payload == packets[1].payload == ulaw.encode(tone)
    assert packets[2].payload == ulaw.encode(bytes(320))  # silence keeps the stream going
    times = [t for _, _, t in peer.packets]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.018 < sum(gaps) / len(gaps) < 0.022


async def test_symmetric_rtp_decodes_and_answers_to_the_source() -> None:
    loop = asyncio.get_running_loop()
    sdp_peer_t, sdp_peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    real_t, real = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    received: list[bytes] = []
    endpoint, port = await open_endpoint(sdp_peer_t.get_extra_info("sockname"), [], received)
    endpoint.start(loop)
    await asyncio.sleep(0.1)
    assert sdp_peer.packets  # before any caller packet: to the SDP address
    payload = bytes(range(160))
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=0, ssrc=7, payload=payload)
    real_t.sendto(packet.serialize(), ("127.0.0.1", port))
    real_t.sendto(b"\x00\x01junk", ("127.0.0.1", port))  # not RTP
    other_pt = RtpPacket(payload_type=101, sequence=2, timestamp=0, ssrc=7, payload=b"\x01\x02")
    real_t.sendto(other_pt.serialize(), ("127.0.0.1", port))
    await asyncio.sleep(0.1)
    before = len(real.packets)
    await asyncio.sleep(0.1)
    endpoint.close()
    sdp_peer_t.close()
    real_t.close()
    assert received == [get_codec("pcmu").decoder().decode(payload)]
    assert len(real.packets) - before >= 3  # now sent to where the caller's RTP came from
    assert endpoint.stats.packets_in == 1 and endpoint.stats.dropped_in == 2
    pt = parse_rtp_header(real.packets[-1][0])[0]
    assert pt == 0


async def test_open_rtp_endpoint_skips_busy_ports() -> None:
    loop = asyncio.get_running_loop()
    busy = free_udp_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", busy))
    try:
        allocator = RtpPortAllocator(busy, busy + 1)
        with pytest.raises(PortsExhausted):
            await open_rtp_endpoint(
                loop,
                allocator,
                "127.0.0.1",
                lambda: RtpEndpoint(
                    codec="pcmu",
                    payload_type=0,
                    remote=("127.0.0.1", 9),
                    on_audio=lambda _: None,
                    next_frame=lambda: bytes(320),
                ),
            )
        assert allocator.available == 1  # the busy port went back to the pool
    finally:
        blocker.close()
