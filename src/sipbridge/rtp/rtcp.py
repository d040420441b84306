"""RTCP (RFC 3550 §6): sender and receiver reports, SDES, BYE, compound packets.

``parse_compound(data)`` turns a datagram into packets and ``serialize_compound`` does
the reverse; every malformed input raises :class:`RtcpError` and nothing else. Packet
types this module does not model (APP, RTPFB, ...) come back as :class:`UnknownRtcp` and
serialize unchanged.

Report arithmetic (§6.4.1, A.3) lives in :func:`report_block`; :func:`round_trip_time`
turns a report's LSR/DLSR into an RTT (§6.4.1, figure 2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "compact_ntp",
    "ntp_timestamp",
    "parse_compound",
    "report_block",
    "round_trip_time",
    "serialize_compound",
]

SR: Final = 200
RR: Final = 201
SDES: Final = 202
BYE: Final = 203
SDES_CNAME: Final = 1
_HEADER: Final = struct.Struct("!BBH")
_SR_INFO: Final = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_BLOCK: Final = struct.Struct("!IIIIII")
# RFC 3550 §4: NTP time counts seconds from 1900; Unix time from 1970.
NTP_UNIX_OFFSET: Final = 2_208_988_800


class RtcpError(ValueError):
    """The bytes are not well-formed RTCP, or a field does not fit its width."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block.

    ``fraction_lost`` is the 8-bit fixed-point fraction (lost / expected * 256) since the
    previous report; ``cumulative_lost`` is signed 24-bit (duplicates can make it
    negative); ``jitter`` is in RTP clock units; ``lsr`` the middle 32 bits of the last SR's
    NTP time and ``dlsr`` the delay since, in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def pack(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError("fraction lost out of range 0-255")
        if not -(1 << 23) <= self.cumulative_lost < 1 << 23:
            raise RtcpError("cumulative lost does not fit 24 bits")
        try:
            return _BLOCK.pack(
                self.ssrc,
                self.fraction_lost << 24 | (self.cumulative_lost & 0xFFFFFF),
                self.highest_sequence,
                self.jitter,
                self.lsr,
                self.dlsr,
            )
        except struct.error as exc:
            raise RtcpError(f"report block field out of range: {exc}") from None

    @classmethod
    def unpack(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 §6.4.1 SR: ``ntp_timestamp`` is the 64-bit NTP time (32.32 fixed point)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RFC 3550 §6.4.2 RR."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """RFC 3550 §6.5 SDES: per source, its items as ``(type, value)``."""

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...] = ()

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        """The one-item SDES every compound packet carries (§6.5.1)."""
        return cls(((ssrc, ((SDES_CNAME, cname.encode()),)),))

    def cname_of(self, ssrc: int) -> str | None:
        for source, items in self.chunks:
            if source == ssrc:
                for kind, value in items:
                    if kind == SDES_CNAME:
                        return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Bye:
    """RFC 3550 §6.6 BYE."""

    sources: tuple[int, ...]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """Any other packet type, kept as its count field and body."""

    packet_type: int
    count: int
    body: bytes = field(default=b"")


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > end:
        raise RtcpError("report blocks run past the packet")
    return tuple(ReportBlock.unpack(data, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtcpError("truncated SDES chunk")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items = []
        while True:
            if pos >= len(body):
                raise RtcpError("SDES chunk without an END item")
            kind = body[pos]
            if kind == 0:
                # §6.5: the END item, then padding to the next 32-bit boundary.
                pos = (pos + 4) & ~3
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("truncated SDES item")
            length = body[pos + 1]
            items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append((ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if 4 * count > len(body):
        raise RtcpError("BYE lists more sources than it holds")
    sources = struct.unpack_from(f"!{count}I", body)
    reason = None
    pos = 4 * count
    if pos < len(body):
        length = body[pos]
        if pos + 1 + length > len(body):
            raise RtcpError("truncated BYE reason")
        reason = body[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(sources), reason)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP datagram (§6.1); raises RtcpError."""
    packets: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RtcpError("datagram shorter than an RTCP header")
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtcpError("trailing bytes after the last RTCP packet")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("RTCP packet longer than the datagram")
        count = first & 0x1F
        if first & 0x20:
            # §6.4.1: the last octet counts the padding, itself included.
            padding = data[end - 1]
            if padding == 0 or end - padding < pos + 4:
                raise RtcpError(f"invalid RTCP padding {padding}")
            body_end = end - padding
        else:
            body_end = end
        body = data[pos + 4 : body_end]
        packets.append(_parse_one(data, pos, packet_type, count, body, body_end))
        pos = end
    return packets


def _parse_one(
    data: bytes, pos: int, packet_type: int, count: int, body: bytes, body_end: int
) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24:
            raise RtcpError("SR shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        start = pos + 4 + 24
        blocks = _blocks(data, start, count, body_end)
        ext = bytes(data[start + 24 * count : body_end])
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks, ext)
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpError("RR without an SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        start = pos + 8
        blocks = _blocks(data, start, count, body_end)
        return ReceiverReport(ssrc, blocks, bytes(data[start + 24 * count : body_end]))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    return UnknownRtcp(packet_type, count, bytes(body))


def _frame(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise RtcpError("more than 31 items in one RTCP packet")
    if len(body) % 4:
        raise RtcpError("RTCP packet body is not a multiple of 32 bits")
    words = len(body) // 4
    if words > 0xFFFF:
        raise RtcpError("RTCP packet too long")
    return _HEADER.pack(0x80 | count, packet_type, words) + body


def _serialize_one(packet: RtcpPacket) -> bytes:
    try:
        if isinstance(packet, SenderReport):
            body = _SR_INFO.pack(
                packet.ssrc,
                packet.ntp_timestamp,
                packet.rtp_timestamp,
                packet.packet_count,
                packet.octet_count,
            )
            blocks = b"".join(block.pack() for block in packet.reports)
            return _frame(SR, len(packet.reports), body + blocks + packet.extension)
        if isinstance(packet, ReceiverReport):
            blocks = b"".join(block.pack() for block in packet.reports)
            body = struct.pack("!I", packet.ssrc) + blocks + packet.extension
            return _frame(RR, len(packet.reports), body)
        if isinstance(packet, SourceDescription):
            parts = []
            for ssrc, items in packet.chunks:
                chunk = bytearray(struct.pack("!I", ssrc))
                for kind, value in items:
                    if not 1 <= kind <= 255 or len(value) > 255:
                        raise RtcpError("SDES item type or length out of range")
                    chunk += bytes((kind, len(value))) + value
                chunk += b"\x00"  # END, then pad to 32 bits (§6.5)
                chunk += bytes(-len(chunk) % 4)
                parts.append(bytes(chunk))
            return _frame(SDES, len(packet.chunks), b"".join(parts))
        if isinstance(packet, Bye):
            body = struct.pack(f"!{len(packet.sources)}I", *packet.sources)
            if packet.reason is not None:
                reason = packet.reason.encode()
                if len(reason) > 255:
                    raise RtcpError("BYE reason longer than 255 octets")
                text = bytes((len(reason),)) + reason
                body += text + bytes(-len(text) % 4)
            return _frame(BYE, len(packet.sources), body)
        return _frame(packet.packet_type, packet.count, packet.body)
    except struct.error as exc:
        raise RtcpError(f"RTCP field out of range: {exc}") from None


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """The datagram for ``packets`` (§6.1: start with an SR or RR, include SDES CNAME —
    the caller's choice of packets, not checked here)."""
    return b"".join(_serialize_one(packet) for packet in packets)


# -- report arithmetic ----------------------------------------------------------------


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP time (32.32) for a Unix time (RFC 3550 §4)."""
    value = int((unix_seconds + NTP_UNIX_OFFSET) * (1 << 32))
    return value & 0xFFFFFFFFFFFFFFFF


def compact_ntp(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP time: the LSR field's unit (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def report_block(
    ssrc: int,
    *,
    extended_max: int,
    expected: int,
    received: int,
    expected_prior: int,
    received_prior: int,
    jitter: float,
    last_sr_ntp: int | None = None,
    last_sr_at: float | None = None,
    now: float = 0.0,
) -> ReportBlock:
    """A report block from receiver counts (RFC 3550 A.3).

    ``expected``/``received`` are totals since the stream began, ``*_prior`` their values
    at the previous report; ``jitter`` in RTP clock units; ``last_sr_ntp`` the NTP time of
    the last SR received from ``ssrc`` and ``last_sr_at`` when it arrived (seconds, the
    same clock as ``now``).
    """
    lost = expected - received
    # A.3: clamp to the 24-bit signed field.
    lost = max(-(1 << 23), min(lost, (1 << 23) - 1))
    expected_interval = expected - expected_prior
    lost_interval = expected_interval - (received - received_prior)
    if expected_interval == 0 or lost_interval <= 0:
        fraction = 0
    else:
        fraction = min(255, (lost_interval << 8) // expected_interval)
    if last_sr_ntp is None or last_sr_at is None:
        lsr = dlsr = 0  # §6.4.1: zero when no SR has been received
    else:
        lsr = compact_ntp(last_sr_ntp)
        dlsr = max(0, min(0xFFFFFFFF, int((now - last_sr_at) * 65536)))
    return ReportBlock(
        ssrc=ssrc,
        fraction_lost=fraction,
        cumulative_lost=lost,
        highest_sequence=extended_max & 0xFFFFFFFF,
        jitter=min(int(jitter), 0xFFFFFFFF),
        lsr=lsr,
        dlsr=dlsr,
    )


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about our stream, received at NTP time
    ``arrival_ntp`` (§6.4.1: A - LSR - DLSR, in 1/65536 s); None when the peer has not
    seen an SR of ours yet."""
    if block.lsr == 0:
        return None
    rtt = (compact_ntp(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt > 0x80000000:  # negative: clocks or a bogus report
        return 0.0
    return rtt / 65536
