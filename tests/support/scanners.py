"""Run the real SIPVicious tools (PyPI ``sipvicious`` 0.3.x) from a chosen loopback address.

``svwar`` and ``svcrack`` 0.3.8 accept ``-b BINDINGIP`` but never pass it on: they bind to
every interface, so their packets to 127.0.0.1 come from 127.0.0.1. This module is also a
launcher (``python -m tests.support.scanners REPORT BIND TOOL ARGS...``) that runs the
tool's own ``main()`` with the bind address honoured, counts what the tool sends, and
writes what it found (the tool's own result tables) to a JSON file, so tests do not have
to parse its log output.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

# The tool's main class per module; main() looks it up in the module at call time.
_CLASSES = {"svmap": "DrinkOrSip", "svwar": "TakeASip", "svcrack": "ASipOfRedWine"}
# The attribute holding the tool's findings: device → User-Agent, extension →
# "reqauth"/"noauth"/"weird", user → password.
REPOSITORY = Path(__file__).resolve().parents[2]  # the launcher runs as tests.support.scanners
# How long the tools wait on their socket for an answer (when no answer is expected).
SOCKET_TIMEOUT = 2.0
_RESULTS = {"svmap": "resultua", "svwar": "resultauth", "svcrack": "resultpasswd"}


@dataclass
class ToolRun:
    """What one run of a SIPVicious tool did and found."""

    tool: str
    returncode: int
    output: str  # the tool's log and result table (stdout and stderr)
    results: dict[str, str]  # the tool's findings, empty when it found nothing
    sent: int  # SIP requests the tool sent
    methods: dict[str, int]  # how many of each method
    user_agents: list[str]  # distinct User-Agent values it sent ("" when it sent none)
    source: tuple[str, int]  # the address its packets came from
    elapsed: float
    timed_out: bool = False
    requests: list[str] = field(default_factory=list)  # the first few, for failure messages
    send_times: list[float] = field(default_factory=list)  # seconds after the tool started


async def run_tool(
    tool: str,
    target: tuple[str, int],
    args: list[str],
    *,
    source: str,
    workdir: Path,
    timeout: float = 30.0,
    verbose: bool = True,
) -> ToolRun:
    """Run ``sipvicious_<tool>`` against ``target`` from ``source`` (a loopback address) on
    a free port, with the tool's own options ``args``; kill it after ``timeout`` seconds
    (what it had found by then is lost, ``timed_out`` is set)."""
    assert tool in _CLASSES, tool
    port = free_port(source)
    report = workdir / f"{tool}-{time.monotonic_ns()}.json"
    command = [
        sys.executable,
        "-m",
        "tests.support.scanners",
        str(report),
        source,
        tool,
        "-p",
        str(target[1]),
        "-P",
        str(port),
        *(["-v"] if verbose else []),
        *args,
        target[0],
    ]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=REPOSITORY,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    timed_out = False
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        timed_out = True
        proc.kill()
        out, _ = await proc.communicate()
    elapsed = time.monotonic() - started
    data = _read_report(report)
    return ToolRun(
        tool=tool,
        returncode=proc.returncode if proc.returncode is not None else -1,
        output=out.decode(errors="replace"),
        results=data.get("results", {}),
        sent=data.get("sent", 0),
        methods=data.get("methods", {}),
        user_agents=data.get("user_agents", []),
        source=(source, port),
        elapsed=elapsed,
        timed_out=timed_out,
        requests=data.get("requests", []),
        send_times=data.get("send_times", []),
    )


def _read_report(report: Path) -> dict[str, Any]:
    if not report.exists():  # the tool was killed, or crashed before writing it
        return {}
    data: dict[str, Any] = json.loads(report.read_text())
    return data


# ---------------------------------------------------------------- the launcher


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _launch(report: Path, bind: str, tool: str, args: list[str]) -> int:
    module = importlib.import_module(f"sipvicious.{tool}")
    original = getattr(module, _CLASSES[tool])
    instances: list[Any] = []

    class Bound(original):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            kw["bindingip"] = bind
            super().__init__(*a, **kw)
            # svcrack waits 10 s for its first answer (svwar 3 s): tests use less.
            self.sock.settimeout(SOCKET_TIMEOUT)
            instances.append(self)

    setattr(module, _CLASSES[tool], Bound)

    methods: collections.Counter[str] = collections.Counter()
    user_agents: set[str] = set()
    requests: list[str] = []
    times: list[float] = []
    started = time.monotonic()
    send = module.mysendto

    def counting_send(sock: socket.socket, data: str | bytes, destination: Any) -> Any:
        text = _text(data)
        methods[text.split(" ", 1)[0]] += 1
        agent = ""
        for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "user-agent":
                agent = value.strip()
        user_agents.add(agent)
        if len(requests) < 3:
            requests.append(text)
        times.append(time.monotonic() - started)
        return send(sock, data, destination)

    setattr(module, "mysendto", counting_send)  # noqa: B010 (a module attribute)
    sys.argv = [f"sipvicious_{tool}", *args]
    code = 0
    try:
        module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        results: dict[str, str] = {}
        if instances:
            found = getattr(instances[-1], _RESULTS[tool])
            results = {_text(k): _text(found[k]) for k in found}
        report.write_text(
            json.dumps(
                {
                    "results": results,
                    "sent": sum(methods.values()),
                    "methods": dict(methods),
                    "user_agents": sorted(user_agents),
                    "requests": requests,
                    "send_times": times,
                    "ended": time.monotonic() - started,
                }
            )
        )
    return code


if __name__ == "__main__":
    sys.exit(_launch(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]))
