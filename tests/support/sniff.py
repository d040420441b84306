"""Capture UDP packets on the loopback interface (needs root: AF_PACKET).

Used to see exactly which RTP bytes sipbridge sends to a real SIP peer such as
SIPp, which has no way to record what it receives.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats: packets seen, packets dropped (linux/if_packet.h)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RECEIVE_BUFFER = 8 << 20  # all loopback traffic passes through: room for a busy machine


@dataclass
class UdpPacket:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    at: float


@dataclass
class LoopbackSniffer:
    """Records every IPv4/UDP packet on ``lo`` whose source port is in ``src_ports``.

    ``dropped`` counts the frames the kernel had to drop because the reader fell behind
    (set by :meth:`stop`): when it is not zero, gaps in what was recorded prove nothing.
    """

    src_ports: range
    packets: list[UdpPacket] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    dropped: int = 0

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        sock.bind(("lo", 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        draining = False
        while True:
            if not draining and self._stop.is_set():
                # Read what is still queued (the reader may lag on a busy machine), then end.
                self._sock.setblocking(False)
                draining = True
            try:
                frame, meta = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:  # BlockingIOError: drained; or the socket was closed
                return
            if meta[2] == PACKET_OUTGOING:  # each loopback packet is seen twice
                continue
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            if ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", ip, ihl)
            if sport not in self.src_ports:
                continue
            src = (socket.inet_ntoa(ip[12:16]), sport)
            dst = (socket.inet_ntoa(ip[16:20]), dport)
            self.packets.append(UdpPacket(src, dst, bytes(ip[ihl + 8 :]), time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.dropped = struct.unpack("II", stats)[1]
            self._sock.close()
