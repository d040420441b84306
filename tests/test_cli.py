import asyncio
import json
import os
import shutil
import subprocess
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.config import ServeSettings
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every command at the tmp database through SIPBRIDGE_DB."""
    for name in list(os.environ):
        if name.startswith("SIPBRIDGE_"):
            monkeypatch.delenv(name)
    return {"SIPBRIDGE_DB": db_url}


def invoke(runner: CliRunner, env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "agent", "number", "calls", "db"):
        assert command in result.stdout


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("sipbridge ")


def test_agent_add_list_remove(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "add", "support", "--url", "wss://agent.example/ws")
    assert result.exit_code == 0, result.output
    assert "added agent support" in result.stdout

    invoke(runner, env, "agent", "add", "quiet", "--url", "ws://localhost:9000", "--no-voice")
    result = invoke(runner, env, "agent", "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "URL", "VOICE"]
    assert lines[1].split()[:3] == ["quiet", "ws://localhost:9000", "no"]
    assert lines[2].split()[:3] == ["support", "wss://agent.example/ws", "yes"]

    result = invoke(runner, env, "agent", "remove", "quiet")
    assert result.exit_code == 0
    assert "removed agent quiet" in result.stdout
    assert "quiet" not in invoke(runner, env, "agent", "list").stdout


def test_agent_list_empty(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "list")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no agents"


def test_agent_add_duplicate_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "agent", "add", "bot", "--url", "ws://b")
    assert result.exit_code == 1
    assert "error: agent 'bot' already exists" in result.stderr


def test_agent_add_bad_url_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "add", "bot", "--url", "http://a")
    assert result.exit_code == 2
    assert "ws:// or wss://" in result.stderr


def test_agent_url_from_env(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(app, ["agent", "add", "bot"], env={**env, "SIPBRIDGE_URL": "ws://e"})
    assert result.exit_code == 0, result.output
    assert "ws://e" in invoke(runner, env, "agent", "list").stdout


def test_agent_remove_unknown_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "remove", "ghost")
    assert result.exit_code == 1
    assert "error: agent 'ghost' not found" in result.stderr


def test_agent_remove_reports_orphans(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot")
    invoke(runner, env, "number", "add", "+12025550102", "--agent", "bot")
    result = invoke(runner, env, "agent", "remove", "bot")
    assert result.exit_code == 0
    assert "2 numbers now have no agent" in result.stdout
    listing = invoke(runner, env, "number", "list").stdout
    assert "+12025550101" in listing and "no agent" in listing


def test_number_add_list_remove(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "number", "add", "+1 (202) 555-0101", "--agent", "bot")
    assert result.exit_code == 0, result.output
    assert "added number +12025550101 -> bot" in result.stdout

    result = invoke(runner, env, "number", "list")
    assert result.stdout.splitlines()[1].split() == ["+12025550101", "bot"]

    result = invoke(runner, env, "number", "remove", "tel:+1-202-555-0101")
    assert result.exit_code == 0
    assert "removed number +12025550101" in result.stdout
    assert invoke(runner, env, "number", "list").stdout.strip() == "no numbers"


def test_number_add_invalid_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "number", "add", "abc", "--agent", "bot")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: 'abc' is not a valid phone number (use E.164, e.g. +12025550101)"
    )
    assert result.stdout == ""


def test_number_add_unknown_agent_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "number", "add", "+12025550101", "--agent", "ghost")
    assert result.exit_code == 1
    assert "error: agent 'ghost' not found" in result.stderr


def test_number_add_duplicate_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot")
    result = invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot")
    assert result.exit_code == 1
    assert "already exists" in result.stderr


def test_number_remove_unknown_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "number", "remove", "+12025550101")
    assert result.exit_code == 1
    assert "not found" in result.stderr


def _seed_calls(db_url: str) -> None:
    async def seed() -> None:
        async with Database(db_url) as db:
            await db.upgrade()
            await service.save_call(
                db,
                CallRecord(
                    id="old",
                    sip_call_id="old@trunk",
                    from_number="+12025550100",
                    to_number="+12025550101",
                    agent="bot",
                    received_at=T0,
                    answered_at=T0 + timedelta(seconds=1),
                    ended_at=T0 + timedelta(seconds=13, milliseconds=400),
                    status=CallStatus.ANSWERED,
                    reason="caller_hangup",
                    sip_code=200,
                    codec="PCMU",
                ),
            )
            await service.save_call(
                db,
                CallRecord(
                    id="new",
                    sip_call_id="new@trunk",
                    from_number="anonymous",
                    to_number="+12025550199",
                    agent=None,
                    received_at=T0 + timedelta(minutes=5),
                    status=CallStatus.FAILED,
                    reason="unknown_number",
                    sip_code=404,
                ),
            )

    asyncio.run(seed())


def test_calls_table(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    _seed_calls(db_url)
    result = invoke(runner, env, "calls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "RECEIVED",
        "(UTC)",
        "FROM",
        "TO",
        "AGENT",
        "STATUS",
        "REASON",
        "CODE",
        "DURATION",
        "CODEC",
    ]
    assert lines[1].split() == [
        "2025-03-01",
        "12:05:00",
        "anonymous",
        "+12025550199",
        "-",
        "failed",
        "unknown_number",
        "404",
        "-",
        "-",
    ]
    assert lines[2].split() == [
        "2025-03-01",
        "12:00:00",
        "+12025550100",
        "+12025550101",
        "bot",
        "answered",
        "caller_hangup",
        "200",
        "12.4s",
        "PCMU",
    ]


def test_calls_json_number_filter_and_limit(
    runner: CliRunner, env: dict[str, str], db_url: str
) -> None:
    _seed_calls(db_url)
    data = json.loads(invoke(runner, env, "calls", "--json").stdout)
    assert [c["id"] for c in data] == ["new", "old"]
    assert data[1]["duration_s"] == pytest.approx(12.4)
    assert data[1]["received_at"] == "2025-03-01T12:00:00+00:00"

    data = json.loads(invoke(runner, env, "calls", "--json", "--number", "+1 202 555 0101").stdout)
    assert [c["id"] for c in data] == ["old"]

    data = json.loads(invoke(runner, env, "calls", "--json", "--limit", "1").stdout)
    assert [c["id"] for c in data] == ["new"]

    result = runner.invoke(app, ["calls"], env={**env, "SIPBRIDGE_JSON": "1"})
    assert isinstance(json.loads(result.stdout), list)


def test_calls_empty(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "calls")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no calls"
    assert json.loads(invoke(runner, env, "calls", "--json").stdout) == []


def test_calls_bad_limit_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    assert invoke(runner, env, "calls", "--limit", "0").exit_code == 2


def test_db_upgrade(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = invoke(runner, env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "revision 0001" in result.stdout

    async def revision() -> str | None:
        async with Database(db_url) as db:
            return await db.current_revision()

    assert asyncio.run(revision()) == "0001"


def test_db_option_overrides_env(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a", "--db", other)
    assert "bot" in invoke(runner, env, "agent", "list", "--db", other).stdout
    assert "bot" not in invoke(runner, env, "agent", "list").stdout


def test_bad_database_url_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["agent", "list", "--db", "not a url"])
    assert result.exit_code == 2
    assert "invalid database URL" in result.stderr


def test_missing_database_directory_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    result = runner.invoke(app, ["agent", "list", "--db", url])
    assert result.exit_code == 2
    assert "missing-dir' does not exist" in result.stderr


def test_unusable_database_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a sqlite database" * 200)
    result = runner.invoke(app, ["agent", "list", "--db", f"sqlite:///{garbage}"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: database error")


# ---------------------------------------------------------------- serve


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[ServeSettings]:
    calls: list[ServeSettings] = []
    module = types.ModuleType("sipbridge.runtime.server")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipbridge.runtime.server", module)
    return calls


def test_serve_builds_settings(
    runner: CliRunner, env: dict[str, str], db_url: str, fake_server: list[ServeSettings]
) -> None:
    result = runner.invoke(
        app,
        [
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            "5070",
            "--rtp-ports",
            "30000-30100",
            "--public-ip",
            "203.0.113.9",
            "--log-level",
            "DEBUG",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert fake_server == [
        ServeSettings(
            sip_host="127.0.0.1",
            sip_port=5070,
            rtp_port_min=30000,
            rtp_port_max=30100,
            public_ip="203.0.113.9",
            db=db_url,
            log_level="debug",
        )
    ]


def test_serve_defaults_and_env(
    runner: CliRunner, env: dict[str, str], db_url: str, fake_server: list[ServeSettings]
) -> None:
    result = runner.invoke(
        app,
        ["serve"],
        env={
            **env,
            "SIPBRIDGE_SIP_PORT": "5080",
            "SIPBRIDGE_RTP_PORTS": "40000-40010",
            "SIPBRIDGE_PUBLIC_IP": "198.51.100.2",
            "SIPBRIDGE_SIP_HOST": "10.1.1.1",
            "SIPBRIDGE_LOG_LEVEL": "warning",
            "SIPBRIDGE_AGENT_CONNECT_TIMEOUT": "2.5",
        },
    )
    assert result.exit_code == 0, result.output
    assert fake_server == [
        ServeSettings(
            sip_host="10.1.1.1",
            sip_port=5080,
            rtp_port_min=40000,
            rtp_port_max=40010,
            public_ip="198.51.100.2",
            db=db_url,
            agent_connect_timeout=2.5,
            log_level="warning",
        )
    ]


def test_serve_migrates_database_first(
    runner: CliRunner, env: dict[str, str], db_url: str, fake_server: list[ServeSettings]
) -> None:
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0

    async def tables_ready() -> list[object]:
        async with Database(db_url) as db:
            return list(await service.list_agents(db))

    assert asyncio.run(tables_ready()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtp-ports", "20000-10000"], "--rtp-ports"),
        (["--rtp-ports", "abc"], "--rtp-ports"),
        (["--public-ip", "not-an-ip"], "--public-ip"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_serve_bad_options_exit_2(
    runner: CliRunner,
    env: dict[str, str],
    fake_server: list[ServeSettings],
    args: list[str],
    message: str,
) -> None:
    result = runner.invoke(app, ["serve", *args], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}")
    assert fake_server == []


def test_serve_bad_sip_port_exits_2(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    assert runner.invoke(app, ["serve", "--sip-port", "70000"], env=env).exit_code == 2
    assert fake_server == []


# ----------------------------------------------------------- console script


def _console_script() -> str:
    candidate = Path(sys.executable).with_name("sipbridge")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("sipbridge")
    if found is None:
        pytest.skip("the sipbridge console script is not installed")
    return found


def test_console_script_uses_sipbridge_db_env(tmp_path: Path) -> None:
    db_file = tmp_path / "script.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
    env["SIPBRIDGE_DB"] = f"sqlite:///{db_file}"
    script = _console_script()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    added = run("agent", "add", "bot", "--url", "wss://bot.example/ws")
    assert added.returncode == 0, added.stderr
    number = run("number", "add", "+12025550101", "--agent", "bot")
    assert number.returncode == 0, number.stderr
    bad = run("number", "add", "abc", "--agent", "bot")
    assert bad.returncode == 2
    assert "error: 'abc' is not a valid phone number" in bad.stderr

    assert db_file.exists()
    assert not (tmp_path / "sipbridge.db").exists()  # the default was not used

    async def read_back() -> str | None:
        async with Database(f"sqlite:///{db_file}") as db:
            route = await service.lookup_number(db, "+12025550101")
            return None if route is None or route.agent is None else route.agent.name

    assert asyncio.run(read_back()) == "bot"
