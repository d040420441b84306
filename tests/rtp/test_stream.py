import pytest

from sipbridge.rtp import RtpPacket, RtpSender


def test_first_packet() -> None:
    sender = RtpSender(0xCAFEBABE, 0, initial_sequence=100, initial_timestamp=1000)
    data = sender.packet(b"\xff" * 160)
    assert data[:12] == bytes.fromhex("80 80 0064 000003e8 cafebabe")
    assert data[12:] == b"\xff" * 160


def test_sequence_timestamp_and_marker() -> None:
    sender = RtpSender(7, 8, initial_sequence=1, initial_timestamp=50)
    packets = [RtpPacket.parse(sender.packet(bytes([i]))) for i in range(3)]
    assert [p.sequence for p in packets] == [1, 2, 3]
    assert [p.timestamp for p in packets] == [50, 210, 370]
    assert [p.marker for p in packets] == [True, False, False]
    assert {p.ssrc for p in packets} == {7}
    assert {p.payload_type for p in packets} == {8}
    assert [p.payload for p in packets] == [b"\x00", b"\x01", b"\x02"]
    assert (sender.sequence, sender.timestamp) == (4, 530)
    assert (sender.packets_sent, sender.octets_sent) == (3, 3)


def test_wrap_around() -> None:
    sender = RtpSender(
        1, 0, samples_per_frame=160, initial_sequence=65534, initial_timestamp=2**32 - 200
    )
    packets = [RtpPacket.parse(sender.packet(b"")) for _ in range(4)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 200, 2**32 - 40, 120, 280]


def test_initial_values_are_reduced() -> None:
    sender = RtpSender(1, 0, initial_sequence=65536 + 5, initial_timestamp=2**32 + 6)
    assert (sender.sequence, sender.timestamp) == (5, 6)


def test_samples_per_frame() -> None:
    sender = RtpSender(1, 9, samples_per_frame=320, initial_sequence=0, initial_timestamp=0)
    sender.packet(b"")
    assert RtpPacket.parse(sender.packet(b"")).timestamp == 320


def test_skip_advances_timestamp_only_and_marks_next_packet() -> None:
    sender = RtpSender(1, 0, initial_sequence=10, initial_timestamp=0)
    sender.packet(b"")
    sender.skip(0)
    assert RtpPacket.parse(sender.packet(b"")).marker is False
    sender.skip(3)
    packet = RtpPacket.parse(sender.packet(b""))
    assert (packet.sequence, packet.timestamp, packet.marker) == (12, 160 * 5, True)
    assert RtpPacket.parse(sender.packet(b"")).marker is False
    with pytest.raises(ValueError):
        sender.skip(-1)


@pytest.mark.parametrize(
    ("ssrc", "payload_type", "samples"),
    [(-1, 0, 160), (2**32, 0, 160), (1, 128, 160), (1, -1, 160), (1, 0, 0)],
)
def test_invalid_arguments(ssrc: int, payload_type: int, samples: int) -> None:
    with pytest.raises(ValueError):
        RtpSender(ssrc, payload_type, samples, initial_sequence=0, initial_timestamp=0)


def test_event_packet_shares_sequence_and_ssrc_with_own_timestamp() -> None:
    sender = RtpSender(
        ssrc=0x1234,
        payload_type=0,
        samples_per_frame=160,
        initial_sequence=65535,
        initial_timestamp=1000,
    )
    audio = RtpPacket.parse(sender.packet(b"\xff" * 160))
    event = RtpPacket.parse(sender.event_packet(101, 1160, True, b"\x01\x0a\x00\xa0"))
    again = RtpPacket.parse(sender.event_packet(101, 1160, False, b"\x01\x8a\x01\x40"))
    sender.skip()
    after = RtpPacket.parse(sender.packet(b"\xff" * 160))
    assert (audio.sequence, event.sequence, again.sequence, after.sequence) == (65535, 0, 1, 2)
    assert {audio.ssrc, event.ssrc, after.ssrc} == {0x1234}
    assert (event.payload_type, event.timestamp, event.marker) == (101, 1160, True)
    assert again.marker is False
    assert after.timestamp == 1000 + 2 * 160  # the event's frame period was skipped
    assert sender.packets_sent == 4
