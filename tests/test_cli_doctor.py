"""``sipbridge doctor`` on the command line: a clean setup with a real echo agent exits 0,
seeded problems exit 1 with their fixes, bad options exit 2, ``--json`` parses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.cli.doctor_command import format_check
from sipbridge.codecs import opus as opus_module
from sipbridge.doctor import Check
from sipbridge.store.db import Database
from tests.support.agents import EchoAgent
from tests.test_doctor import closed_port, expired


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SIPBRIDGE_* from the outer environment; the default database under tmp_path."""
    for name in list(os.environ):
        if name.startswith("SIPBRIDGE_") and not name.startswith("SIPBRIDGE_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    # No configuration file of this machine's (/etc/sipbridge) or user's is read.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setattr("sipbridge.cli.config_file.SYSTEM_CONFIG", tmp_path / "no-etc.toml")
    return home / "data"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SIPBRIDGE_DB": f"sqlite:///{tmp_path / 'doctor.db'}"}


@contextlib.contextmanager
def agent_in_thread(**options: Any) -> Iterator[EchoAgent]:
    """A real echo agent (tests.support.agents) on its own event loop and thread, so the
    command's own ``asyncio.run`` can reach it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    agent = EchoAgent(**options)
    try:
        asyncio.run_coroutine_threadsafe(agent.__aenter__(), loop).result(5)
        yield agent
    finally:
        asyncio.run_coroutine_threadsafe(agent.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def free_rtp_range() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    low = port - port % 2
    return f"{low}-{low + 20}"


def local_args(*extra: str) -> list[str]:
    return [
        "doctor",
        *("--sip-host", "127.0.0.1", "--sip-port", "0", "--http-port", "0"),
        *("--rtp-ports", free_rtp_range(), "--codecs", "pcmu,pcma", "--timeout", "2"),
        *extra,
    ]


def run(runner: CliRunner, env: dict[str, str], *args: str) -> Result:
    result = runner.invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def setup_ok(runner: CliRunner, env: dict[str, str], url: str) -> None:
    for args in (
        ("agent", "add", "echo", "--url", url, "--token", "s3cret"),
        ("number", "add", "+12025550101", "--agent", "echo"),
        ("trunk", "add", "local", "--allow", "127.0.0.1/32"),
    ):
        assert run(runner, env, *args).exit_code == 0


def test_clean_setup_with_a_real_echo_agent_exits_0(runner: CliRunner, env: dict[str, str]) -> None:
    with agent_in_thread() as agent:
        setup_ok(runner, env, agent.url)
        result = run(runner, env, *local_args())
        as_json = run(runner, env, *local_args("--json"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.split()[0] in ("ok", "info", "warning") for line in lines[:-1]), lines
    assert lines[-1] == "no problems, 0 warning(s)"
    text = result.stdout
    assert f"agent echo: {agent.url}: the WebSocket handshake succeeded" in text
    assert "number +12025550101 goes to agent echo" in text
    assert "SIP over UDP can listen on 127.0.0.1:0" in text
    assert as_json.exit_code == 0
    checks = json.loads(as_json.stdout)
    assert checks and all(
        set(check) == {"id", "subject", "status", "message", "fix"} for check in checks
    )
    assert {check["status"] for check in checks} <= {"ok", "info", "warning"}
    assert {"port", "rtp_ports", "codecs", "advertised_address", "database", "agent_url"} <= {
        check["id"] for check in checks
    }


def test_seeded_problems_exit_1_each_with_its_fix(
    runner: CliRunner, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"ws://127.0.0.1:{closed_port()}/"
    for args in (
        ("agent", "add", "gone", "--url", down),
        ("agent", "add", "down", "--url", down),
        ("agent", "add", "mute", "--url", down, "--no-voice"),
        ("number", "add", "+12025550101", "--agent", "gone"),
        ("number", "add", "+12025550102", "--agent", "mute"),
        ("number", "add", "+12025550103", "--agent", "down"),
        ("agent", "remove", "gone"),
        ("trunk", "add", "open"),
    ):
        assert run(runner, env, *args).exit_code == 0, args
    monkeypatch.setattr(opus_module, "_lib", None)
    monkeypatch.setattr(opus_module.ctypes.util, "find_library", lambda name: None)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        args = local_args()
        args[args.index("--sip-port") + 1] = str(port)
        args[args.index("--codecs") + 1] = "opus,pcmu"
        result = run(runner, env, *args)
        as_json = run(runner, env, *args, "--json")
    assert result.exit_code == 1, result.output
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    expected = [
        (f"port {port} is already in use", "choose another --sip-port"),
        ("--codecs names opus", "apt-get install libopus0"),
        ("agent down: nothing accepts connections", "sipbridge agent update down --url URL"),
        ("number +12025550101 is routed to no existing agent", "number update +12025550101"),
        ("agent mute, which is not voice-enabled", "sipbridge agent update mute --voice"),
        ("trunk open has no access rule", "sipbridge trunk add open --allow CIDR"),
    ]
    for message, fix in expected:
        assert any(message in line and fix in line.split("-> fix:")[1] for line in problems), (
            message,
            problems,
        )
    assert result.stdout.splitlines()[-1].startswith(f"{len(problems)} problem(s)")
    assert as_json.exit_code == 1
    statuses = [check["status"] for check in json.loads(as_json.stdout)]
    assert statuses.count("problem") == len(problems)


def test_database_behind_head_exits_1_and_stays_behind(
    runner: CliRunner, env: dict[str, str]
) -> None:
    url = env["SIPBRIDGE_DB"]

    async def at(revision: str | None) -> str | None:
        database = Database(url)
        try:
            if revision is not None:
                await database.upgrade(revision)
            return await database.current_revision()
        finally:
            await database.close()

    asyncio.run(at("0005"))
    result = run(runner, env, *local_args())
    assert result.exit_code == 1
    line = next(line for line in result.stdout.splitlines() if "revision 0005" in line)
    assert line.startswith("PROBLEM") and "-> fix: sipbridge db upgrade --db" in line
    assert asyncio.run(at(None)) == "0005"


def test_settings_come_from_serves_options_and_variables(
    runner: CliRunner, env: dict[str, str]
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        environ = {**env, "SIPBRIDGE_HTTP_PORT": str(port), "SIPBRIDGE_HTTP_HOST": "127.0.0.1"}
        args = local_args()
        del args[args.index("--http-port") : args.index("--http-port") + 2]
        result = run(runner, environ, *args)
    assert result.exit_code == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}: port {port} is already in use" in (
        result.stdout
    )


def test_expired_tls_certificate_is_a_problem(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    cert, key = expired(tmp_path)
    result = run(runner, env, *local_args("--tls-cert", cert, "--tls-key", key, "--tls-port", "0"))
    assert result.exit_code == 1
    assert "SIP over TLS can listen on 127.0.0.1:0" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "expired on" in line)
    assert line.startswith("PROBLEM") and "renew" in line
    unreadable = run(
        runner, env, *local_args("--tls-cert", str(tmp_path / "no.pem"), "--tls-key", key)
    )
    assert unreadable.exit_code == 1
    assert f"--tls-cert {tmp_path / 'no.pem'} cannot be read" in unreadable.stdout
    assert "SIP over TLS can listen" in unreadable.stdout  # the port is still checked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtp-ports", "20-10"], "--rtp-ports"),
        (["--tls-cert", "/etc/hostname"], "--tls-cert and --tls-key must be given together"),
        (["--codecs", "speex"], "unknown codec"),
        (["--public-ip", "example"], "is not an IP address"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_bad_options_exit_2(
    runner: CliRunner, env: dict[str, str], args: list[str], message: str
) -> None:
    result = run(runner, env, "doctor", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_help_names_doctor_and_its_options(runner: CliRunner) -> None:
    assert "doctor" in runner.invoke(app, ["--help"]).stdout
    text = runner.invoke(app, ["doctor", "--help"], env={"COLUMNS": "100"}).stdout
    for option in ("--json", "--timeout", "--sip-port", "--public-ip", "--tls-cert", "--db"):
        assert option in text


def test_lines_are_escaped() -> None:
    check = Check("x", "problem", "agent \x1b[2Jbot\nfake line", "fix\r")
    assert format_check(check) == "PROBLEM  agent \\x1b[2Jbot\\nfake line -> fix: fix\\r"
    assert format_check(Check("x", "ok", "fine")) == "ok       fine"


def test_doctor_reads_the_config_file(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "sipbridge.toml"
    config.write_text('public_ip = "example"\n')
    result = run(runner, env, "doctor", "--config", str(config))
    assert result.exit_code == 2
    assert f"error: config file {config}: key 'public_ip': 'example' is not an IP address" in (
        result.output
    )
    config.write_text("timeout = 3\n")  # doctor's own options are not settings of the file
    result = run(runner, env, "doctor", "--config", str(config))
    assert result.exit_code == 2 and "unknown key 'timeout'" in result.output
