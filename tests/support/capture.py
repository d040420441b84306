"""Capture one direction of UDP on the loopback interface with kernel timestamps (needs root).

Unlike :class:`tests.support.sniff.LoopbackSniffer`, the kernel filters the packets (a
classic BPF program: IPv4/UDP, a source port range, one destination address) and stamps
each one as it passes the device (``SO_TIMESTAMPNS``, CLOCK_REALTIME). So a flood of other
traffic on ``lo`` never reaches this process, and the times measure when the packet was
sent, not when a busy Python thread got around to reading it: gaps between our RTP
packets are the server's own pacing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26  # asm-generic/socket.h
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 4 << 20

# Classic BPF opcodes (linux/filter.h).
_LDH_ABS, _LDB_ABS, _LDW_ABS = 0x28, 0x30, 0x20
_LDXB_MSH, _LDH_IND = 0xB1, 0x48
_JEQ, _JGT, _JGE, _JSET = 0x15, 0x25, 0x35, 0x45
_RET = 0x06


def udp_filter(src_ports: range, dst_host: str) -> list[tuple[int, int, int, int]]:
    """BPF accepting Ethernet/IPv4/UDP frames (first fragments) from a port in
    ``src_ports`` to ``dst_host``. Offsets: Ethernet header 14 bytes (``lo`` is
    ARPHRD_LOOPBACK with an Ethernet-style header)."""
    low, high = src_ports.start, src_ports.stop - 1
    dst = int(ipaddress.IPv4Address(dst_host))
    # Jump offsets count from the next instruction; 13 is "drop".
    return [
        (_LDH_ABS, 0, 0, 12),  # 0 ethertype
        (_JEQ, 0, 11, 0x0800),  # 1 IPv4, else drop
        (_LDB_ABS, 0, 0, 23),  # 2 IP protocol
        (_JEQ, 0, 9, 17),  # 3 UDP, else drop
        (_LDW_ABS, 0, 0, 30),  # 4 destination address
        (_JEQ, 0, 7, dst),  # 5
        (_LDH_ABS, 0, 0, 20),  # 6 flags and fragment offset
        (_JSET, 5, 0, 0x1FFF),  # 7 a later fragment: drop
        (_LDXB_MSH, 0, 0, 14),  # 8 X = IP header length
        (_LDH_IND, 0, 0, 14),  # 9 UDP source port
        (_JGE, 0, 2, low),  # 10
        (_JGT, 1, 0, high),  # 11
        (_RET, 0, 0, 0xFFFF),  # 12 accept
        (_RET, 0, 0, 0),  # 13 drop
    ]


@dataclass
class Stamped:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    at: float  # kernel time (CLOCK_REALTIME, seconds) when it passed ``lo``


@dataclass
class UdpCapture:
    """Records the UDP packets on ``lo`` from ``src_ports`` to ``dst_host``; ``dropped``
    (set by :meth:`stop`) counts frames the kernel dropped because the reader fell behind."""

    src_ports: range
    dst_host: str
    packets: list[Stamped] = field(default_factory=list)
    dropped: int = 0
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _program: ctypes.Array[ctypes.c_char] | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        code = udp_filter(self.src_ports, self.dst_host)
        program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
        self._program = program  # must outlive the setsockopt call
        fprog = struct.pack("HL", len(code), ctypes.addressof(program))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        sock.bind(("lo", 0))
        # Frames queued between socket() and the filter may be anything: read them away.
        sock.setblocking(False)
        try:
            while True:
                sock.recv(65535)
        except BlockingIOError:
            pass
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        draining = False
        while True:
            if not draining and self._stop.is_set():
                self._sock.setblocking(False)
                draining = True
            try:
                frame, ancillary, _flags, address = self._sock.recvmsg(65535, 64)
            except TimeoutError:
                continue
            except OSError:  # drained, or closed
                return
            if address[2] == PACKET_OUTGOING:  # each loopback packet is seen twice
                continue
            at = None
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", data[:16])
                    at = seconds + nanoseconds / 1e9
            if at is None or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", ip, ihl)
            self.packets.append(
                Stamped(
                    (socket.inet_ntoa(ip[12:16]), sport),
                    (socket.inet_ntoa(ip[16:20]), dport),
                    bytes(ip[ihl + 8 :]),
                    at,
                )
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.dropped = struct.unpack("II", stats)[1]
            self._sock.close()
