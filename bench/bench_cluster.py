"""One instance against two behind Kamailio: what the proxy costs and how the load splits.

Run (as root, for the kernel-timestamped capture of the instances' RTP; PostgreSQL on
127.0.0.1, a new database per run is created and dropped):

    .venv/bin/python bench/bench_cluster.py --calls 100 --rate 20 --hold 25
    .venv/bin/python bench/bench_cluster.py --instances 2 --pg postgresql://postgres:postgres@127.0.0.1/postgres

For each instance count in ``--instances`` (default ``1,2``) the cluster is the one
``deploy/cluster/run-local.sh`` starts (Kamailio in front, N ``sipbridge serve`` on one
PostgreSQL database, each trusting the proxy), with the light echo agent of
``bench_capacity.py`` in its own process. SIPp places ``--calls`` PCMU calls at ``--rate``
calls/s to the proxy; ACK and BYE follow the route set Kamailio recorded. Figures, per
run: calls answered by each instance (its own metrics), the setup time through the proxy
as SIPp measured it per call (INVITE sent → 200 received, ``-trace_rtt``), the gaps of
every RTP stream the instances send (kernel timestamps), and the CPU of every process
(each instance, all of Kamailio's processes, SIPp, the agent) in the steady state, as a
share of one core. The run stops by itself: SIPp places a bounded number of calls, each
hangs up after ``--hold`` seconds, and the cluster is stopped (drained) at the end.
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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_capacity as cap  # noqa: E402 - this folder is put on the path first

RUN_LOCAL = HERE.parent / "deploy" / "cluster" / "run-local.sh"
RTP_PORTS_EACH = 1000


def routed_scenario(hold_ms: int, audio: Path) -> str:
    """bench_capacity's PCMU scenario with ACK and BYE sent along the recorded route set
    to the instance's Contact (loose routing, RFC 3261 §12.2.1.1)."""
    text = cap.SCENARIO.format(
        media_port="rtpstream_audio_port",
        pt=0,
        rtpmap="PCMU/8000",
        play=f'rtp_stream="{audio},-1,0"',
        stop='  <nop><action><exec rtp_stream="pause"/></action></nop>',
        hold_ms=hold_ms,
    )
    text = text.replace(
        '<recv response="200" rtd="true"/>', '<recv response="200" rtd="true" rrs="true"/>'
    )
    for method in ("ACK", "BYE"):
        text = text.replace(
            f"      {method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n",
            f"      {method} [next_url] SIP/2.0\n"
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            "      [routes]\n",
        )
    assert text.count("[routes]") == 2, "the capacity scenario changed: update this bench"
    return text


def create_database(admin_url: str, name: str, drop: bool = False) -> None:
    import asyncpg

    url = admin_url.replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            if not drop:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())


