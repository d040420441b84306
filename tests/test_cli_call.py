"""``sipbridge call`` and ``sipbridge demo`` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from tests.runtime.test_call import NUMBER, route_to
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_demo_end_to_end(tmp_path: Path) -> None:
    """On a clean temp dir, as a fresh install would run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "sipbridge", "demo", "--duration", "2"],
        cwd=tmp_path,
        env={**ENV, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for step in (
        "temporary database",
        "<- 180 Ringing",
        "agent connected",
        "<- 200 OK: answered",
        "<- agent audio",
        "agent   key pressed: 1",
        "round trip",
        "MOS",
        "-> BYE",
        "record  id ",
        ": answered (caller_hangup)",
        "stop    server and echo agent stopped",
        "OK      the whole path works",
    ):
        assert step in out, out
    assert list(tmp_path.iterdir()) == []  # nothing left behind


async def run_call(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipbridge",
        "call",
        *args,
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_call_command_connects_and_explains_404(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(overload_lag_ms=500.0, overload_cpu=1.0)
    host, port = bridge.sip_address
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        code, out = await run_call(NUMBER, "--server", f"{host}:{port}", "--duration", "1.5")
        missing, told = await run_call("+12025550199", "--server", f"{host}:{port}")
    assert code == 0, out
    assert "<- 200 OK: answered" in out and "quality report" in out and "MOS" in out
    assert "OK: the call connected and agent audio came back (exit 0)" in out
    assert missing == 4, told
    assert "FAILED: 404 Not Found (unknown_number): the number is not routed (exit 4)" in told
    assert "fix: sipbridge number add +12025550199 --agent NAME" in told


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+12025550101", "--server", "h", "--transport", "sctp"], "--transport"),
        (["+12025550101", "--server", "h", "--codec", "g729"], "--codec"),
        (["+12025550101", "--server", "h", "--dtmf", "12x"], "--dtmf"),
        (["+12025550101", "--server", "h:99999"], "--server"),
        (["call-me", "--server", "h"], "NUMBER"),
        (["+1202", "--server", "h"], "NUMBER"),
        (["+12025550101", "--server", "h", "--from", "x"], "--from"),
        (["+12025550101", "--server", "h", "--play", "/nonexistent.wav"], "no such file"),
        (["+12025550101", "--server", "h", "--username", "u"], "go together"),
        (["+12025550101", "--server", "h", "--duration", "0"], "--duration"),
    ],
)
def test_call_bad_input_exits_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["call", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_demo_bad_input_exits_2() -> None:
    result = CliRunner().invoke(app, ["demo", "--codec", "g729"])
    assert result.exit_code == 2 and "--codec" in result.output
