"""The floor: what the socket operations alone cost per call, without any media work.

sipbridge gives each call one RTP port and one WebSocket connection to its agent, so
every 20 ms frame costs four socket operations in the bridge: RTP in (recvfrom), the
frame to the agent (send), the agent's frame back (recv) and RTP out (sendto). This
benchmark runs a bridge that does those four operations and nothing else, for ``--calls``
calls at 50 packets/s each way, and reports its CPU per call:

- ``c``: ``bench/floor_bridge.c`` (compiled here with gcc -O2): one epoll loop, no
  allocation, no parsing. No implementation with this I/O shape can be cheaper on this
  machine; a compiled media path could at best approach it.
- ``python``: the same in Python on uvloop (a ``DatagramProtocol`` and a ``Protocol`` per
  call, as the server has): the floor of the asyncio design before any media work.

Three processes on 127.0.0.1: the bridge; a caller (this script's child) sending 172-octet
datagrams to every call's port every 20 ms (phases spread over the period) and counting
the echoes; an echo agent (uvloop) returning every length-prefixed frame. The bridge's
CPU is read from /proc (user + system) over ``--seconds`` after a warm-up; on loopback the
sender's system time also includes the receiver's network stack, as it does for the real
server. Compare the per-call figure with ``server_cpu_percent_per_call`` of
``bench/bench_capacity.py`` at the same number of calls.

    .venv/bin/python bench/bench_floor.py --calls 50 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PACKET = bytes(range(172)) * 1  # an RTP header plus 160 octets of G.711, in size


def cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def agent_main(conn: Any) -> None:
    """Echo every length-prefixed frame back on its connection."""
    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # frames stay whole: echo the bytes as they came

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
        conn.send(server.sockets[0].getsockname()[1])
        for _ in range(36000):
            if conn.poll():
                break
            await asyncio.sleep(0.1)
        server.close()

    uvloop.run(serve())


def python_bridge_main(calls: int, first: int, agent_port: int, conn: Any) -> None:
    """The Python floor: per call a DatagramProtocol and a Protocol on uvloop."""
    import uvloop

    class Agent(asyncio.Protocol):
        def __init__(self, rtp: Rtp) -> None:
            self.rtp = rtp
            self.pending = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            data = self.pending + data if self.pending else data
            at = 0
            while len(data) - at >= 2:
                size = int.from_bytes(data[at : at + 2], "big")
                if len(data) - at - 2 < size:
                    break
                self.rtp.send(data[at + 2 : at + 2 + size])
                at += 2 + size
            self.pending = data[at:]

    class Rtp(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.caller: tuple[str, int] | None = None
            self.agent: asyncio.Transport | None = None
            self.transport: asyncio.DatagramTransport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.caller = addr
            if self.agent is not None:
                self.agent.write(len(data).to_bytes(2, "big") + data)

        def send(self, payload: bytes) -> None:
            if self.caller is not None and self.transport is not None:
                self.transport.sendto(payload, self.caller)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for index in range(calls):
            _t, rtp = await loop.create_datagram_endpoint(
                Rtp, local_addr=("127.0.0.1", first + index)
            )
            transport, _p = await loop.create_connection(
                lambda rtp=rtp: Agent(rtp), "127.0.0.1", agent_port
            )
            rtp.agent = transport
        conn.send("ready")
        for _ in range(36000):
            if conn.poll():
                break
            await asyncio.sleep(0.1)

    uvloop.run(run())


def caller_main(calls: int, first: int, seconds: float, conn: Any) -> None:
    """Every call's datagram every 20 ms, phases spread; counts the echoes."""
    sockets = []
    for _ in range(calls):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sockets.append(sock)
    echoes = 0
    start = time.monotonic() + 0.05
    frames = int(seconds * 50)
    step = 0.02 / calls
    for frame in range(frames):
        for index, sock in enumerate(sockets):
            due = start + frame * 0.02 + index * step
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(PACKET, ("127.0.0.1", first + index))
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                echoes += 1
    time.sleep(0.1)
    for sock in sockets:
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
            echoes += 1
    conn.send({"sent": frames * calls, "echoes": echoes})


def measure(variant: str, calls: int, seconds: float, work: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    agent_pipe, agent_child = ctx.Pipe()
    agent = ctx.Process(target=agent_main, args=(agent_child,), daemon=True)
    agent.start()
    agent_port = agent_pipe.recv()
    first = 30000 + (os.getpid() % 1000) * 20
    bridge_pipe = None
    if variant == "c":
        binary = work / "floor_bridge"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "floor_bridge.c")], check=True)
        bridge = subprocess.Popen(
            [str(binary), str(calls), str(first), str(agent_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert bridge.stdout is not None
        if bridge.stdout.readline().strip() != b"ready":
            raise SystemExit("floor_bridge did not start")
        pid = bridge.pid
    else:
        bridge_pipe, child = ctx.Pipe()
        bridge = ctx.Process(
            target=python_bridge_main, args=(calls, first, agent_port, child), daemon=True
        )
        bridge.start()
        if bridge_pipe.recv() != "ready":
            raise SystemExit("the Python bridge did not start")
        pid = bridge.pid or 0
    caller_pipe, caller_child = ctx.Pipe()
    warm = 2.0
    caller = ctx.Process(
        target=caller_main, args=(calls, first, seconds + 2 * warm, caller_child), daemon=True
    )
    caller.start()
    time.sleep(warm)
    user0, system0 = cpu_seconds(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    user1, system1 = cpu_seconds(pid)
    elapsed = time.monotonic() - t0
    counts = caller_pipe.recv()
    caller.join(10)
    if variant == "c":
        assert bridge.stdin is not None  # type: ignore[union-attr]
        bridge.stdin.close()  # type: ignore[union-attr]
        bridge.wait(10)  # type: ignore[union-attr]
    else:
        assert bridge_pipe is not None
        bridge_pipe.send("stop")
        bridge.join(10)  # type: ignore[union-attr]
    agent_pipe.send("stop")
    agent.join(10)
    share = (user1 - user0 + system1 - system0) / elapsed
    return {
        "variant": variant,
        "calls": calls,
        "bridge_cpu_percent_of_a_core": round(100 * share, 1),
        "bridge_cpu_user_percent": round(100 * (user1 - user0) / elapsed, 1),
        "bridge_cpu_system_percent": round(100 * (system1 - system0) / elapsed, 1),
        "bridge_cpu_percent_per_call": round(100 * share / calls, 3),
        "echoed_percent": round(100 * counts["echoes"] / counts["sent"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--variants", default="c,python")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if "c" in args.variants.split(",") and shutil.which("gcc") is None:
        raise SystemExit("the c variant needs gcc: apt-get install -y gcc")
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    results = []
    try:
        for variant in args.variants.split(","):
            result = measure(variant, args.calls, args.seconds, work)
            results.append(result)
            for key, value in result.items():
                print(f"{key:>32}: {value}")
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
