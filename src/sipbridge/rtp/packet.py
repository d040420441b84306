"""RTP packets (RFC 3550 §5.1): a dataclass for tests and tooling, and a flat header parser
for the media hot path."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["RtpError", "RtpPacket", "is_rtcp", "parse_rtp_header"]

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12

# RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
_HEADER: Final = struct.Struct("!BBHII")
_EXTENSION_HEADER: Final = struct.Struct("!HH")


class RtpError(ValueError):
    """The bytes are not a well-formed RTP packet."""


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on a shared RTP/RTCP port is RTCP.

    RFC 5761 §4: RTCP packet types 192-223 occupy the second octet where RTP has the marker
    bit and payload type, and RTP payload types 64-95 are avoided so the ranges never meet.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp_header(data: bytes) -> tuple[int, int, int, int, bool, int, int]:
    """Parse the header of one RTP packet without copying the payload.

    Returns ``(payload_type, sequence, timestamp, ssrc, marker, payload_start,
    payload_end)``; the payload is ``data[payload_start:payload_end]``, after the CSRC list
    and header extension and before any padding. Raises RtpError when the version is not 2
    or the packet is shorter than its header says.
    """
    if len(data) < HEADER_SIZE:
        raise RtpError(f"packet of {len(data)} bytes is shorter than the RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    start = HEADER_SIZE + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:
        # RFC 3550 §5.3.1: 16-bit profile field, then the length in 32-bit words not
        # counting this 4-byte header.
        if start + 4 > end:
            raise RtpError("truncated RTP header extension")
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if start > end:
        raise RtpError("RTP header is longer than the packet")
    if first & 0x20:
        # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
        padding = data[end - 1]
        if padding == 0 or end - padding < start:
            raise RtpError(f"invalid RTP padding length {padding}")
        end -= padding
    return second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), start, end


@dataclass
class RtpPacket:
    """One RTP packet. ``extension`` is ``(profile, data)`` with ``len(data)`` a multiple
    of 4 (RFC 3550 §5.3.1); ``padding`` is the number of padding octets, count included."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    payload: bytes = b""
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a whole packet; raises RtpError."""
        payload_type, sequence, timestamp, ssrc, marker, start, end = parse_rtp_header(data)
        count = data[0] & 0x0F
        csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE)
        extension = None
        if data[0] & 0x10:
            offset = HEADER_SIZE + 4 * count
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            extension = (profile, bytes(data[offset + 4 : offset + 4 + 4 * words]))
        return cls(
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            marker=marker,
            payload=bytes(data[start:end]),
            csrc=tuple(csrc),
            extension=extension,
            padding=len(data) - end,
        )

    def serialize(self) -> bytes:
        """The packet on the wire; raises RtpError when a field is out of range."""
        if not 0 <= self.payload_type <= 0x7F:
            raise RtpError(f"payload type {self.payload_type} out of range 0-127")
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRC identifiers fit in an RTP header")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} out of range 0-255")
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        try:
            parts = [
                _HEADER.pack(
                    first,
                    (0x80 if self.marker else 0) | self.payload_type,
                    self.sequence,
                    self.timestamp,
                    self.ssrc,
                ),
                struct.pack(f"!{len(self.csrc)}I", *self.csrc),
            ]
            if self.extension is not None:
                profile, ext = self.extension
                if len(ext) % 4:
                    raise RtpError("RTP header extension length must be a multiple of 4")
                parts.append(_EXTENSION_HEADER.pack(profile, len(ext) // 4))
                parts.append(ext)
        except struct.error as exc:
            raise RtpError(f"RTP header field out of range: {exc}") from None
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)
