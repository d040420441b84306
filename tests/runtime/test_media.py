"""RTP sockets and the shared media clock: port allocation, pacing, talkspurts, stalls,
symmetric and strict RTP, jitter/loss, DTMF over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import statistics
import time

import pytest

from sipbridge.codecs import get_codec
from sipbridge.media.dtmf import DigitPressed, parse_event
from sipbridge.media.session import MediaSession
from sipbridge.rtp.packet import RtpPacket, parse_rtp_header
from sipbridge.runtime.media import (
    MediaClock,
    PortsExhausted,
    RtpEndpoint,
    RtpPortAllocator,
    open_rtp_endpoint,
)
from sipbridge.sdp.negotiate import Negotiated
from tests.support.pcap import udp_payloads
from tests.support.sipp import SIPP_SHARE, free_udp_port


def negotiated(remote: tuple[str, int], codec: str = "pcmu", pt: int = 0) -> Negotiated:
    clock = get_codec(codec).clock_rate
    return Negotiated(pt, codec, clock, 101, remote[0], remote[1], "sendrecv", None)


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
    remote: tuple[str, int],
    frames: list[bytes],
    received: list[bytes],
    *,
    codec: str = "pcmu",
    pt: int = 0,
    agent_rate: int = 8000,
    digits: list[DigitPressed] | None = None,
    host: str = "127.0.0.1",
) -> tuple[RtpEndpoint, int]:
    loop = asyncio.get_running_loop()

    def next_frame() -> bytes | None:
        return frames.pop(0) if frames else None

    for _ in range(10):
        # A free port and the one above it: another socket of this machine may take one
        # of them before we bind (free_udp_port closes its probe): then another pair.
        low = free_udp_port()
        try:
            return await open_rtp_endpoint(
                loop,
                RtpPortAllocator(low, low + 1),
                host,
                lambda: RtpEndpoint(
                    MediaSession(negotiated(remote, codec, pt), agent_rate),
                    on_audio=received.append,
                    next_frame=next_frame,
                    frame_ready=lambda: bool(frames),
                    on_dtmf=None if digits is None else digits.append,
                ),
            )
        except PortsExhausted:
            continue
    raise AssertionError("no free RTP/RTCP port pair in 10 tries")


def clock() -> MediaClock:
    return MediaClock(asyncio.get_running_loop())


async def test_paced_stream_with_agent_audio_then_silence() -> None:
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    remote = peer_transport.get_extra_info("sockname")
    tone = bytes([0x10, 0x20]) * 160
    endpoint, _port = await open_endpoint(remote, [tone, tone], [])
    endpoint.start(clock())
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


async def test_ipv6_endpoint_on_loopback_both_ways() -> None:
    """An endpoint bound to ::1 opens IPv6 RTP and RTCP sockets: the caller's packets
    (from an IPv6 source, a 4-tuple) reach the agent, and our stream and RTCP go back."""
    loop = asyncio.get_running_loop()
    caller_t, caller = await loop.create_datagram_endpoint(Peer, local_addr=("::1", 0))
    caller_addr = caller_t.get_extra_info("sockname")
    received: list[bytes] = []
    endpoint, port = await open_endpoint(
        ("::1", caller_addr[1]), [bytes(320)] * 200, received, host="::1"
    )
    endpoint.start(clock())
    ulaw = get_codec("pcmu").encoder()
    tone = bytes([0x10, 0x20]) * 160
    for n in range(15):
        packet = RtpPacket(0, 100 + n, n * 160, 9, payload=ulaw.encode(tone))
        caller_t.sendto(packet.serialize(), ("::1", port))
        await asyncio.sleep(0.02)
    endpoint.session.rtcp_due = 0.0  # a report now
    await asyncio.sleep(0.1)
    endpoint.close()
    caller_t.close()
    assert endpoint.stats.packets_in == 15 and endpoint.stats.refused_source == 0
    assert b"".join(received).count(get_codec("pcmu").decoder().decode(ulaw.encode(tone))) == 15
    sources = {addr[:2] for _, addr, _ in caller.packets}
    assert sources == {("::1", port)}  # our RTP, from our IPv6 socket
    assert len(caller.packets) >= 15
    assert endpoint.session.rtcp_remote[:2] == ("::1", caller_addr[1] + 1)


async def test_symmetric_rtp_decodes_and_answers_to_the_source() -> None:
    loop = asyncio.get_running_loop()
    sdp_peer_t, sdp_peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    real_t, real = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    received: list[bytes] = []
    endpoint, port = await open_endpoint(sdp_peer_t.get_extra_info("sockname"), [], received)
    endpoint.start(clock())
    await asyncio.sleep(0.1)
    assert sdp_peer.packets  # before any caller packet: to the SDP address
    payload = bytes(range(160))
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=0, ssrc=7, payload=payload)
    real_t.sendto(packet.serialize(), ("127.0.0.1", port))
    real_t.sendto(b"\x00\x01junk", ("127.0.0.1", port))  # not RTP
    other_pt = RtpPacket(payload_type=13, sequence=2, timestamp=0, ssrc=7, payload=b"\x01")
    real_t.sendto(other_pt.serialize(), ("127.0.0.1", port))
    await asyncio.sleep(0.1)
    before = len(real.packets)
    await asyncio.sleep(0.1)
    endpoint.close()
    sdp_peer_t.close()
    real_t.close()
    assert received[0] == get_codec("pcmu").decoder().decode(payload)
    assert len(real.packets) - before >= 3  # now sent to where the caller's RTP came from
    assert endpoint.stats.packets_in == 1 and endpoint.stats.dropped_in == 2
    assert parse_rtp_header(real.packets[-1][0])[0] == 0


async def test_loss_reorder_duplicates_and_jitter_give_a_continuous_stream() -> None:
    """A small relay's worth of network trouble between caller and endpoint: the agent
    still gets exactly one frame of audio per 20 ms of the caller's clock, lost packets
    concealed, and the quality figures count what happened."""
    loop = asyncio.get_running_loop()
    caller_t, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    received: list[bytes] = []
    endpoint, port = await open_endpoint(caller_t.get_extra_info("sockname"), [], received)
    endpoint.start(clock())
    rng = random.Random(7)
    total, lost = 100, {10, 11, 40, 77}
    order = [s for s in range(total) if s not in lost]
    order[20], order[21] = order[21], order[20]  # reordered pair
    tone = get_codec("pcmu").encoder().encode(bytes([0x00, 0x10]) * 160)
    start = loop.time()
    for index, seq in enumerate(order):
        due = start + index * 0.020 + rng.uniform(0, 0.008)  # up to 8 ms of jitter
        await asyncio.sleep(max(0.0, due - loop.time()))
        packet = RtpPacket(0, (65500 + seq) & 0xFFFF, seq * 160, 99, payload=tone).serialize()
        caller_t.sendto(packet, ("127.0.0.1", port))
        if seq == 50:
            caller_t.sendto(packet, ("127.0.0.1", port))  # duplicate
    await asyncio.sleep(0.15)
    quality = endpoint.quality()
    endpoint.close()
    caller_t.close()
    pcm = b"".join(received)
    # packets 0..99 cover 2 s; the stream keeps going (concealed) after the last one
    assert len(pcm) >= total * 320
    assert len(pcm) % 160 == 0
    # RFC 3550 A.3: lost = expected - received, and a duplicate counts as received.
    assert quality.packets_lost == len(lost) - 1
    assert quality.loss_percent == pytest.approx(100 * (len(lost) - 1) / total, abs=0.01)
    assert quality.concealed_ms >= 20 * len(lost)
    assert 0 < quality.jitter_ms < 10
    assert quality.mos < 4.4
    # duplicates and the reordered pair were not played twice or skipped
    assert endpoint.stats.packets_in == len(order) + 1


async def test_caller_dtmf_from_sipp_pcap_reported_once() -> None:
    loop = asyncio.get_running_loop()
    caller_t, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    digits: list[DigitPressed] = []
    endpoint, port = await open_endpoint(caller_t.get_extra_info("sockname"), [], [], digits=digits)
    endpoint.start(clock())
    for packet in udp_payloads(SIPP_SHARE / "dtmf_2833_1.pcap"):
        caller_t.sendto(packet, ("127.0.0.1", port))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    endpoint.close()
    caller_t.close()
    assert [d.digit for d in digits] == ["1"]


async def test_agent_dtmf_goes_out_as_rfc4733_events() -> None:
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    endpoint, _port = await open_endpoint(peer_t.get_extra_info("sockname"), [], [])
    endpoint.start(clock())
    assert endpoint.session.send_dtmf("12#", 100)
    await asyncio.sleep(1.2)
    endpoint.close()
    peer_t.close()
    packets = [RtpPacket.parse(data) for data, _, _ in peer.packets]
    seqs = [p.sequence for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    events = [p for p in packets if p.payload_type == 101]
    presses: dict[int, list[tuple[int, bool, int]]] = {}
    for p in events:
        event, end, _volume, duration = parse_event(p.payload)
        presses.setdefault(p.timestamp, []).append((event, end, duration))
    assert [v[0][0] for v in presses.values()] == [1, 2, 11]  # '#' is event 11
    for timeline in presses.values():
        ends = [e for e in timeline if e[1]]
        assert len(ends) == 3 and ends[0][2] == 800  # 100 ms at 8 kHz, three end packets
    starts = [p for p in events if p.marker]
    assert len(starts) == 3


async def test_wideband_agent_with_g722() -> None:
    loop = asyncio.get_running_loop()
    caller_t, caller = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    received: list[bytes] = []
    tone = bytes([0x00, 0x20]) * 320  # 20 ms at 16 kHz
    endpoint, port = await open_endpoint(
        caller_t.get_extra_info("sockname"),
        [tone] * 5,
        received,
        codec="g722",
        pt=9,
        agent_rate=16000,
    )
    endpoint.start(clock())
    encoder = get_codec("g722").encoder(16000)
    for seq in range(10):
        payload = encoder.encode(tone)
        caller_t.sendto(
            RtpPacket(9, seq, seq * 160, 5, payload=payload).serialize(), ("127.0.0.1", port)
        )
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    endpoint.close()
    caller_t.close()
    assert received and all(len(chunk) == 640 for chunk in received[:10])  # 16 kHz frames
    sent = [RtpPacket.parse(data) for data, _, _ in caller.packets]
    assert sent and all(p.payload_type == 9 and len(p.payload) == 160 for p in sent)
    assert (sent[1].timestamp - sent[0].timestamp) % 2**32 == 160  # 8 kHz RTP clock


async def test_open_rtp_endpoint_skips_busy_ports() -> None:
    loop = asyncio.get_running_loop()
    busy = free_udp_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", busy + 1))  # the RTCP port of the only pair
    try:
        allocator = RtpPortAllocator(busy, busy + 1)
        with pytest.raises(PortsExhausted):
            await open_rtp_endpoint(
                loop,
                allocator,
                "127.0.0.1",
                lambda: RtpEndpoint(
                    MediaSession(negotiated(("127.0.0.1", 9)), 8000),
                    on_audio=lambda _: None,
                    next_frame=lambda: None,
                ),
            )
        assert allocator.available == 1  # the busy pair went back to the pool
    finally:
        blocker.close()


async def test_one_clock_paces_many_calls_with_few_wakeups() -> None:
    loop = asyncio.get_running_loop()
    media_clock = clock()
    peers = []
    endpoints = []
    started = loop.time()
    for _ in range(30):
        transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        endpoint, _port = await open_endpoint(transport.get_extra_info("sockname"), [], [])
        endpoint.start(media_clock)
        peers.append((transport, peer))
        endpoints.append(endpoint)
    await asyncio.sleep(0.5)
    for endpoint in endpoints:
        endpoint.close()
    elapsed = loop.time() - started
    assert media_clock.calls == 0
    for transport, peer in peers:
        transport.close()
        packets = [RtpPacket.parse(data) for data, _, _ in peer.packets]
        assert 22 <= len(packets) <= 27
        for a, b in itertools.pairwise(packets):
            assert (b.sequence - a.sequence) % 65536 == 1
            assert (b.timestamp - a.timestamp) % 2**32 == 160
    # 30 calls x 25 frames = 750 sends, but calls share the clock's 2 ms slots: at most
    # one wake-up per slot of the time the calls ran (measured, not the nominal 0.5 s)
    assert media_clock.wakeups <= elapsed / 0.002 + 5
    assert media_clock.wakeups < 30 * 25 / 2


async def test_a_talkspurt_goes_out_at_once_and_the_stream_does_not_drift() -> None:
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    frames: list[bytes] = []
    endpoint, _port = await open_endpoint(peer_t.get_extra_info("sockname"), frames, [])
    endpoint.start(clock())
    started = loop.time()
    spurts: list[float] = []
    for k in range(8):  # talkspurts of 3 frames at phases unrelated to the clock
        await asyncio.sleep(0.137 + 0.003 * k)
        frames.extend([bytes([k + 1, 0x20]) * 160] * 3)
        spurts.append(loop.time())
        endpoint.agent_audio()
    await asyncio.sleep(0.2)
    ended = loop.time()
    endpoint.close()
    peer_t.close()
    packets = [(RtpPacket.parse(data), at) for data, _, at in peer.packets]
    ulaw = get_codec("pcmu").encoder()
    delays = []
    for k, asked in enumerate(spurts):
        first = next(
            (p, at) for p, at in packets if p.payload == ulaw.encode(bytes([k + 1, 0x20]) * 160)
        )
        assert first[0].marker
        delays.append(first[1] - asked)
    # Sent at once, not at the next 20 ms tick (which would wait 10 ms in the median); the
    # bound on the worst one leaves room for a loaded machine (a correctness test, no figure).
    assert statistics.median(delays) < 0.005 and max(delays) < 0.015, delays
    # RTP time never runs ahead of real time: packets ~ elapsed / 20 ms, no extra ones
    span = ended - started
    assert len(packets) <= span / 0.020 + 2
    assert len(packets) >= span / 0.020 - 4
    for (a, _), (b, _) in itertools.pairwise(packets):
        assert (b.timestamp - a.timestamp) % 2**32 == 160
    times = [at for _, at in packets]
    ahead = [
        (at - times[0]) - ((p.timestamp - packets[0][0].timestamp) % 2**32) / 8000
        for p, at in packets
    ]
    assert min(ahead) > -0.025  # never more than one frame ahead of its timeline


async def test_a_stall_is_caught_up_then_skipped_with_the_agent_audio_of_its_time() -> None:
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    # frame n is μ-law code n + 1 decoded: distinct, and exact through encoding
    ulaw_decoder = get_codec("pcmu").decoder()
    frames = [ulaw_decoder.decode(bytes([n + 1]) * 160) for n in range(126)]
    endpoint, _port = await open_endpoint(peer_t.get_extra_info("sockname"), frames, [])
    endpoint.start(clock())
    await asyncio.sleep(0.1)
    time.sleep(0.07)  # noqa: ASYNC251 - the stall under test: shorter than the catch-up bound
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # noqa: ASYNC251 - a longer stall: 5 frames caught up, the rest skipped
    await asyncio.sleep(0.1)
    endpoint.close()
    peer_t.close()
    packets = [RtpPacket.parse(data) for data, _, _ in peer.packets]
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(packets)]
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    jumps = [s for s in steps if s != 160]
    assert len(jumps) == 1 and 8 * 160 <= jumps[0] <= 12 * 160  # one skip, after the long stall
    assert endpoint.frames_skipped == jumps[0] // 160 - 1
    # agent frames went out in order; the ones of the skipped time were dropped, so the
    # agent's audio is as close to real time after the stall as before it
    order = [p.payload[0] - 1 for p in packets]
    assert order == sorted(order)
    frame_steps = [b - a for a, b in itertools.pairwise(order)]
    assert [s for s in frame_steps if s != 1] == [jumps[0] // 160]
    assert len(order) + endpoint.frames_skipped == order[-1] + 1
    # after the stall the pace is 20 ms again (the last packets)
    times = [at for _, _, at in peer.packets]
    tail = [b - a for a, b in itertools.pairwise(times[-6:])]
    assert 0.015 < statistics.median(tail) < 0.025, tail  # not back to back: paced again


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
async def test_strict_rtp_refuses_bursts_mid_call_and_follows_a_real_rebinding(
    attacker_host: str,
) -> None:
    """RTP bleed / injection: bursts far past any switch threshold, from another port and
    another address, with the caller's SSRC (and sequence numbers) and with a new one,
    while the caller talks; then the caller's NAT really rebinds after going quiet."""
    loop = asyncio.get_running_loop()
    caller_t, caller = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    attacker_t, attacker = await loop.create_datagram_endpoint(Peer, local_addr=(attacker_host, 0))
    rebound_t, rebound = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    received: list[bytes] = []
    endpoint, port = await open_endpoint(caller_t.get_extra_info("sockname"), [], received)
    endpoint.start(clock())
    target = ("127.0.0.1", port)
    ulaw = get_codec("pcmu").encoder()

    def packet(seq: int, level: int, ssrc: int = 77) -> bytes:
        payload = ulaw.encode(bytes([0, level]) * 160)
        return RtpPacket(0, seq, seq * 160, ssrc, payload=payload).serialize()

    seq = 0
    for _ in range(10):
        caller_t.sendto(packet(seq, 0x10), target)
        seq += 1
        await asyncio.sleep(0.02)
    for burst in range(10):
        for k in range(100):  # 1,000 packets in all, both SSRCs, sequence numbers ahead
            ssrc = 77 if k % 2 else 4242
            attacker_t.sendto(packet(seq + k, 0x7F, ssrc), target)
        caller_t.sendto(packet(seq, 0x10), target)
        seq += 1
        await asyncio.sleep(0.02)
        assert burst >= 0
    await asyncio.sleep(0.05)
    assert endpoint.session.remote == caller_t.get_extra_info("sockname")
    injected = get_codec("pcmu").decoder().decode(ulaw.encode(bytes([0, 0x7F]) * 160))
    assert injected not in received
    assert endpoint.stats.refused_source == 1000
    assert not attacker.packets  # our stream never went to the attacker
    heard_by_caller = len(caller.packets)
    assert heard_by_caller >= 15
    # The caller goes quiet for over a second, then its NAT maps it to a new port.
    await asyncio.sleep(1.1)
    seq += 55
    for _ in range(5):
        rebound_t.sendto(packet(seq, 0x20), target)
        seq += 1
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    endpoint.close()
    for t in (caller_t, attacker_t, rebound_t):
        t.close()
    assert endpoint.session.remote == rebound_t.get_extra_info("sockname")
    assert endpoint.stats.source_changes == 1
    assert rebound.packets  # our stream follows the caller to its new address
    assert not attacker.packets


