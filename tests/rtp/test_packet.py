import pytest

from sipbridge.rtp import RtpError, RtpPacket, is_rtcp, parse_rtp_header

# V=2, M=1, PT=8, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304, 4-byte payload.
SIMPLE = bytes.fromhex("80 88 1234 deadbeef 01020304 aabbccdd")
# V=2, P=1, X=1, CC=2, M=0, PT=101, seq 65535, ts 1, SSRC 2, CSRCs 5 and 6,
# extension profile 0xBEDE with one word, payload "hi", 3 bytes of padding.
FULL = bytes.fromhex(
    "b2 65 ffff 00000001 00000002 00000005 00000006 bede 0001 11223344 6869 0000 03"
)


def test_parse_simple() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(
        payload_type=8,
        sequence=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        marker=True,
        payload=bytes.fromhex("aabbccdd"),
    )
    assert packet.serialize() == SIMPLE


def test_parse_full() -> None:
    packet = RtpPacket.parse(FULL)
    assert packet == RtpPacket(
        payload_type=101,
        sequence=65535,
        timestamp=1,
        ssrc=2,
        marker=False,
        payload=b"hi",
        csrc=(5, 6),
        extension=(0xBEDE, bytes.fromhex("11223344")),
        padding=3,
    )
    assert packet.serialize() == FULL


def test_header_parse() -> None:
    assert parse_rtp_header(SIMPLE) == (8, 0x1234, 0xDEADBEEF, 0x01020304, True, 12, 16)
    pt, seq, ts, ssrc, marker, start, end = parse_rtp_header(FULL)
    assert (pt, seq, ts, ssrc, marker) == (101, 65535, 1, 2, False)
    assert FULL[start:end] == b"hi"


def test_empty_payload_and_padding_only() -> None:
    assert parse_rtp_header(SIMPLE[:12])[5:] == (12, 12)
    padded = bytes([0xA0]) + SIMPLE[1:12] + b"\x00\x00\x03"
    assert parse_rtp_header(padded)[5:] == (12, 12)


@pytest.mark.parametrize("data", [SIMPLE, FULL])
def test_every_truncation_raises_rtp_error(data: bytes) -> None:
    # Any prefix either fails cleanly or parses to a payload inside the data; since the
    # padding count sits in the last byte, a truncated padded packet must still be checked.
    for length in range(len(data)):
        try:
            _, _, _, _, _, start, end = parse_rtp_header(data[:length])
        except RtpError:
            continue
        assert 12 <= start <= end <= length
    for length in range(12):
        with pytest.raises(RtpError):
            RtpPacket.parse(data[:length])


def test_every_truncation_of_the_full_packet_fails() -> None:
    for length in range(len(FULL)):
        with pytest.raises(RtpError):
            RtpPacket.parse(FULL[:length])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([0x40]) + SIMPLE[1:], "version 1"),
        (bytes([0x00]) + SIMPLE[1:], "version 0"),
        (bytes([0x8F]) + SIMPLE[1:], "longer than the packet"),
        (bytes([0x90]) + SIMPLE[1:12] + b"\x00\x00\x00\x05", "longer than the packet"),
        (bytes([0x90]) + SIMPLE[1:12] + b"\x00", "extension"),
        (bytes([0xA0]) + SIMPLE[1:12] + b"\x00", "padding length 0"),
        (bytes([0xA0]) + SIMPLE[1:12] + b"\x09", "padding length 9"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp_header(data)


def test_serialize_rejects_out_of_range_fields() -> None:
    with pytest.raises(RtpError):
        RtpPacket(128, 0, 0, 0).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 65536, 0, 0).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 2**32, 0).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, extension=(1, b"abc")).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, padding=256).serialize()


def test_round_trip_of_built_packets() -> None:
    for packet in [
        RtpPacket(0, 0, 0, 0),
        RtpPacket(127, 65535, 2**32 - 1, 2**32 - 1, True, b"x" * 160),
        RtpPacket(96, 7, 8, 9, csrc=tuple(range(15)), extension=(0x1000, b""), padding=1),
    ]:
        assert RtpPacket.parse(packet.serialize()) == packet


def test_is_rtcp() -> None:
    # RTCP sender report (PT 200) and receiver report (201) against RTP with and without
    # the marker bit.
    assert is_rtcp(bytes.fromhex("80c8 0006"))
    assert is_rtcp(bytes.fromhex("81c9 0007"))
    assert is_rtcp(bytes([0x80, 192]))
    assert is_rtcp(bytes([0x80, 223]))
    assert not is_rtcp(bytes([0x80, 224]))
    assert not is_rtcp(bytes([0x80, 191]))
    assert not is_rtcp(SIMPLE)
    assert not is_rtcp(bytes([0x80, 0x00]))
    assert not is_rtcp(b"\x80")
