"""A small reader and writer for classic libpcap files (enough for SIPp's RTP captures)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
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


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(
    path: Path,
    packets: Sequence[bytes],
    src: tuple[str, int],
    dst: tuple[str, int],
    ptime: int = 20,
) -> None:
    """Write ``packets`` (whole RTP packets) as a classic little-endian libpcap file of
    Ethernet/IPv4/UDP frames from ``src`` to ``dst``, one every ``ptime`` milliseconds.

    SIPp's ``play_pcap_audio`` replays the UDP payloads with the capture's timing (and its
    own addresses), so the RTP header and payload bytes are what the peer receives.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
    src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    ethernet = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    for index, rtp in enumerate(packets):
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(rtp), 0) + rtp  # checksum 0: none
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0, src_ip, dst_ip
        )
        ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
        frame = ethernet + ip + udp
        micros = index * ptime * 1000
        out += struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