async def test_a_due_clock_runs_from_other_callbacks_without_waiting_for_its_timer() -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    endpoint, _port = await open_endpoint(peer.getsockname(), [], [])
    media_clock = clock()
    endpoint.start(media_clock)
    await asyncio.sleep(0.05)
    with contextlib.suppress(BlockingIOError):
        while True:
            peer.recv(2048)  # what went out so far
    media_clock.poke(media_clock.time())  # not due yet (just ran): nothing
    with pytest.raises(BlockingIOError):
        peer.recv(2048)
    time.sleep(0.045)  # noqa: ASYNC251 - a busy loop: the timer cannot run meanwhile
    media_clock.poke(media_clock.time())  # as a datagram callback does: due frames go now
    sent = []
    with contextlib.suppress(BlockingIOError):
        while True:
            sent.append(peer.recv(2048))
    endpoint.close()
    peer.close()
    assert 2 <= len(sent) <= 3  # the frames due during the 45 ms, sent by the poke


async def test_a_real_time_agent_a_little_late_mid_talkspurt_is_waited_for() -> None:
    """An agent that streams one frame per 20 ms and is sometimes 5 ms late: its speech
    goes out whole, with no frame of silence cut into it (the call's phase moves later)."""
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    frames: list[bytes] = []
    endpoint, _port = await open_endpoint(peer_t.get_extra_info("sockname"), frames, [])
    endpoint.start(clock())
    await asyncio.sleep(0.1)
    ulaw_decoder = get_codec("pcmu").decoder()
    start = loop.time()
    for n in range(40):
        late = 0.005 if n % 4 == 3 else 0.0
        await asyncio.sleep(max(0.0, start + n * 0.020 + late - loop.time()))
        frames.append(ulaw_decoder.decode(bytes([n + 1]) * 160))
        endpoint.agent_audio()
    await asyncio.sleep(0.2)
    endpoint.close()
    peer_t.close()
    payloads = [RtpPacket.parse(data).payload[0] for data, _, _ in peer.packets]
    first = payloads.index(1)
    speech = payloads[first : first + 40]
    assert speech == list(range(1, 41))  # every frame, in order, no silence between
