"""How many concurrent calls one ``sipbridge serve`` carries, and what each one costs.

Run (as root, for the kernel-timestamped capture of our RTP):

    .venv/bin/python bench/bench_capacity.py --calls 100 --rate 20 --hold 30
    .venv/bin/python bench/bench_capacity.py --calls 300 --rate 50 --hold 30 --json out.json
    .venv/bin/python bench/bench_capacity.py --calls 100 --rate 20 --hold 30 --record

``--record`` records every call (the agent's ``record`` on; the WAV files go to the run's
temporary directory): run it once with and once without it, on an otherwise idle machine,
and compare ``server_cpu_percent_per_call`` (what recording costs; docs/performance.md).

Four processes, all on 127.0.0.1:

- the server: ``python -m sipbridge serve`` (uvloop), PCMU only, its own SQLite file;
- the agent: a light echo agent in its own process (the ``websockets`` sans-I/O protocol
  under a uvloop ``asyncio.Protocol``; each binary frame is sent straight back), so what
  is measured is the bridge, not the agent;
- the loader: SIPp (C++) placing ``--calls`` calls at ``--rate`` calls/s, each streaming a
  μ-law file at real-time pace with SIPp's ``rtp_stream`` for ``--hold`` seconds;
- a probe call placed from this process once the load is up: it sends tagged 20 ms RTP
  packets and times each one's echo back (the bridge both ways plus the agent).

A thread of this process captures every RTP packet the server sends on ``lo`` with kernel
timestamps (AF_PACKET, a BPF filter on the server's RTP port range), so the gaps between
our packets are the server's own pacing, not this process's reading.

Figures (also as JSON with ``--json``): calls answered/failed (SIPp), the server's setup
time (its ``sipbridge_call_setup_seconds`` histogram: INVITE in → 200 OK out), packets per
second per call and the inter-packet gap p50/p99/max of our streams during the steady
state, the caller → server direction's loss (the server's own counters), the server's CPU
per call (process CPU time ÷ call-seconds in the steady state, 100 % = one core), RSS per
call, the probe's echo round trip, and the media clock's lag. The run stops by itself:
SIPp places a bounded number of calls, every call hangs up after ``--hold`` seconds, and
everything is killed after a hard deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import math
import multiprocessing as mp
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.capture import (  # noqa: E402 - the repository root is put on the path first
    ETH_P_ALL,
    PACKET_OUTGOING,
    SCM_TIMESTAMPNS,
    SO_ATTACH_FILTER,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
    udp_filter,
)

NUMBER = "+12025550101"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROBE_MAGIC = 0x22  # first μ-law code of a probe packet (never 0x7F: exact through PCM16)

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="sipbridge capacity">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15005550006@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:load@[local_ip]:[local_port]>
      Max-Forwards: 70
      X-Bench-Echo: 1
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [{media_port}] RTP/AVP {pt}
      a=rtpmap:{pt} {rtpmap}

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15005550006@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec {play}/></action></nop>
  <pause milliseconds="{hold_ms}"/>
{stop}
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15005550006@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


# ------------------------------------------------------------------------------ agent


def agent_main(conn: Any) -> None:
    """The echo agent's process: every binary frame goes straight back."""
    import uvloop
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    class Echo(asyncio.Protocol):
        def __init__(self) -> None:
            self.ws = ServerProtocol(max_size=2**24)
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Frame):
                    if event.opcode is Opcode.BINARY and ws.state is State.OPEN:
                        ws.send_binary(event.data)
                elif isinstance(event, Request):
                    ws.send_response(ws.accept(event))
            transport = self.transport
            if transport is not None:
                for chunk in ws.data_to_send():
                    if chunk:
                        transport.write(chunk)
                    else:
                        transport.close()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        for _ in range(36000):  # until the parent says stop, at most an hour
            if conn.poll():
                break
            await asyncio.sleep(0.1)
        server.close()

    uvloop.run(serve())


