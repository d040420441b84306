"""End-to-end latency of the agent path through a real ``sipbridge serve`` (issue 4).

Run: .venv/bin/python bench/bench_agent.py            (about 2 minutes)
     .venv/bin/python bench/bench_agent.py --quick    (shorter runs, for a smoke test)

Three processes, all on 127.0.0.1, none sharing an event loop with another:

- the server: ``python -m sipbridge serve`` (uvloop), PCMU only, its own SQLite file;
- the agent: a WebSocket server (the ``websockets`` sans-I/O protocol under a uvloop
  ``asyncio.Protocol``, so a frame is timestamped in ``data_received``, as it comes off
  the socket, not when a reader task gets round to it);
- the caller (this process): SIP over raw UDP, then a single-threaded loop that sends every
  call's RTP at its own 20 ms phase (calls spread evenly over the 20 ms period, as
  independent phones would be) and reads the RTP coming back on the probe calls.

Every timestamp is ``time.perf_counter_ns()``, which is CLOCK_MONOTONIC on Linux: the same
clock in every process, so differences across processes are meaningful.

Figures:

1. caller frame → agent: from just before the caller's ``sendto`` of an RTP packet (on
   loopback the packet is in the server's socket buffer when ``sendto`` returns) to the
   agent's receipt of the 20 ms PCM frame made from it. Each packet's μ-law payload starts
   with a tag (call, sequence) in codes other than 0x7F, which survive the PCMU → PCM16
   round trip exactly, so the agent reads the tag back from the PCM samples.
2. clear → last agent audio on the wire: the agent queues 5 s of tagged audio, sends
   ``clear`` one second later and notes when; the caller notes when each agent packet
   arrives. Figure: arrival of the last agent packet of that utterance - clear sent
   (negative when it left before the clear).
3. mark echo: the agent sends 200 ms of tagged audio and a mark; figure: arrival of the
   mark echo at the agent - arrival of the utterance's last packet at the caller.

Scenarios: one call (figure 1), one call running 20 clears, one call running 20 marks,
then 100 concurrent calls (figure 1 on all of them, the agent echoing caller audio back
so media flows both ways; two of the calls also run the clear and mark scripts), with
the server process's CPU use over the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NUMBER = "+12025550101"
FRAME_NS = 20_000_000
CALLER_MAGIC = 0x22  # first μ-law code of a caller packet's payload
AGENT_MAGIC = 0x33  # first μ-law code of every agent frame
DIGIT = 120  # tag digits are μ-law codes 0..119: never 0x7F, exact through PCM
SILENCE = b"\xff" * 160
CLEAR_AUDIO_FRAMES = 250  # 5 s
CLEAR_AFTER_S = 1.0
MARK_AUDIO_FRAMES = 10  # 200 ms
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_COMMAND = [sys.executable, "-m", "sipbridge"]


def ulaw_to_pcm_table() -> list[int]:
    """PCM16 value of every μ-law code, from the project's own decoder."""
    from sipbridge.codecs import get_codec

    pcm = get_codec("pcmu").decoder().decode(bytes(range(256)))
    return list(struct.unpack("<256h", pcm))


FILLER = bytes(0x20 + (i % 0x40) for i in range(160))  # audible, no 0x7F/0xFF


