"""A small reader for classic libpcap files (enough for SIPp's RTP captures)."""

from __future__ import annotations

import struct
from pathlib import Path


def udp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of every IPv4/UDP packet in a pcap file, in order."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    offset = 24
    out: list[bytes] = []
    while offset + 16 <= len(data):
        _sec, _usec, incl, _orig = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        frame = data[offset : offset + incl]
        offset += incl
        if linktype == 1:  # Ethernet
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked capture
            ip = frame[16:]
        elif linktype in (101, 228):  # raw IPv4
            ip = frame
        else:
            raise ValueError(f"unsupported pcap link type {linktype}")
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        out.append(ip[ihl + 8 :])
    return out
