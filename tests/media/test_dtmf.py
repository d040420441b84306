from pathlib import Path

import pytest

from sipbridge.media.dtmf import (
    DigitPressed,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    encode_event,
    parse_dtmf_info,
    parse_event,
)
from sipbridge.rtp import RtpPacket
from tests.support.pcap import udp_payloads

SIPP_PCAP = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")


def ev(event: int, end: bool, duration: int) -> bytes:
    return encode_event(event, end, 10, duration)


def test_payload_round_trip() -> None:
    assert encode_event(1, True, 10, 800) == bytes.fromhex("018a0320")
    assert parse_event(bytes.fromhex("018a0320")) == (1, True, 10, 800)
    assert parse_event(bytes.fromhex("0b0a00a0ffff")) == (11, False, 10, 160)
    with pytest.raises(DtmfError):
        parse_event(b"\x01\x0a\x00")
    with pytest.raises(DtmfError):
        encode_event(1, False, 64, 0)


@pytest.mark.requires("sipp-pcap")
def test_sipp_pcap_digit_is_reported_once() -> None:
    receiver = DtmfReceiver(8000)
    digits: list[DigitPressed] = []
    now = 0.0
    for datagram in udp_payloads(SIPP_PCAP):
        packet = RtpPacket.parse(datagram)
        assert packet.payload_type == 101
        digits += receiver.receive(packet.payload, packet.timestamp, packet.marker, now)
        now += 0.02
    digits += receiver.poll(now + 5)
    assert digits == [DigitPressed("1", 280)]  # 2240 clock units at 8 kHz


def test_redundant_end_packets_report_once() -> None:
    receiver = DtmfReceiver()
    out = receiver.receive(ev(5, False, 160), 1000, True, 0.0)
    out += receiver.receive(ev(5, False, 480), 1000, False, 0.05)
    out += receiver.receive(ev(5, True, 800), 1000, False, 0.1)
    assert out == [DigitPressed("5", 100)]
    assert receiver.receive(ev(5, True, 800), 1000, False, 0.12) == []
    assert receiver.receive(ev(5, True, 800), 1000, False, 0.14) == []
    assert receiver.poll(10.0) == []
    assert receiver.get_timer() is None


def test_lost_end_packets_end_on_timeout() -> None:
    receiver = DtmfReceiver(timeout=0.3)
    assert receiver.receive(ev(11, False, 160), 1000, True, 0.0) == []
    assert receiver.receive(ev(11, False, 640), 1000, False, 0.08) == []
    assert receiver.get_timer() == pytest.approx(0.38)
    assert receiver.poll(0.3) == []
    assert receiver.poll(0.4) == [DigitPressed("#", 80)]
    assert receiver.poll(0.5) == []
    # A late end packet of the same event is not a second press.
    assert receiver.receive(ev(11, True, 800), 1000, False, 0.6) == []


def test_lost_end_packets_end_on_the_next_event() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(ev(1, False, 160), 1000, True, 0.0) == []
    # No marker on the new event: the new timestamp is what tells it apart.
    assert receiver.receive(ev(2, False, 160), 3000, False, 0.25) == [DigitPressed("1", 20)]
    assert receiver.receive(ev(2, True, 400), 3000, False, 0.3) == [DigitPressed("2", 50)]


def test_same_digit_twice_without_markers() -> None:
    receiver = DtmfReceiver()
    out = []
    for ts in (1000, 3000):
        for duration, end in ((160, False), (400, False), (800, True), (800, True), (800, True)):
            out += receiver.receive(ev(7, end, duration), ts, False, ts / 8000)
    assert out == [DigitPressed("7", 100), DigitPressed("7", 100)]


def test_only_end_packets_survive() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(ev(0, True, 800), 5000, False, 0.0) == [DigitPressed("0", 100)]
    assert receiver.receive(ev(0, True, 800), 5000, False, 0.02) == []


def test_flash_and_unknown_events_are_not_digits() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(ev(16, True, 800), 100, True, 0.0) == []
    assert receiver.receive(ev(15, True, 800), 900, True, 0.1) == [DigitPressed("D", 100)]