def caller_payload(stream: int, seq: int) -> bytes:
    return bytes((CALLER_MAGIC, stream, seq // DIGIT, seq % DIGIT)) + FILLER[4:]


def agent_ulaw_frame(rep: int, index: int) -> bytes:
    return bytes((AGENT_MAGIC, rep, index // DIGIT, index % DIGIT)) + FILLER[4:]


# ------------------------------------------------------------------------------ agent


def agent_main(conn: Any, results_dir: str, reps: int) -> None:
    """The agent process: a WebSocket server; per call, one JSON file of what it saw."""
    import uvloop
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    table = ulaw_to_pcm_table()
    code_of = {value: code for code, value in enumerate(table) if code != 0x7F}
    unpack4 = struct.Struct("<4h").unpack_from
    pack160 = struct.Struct("<160h").pack

    def pcm_of(ulaw: bytes) -> bytes:
        return pack160(*(table[b] for b in ulaw))

    class AgentConnection(asyncio.Protocol):
        def __init__(self) -> None:
            self.ws = ServerProtocol(max_size=2**24)
            self.transport: asyncio.Transport | None = None
            self.bench_id = ""
            self.mode = "latency"
            self.echo = False
            self.frames: list[tuple[int, int, int]] = []  # (stream, seq, t_rx)
            self.bad_frames = 0
            self.clears: list[tuple[int, int]] = []  # (rep, t_sent)
            self.marks: list[tuple[int, int, str]] = []  # (rep, t_echo, status)
            self.mark_waiter: asyncio.Future[None] | None = None
            self.script: asyncio.Task[None] | None = None
            self.saved = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            now = time.perf_counter_ns()
            ws = self.ws
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Frame):
                    if event.opcode is Opcode.BINARY:
                        self.on_audio(event.data, now)
                    elif event.opcode is Opcode.TEXT:
                        self.on_text(event.data.decode(), now)
                elif isinstance(event, Request):
                    ws.send_response(ws.accept(event))
            self.flush()

        def flush(self) -> None:
            transport = self.transport
            if transport is None:
                return
            for chunk in self.ws.data_to_send():
                if chunk:
                    transport.write(chunk)
                else:
                    transport.close()

        def send_binary(self, data: bytes) -> None:
            self.ws.send_binary(data)
            self.flush()

        def send_text(self, message: dict[str, Any]) -> int:
            self.ws.send_text(json.dumps(message).encode())
            sent_at = time.perf_counter_ns()
            self.flush()
            return sent_at

        def on_audio(self, pcm: bytes, now: int) -> None:
            if len(pcm) < 8:
                self.bad_frames += 1
                return
            codes = [code_of.get(v, -1) for v in unpack4(pcm)]
            if codes[0] != CALLER_MAGIC or min(codes) < 0:
                self.bad_frames += 1
                return
            self.frames.append((codes[1], codes[2] * DIGIT + codes[3], now))
            if self.echo and self.ws.state is State.OPEN:
                self.ws.send_binary(pcm)  # flushed once per data_received
            if self.script is None and self.mode in ("clear", "mark"):
                # Caller audio flows: the caller is listening now.
                run = self.run_clears if self.mode == "clear" else self.run_marks
                self.script = asyncio.ensure_future(run())

        def on_text(self, text: str, now: int) -> None:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "start":
                headers = {k.lower(): v for k, v in message.get("sip_headers", {}).items()}
                self.bench_id = headers.get("x-bench-id", "unknown")
                self.mode = headers.get("x-bench-mode", "latency")
                self.echo = headers.get("x-bench-echo") == "1"
            elif kind == "mark":
                name = str(message.get("name", ""))
                if name.startswith("m"):
                    self.marks.append((int(name[1:]), now, str(message.get("status"))))
                    if self.mark_waiter is not None and not self.mark_waiter.done():
                        self.mark_waiter.set_result(None)
            elif kind == "stop":
                self.save()

        async def run_clears(self) -> None:
            await asyncio.sleep(0.3)
            for rep in range(reps):
                audio = b"".join(
                    pcm_of(agent_ulaw_frame(rep, i)) for i in range(CLEAR_AUDIO_FRAMES)
                )
                self.send_binary(audio)
                await asyncio.sleep(CLEAR_AFTER_S)
                self.clears.append((rep, self.send_text({"type": "clear"})))
                await asyncio.sleep(0.4)

        async def run_marks(self) -> None:
            await asyncio.sleep(0.3)
            for rep in range(reps):
                audio = b"".join(pcm_of(agent_ulaw_frame(rep, i)) for i in range(MARK_AUDIO_FRAMES))
                self.mark_waiter = asyncio.get_running_loop().create_future()
                self.send_binary(audio)
                self.send_text({"type": "mark", "name": f"m{rep}"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.mark_waiter, 3.0)
                await asyncio.sleep(0.15 + random.random() * 0.02)  # vary the tick phase

        def save(self) -> None:
            if self.saved or not self.bench_id:
                return
            self.saved = True
            result = {
                "id": self.bench_id,
                "mode": self.mode,
                "frames": self.frames,
                "bad_frames": self.bad_frames,
                "clears": self.clears,
                "marks": self.marks,
            }
            path = Path(results_dir) / f"{self.bench_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.script is not None:
                self.script.cancel()
            self.save()
            self.transport = None

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(AgentConnection, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        # Until the parent says stop (or dies): poll the pipe, bounded by 1 hour.
        for _ in range(36000):
            if conn.poll():
                break
            await asyncio.sleep(0.1)
        server.close()

    uvloop.run(serve())


# ----------------------------------------------------------------------------- caller


@dataclass
class Leg:
    index: int
    mode: str
    bench_id: str
    sip: socket.socket
    rtp: socket.socket
    call_id: str = ""
    to_tag: str = ""
    remote: tuple[str, int] = ("127.0.0.1", 0)
    ssrc: int = 0
    sent: list[int] = field(default_factory=list)  # t_send per sequence number
    heard: list[tuple[int, int, int]] = field(default_factory=list)  # (rep, index, t_rx)
    silent_packets: list[int] = field(default_factory=list)
    late_ns: list[int] = field(default_factory=list)  # caller's own send lateness
    echoed: list[tuple[int, int]] = field(default_factory=list)  # (seq, t_rx) echoed back


class Caller:
    def __init__(self, sip_target: tuple[str, int]) -> None:
        self.sip_target = sip_target

    def invite(self, leg: Leg, echo: bool) -> bytes:
        port = leg.sip.getsockname()[1]
        rtp_port = leg.rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        ).encode()
        return (
            f"INVITE sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{leg.call_id};rport\r\n"
            f"From: <sip:+15005550006@127.0.0.1>;tag=f{leg.index}\r\n"
            f"To: <sip:{NUMBER}@127.0.0.1>\r\n"
            f"Call-ID: {leg.call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
            f"X-Bench-Id: {leg.bench_id}\r\nX-Bench-Mode: {leg.mode}\r\n"
            f"X-Bench-Echo: {1 if echo else 0}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        ).encode() + sdp

    def in_dialog(self, leg: Leg, method: str, cseq: int) -> bytes:
        port = leg.sip.getsockname()[1]
        return (
            f"{method} sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{method}{cseq}-{leg.index};rport\r\n"
            f"From: <sip:+15005550006@127.0.0.1>;tag=f{leg.index}\r\n"
            f"To: <sip:{NUMBER}@127.0.0.1>;tag={leg.to_tag}\r\n"
            f"Call-ID: {leg.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def final_response(self, leg: Leg, method: str, timeout: float) -> bytes:
        """Read SIP responses on the leg's socket until a final one to ``method``."""
        deadline = time.monotonic() + timeout
        for _ in range(100):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([leg.sip], [], [], remaining)
            if not ready:
                break
            data = leg.sip.recv(65535)
            first = data.split(b"\r\n", 1)[0]
            if not first.startswith(b"SIP/2.0 "):
                continue  # a request from the server (not expected here)
            status = int(first.split()[1])
            cseq = re.search(rb"(?im)^CSeq:\s*\d+\s+(\w+)", data)
            if status >= 200 and cseq is not None and cseq.group(1).decode() == method:
                return data
        raise RuntimeError(f"no final response to {method} for {leg.bench_id}")

    def setup(self, leg: Leg, echo: bool) -> None:
        leg.sip.sendto(self.invite(leg, echo), self.sip_target)
        ok = self.final_response(leg, "INVITE", 10.0)
        if not ok.startswith(b"SIP/2.0 200"):
            status_line = ok.split(b"\r\n", 1)[0]
            raise RuntimeError(f"call {leg.bench_id} refused: {status_line!r}")
        tag = re.search(rb"(?im)^(?:To|t):[^\r\n]*;tag=([^;\s>]+)", ok)
        port = re.search(rb"m=audio (\d+)", ok)
        host = re.search(rb"c=IN IP4 ([0-9.]+)", ok)
        assert tag and port and host, ok
        leg.to_tag = tag.group(1).decode()
        leg.remote = (host.group(1).decode(), int(port.group(1)))
        leg.sip.sendto(self.in_dialog(leg, "ACK", 1), self.sip_target)

    def hangup(self, leg: Leg) -> None:
        leg.sip.sendto(self.in_dialog(leg, "BYE", 2), self.sip_target)
        try:
            self.final_response(leg, "BYE", 5.0)
        except RuntimeError:
            print(f"  warning: no answer to BYE for {leg.bench_id}", file=sys.stderr)


def run_queue_ns(pid: int) -> int:
    """Time the process's main thread spent runnable but waiting for a CPU."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


@dataclass
class RunResult:
    legs: list[Leg]
    agent: dict[str, dict[str, Any]]
    cpu: dict[str, float]
    seconds: float


def run_scenario(
    name: str,
    modes: list[str],
    seconds: float,
    *,
    echo: bool,
    sip_target: tuple[str, int],
    results_dir: Path,
    pids: dict[str, int],
) -> RunResult:
    """Set up one call per entry of ``modes``, stream RTP for ``seconds``, hang up."""
    caller = Caller(sip_target)
    legs: list[Leg] = []
    for index, mode in enumerate(modes):
        sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sip.bind(("127.0.0.1", 0))
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rtp.setblocking(False)
        leg = Leg(index, mode, f"{name}-{index}", sip, rtp, ssrc=random.getrandbits(32))
        leg.call_id = f"bench-{name}-{index}-{random.getrandbits(32):08x}"
        legs.append(leg)
    try:
        for leg in legs:
            caller.setup(leg, echo and leg.mode == "latency")
        cpu = stream(legs, seconds, pids)
        for leg in legs:
            caller.hangup(leg)
    finally:
        for leg in legs:
            leg.sip.close()
            leg.rtp.close()
    agent: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(agent) < len(legs):
        for leg in legs:
            path = results_dir / f"{leg.bench_id}.json"
            if leg.bench_id not in agent and path.exists():
                agent[leg.bench_id] = json.loads(path.read_text())
        time.sleep(0.05)
    if len(agent) < len(legs):
        print(f"  warning: {len(legs) - len(agent)} agent result(s) missing", file=sys.stderr)
    return RunResult(legs, agent, cpu, seconds)


def stream(legs: list[Leg], seconds: float, pids: dict[str, int]) -> dict[str, float]:
    """Send every leg's RTP on its own 20 ms phase; read the probes' incoming RTP."""
    count = len(legs)
    frames = int(seconds * 50)
    step = FRAME_NS // count  # legs spread evenly over the frame period
    # The clear/mark legs, and up to 3 echoing legs for the echo round trip.
    echo_probes = [leg for leg in legs if leg.mode == "latency"][:3]
    probes = {leg.rtp: leg for leg in legs if leg.mode != "latency" or leg in echo_probes}
    probe_socks = list(probes)
    header = struct.Struct("!BBHII")
    packets = [
        [
            header.pack(0x80, 0, seq & 0xFFFF, seq * 160, leg.ssrc) + caller_payload(leg.index, seq)
            for seq in range(frames)
        ]
        for leg in legs
    ]
    for leg in legs:
        leg.sent = [0] * frames

    def read_probes(ready: list[socket.socket]) -> None:
        for sock in ready:
            leg = probes[sock]
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                now = time.perf_counter_ns()
                payload = data[12:]
                if payload[:1] == bytes((AGENT_MAGIC,)):
                    leg.heard.append((payload[1], payload[2] * DIGIT + payload[3], now))
                elif payload[:1] == bytes((CALLER_MAGIC,)) and payload[1] == leg.index:
                    leg.echoed.append((payload[2] * DIGIT + payload[3], now))
                elif payload == SILENCE:
                    leg.silent_packets.append(now)

    total = frames * count
    start = time.perf_counter_ns() + 50_000_000
    hard_stop = time.monotonic() + seconds + 30
    cpu_mark: dict[str, tuple[int, float]] = {}
    warmup_at = start + 2_000_000_000  # CPU is measured over the steady state only
    j = 0
    while j < total and time.monotonic() < hard_stop:
        target = start + j * step
        now = time.perf_counter_ns()
        if now < target:
            wait = (target - now) / 1e9
            if probe_socks:
                ready, _, _ = select.select(probe_socks, [], [], wait)
                read_probes(ready)
            else:
                time.sleep(wait)
            continue
        if not cpu_mark and now >= warmup_at:
            cpu_mark = {k: (cpu_ticks(pid), time.monotonic()) for k, pid in pids.items()}
            cpu_mark["caller"] = (int(sum(os.times()[:2]) * CLK_TCK), time.monotonic())
            wait_mark = run_queue_ns(pids["server"])
            load_mark = os.getloadavg()[0]
        leg_index, seq = j % count, j // count
        leg = legs[leg_index]
        sent_at = leg.sent[seq] = time.perf_counter_ns()
        leg.late_ns.append(sent_at - target)
        leg.rtp.sendto(packets[leg_index][seq], leg.remote)
        j += 1
        if probe_socks:
            ready, _, _ = select.select(probe_socks, [], [], 0)
            read_probes(ready)
    cpu: dict[str, float] = {}
    if cpu_mark:
        end = {k: (cpu_ticks(pid), time.monotonic()) for k, pid in pids.items()}
        end["caller"] = (int(sum(os.times()[:2]) * CLK_TCK), time.monotonic())
        for key, (ticks, at) in cpu_mark.items():
            cpu[key] = 100.0 * (end[key][0] - ticks) / CLK_TCK / (end[key][1] - at)
        elapsed = end["server"][1] - cpu_mark["server"][1]
        cpu["server_runqueue_wait"] = (
            100.0 * (run_queue_ns(pids["server"]) - wait_mark) / 1e9 / elapsed
        )
        cpu["loadavg_1min"] = max(load_mark, os.getloadavg()[0])
    # Let the last agent packets and echoes arrive.
    deadline = time.perf_counter_ns() + 300_000_000
    while probe_socks and time.perf_counter_ns() < deadline:
        ready, _, _ = select.select(probe_socks, [], [], 0.05)
        read_probes(ready)
    return cpu


# ---------------------------------------------------------------------------- figures


def summary(values_ms: list[float]) -> str:
    if not values_ms:
        return "no samples"
    ordered = sorted(values_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered):7.3f}  p99 {p99:7.3f}  max {ordered[-1]:7.3f} ms"
        f"  (n={len(ordered)})"
    )


def stats(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    if not ordered:
        return {}
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max": ordered[-1],
        "min": ordered[0],
    }


def caller_to_agent(run: RunResult) -> tuple[list[float], int, int]:
    """Latency samples (ms), frames lost, frames with an unreadable tag."""
    samples: list[float] = []
    lost = bad = 0
    for leg in run.legs:
        result = run.agent.get(leg.bench_id)
        if result is None:
            continue
        bad += result["bad_frames"]
        seen = set()
        for stream_index, seq, t_rx in result["frames"]:
            if stream_index != leg.index or seq >= len(leg.sent) or not leg.sent[seq]:
                bad += 1
                continue
            seen.add(seq)
            samples.append((t_rx - leg.sent[seq]) / 1e6)
        lost += sum(1 for t in leg.sent if t) - len(seen)
    return samples, lost, bad


def echo_round_trip(run: RunResult) -> list[float]:
    """Caller packet sent → the echo agent's copy of it back at the caller (ms): the bridge
    both ways plus the agent, for the probe legs."""
    samples: list[float] = []
    for leg in run.legs:
        for seq, t_rx in leg.echoed:
            if seq < len(leg.sent) and leg.sent[seq]:
                samples.append((t_rx - leg.sent[seq]) / 1e6)
    return samples


def send_gaps(run: RunResult) -> list[float]:
    """Gaps between consecutive echoed packets inside the echo stream (ms)."""
    gaps: list[float] = []
    for leg in run.legs:
        times = [t for _, t in leg.echoed]
        gaps.extend((b - a) / 1e6 for a, b in itertools.pairwise(times))
    return gaps


def clear_figures(run: RunResult) -> tuple[list[float], list[float]]:
    """(last agent packet - clear sent, first silent packet after the clear - clear sent)."""
    last: list[float] = []
    first_silence: list[float] = []
    for leg in run.legs:
        if leg.mode != "clear" or leg.bench_id not in run.agent:
            continue
        for rep, t_clear in run.agent[leg.bench_id]["clears"]:
            heard = [t for r, _i, t in leg.heard if r == rep]
            if not heard:
                continue
            last.append((max(heard) - t_clear) / 1e6)
            after = [t for t in leg.silent_packets if t > max(heard)]
            if after:
                first_silence.append((min(after) - t_clear) / 1e6)
    return last, first_silence


def mark_figures(run: RunResult) -> tuple[list[float], int]:
    """(echo - arrival of the utterance's last packet, marks not answered as played)."""
    samples: list[float] = []
    wrong = 0
    for leg in run.legs:
        if leg.mode != "mark" or leg.bench_id not in run.agent:
            continue
        for rep, t_echo, status in run.agent[leg.bench_id]["marks"]:
            last = [t for r, i, t in leg.heard if r == rep and i == MARK_AUDIO_FRAMES - 1]
            if status != "played" or not last:
                wrong += 1
                continue
            samples.append((t_echo - last[0]) / 1e6)
    return samples, wrong


# ----------------------------------------------------------------------------- main


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_sip(target: tuple[str, int], timeout: float) -> None:
    options = (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-o{n}\r\n"
        "From: <sip:bench@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: bench-options-{n}\r\n"
        "CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + timeout
        for n in range(1, 1000):
            if time.monotonic() > deadline:
                break
            s.sendto(options.format(port=s.getsockname()[1], n=n).encode(), target)
            if select.select([s], [], [], 0.2)[0]:
                return
    raise RuntimeError("sipbridge serve did not answer OPTIONS")


def sipbridge(*args: str, db: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "sipbridge", *args, "--db", db],
        check=True,
        capture_output=True,
        timeout=60,
    )


class Environment:
    """The agent process and ``sipbridge serve``, on a temporary database."""

    def __init__(self, calls: int, reps: int, keep: bool = False, nice: int | None = None) -> None:
        self.calls, self.reps, self.keep, self.nice = calls, reps, keep, nice

    def __enter__(self) -> Environment:
        self.work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
        self.results_dir = self.work / "agent"
        self.results_dir.mkdir()
        db = f"sqlite:///{self.work / 'calls.db'}"
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.agent = ctx.Process(
            target=agent_main, args=(child, str(self.results_dir), self.reps), daemon=True
        )
        self.agent.start()
        self.server: subprocess.Popen[bytes] | None = None
        self.log = open(self.work / "server.log", "wb")
        try:
            if not self.pipe.poll(30):
                raise RuntimeError("the agent process did not start")
            agent_port = self.pipe.recv()
            sipbridge("agent", "add", "bench", "--url", f"ws://127.0.0.1:{agent_port}/", db=db)
            sipbridge("number", "add", NUMBER, "--agent", "bench", db=db)
            sip_port = free_udp_port()
            low = random.randrange(20000, 50000, 2)
            self.server = subprocess.Popen(
                [
                    *SERVER_COMMAND,
                    "serve",
                    "--sip-host",
                    "127.0.0.1",
                    "--sip-port",
                    str(sip_port),
                    "--rtp-ports",
                    f"{low}-{low + 2 * self.calls + 200}",
                    "--http-port",
                    "0",
                    "--db",
                    db,
                    "--codecs",
                    "pcmu",
                    "--media-timeout",
                    "300",
                    "--log-level",
                    "info",
                ],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            self.target = ("127.0.0.1", sip_port)
            wait_for_sip(self.target, 30)
        except BaseException:
            self.__exit__()
            raise
        self.pids = {"server": self.server.pid, "agent": self.agent.pid or 0}
        if self.nice is not None:
            # All three processes at the same raised priority: on a shared machine this
            # keeps other programs from preempting the benchmark (a dedicated server).
            for pid in (*self.pids.values(), os.getpid()):
                os.setpriority(os.PRIO_PROCESS, pid, self.nice)
        return self

    def run(self, name: str, modes: list[str], seconds: float, *, echo: bool) -> RunResult:
        return run_scenario(
            name,
            modes,
            seconds,
            echo=echo,
            sip_target=self.target,
            results_dir=self.results_dir,
            pids=self.pids,
        )

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)
        self.pipe.send("stop")
        self.agent.join(5)
        if self.agent.is_alive():
            self.agent.terminate()
            self.agent.join(5)
        self.log.close()
        if self.keep:
            print(f"kept {self.work}")
        else:
            for path in sorted(self.work.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            self.work.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="length of the 1-call run")
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls of the load run")
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=20, help="clears and marks per probe call")
    parser.add_argument("--no-echo", action="store_true", help="agent does not echo at load")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--nice", type=int, help="run server, agent and caller at this nice value (root for < 0)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.load_seconds, args.reps = 5.0, 8.0, 4
    clear_seconds = args.reps * (CLEAR_AFTER_S + 0.45) + 2
    mark_seconds = args.reps * 0.6 + 2
    echo = not args.no_echo
    figures: dict[str, Any] = {}
    with Environment(args.calls, args.reps, args.keep, args.nice) as env:
        print(
            f"sipbridge serve pid {env.pids['server']}, agent pid {env.pids['agent']}, "
            f"{os.cpu_count()} CPUs, nice {args.nice or 0}, load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        print("1 call: caller frame → agent ...", flush=True)
        one = env.run("one", ["latency"], args.seconds, echo=echo)
        print("1 call: clear ...", flush=True)
        clear = env.run("clear", ["clear"], clear_seconds, echo=False)
        print("1 call: mark ...", flush=True)
        mark = env.run("mark", ["mark"], mark_seconds, echo=False)
        print(f"{args.calls} calls ...", flush=True)
        load_modes = ["clear", "mark"] + ["latency"] * (args.calls - 2)
        load = env.run("load", load_modes, max(args.load_seconds, clear_seconds), echo=echo)

    print()
    print("caller frame → agent (RTP packet sent on loopback → agent has the PCM frame)")
    for label, run in (("1 call", one), (f"{args.calls} calls", load)):
        samples, lost, bad = caller_to_agent(run)
        print(
            f"  {label:>9}: {summary(samples)}  lost {lost}  untagged {bad}"
            " (concealment, mostly after the stream ends)"
        )
        figures[f"caller_to_agent_{label.replace(' ', '_')}"] = stats(samples)
    print("echo round trip (caller packet sent → its echo back at the caller)")
    for label, run in (("1 call", one), (f"{args.calls} calls", load)):
        samples = echo_round_trip(run)
        print(f"  {label:>9}: {summary(samples)}")
        print(f"  {'':>9}  gaps between echoed packets: {summary(send_gaps(run))}")
        figures[f"echo_round_trip_{label.replace(' ', '_')}"] = stats(samples)
    print("clear → last agent audio on the wire (last agent packet arrival - clear sent)")
    for label, run in (("1 call", clear), (f"{args.calls} calls", load)):
        last, silence = clear_figures(run)
        print(f"  {label:>9}: {summary(last)}")
        print(f"  {'':>9}  first silence after it - clear sent: {summary(silence)}")
        figures[f"clear_last_audio_{label.replace(' ', '_')}"] = stats(last)
    print("mark echo (echo at the agent - arrival of the mark's last audio packet)")
    for label, run in (("1 call", mark), (f"{args.calls} calls", load)):
        samples, wrong = mark_figures(run)
        print(f"  {label:>9}: {summary(samples)}  not played/unmatched {wrong}")
        figures[f"mark_echo_{label.replace(' ', '_')}"] = stats(samples)
    print("the caller's own send lateness (behind its schedule; spoils figures when large)")
    for label, run in (("1 call", one), (f"{args.calls} calls", load)):
        late = [n / 1e6 for leg in run.legs for n in leg.late_ns]
        print(f"  {label:>9}: {summary(late)}")
    print(f"CPU over the steady state of the {args.calls}-call run (100 % = one core):")
    for key in ("server", "agent", "caller"):
        print(f"  {key:>7}: {load.cpu.get(key, float('nan')):5.1f} %")
    waited = load.cpu.get("server_runqueue_wait", 0.0)
    print(
        f"  server waiting for a CPU while runnable: {waited:.1f} % of the time"
        " (other load on the machine; 1-min load average "
        f"{load.cpu.get('loadavg_1min', 0):.2f})"
    )
    figures["cpu_percent_load"] = load.cpu
    figures["cpu_percent_one_call"] = one.cpu
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