# ---------------------------------------------------------------------------- capture


class RtpCapture:
    """Our RTP on ``lo`` (source port in the server's range), kernel-timestamped; keeps
    (source port: one per call, sequence number, time) only."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.packets: list[tuple[int, int, float]] = []
        self.dropped = 0
        self._stop = threading.Event()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        code = udp_filter(ports, "127.0.0.1")
        self._program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
        fprog = struct.pack("HL", len(code), ctypes.addressof(self._program))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        sock.bind(("lo", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(65535)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        append = self.packets.append
        unpack_ts = struct.Struct("qq").unpack_from
        while not self._stop.is_set():
            try:
                frame, ancillary, _flags, address = sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue
            at = 0.0
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    seconds, nanoseconds = unpack_ts(data)
                    at = seconds + nanoseconds / 1e9
            ihl = (frame[14] & 0x0F) * 4
            udp = 14 + ihl
            sport = (frame[udp] << 8) | frame[udp + 1]
            seq = (frame[udp + 10] << 8) | frame[udp + 11]
            append((sport, seq, at))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        stats = self._sock.getsockopt(263, 6, 8)  # SOL_PACKET, PACKET_STATISTICS
        self.dropped = struct.unpack("II", stats)[1]
        self._sock.close()


# ------------------------------------------------------------------------------ probe


class Probe:
    """One call placed from here: tagged RTP every 20 ms, each echo timed on return."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.round_trips: list[float] = []
        self.setup_s: float | None = None
        self._to_tag = ""

    def _headers(self, method: str, cseq: int, branch: str) -> str:
        port = self.sip.getsockname()[1]
        to_tag = f";tag={self._to_tag}" if self._to_tag else ""
        return (
            f"{method} sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
            "From: <sip:+15005550007@127.0.0.1>;tag=probe\r\n"
            f"To: <sip:{NUMBER}@127.0.0.1>{to_tag}\r\n"
            f"Call-ID: capacity-probe\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:probe@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nX-Bench-Echo: 1\r\n"
        )

    def call(self) -> tuple[str, int]:
        rtp_port = self.rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\n"
        )
        invite = (
            self._headers("INVITE", 1, "z9hG4bK-probe-1")
            + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        started = time.monotonic()
        self.sip.sendto(invite.encode(), self.target)
        self.sip.settimeout(10)
        while True:
            data = self.sip.recv(65535).decode(errors="replace")
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                break
        if status != 200:
            raise RuntimeError(f"probe call refused: {status}")
        self.setup_s = time.monotonic() - started
        self._to_tag = re.search(r"^To:.*;tag=([^;\r\n]+)", data, re.M | re.I).group(1)  # type: ignore[union-attr]
        sdp_port = int(re.search(r"^m=audio (\d+)", data, re.M).group(1))  # type: ignore[union-attr]
        ack = self._headers("ACK", 1, "z9hG4bK-probe-ack") + "Content-Length: 0\r\n\r\n"
        self.sip.sendto(ack.encode(), self.target)
        return ("127.0.0.1", sdp_port)

    def stream(self, remote: tuple[str, int], seconds: float) -> None:
        header = struct.Struct("!BBHII")
        filler = bytes(0x20 + (i % 0x40) for i in range(156))
        sent: dict[int, float] = {}
        start = time.monotonic()
        frames = int(seconds * 50)
        for seq in range(frames):
            due = start + seq * 0.02
            while True:
                now = time.monotonic()
                if now >= due:
                    break
                if select.select([self.rtp], [], [], due - now)[0]:
                    self._read(sent)
            tag = bytes((PROBE_MAGIC, (seq // 120) % 120, seq % 120, 0x21))
            sent[seq] = time.monotonic()
            self.rtp.sendto(header.pack(0x80, 0, seq, seq * 160, 0xBEEF) + tag + filler, remote)
            self._read(sent)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            if select.select([self.rtp], [], [], 0.05)[0]:
                self._read(sent)

    def _read(self, sent: dict[int, float]) -> None:
        for _ in range(64):
            try:
                data = self.rtp.recv(2048)
            except BlockingIOError:
                return
            now = time.monotonic()
            payload = data[12:]
            if payload[:1] == bytes((PROBE_MAGIC,)) and payload[3] == 0x21:
                seq = payload[1] * 120 + payload[2]
                # the tag wraps every 14,400 frames: take the latest send of that tag
                if seq in sent:
                    self.round_trips.append((now - sent[seq]) * 1000)

    def hang_up(self) -> None:
        bye = self._headers("BYE", 2, "z9hG4bK-probe-bye") + "Content-Length: 0\r\n\r\n"
        self.sip.sendto(bye.encode(), self.target)
        with contextlib.suppress(OSError):
            self.sip.settimeout(2)
            self.sip.recv(65535)
        self.sip.close()
        self.rtp.close()


# ------------------------------------------------------------------------------- main


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def run_queue_seconds(pid: int) -> float:
    """Time the process spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of a Prometheus histogram."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        match = re.match(rf'{name}_bucket\{{le="([^"]+)"\}} (\S+)', line)
        if match:
            buckets.append((float(match.group(1)), float(match.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


def sipbridge(db: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "sipbridge", *args, "--db", db],
        check=True,
        capture_output=True,
        timeout=60,
    )


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            metrics(port)
            return
        time.sleep(0.2)
    raise RuntimeError("sipbridge serve did not start")


def speech_like_pcm(rate: int, seconds: float) -> bytes:
    """PCM16 of harmonics plus noise (not silence: the codec and concealment paths do
    real work)."""
    import numpy as np

    rng = np.random.default_rng(1)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 6)) * 4000
    signal = signal * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t)) + rng.normal(0, 300, t.size)
    return bytes(np.clip(signal, -32768, 32767).astype("<i2").tobytes())


# The caller's codec: (payload type, rtpmap, SDP name for --codecs, PCM rate encoded from).
CALLER_CODECS = {
    "pcmu": (0, "PCMU/8000", 8000),
    "pcma": (8, "PCMA/8000", 8000),
    "g722": (9, "G722/8000", 16000),  # RTP clock 8000 (RFC 3551 §4.5.2), audio 16 kHz
    "opus": (111, "opus/48000/2", 16000),
}


def caller_media(codec: str, work: Path, seconds: float) -> tuple[str, str, str]:
    """What SIPp's scenario plays for ``codec``: (SDP port keyword, play action, stop).

    G.711 and G.722 are raw 20 ms payload files looped by ``rtp_stream`` (SIPp sends
    160 octets per packet at 50 packets/s for payload types 0, 8 and 9). Opus has no
    fixed frame size, so it is a pcap of RTP packets (our own encoder, 20 ms frames)
    that ``play_pcap_audio`` replays at the captured pace for the whole call."""
    from sipbridge.codecs import get_codec

    pt, _rtpmap, rate = CALLER_CODECS[codec]
    if codec != "opus":
        audio = work / f"speech.{codec}"
        pcm = speech_like_pcm(rate, 10)
        audio.write_bytes(get_codec(codec).encoder(rate).encode(pcm))
        return (
            "rtpstream_audio_port",
            f'rtp_stream="{audio},-1,{pt}"',
            '  <nop><action><exec rtp_stream="pause"/></action></nop>',
        )
    encoder = get_codec("opus").encoder(rate)
    pcm = speech_like_pcm(rate, seconds + 2)
    frame = rate // 50 * 2
    pcap = work / "speech-opus.pcap"
    with pcap.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for index in range(len(pcm) // frame):
            payload = encoder.encode(pcm[index * frame : (index + 1) * frame])
            rtp = struct.pack("!BBHII", 0x80, pt, index & 0xFFFF, index * 960, 0x5EED) + payload
            udp = struct.pack("!HHHH", 40000, 40000, 8 + len(rtp), 0) + rtp
            ip = (
                struct.pack(
                    "!BBHHHBBH4s4s",
                    0x45,
                    0,
                    20 + len(udp),
                    0,
                    0,
                    64,
                    17,
                    0,
                    bytes([127, 0, 0, 1]),
                    bytes([127, 0, 0, 1]),
                )
                + udp
            )
            packet = bytes(12) + b"\x08\x00" + ip
            micros = index * 20_000
            out.write(
                struct.pack(
                    "<IIII", micros // 1_000_000, micros % 1_000_000, len(packet), len(packet)
                )
            )
            out.write(packet)
    return ("media_port", f'play_pcap_audio="{pcap}"', "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls (SIPp)")
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each call lasts")
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--agent-rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument(
        "--codec", default="pcmu", choices=sorted(CALLER_CODECS), help="the SIPp callers' codec"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra option for sipbridge serve (repeat), e.g. --server-arg=--overload-cpu=0.95",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy collapsed stacks of the server's steady state"
    )
    parser.add_argument(
        "--record", action="store_true", help="record every call (WAV files, runtime/recordings.py)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed: apt-get install -y sip-tester")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the RTP capture uses AF_PACKET")

    work = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    db = f"sqlite:///{work / 'calls.db'}"
    media_port, play, stop_play = caller_media(args.codec, work, args.hold)
    ctx = mp.get_context("spawn")
    pipe, child = ctx.Pipe()
    agent = ctx.Process(target=agent_main, args=(child,), daemon=True)
    agent.start()
    if not pipe.poll(30):
        raise SystemExit("the agent process did not start")
    agent_port = pipe.recv()
    sipbridge(
        db,
        "agent",
        "add",
        "bench",
        "--url",
        f"ws://127.0.0.1:{agent_port}/",
        "--sample-rate",
        str(args.agent_rate),
        "--record" if args.record else "--no-record",
    )
    sipbridge(db, "number", "add", NUMBER, "--agent", "bench")
    recordings = work / "recordings"
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    low = random.randrange(20000, 40000, 2)
    high = low + 4 * args.calls + 200
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipbridge",
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(sip_port),
            "--rtp-ports",
            f"{low}-{high}",
            "--http-port",
            str(http_port),
            "--db",
            db,
            "--codecs",
            ",".join(dict.fromkeys((args.codec, "pcmu"))),  # the probe call offers PCMU
            "--media-timeout",
            "300",
            "--max-calls",
            str(args.calls + 10),
            "--flood-rate",
            "100000",
            "--flood-burst",
            "100000",
            "--recordings-dir",
            str(recordings),
            *args.server_arg,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    figures: dict[str, Any] = {
        "calls": args.calls,
        "rate": args.rate,
        "hold_s": args.hold,
        "codec": args.codec,
        "agent_rate": args.agent_rate,
        "record": args.record,
    }
    sipp_proc: subprocess.Popen[bytes] | None = None
    capture: RtpCapture | None = None
    try:
        wait_for_http(http_port, 30)
        time.sleep(1.0)
        rss_idle = proc_rss_mb(server.pid)
        scenario = work / "capacity.xml"
        pt, rtpmap, _rate = CALLER_CODECS[args.codec]
        scenario.write_text(
            SCENARIO.format(
                media_port=media_port,
                pt=pt,
                rtpmap=rtpmap,
                play=play,
                stop=stop_play,
                hold_ms=int(args.hold * 1000),
            )
        )
        capture = RtpCapture(range(low, high + 1))
        ramp = args.calls / args.rate
        sipp_log = open(work / "sipp.log", "wb")  # noqa: SIM115 - closed by the process end
        sipp_proc = subprocess.Popen(
            [
                sipp,
                f"127.0.0.1:{sip_port}",
                "-sf",
                str(scenario),
                "-s",
                NUMBER,
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-mp",
                str(high + 10),  # rtp_stream takes its ports upward from here
                "-m",
                str(args.calls),
                "-l",
                str(args.calls),
                "-r",
                str(args.rate),
                "-rtp_threadtasks",
                "64",
                "-nostdin",
                "-trace_err",
                "-error_file",
                str(work / "sipp_errors.log"),
                "-timeout",
                str(int(ramp + args.hold + 60)),
            ],
            stdout=sipp_log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        time.sleep(ramp + 2.0)  # every call is up
        steady_start = time.time()
        cpu0 = proc_cpu_seconds(server.pid)
        split0 = proc_cpu_split(server.pid)
        mono0 = time.monotonic()
        before = metrics(http_port)
        others0 = {
            name: proc_cpu_seconds(pid)
            for name, pid in (("agent", agent.pid or 0), ("sipp", sipp_proc.pid))
        }
        wait0 = run_queue_seconds(server.pid)
        profiler = None
        if args.profile is not None:
            profiler = subprocess.Popen(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(max(1.0, min(args.probe_seconds, args.hold - 4.0)))),
                    "--rate",
                    "250",
                    "--nonblocking",  # never pause the server: sampling must not be the load
                    "--format",
                    "raw",
                    "--output",
                    str(args.profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        probe = Probe(("127.0.0.1", sip_port))
        window = max(1.0, min(args.probe_seconds, args.hold - 4.0))
        try:
            remote = probe.call()
        except RuntimeError as exc:  # refused (503 when overloaded): measure without it
            figures["probe_refused"] = str(exc)
            time.sleep(window)
        else:
            probe.stream(remote, window)
            probe.hang_up()
        cpu1 = proc_cpu_seconds(server.pid)
        split1 = proc_cpu_split(server.pid)
        mono1 = time.monotonic()
        figures["server_cpu_user_percent"] = round(
            100 * (split1[0] - split0[0]) / (mono1 - mono0), 1
        )
        figures["server_cpu_system_percent"] = round(
            100 * (split1[1] - split0[1]) / (mono1 - mono0), 1
        )
        for name, pid in (("agent", agent.pid or 0), ("sipp", sipp_proc.pid)):
            share = (proc_cpu_seconds(pid) - others0[name]) / (mono1 - mono0)
            figures[f"{name}_cpu_percent_of_a_core"] = round(100 * share, 1)
        figures["server_waiting_for_a_cpu_percent"] = round(
            100 * (run_queue_seconds(server.pid) - wait0) / (mono1 - mono0), 1
        )
        if profiler is not None:
            profiler.wait(60)
        steady_end = time.time()
        rss = proc_rss_mb(server.pid)
        after = metrics(http_port)
        sipp_proc.wait(timeout=args.hold + ramp + 90)
        time.sleep(1.0)
        capture.stop()
        final = metrics(http_port)

        # the calls up during the steady window, read from the server (calls refused
        # with 503 cost next to nothing and must not dilute the figure), plus the probe
        # (up for the whole window, but neither before nor after it)
        up = int(
            min(
                metric_value(before, "sipbridge_active_calls"),
                metric_value(after, "sipbridge_active_calls"),
            )
        ) + (0 if "probe_refused" in figures else 1)
        figures["calls_up_steady"] = up
        cpu_share = (cpu1 - cpu0) / (mono1 - mono0)
        figures["server_cpu_percent_of_a_core"] = round(100 * cpu_share, 1)
        figures["server_cpu_percent_per_call"] = round(100 * cpu_share / up, 3) if up else None
        figures["rss_mb_idle"] = round(rss_idle, 1)
        figures["rss_mb_per_call"] = round((rss - rss_idle) / up, 3) if up else None
        answered = metric_value(final, 'sipbridge_calls_total{reason="caller_hangup"')
        figures["answered"] = int(answered)
        figures["not_answered"] = args.calls + 1 - int(answered)  # refused (503) or failed
        figures["setup_p50_ms"] = _ms(
            histogram_quantile(final, "sipbridge_call_setup_seconds", 0.5)
        )
        figures["setup_p99_ms"] = _ms(
            histogram_quantile(final, "sipbridge_call_setup_seconds", 0.99)
        )
        packets_in = metric_value(final, 'sipbridge_rtp_packets_total{direction="in"}')
        lost = metric_value(final, "sipbridge_rtp_packets_lost_total")
        figures["caller_to_server_lost_percent"] = (
            round(100 * lost / (packets_in + lost), 3) if packets_in else None
        )
        figures["overload_refusals"] = int(metric_value(final, "sipbridge_overload_refusals_total"))
        figures["frames_skipped"] = int(metric_value(final, "sipbridge_media_frames_skipped_total"))
        files = list(recordings.rglob("*.wav"))
        figures["recordings"] = len(files)
        figures["recordings_mb"] = round(sum(f.stat().st_size for f in files) / 1e6, 1)
        figures["recording_dropped_s"] = metric_value(
            final, "sipbridge_recording_dropped_seconds_total"
        )
        lag_p99 = histogram_quantile(after, "sipbridge_media_clock_lag_seconds", 0.99)
        figures["clock_lag_p99_ms_upper_bound"] = _ms(lag_p99)
        pattern = r'sipbridge_media_clock_lag_seconds_bucket\{le="([^"]+)"\} (\S+)'
        first = dict(re.findall(pattern, before))
        figures["clock_lag_histogram_steady"] = {
            le: int(float(count) - float(first.get(le, 0)))
            for le, count in re.findall(pattern, after)
        }
        # our streams in the steady state, one per RTP port of ours
        streams: dict[int, list[tuple[int, float]]] = {}
        for sport, seq, at in capture.packets:
            if steady_start <= at <= steady_end:
                streams.setdefault(sport, []).append((seq, at))
        gaps: list[float] = []
        rates: list[float] = []
        seq_missing = 0
        for packets in streams.values():
            if len(packets) < 10:
                continue
            packets.sort(key=lambda p: p[1])
            span = packets[-1][1] - packets[0][1]
            rates.append((len(packets) - 1) / span if span > 0 else 0.0)
            for (s0, t0), (s1, t1) in itertools.pairwise(packets):
                gaps.append((t1 - t0) * 1000)
                seq_missing += max(0, ((s1 - s0) & 0xFFFF) - 1)
        figures["streams_captured"] = len(rates)
        figures["capture_dropped"] = capture.dropped
        figures["packets_per_second_per_call_min"] = round(min(rates), 2) if rates else None
        figures["packets_per_second_per_call_mean"] = (
            round(sum(rates) / len(rates), 2) if rates else None
        )
        figures["sequence_gaps_in_our_streams"] = seq_missing
        figures["gap_p50_ms"] = _round(percentile(gaps, 50))
        figures["gap_p99_ms"] = _round(percentile(gaps, 99))
        figures["gap_max_ms"] = _round(max(gaps) if gaps else None)
        figures["probe_setup_ms"] = _ms(probe.setup_s)
        figures["probe_echo_round_trip_p50_ms"] = _round(percentile(probe.round_trips, 50))
        figures["probe_echo_round_trip_p99_ms"] = _round(percentile(probe.round_trips, 99))
        figures["probe_echoes"] = len(probe.round_trips)
        figures["probe_round_trip_first_10_ms"] = [round(v, 1) for v in probe.round_trips[:10]]
        figures["probe_round_trip_last_10_ms"] = [round(v, 1) for v in probe.round_trips[-10:]]
        figures["probe_frames_sent"] = int(window * 50)
    finally:
        if sipp_proc is not None and sipp_proc.poll() is None:
            sipp_proc.kill()
        if capture is not None and not capture._stop.is_set():
            capture.stop()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        pipe.send("stop")
        agent.join(5)
        if agent.is_alive():
            agent.terminate()
        log.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for key, value in figures.items():
        print(f"{key:>40}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    main()