def pids_matching(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cap.proc_cpu_seconds(pid)
    return total


def answers_options(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.3)
        local = sock.getsockname()[1]
        for n in itertools.count():
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered OPTIONS on 127.0.0.1:{port}")
            request = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-bench{n}\r\n"
                f"From: <sip:bench@127.0.0.1:{local}>;tag=b{n}\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: bench-{n}-{local}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(request, ("127.0.0.1", port))
            try:
                if sock.recv(65535).startswith(b"SIP/2.0 200"):
                    return
            except (TimeoutError, ConnectionRefusedError):
                pass
            time.sleep(0.2)
    raise AssertionError("unreachable")


def run(instances: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name = f"bench_cluster_{os.getpid()}_{instances}"
    create_database(args.pg, name)
    base = args.pg.rsplit("/", 1)[0]
    db = f"{base}/{name}"
    ctx = mp.get_context("spawn")
    pipe, child = ctx.Pipe()
    agent = ctx.Process(target=cap.agent_main, args=(child,), daemon=True)
    agent.start()
    if not pipe.poll(30):
        raise SystemExit("the agent process did not start")
    agent_port = pipe.recv()
    run_dir = work / f"cluster-{instances}"
    run_dir.mkdir()
    subprocess.run(
        [sys.executable, "-m", "sipbridge", "db", "upgrade", "--db", db],
        check=True,
        capture_output=True,
    )
    cap.sipbridge(db, "agent", "add", "bench", "--url", f"ws://127.0.0.1:{agent_port}/")
    cap.sipbridge(db, "number", "add", cap.NUMBER, "--agent", "bench")
    proxy_port = cap.free_port()
    sip_base = random.randrange(21000, 29000, 10)
    http_base = random.randrange(31000, 39000, 10)
    rtp_base = random.randrange(40000, 50000, 2)
    env = dict(
        os.environ,
        PROXY_PORT=str(proxy_port),
        SIP_BASE=str(sip_base),
        HTTP_BASE=str(http_base),
        RTP_BASE=str(rtp_base),
        RTP_PORTS_EACH=str(RTP_PORTS_EACH),
        PING_INTERVAL="2",
        PIKE_REQS="100000",  # SIPp is one source placing every call: not a flood here
        SIPBRIDGE=f"{sys.executable} -m sipbridge",
        RUN_DIR=str(run_dir),
        SIPBRIDGE_CODECS="pcmu",
        SIPBRIDGE_MEDIA_TIMEOUT="300",
        SIPBRIDGE_MAX_CALLS=str(args.calls + 10),
        SIPBRIDGE_FLOOD_RATE="100000",
        SIPBRIDGE_FLOOD_BURST="100000",
    )
    cluster = subprocess.Popen(
        ["bash", str(RUN_LOCAL), db, str(instances)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(run_dir / "run-local.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    figures: dict[str, Any] = {"instances": instances, "calls": args.calls, "rate": args.rate}
    sipp_proc: subprocess.Popen[bytes] | None = None
    capture: cap.RtpCapture | None = None
    try:
        for i in range(1, instances + 1):
            cap.wait_for_http(http_base + i, 60)
        answers_options(proxy_port, 30)
        time.sleep(2 * 2 + 1)  # Kamailio's probes have seen every instance up
        audio = work / "speech.pcmu"
        audio.write_bytes(
            __import__("sipbridge.codecs", fromlist=["get_codec"])
            .get_codec("pcmu")
            .encoder()
            .encode(cap.speech_like_pcm(8000, 10))
        )
        scenario = run_dir / "calls.xml"
        scenario.write_text(routed_scenario(int(args.hold * 1000), audio))
        high = rtp_base + instances * RTP_PORTS_EACH
        capture = cap.RtpCapture(range(rtp_base, high))
        ramp = args.calls / args.rate
        sipp_proc = subprocess.Popen(
            [
                shutil.which("sipp") or "sipp",
                f"127.0.0.1:{proxy_port}",
                "-sf", str(scenario),
                "-s", cap.NUMBER,
                "-i", "127.0.0.1",
                "-mi", "127.0.0.1",
                "-p", str(cap.free_port()),
                "-mp", str(high + 10),
                "-m", str(args.calls),
                "-l", str(args.calls),
                "-r", str(args.rate),
                "-rtp_threadtasks", "64",
                "-trace_rtt", "-rtt_freq", "1",
                "-nostdin",
                "-timeout", str(int(ramp + args.hold + 60)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
        )  # fmt: skip
        time.sleep(ramp + 2.0)
        steady_start = time.time()
        groups = {
            **{
                f"instance_{i}": pids_matching(f"instance-id local-{i} ")
                for i in range(1, instances + 1)
            },
            "kamailio": pids_matching(f"kamailio -DD -E -f .* -Y {run_dir}"),
            "sipp": [sipp_proc.pid],
            "agent": [agent.pid or 0],
        }
        before = {group: cpu_seconds(pids) for group, pids in groups.items()}
        t0 = time.monotonic()
        time.sleep(max(2.0, min(args.window, args.hold - 6.0)))
        elapsed = time.monotonic() - t0
        for group, pids in groups.items():
            share = (cpu_seconds(pids) - before[group]) / elapsed
            figures[f"{group}_cpu_percent_of_a_core"] = round(100 * share, 1)
        steady_end = time.time()
        sipp_proc.wait(timeout=args.hold + ramp + 90)
        time.sleep(1.0)
        capture.stop()
        answered_total = 0
        for i in range(1, instances + 1):
            text = cap.metrics(http_base + i)
            answered = int(cap.metric_value(text, 'sipbridge_calls_total{reason="caller_hangup"'))
            figures[f"instance_{i}_answered"] = answered
            figures[f"instance_{i}_refused_503"] = int(
                cap.metric_value(text, "sipbridge_overload_refusals_total")
            )
            answered_total += answered
        figures["answered"] = answered_total
        figures["not_answered"] = args.calls - answered_total
        rtts: list[float] = []
        for path in run_dir.glob("*_rtt.csv"):
            for line in path.read_text().splitlines()[1:]:
                parts = line.split(";")
                if len(parts) >= 2:
                    with contextlib.suppress(ValueError):
                        rtts.append(float(parts[1]))
        figures["setup_through_proxy_samples"] = len(rtts)
        figures["setup_through_proxy_p50_ms"] = cap._round(cap.percentile(rtts, 50))
        figures["setup_through_proxy_p99_ms"] = cap._round(cap.percentile(rtts, 99))
        streams: dict[int, list[tuple[int, float]]] = {}
        for sport, seq, at in capture.packets:
            if steady_start <= at <= steady_end:
                streams.setdefault(sport, []).append((seq, at))
        gaps: list[float] = []
        rates: list[float] = []
        odd: list[tuple[int, int, float]] = []  # streams with a gap over 100 ms
        for port, packets in streams.items():
            if len(packets) < 10:
                continue
            packets.sort(key=lambda p: p[1])
            span = packets[-1][1] - packets[0][1]
            rates.append((len(packets) - 1) / span if span > 0 else 0.0)
            these = [(t1 - t0) * 1000 for (_, t0), (_, t1) in itertools.pairwise(packets)]
            gaps.extend(these)
            if max(these) > 100:
                odd.append((port, len(packets), round(max(these), 1)))
        figures["streams_with_a_gap_over_100ms"] = odd
        figures["streams_captured"] = len(rates)
        figures["packets_per_second_per_call_mean"] = (
            round(sum(rates) / len(rates), 2) if rates else None
        )
        figures["gap_p50_ms"] = cap._round(cap.percentile(gaps, 50))
        figures["gap_p99_ms"] = cap._round(cap.percentile(gaps, 99))
        figures["gap_max_ms"] = cap._round(max(gaps) if gaps else None)
    finally:
        if sipp_proc is not None and sipp_proc.poll() is None:
            sipp_proc.kill()
        if capture is not None and not capture._stop.is_set():
            capture.stop()
        os.killpg(cluster.pid, signal.SIGTERM)  # the instances drain (no call is left)
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
        pipe.send("stop")
        agent.join(5)
        if agent.is_alive():
            agent.terminate()
        if args.keep:
            figures["kept_database"] = db
        else:
            create_database(args.pg, name, drop=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", default="1,2", help="instance counts to run, e.g. 1,2")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=25.0)
    parser.add_argument("--window", type=float, default=10.0, help="steady-state seconds measured")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "SIPBRIDGE_TEST_POSTGRES", "postgresql+asyncpg://postgres:postgres@127.0.0.1/postgres"
        ),
        help="a PostgreSQL URL whose user may create databases",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    args = parser.parse_args()
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y sip-tester kamailio)")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the RTP capture uses AF_PACKET")
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results = []
    try:
        for count in (int(n) for n in args.instances.split(",")):
            figures = run(count, args, work)
            results.append(figures)
            for key, value in figures.items():
                print(f"{key:>40}: {value}")
            print()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
