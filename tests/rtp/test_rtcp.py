import pytest

from sipbridge.rtp import is_rtcp
from sipbridge.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    compact_ntp,
    ntp_timestamp,
    parse_compound,
    report_block,
    round_trip_time,
    serialize_compound,
)

BLOCK_BYTES = "0000abcd 40 fffffe 0001fffe 00000020 12345678 00008000"
BLOCK = ReportBlock(0xABCD, 0x40, -2, 0x1FFFE, 0x20, 0x12345678, 0x8000)
# SR with one report block, then SDES CNAME "ab@c", then BYE with a reason.
SR_BYTES = bytes.fromhex(
    "81 c8 000c 11223344 e8e0a4c5 40000000 00012345 00000064 00003e80" + BLOCK_BYTES
)
SDES_BYTES = bytes.fromhex("81 ca 0003 11223344 0104 61624063 0000")
BYE_BYTES = bytes.fromhex("81 cb 0003 11223344 04 62796521 000000")
RR_BYTES = bytes.fromhex("81 c9 0007 55667788" + BLOCK_BYTES)
COMPOUND = SR_BYTES + SDES_BYTES + BYE_BYTES

SR = SenderReport(0x11223344, 0xE8E0A4C540000000, 0x12345, 100, 16000, (BLOCK,))
SDES = SourceDescription.cname(0x11223344, "ab@c")
BYE = Bye((0x11223344,), "bye!")


def test_parse_compound() -> None:
    assert parse_compound(COMPOUND) == [SR, SDES, BYE]
    assert SDES.cname_of(0x11223344) == "ab@c"
    assert SDES.cname_of(1) is None
    assert is_rtcp(COMPOUND)


def test_serialize_compound() -> None:
    assert serialize_compound([SR, SDES, BYE]) == COMPOUND
    assert serialize_compound((ReceiverReport(0x55667788, (BLOCK,)),)) == RR_BYTES


@pytest.mark.parametrize(
    "packet",
    [
        ReceiverReport(1),
        ReceiverReport(2, (BLOCK, BLOCK), b"\x01\x02\x03\x04"),
        SenderReport(3, 0, 0, 0, 0),
        SourceDescription(((1, ((1, b"x"), (2, b"name"))), (2, ()))),
        Bye(()),
        Bye((1, 2, 3)),
        Bye((1,), ""),
        UnknownRtcp(204, 1, b"\x00\x00\x00\x01NAME"),
    ],
)
def test_round_trip(packet: object) -> None:
    data = serialize_compound([packet])  # type: ignore[list-item]
    assert len(data) % 4 == 0
    assert parse_compound(data) == [packet]


def test_padding_is_accepted() -> None:
    padded = (
        bytes([0xA1])
        + RR_BYTES[1:3]
        + bytes([RR_BYTES[3] + 1])
        + RR_BYTES[4:]
        + b"\x00\x00\x00\x04"
    )
    assert parse_compound(padded) == [ReceiverReport(0x55667788, (BLOCK,))]


@pytest.mark.parametrize("data", [COMPOUND, RR_BYTES, SDES_BYTES, BYE_BYTES])
def test_every_truncation_raises_rtcp_error(data: bytes) -> None:
    for length in range(len(data)):
        try:
            parse_compound(data[:length])
        except RtcpError:
            continue
        # A cut exactly between packets is a valid, shorter compound packet.
        assert length in (len(SR_BYTES), len(SR_BYTES) + len(SDES_BYTES))


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("41c90001 00000001"),  # version 1
        bytes.fromhex("a1c90001 00000000"),  # padding 0
        bytes.fromhex("a0c90001 000000ff"),  # padding longer than the packet
        bytes.fromhex("82c90001 00000001"),  # two report blocks announced, none there
        bytes.fromhex("80c80001 00000001"),  # SR without sender info
        bytes.fromhex("80c90000"),  # RR without SSRC
        bytes.fromhex("81ca0001 00000001"),  # SDES chunk without END
        bytes.fromhex("81ca0002 00000001 0109aaaa"),  # SDES item past the end
        bytes.fromhex("82cb0001 00000001"),  # BYE with more sources than bytes
        bytes.fromhex("81cb0002 00000001 09626900"),  # BYE reason past the end
        bytes.fromhex("80c90001 00000001 00"),  # trailing garbage
        b"\xff" * 64,
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_compound(data)


def test_serialize_errors() -> None:
    with pytest.raises(RtcpError):
        serialize_compound([ReceiverReport(1, (BLOCK,) * 32)])
    with pytest.raises(RtcpError):
        serialize_compound([ReceiverReport(1 << 40)])
    with pytest.raises(RtcpError):
        ReportBlock(1, 256, 0, 0, 0, 0, 0).pack()
    with pytest.raises(RtcpError):
        ReportBlock(1, 0, 1 << 23, 0, 0, 0, 0).pack()
    with pytest.raises(RtcpError):
        ReportBlock(1, 0, 0, -1, 0, 0, 0).pack()
    with pytest.raises(RtcpError):
        serialize_compound([Bye((1,), "x" * 300)])
    with pytest.raises(RtcpError):
        serialize_compound([SourceDescription(((1, ((0, b"x"),)),))])
    with pytest.raises(RtcpError):
        serialize_compound([UnknownRtcp(204, 0, b"abc")])


def test_ntp_helpers() -> None:
    ntp = ntp_timestamp(0.5)  # Unix epoch + 0.5 s
    assert ntp >> 32 == 2_208_988_800
    assert ntp & 0xFFFFFFFF == 0x80000000
    assert compact_ntp(0x0123456789ABCDEF) == 0x456789AB


def test_report_block_arithmetic() -> None:
    block = report_block(
        7,
        extended_max=70_000,
        expected=1000,
        received=950,
        expected_prior=800,
        received_prior=790,
        jitter=12.7,
        last_sr_ntp=0x0000AAAA_BBBB0000,
        last_sr_at=10.0,
        now=10.25,
    )
    assert block == ReportBlock(7, 40 * 256 // 200, 50, 70_000, 12, 0xAAAABBBB, 16384)
    no_sr = report_block(
        7, extended_max=1, expected=0, received=0, expected_prior=0, received_prior=0, jitter=0.0
    )
    assert (no_sr.fraction_lost, no_sr.lsr, no_sr.dlsr) == (0, 0, 0)
    dup = report_block(
        7, extended_max=1, expected=10, received=12, expected_prior=0, received_prior=0, jitter=0.0
    )
    assert (dup.fraction_lost, dup.cumulative_lost) == (0, -2)
    assert parse_compound(serialize_compound([ReceiverReport(1, (dup,))])) == [
        ReceiverReport(1, (dup,))
    ]


def test_round_trip_time() -> None:
    # We sent an SR at NTP time T; the peer held it 0.25 s; its RR arrives at T + 0.4 s.
    sent = ntp_timestamp(1000.0)
    block = ReportBlock(1, 0, 0, 0, 0, compact_ntp(sent), int(0.25 * 65536))
    rtt = round_trip_time(block, ntp_timestamp(1000.4))
    assert rtt == pytest.approx(0.15, abs=1e-4)
    assert round_trip_time(ReportBlock(1, 0, 0, 0, 0, 0, 0), sent) is None
    assert round_trip_time(block, ntp_timestamp(1000.1)) == 0.0