def test_long_event_segments_are_one_press() -> None:
    # RFC 4733 §2.5.1.3: past 65535 units the event continues under a new timestamp.
    receiver = DtmfReceiver()
    assert receiver.receive(ev(3, False, 0xFFFF), 1000, True, 0.0) == []
    assert receiver.receive(ev(3, True, 1000), 1000 + 0xFFFF, False, 0.1) == [
        DigitPressed("3", (0xFFFF + 1000) // 8)
    ]


def send_all(sender: DtmfSender, timestamp: int, ticks: int) -> list[tuple[int, object]]:
    """(tick, packets or None) for each 20 ms tick."""
    out: list[tuple[int, object]] = []
    for i in range(ticks):
        out.append((i, sender.tick(timestamp + i * 160)))
    return out


def test_sender_packet_sequence() -> None:
    sender = DtmfSender(8000)
    sender.queue("1", duration_ms=100)
    assert sender.active
    ticks = send_all(sender, 1000, 12)
    sent = [(i, p) for i, packets in ticks if packets for p in packets]  # type: ignore[attr-defined]
    events = [(i, parse_event(p.payload), p.marker, p.timestamp) for i, p in sent]
    assert events == [
        (0, (1, False, 10, 160), True, 1000),  # start: marker, one frame
        (2, (1, False, 10, 480), False, 1000),  # 60 ms: first update past 50 ms
        (4, (1, True, 10, 800), False, 1000),  # end, three times (RFC 4733 §2.5.1.4)
        (5, (1, True, 10, 800), False, 1000),
        (6, (1, True, 10, 800), False, 1000),
    ]
    # Ticks 0-6 replace audio; then the inter-digit pause sends audio.
    assert [packets is None for _, packets in ticks] == [False] * 7 + [True] * 5
    assert not sender.active


@pytest.mark.parametrize("clock", [8000, 48000])
def test_sender_digits_decode_back(clock: int) -> None:
    sender = DtmfSender(clock)
    sender.queue("12#", duration_ms=100)
    receiver = DtmfReceiver(clock)
    frame = clock // 50
    seq, ts = 500, 0xFFFFF000  # the timestamp wraps during the digits
    digits: list[DigitPressed] = []
    for tick in range(60):
        packets = sender.tick(ts)
        for packet in packets or []:
            wire = RtpPacket(101, seq, packet.timestamp, 0x1234, packet.marker, packet.payload)
            parsed = RtpPacket.parse(wire.serialize())
            digits += receiver.receive(parsed.payload, parsed.timestamp, parsed.marker, tick * 0.02)
            seq += 1
        ts = (ts + frame) & 0xFFFFFFFF
    assert digits == [DigitPressed("1", 100), DigitPressed("2", 100), DigitPressed("#", 100)]


def test_sender_validation() -> None:
    sender = DtmfSender()
    with pytest.raises(DtmfError):
        sender.queue("1x")
    with pytest.raises(DtmfError):
        sender.queue("1", duration_ms=10_000)
    with pytest.raises(DtmfError):
        sender.queue("1", duration_ms=5)
    with pytest.raises(ValueError):
        DtmfSender(volume=99)
    assert sender.tick(0) is None
    sender.queue("a*", duration_ms=40, pause_ms=0)
    got = []
    for i in range(20):
        for packet in sender.tick(i * 160) or []:
            got.append(parse_event(packet.payload))
    assert [e for e in got if e[1]] == [(12, True, 10, 320)] * 3 + [(10, True, 10, 320)] * 3


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", DigitPressed("5", 160)),
        ("Application/DTMF-Relay; charset=x", "signal= #\nduration = 250", DigitPressed("#", 250)),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", DigitPressed("#", 100)),
        ("application/dtmf-relay", b"Signal=*\r\n", DigitPressed("*", 250)),
        (
            "application/dtmf-relay",
            b"Signal=a\r\nDuration=90\r\nFoo: bar\r\n",
            DigitPressed("A", 90),
        ),
        ("application/dtmf", b"7", DigitPressed("7", 250)),
        ("application/dtmf", b" 9\r\n", DigitPressed("9", 250)),
        ("application/sdp", b"v=0", None),
    ],
)
def test_sip_info_bodies(
    content_type: str, body: bytes | str, expected: DigitPressed | None
) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b"Duration=160\r\n"),
        ("application/dtmf-relay", b"Signal=X\r\n"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=abc\r\n"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=-4\r\n"),
        ("application/dtmf-relay", b"Signal=99\r\n"),
        ("application/dtmf", b""),
        ("application/dtmf", b"55"),
    ],
)
def test_bad_sip_info_bodies(content_type: str, body: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_info(content_type, body)
