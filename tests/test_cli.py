import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from sipbridge.agent.limits import AgentLimits
from sipbridge.cli import app
from sipbridge.config import ServeSettings
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import (
    BanRecord,
    CallEvent,
    CallRecord,
    CallStatus,
    RecordingInfo,
    TraceRecord,
    TrunkRecord,
)
from tests.support.require import require

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads SIPBRIDGE_* from the outer environment or writes to the real home:
    the default database lands under tmp_path."""
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
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def env(db_url: str) -> dict[str, str]:
    """Point every command at the tmp database through SIPBRIDGE_DB."""
    return {"SIPBRIDGE_DB": db_url}


def in_db(env: dict[str, str]) -> str:
    return f" (database {env['SIPBRIDGE_DB']})"


def invoke(runner: CliRunner, env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "serve",
        "agent",
        "number",
        "trunk",
        "apikey",
        "ban",
        "trace",
        "calls",
        "db",
    ):
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
    assert lines[0].split()[:6] == ["NAME", "URLS", "PROTOCOL", "RATE", "VOICE", "TOKEN"]
    assert lines[1].split()[:6] == ["quiet", "ws://localhost:9000", "native", "8000", "no", "no"]
    assert lines[2].split()[:6] == [
        "support",
        "wss://agent.example/ws",
        "native",
        "8000",
        "yes",
        "no",
    ]

    result = invoke(runner, env, "agent", "remove", "quiet")
    assert result.exit_code == 0
    assert "removed agent quiet" in result.stdout
    assert "quiet" not in invoke(runner, env, "agent", "list").stdout


def test_agent_list_empty(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "list")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no agents" + in_db(env)


def test_agent_add_duplicate_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "agent", "add", "bot", "--url", "ws://b")
    assert result.exit_code == 1
    assert "error: agent 'bot' already exists" in result.stderr


def test_agent_add_bad_url_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "add", "bot", "--url", "http://a")
    assert result.exit_code == 2
    assert "ws:// or wss://" in result.stderr


def test_agent_url_not_from_env(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(app, ["agent", "add", "bot"], env={**env, "SIPBRIDGE_URL": "ws://e"})
    assert result.exit_code == 2
    assert "--url" in result.output


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
    assert result.stdout.splitlines()[1].split() == ["+12025550101", "bot", "agent's"]

    result = invoke(runner, env, "number", "remove", "tel:+1-202-555-0101")
    assert result.exit_code == 0
    assert "removed number +12025550101" in result.stdout
    assert invoke(runner, env, "number", "list").stdout.strip() == "no numbers" + in_db(env)


def test_number_add_invalid_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "number", "add", "abc", "--agent", "bot")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: number: 'abc' is not a valid phone number (write it with its +country code, "
        "e.g. +12025550101, or give --default-region, e.g. US, for a national number)"
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
                    mos=4.31,
                    jitter_ms=12.2,
                    loss_percent=0.5,
                    recording=RecordingInfo(
                        "/var/lib/sipbridge/recordings/2025-03-03/old.wav",
                        "wav",
                        8000,
                        2,
                        396844,
                        12.4,
                    ),
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
        "ID",
        "RECEIVED",
        "(UTC)",
        "FROM",
        "TO",
        "AGENT",
        "DIR",
        "STATUS",
        "REASON",
        "CODE",
        "DURATION",
        "CODEC",
        "MOS",
        "JITTER",
        "LOSS",
    ]
    assert lines[1].split() == [
        "new",
        "2025-03-01",
        "12:05:00",
        "anonymous",
        "+12025550199",
        "-",
        "in",
        "failed",
        "unknown_number",
        "404",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]
    assert lines[2].split() == [
        "old",
        "2025-03-01",
        "12:00:00",
        "+12025550100",
        "+12025550101",
        "bot",
        "in",
        "answered",
        "caller_hangup",
        "200",
        "12.4s",
        "PCMU",
        "4.3",
        "12ms",
        "0.5%",
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
    assert result.stdout.startswith("ID ")  # --json is not read from the environment


def test_calls_empty(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "calls")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no calls" + in_db(env)
    assert json.loads(invoke(runner, env, "calls", "--json").stdout) == []


def test_calls_bad_limit_exits_2(runner: CliRunner, env: dict[str, str]) -> None:
    assert invoke(runner, env, "calls", "--limit", "0").exit_code == 2


def test_db_upgrade(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = invoke(runner, env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "revision 0015" in result.stdout

    async def revision() -> str | None:
        async with Database(db_url) as db:
            return await db.current_revision()

    assert asyncio.run(revision()) == "0015"


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
    assert "folder '" + str(tmp_path / "missing-dir") + "' does not exist" in result.stderr
    assert not (tmp_path / "missing-dir").exists()


def test_default_database_does_not_depend_on_the_working_directory(
    runner: CliRunner, data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    assert runner.invoke(app, ["agent", "add", "bot", "--url", "ws://a"]).exit_code == 0
    monkeypatch.chdir(second)
    assert "bot" in runner.invoke(app, ["agent", "list"]).stdout
    database = data_home / "sipbridge" / "sipbridge.db"
    assert database.is_file()
    assert list(first.iterdir()) == list(second.iterdir()) == []
    result = runner.invoke(app, ["number", "list"])
    assert result.stdout.strip() == f"no numbers (database sqlite:///{database})"


def test_serve_uses_the_default_database(
    runner: CliRunner, data_home: Path, fake_server: list[ServeSettings]
) -> None:
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert fake_server[0].db == f"sqlite:///{data_home / 'sipbridge' / 'sipbridge.db'}"


# ---------------------------------------------------------------- serve


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[ServeSettings]:
    calls: list[ServeSettings] = []
    module = types.ModuleType("sipbridge.runtime.server")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipbridge.runtime.server", module)
    monkeypatch.setattr("sipbridge.cli.serve_command.listen_problem", lambda _listeners: None)
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
            "--http-host",
            "0.0.0.0",
            "--http-port",
            "9090",
            "--default-region",
            "gb",
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
            default_region="GB",
            http_host="0.0.0.0",
            http_port=9090,
        )
    ]


def test_serve_log_options(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    args = ["serve", "--log-format", "JSON", "--log-levels", "call=debug, sip.trace=warning"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    environ = {**env, "SIPBRIDGE_LOG_FORMAT": "json", "SIPBRIDGE_LOG_LEVELS": "media=error"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    shown = [(s.log_format, s.log_levels) for s in fake_server]
    assert shown == [
        ("json", (("sipbridge.call", 10), ("sipbridge.sip.trace", 30))),
        ("json", (("sipbridge.media", 40),)),
        ("text", ()),
    ]


def test_serve_record_options(
    runner: CliRunner,
    env: dict[str, str],
    fake_server: list[ServeSettings],
    tmp_path: Path,
) -> None:
    spool = str(tmp_path / "records.spool")
    args = ["serve", "--instance-id", "sip-1", "--spool", spool, "--spool-max-mb", "2"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    [settings] = fake_server
    assert (settings.instance_id, settings.spool_path) == ("sip-1", spool)
    assert settings.owner_id == "sip-1" and settings.spool_max_bytes == 2 * 1024 * 1024
    fake_server.clear()
    result = runner.invoke(app, ["serve"], env={**env, "SIPBRIDGE_INSTANCE_ID": "from-env"})
    assert result.exit_code == 0, result.output
    assert fake_server[0].owner_id == "from-env"
    assert fake_server[0].instance_timeout == 30.0  # the default
    fake_server.clear()
    result = runner.invoke(app, ["serve", "--instance-timeout", "4.5"], env=env)
    assert result.exit_code == 0, result.output
    assert fake_server[0].instance_timeout == 4.5
    fake_server.clear()
    result = runner.invoke(app, ["serve"], env={**env, "SIPBRIDGE_INSTANCE_TIMEOUT": "12"})
    assert result.exit_code == 0, result.output
    assert fake_server[0].instance_timeout == 12.0
    result = runner.invoke(app, ["serve", "--instance-timeout", "0.5"], env=env)
    assert result.exit_code == 2 and "--instance-timeout" in result.output


def test_serve_drain_timeout_option_and_env(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    result = runner.invoke(app, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert fake_server[0].drain_timeout == 300.0  # the default: five minutes
    fake_server.clear()
    result = runner.invoke(app, ["serve", "--drain-timeout", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert fake_server[0].drain_timeout == 0.0  # hang up at once, as before the drain
    fake_server.clear()
    result = runner.invoke(app, ["serve"], env={**env, "SIPBRIDGE_DRAIN_TIMEOUT": "42.5"})
    assert result.exit_code == 0, result.output
    assert fake_server[0].drain_timeout == 42.5
    fake_server.clear()
    result = runner.invoke(app, ["serve", "--drain-timeout", "-1"], env=env)
    assert result.exit_code == 2 and fake_server == []


def test_serve_session_timer_options(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    result = runner.invoke(app, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert (fake_server[0].session_expires, fake_server[0].min_se) == (1800, 90)
    fake_server.clear()
    result = runner.invoke(app, ["serve", "--session-expires", "600", "--min-se", "120"], env=env)
    assert result.exit_code == 0, result.output
    assert (fake_server[0].session_expires, fake_server[0].min_se) == (600, 120)
    fake_server.clear()
    result = runner.invoke(app, ["serve"], env={**env, "SIPBRIDGE_SESSION_EXPIRES": "0"})
    assert result.exit_code == 0 and fake_server[0].session_expires == 0
    fake_server.clear()
    result = runner.invoke(app, ["serve", "--session-expires", "60"], env=env)
    assert result.exit_code == 2 and fake_server == []
    assert "--min-se" in result.output


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
            "SIPBRIDGE_HTTP_HOST": "10.1.1.2",
            "SIPBRIDGE_HTTP_PORT": "8181",
            "SIPBRIDGE_DEFAULT_REGION": "US",
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
            default_region="US",
            http_host="10.1.1.2",
            http_port=8181,
        )
    ]


def test_serve_access_options(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    args = ["serve", "--reject-unknown", "403", "--auth-realm", "voice.example.com"]
    assert runner.invoke(app, [*args, "--auth-algorithms", "MD5"], env=env).exit_code == 0
    environ = {
        **env,
        "SIPBRIDGE_REJECT_UNKNOWN": "DROP",
        "SIPBRIDGE_AUTH_ALGORITHMS": "md5,sha-256",
    }
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    explicit, from_env, default = fake_server
    assert (explicit.unknown_sources, explicit.auth_realm, explicit.auth_algorithms) == (
        "403",
        "voice.example.com",
        ("MD5",),
    )
    assert (from_env.unknown_sources, from_env.auth_algorithms) == ("drop", ("MD5", "SHA-256"))
    assert (default.unknown_sources, default.auth_realm, default.auth_algorithms) == (
        "drop",
        None,
        ("SHA-256", "MD5"),
    )


def test_serve_trusted_proxies(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    args = ["serve", "--trusted-proxy", "10.0.0.5", "--trusted-proxy", "10.1.0.9/29,[2001:db8::5]"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    environ = {**env, "SIPBRIDGE_TRUSTED_PROXIES": "10.0.0.5, 10.0.0.6"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    explicit, from_env, default = fake_server
    assert explicit.trusted_proxies == ("10.0.0.5", "10.1.0.8/29", "2001:db8::5")
    assert from_env.trusted_proxies == ("10.0.0.5", "10.0.0.6")
    assert default.trusted_proxies == ()
    result = runner.invoke(
        app, ["serve", "--trusted-proxy", "x"], env={**env, "SIPBRIDGE_TRUSTED_PROXIES": "1.2.3.4"}
    )
    assert result.exit_code == 2  # the command line wins over the variable
    assert result.stderr.startswith("error: --trusted-proxy: 'x' is not an IP address")


def test_serve_http_defaults(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    [settings] = fake_server
    assert (settings.http_host, settings.http_port, settings.default_region) == (
        "127.0.0.1",
        8080,
        None,
    )


def test_serve_migrates_database_first(
    runner: CliRunner, env: dict[str, str], db_url: str, fake_server: list[ServeSettings]
) -> None:
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0

    async def tables_ready() -> list[object]:
        async with Database(db_url) as db:
            return list(await service.list_agents(db))

    assert asyncio.run(tables_ready()) == []


def _one_error_line(result: Result, code: int) -> str:
    """The command failed with ``code`` and said so in one ``error:`` line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime must not start: the listen check has to stop serve first."""
    module = types.ModuleType("sipbridge.runtime.server")

    def run(_settings: ServeSettings) -> None:
        raise AssertionError("the server was started")

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipbridge.runtime.server", module)


@pytest.mark.parametrize("udp", [True, False])
def test_serve_sip_port_in_use_is_one_line(
    runner: CliRunner, env: dict[str, str], no_server: None, udp: bool
) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if not udp:
            taken.listen(1)
        port = str(taken.getsockname()[1])
        args = ["serve", "--sip-host", "127.0.0.1", "--sip-port", port, "--http-port", "0"]
        line = _one_error_line(runner.invoke(app, args, env=env), 1)
    transport = "UDP" if udp else "TCP"
    assert line == (
        f"error: cannot listen for SIP over {transport} on 127.0.0.1:{port}: port {port} is "
        "already in use (stop the program using it, or choose another --sip-port)"
    )


def test_serve_http_and_tls_ports_in_use(
    runner: CliRunner, env: dict[str, str], no_server: None, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        base = ["serve", "--sip-host", "127.0.0.1", "--sip-port", "0"]
        line = _one_error_line(runner.invoke(app, [*base, "--http-port", port], env=env), 1)
        assert "HTTP on 127.0.0.1:" in line and "--http-port" in line
        cert = tmp_path / "c.pem"
        cert.write_text("x")
        tls = ["--tls-cert", str(cert), "--tls-key", str(cert), "--tls-port", port]
        line = _one_error_line(runner.invoke(app, [*base, "--http-port", "0", *tls], env=env), 1)
        assert "SIP over TLS on 127.0.0.1:" in line and "--tls-port" in line


def test_serve_on_an_address_the_host_lacks_is_one_line(
    runner: CliRunner, env: dict[str, str], no_server: None
) -> None:
    args = ["serve", "--sip-host", "192.0.2.1", "--sip-port", "0", "--http-port", "0"]
    line = _one_error_line(runner.invoke(app, args, env=env), 1)
    assert line == (
        "error: cannot listen for SIP over UDP on 192.0.2.1:0: this host has no address "
        "192.0.2.1 (give --sip-host one of its own addresses, or 0.0.0.0 for all)"
    )


UNREACHABLE_PG = "postgresql+asyncpg://u:secret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--sip-host", "127.0.0.1", "--sip-port", "0", "--http-port", "0"],
        ["db", "upgrade"],
        ["agent", "list"],
        ["agent", "add", "bot", "--url", "ws://a"],
        ["number", "list"],
        ["trunk", "list"],
        ["apikey", "list"],
        ["ban", "list"],
        ["calls"],
    ],
)
def test_unreachable_postgresql_is_one_line(
    runner: CliRunner, no_server: None, args: list[str]
) -> None:
    result = runner.invoke(app, args, env={"SIPBRIDGE_DB": UNREACHABLE_PG})
    line = _one_error_line(result, 1)
    assert line == (
        "error: cannot reach the database (database postgresql+asyncpg://u:***@127.0.0.1:1/x): "
        "Connection refused (is the server running and the URL right? see --db)"
    )


def test_postgresql_url_without_driver_is_accepted(runner: CliRunner) -> None:
    result = runner.invoke(app, ["agent", "list", "--db", "postgresql://u:secret@127.0.0.1:1/x"])
    line = _one_error_line(result, 1)
    assert "Connection refused" in line and "secret" not in line and "psycopg" not in line


def test_database_errors_are_one_line(runner: CliRunner, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a sqlite database" * 200)
    result = runner.invoke(app, ["agent", "list", "--db", f"sqlite:///{garbage}"])
    line = _one_error_line(result, 1)
    assert line == (f"error: database error: file is not a database (database sqlite:///{garbage})")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtp-ports", "20000-10000"], "--rtp-ports"),
        (["--rtp-ports", "abc"], "--rtp-ports"),
        (["--public-ip", "not-an-ip"], "--public-ip"),
        (["--log-level", "loud"], "--log-level"),
        (["--log-format", "xml"], "--log-format"),
        (["--log-levels", "sipp=debug"], "--log-levels: unknown component 'sipp'"),
        (["--log-levels", "call=loud"], "--log-levels: call: 'loud' is not one of"),
        (["--default-region", "XX"], "--default-region"),
        (["--reject-unknown", "404"], "--reject-unknown"),
        (["--auth-realm", " "], "--auth-realm"),
        (["--auth-algorithms", "sha-512"], "--auth-algorithms"),
        (["--auth-algorithms", ","], "--auth-algorithms"),
        (["--instance-id", " "], "--instance-id"),
        (["--trusted-proxy", "proxy.example.com"], "--trusted-proxy"),
        (["--trusted-proxy", "10.0.0.0/33"], "--trusted-proxy"),
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
    assert runner.invoke(app, ["serve", "--http-port", "70000"], env=env).exit_code == 2
    assert runner.invoke(app, ["serve", "--http-port", "x"], env=env).exit_code == 2
    assert fake_server == []


# ----------------------------------------------------------- console script


def _console_script() -> str:
    candidate = Path(sys.executable).with_name("sipbridge")
    if candidate.exists():
        return str(candidate)
    require("console-script")
    found = shutil.which("sipbridge")
    assert found is not None
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
    assert "error: number: 'abc' is not a valid phone number" in bad.stderr

    assert db_file.exists()
    assert not (tmp_path / "sipbridge.db").exists()  # the default was not used

    async def read_back() -> str | None:
        async with Database(f"sqlite:///{db_file}") as db:
            route = await service.lookup_number(db, "+12025550101")
            return None if route is None or route.agent is None else route.agent.name

    assert asyncio.run(read_back()) == "bot"


# ------------------------------------------------------- agents (issue 5 options)


def test_agent_add_all_options(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = invoke(
        runner,
        env,
        "agent",
        "add",
        "bot",
        "--url",
        "wss://a.example/ws",
        "--url",
        "wss://b.example/ws",
        "--token",
        "s3cret-token",
        "--protocol",
        "twilio",
        "--sample-rate",
        "16000",
        "--no-voice",
    )
    assert result.exit_code == 0, result.output
    assert "added agent bot -> wss://a.example/ws, wss://b.example/ws" in result.stdout
    listing = invoke(runner, env, "agent", "list").stdout
    assert listing.splitlines()[1].split()[:6] == [
        "bot",
        "wss://a.example/ws,wss://b.example/ws",
        "twilio",
        "16000",
        "no",
        "yes",
    ]
    assert "s3cret-token" not in listing

    async def read_back() -> tuple[str | None, int]:
        async with Database(db_url) as db:
            agent = await service.get_agent(db, "bot")
            return agent.token, agent.sample_rate

    assert asyncio.run(read_back()) == ("s3cret-token", 16000)


def test_agent_options_not_from_env(runner: CliRunner, env: dict[str, str]) -> None:
    """Only the token has a variable, named for it; no other agent field is read from
    the environment."""
    result = runner.invoke(
        app,
        ["agent", "add", "bot", "--url", "ws://one"],
        env={
            **env,
            "SIPBRIDGE_PROTOCOL": "twilio",
            "SIPBRIDGE_SAMPLE_RATE": "16000",
            "SIPBRIDGE_TOKEN": "tok",
            "SIPBRIDGE_VOICE": "false",
        },
    )
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[:6] == [
        "bot",
        "ws://one",
        "native",
        "8000",
        "yes",
        "no",
    ]
    result = runner.invoke(
        app,
        ["agent", "add", "other", "--url", "ws://two"],
        env={**env, "SIPBRIDGE_AGENT_TOKEN": "tok"},
    )
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[2].split()[5] == "yes"


def test_agent_ca_bundle(runner: CliRunner, env: dict[str, str], ca_bundle: Path) -> None:
    result = invoke(
        runner, env, "agent", "add", "bot", "--url", "wss://a", "--ca-bundle", str(ca_bundle)
    )
    assert result.exit_code == 0, result.output
    lines = invoke(runner, env, "agent", "list").stdout.splitlines()
    assert "CA BUNDLE" in lines[0]
    assert lines[1].split()[6] == str(ca_bundle)

    assert invoke(runner, env, "agent", "update", "bot", "--clear-ca-bundle").exit_code == 0
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[6] == "-"

    result = invoke(runner, env, "agent", "update", "bot", "--ca-bundle", str(ca_bundle))
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[6] == str(ca_bundle)
    assert invoke(runner, env, "agent", "update", "bot", "--no-ca-bundle").exit_code == 0

    async def read_back() -> str | None:
        async with Database(env["SIPBRIDGE_DB"]) as db:
            return (await service.get_agent(db, "bot")).ca_bundle

    assert asyncio.run(read_back()) is None

    result = invoke(
        runner, env, "agent", "update", "bot", "--ca-bundle", str(ca_bundle), "--clear-ca-bundle"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --ca-bundle and --clear-ca-bundle")


def test_agent_ca_bundle_not_from_env(
    runner: CliRunner, env: dict[str, str], ca_bundle: Path
) -> None:
    result = runner.invoke(
        app,
        ["agent", "add", "bot", "--url", "wss://a"],
        env={**env, "SIPBRIDGE_CA_BUNDLE": str(ca_bundle)},
    )
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[6] == "-"


def test_agent_bad_ca_bundle_exit_2(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = invoke(
        runner, env, "agent", "add", "bot", "--url", "wss://a", "--ca-bundle", str(missing)
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: ca_bundle: {missing} is not a readable PEM CA bundle")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage")
    invoke(runner, env, "agent", "add", "bot", "--url", "wss://a")
    result = invoke(runner, env, "agent", "update", "bot", "--ca-bundle", str(garbage))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: ca_bundle: {garbage} is not a readable PEM CA bundle")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "sip"], "error: protocol: 'sip' is not one of native, twilio"),
        (["--sample-rate", "44100"], "error: sample_rate: 44100 is not one of 8000, 16000"),
        (["--token", ""], "error: token: "),
        (["--url", "http://x"], "error: urls: "),
    ],
)
def test_agent_add_bad_options_exit_2(
    runner: CliRunner, env: dict[str, str], args: list[str], message: str
) -> None:
    result = invoke(runner, env, "agent", "add", "bot", "--url", "ws://a", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert invoke(runner, env, "agent", "list").stdout.strip() == "no agents" + in_db(env)


def test_agent_update(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a", "--token", "t")
    result = invoke(
        runner, env, "agent", "update", "bot", "--url", "ws://b", "--sample-rate", "16000"
    )
    assert result.exit_code == 0, result.output
    assert "updated agent bot -> ws://b" in result.stdout
    row = invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()
    assert row[:6] == ["bot", "ws://b", "native", "16000", "yes", "yes"]

    assert (
        invoke(runner, env, "agent", "update", "bot", "--clear-token", "--no-voice").exit_code == 0
    )
    row = invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()
    assert row[4:6] == ["no", "no"]

    result = invoke(runner, env, "agent", "update", "bot", "--token", "x", "--clear-token")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --token and --clear-token")
    result = invoke(runner, env, "agent", "update", "ghost", "--protocol", "native")
    assert result.exit_code == 1
    assert "error: agent 'ghost' not found" in result.stderr
    result = invoke(runner, env, "agent", "update", "bot", "--protocol", "nope")
    assert result.exit_code == 2


# ------------------------------------------------------------- number regions


def test_number_add_with_region(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    result = invoke(runner, env, "number", "add", "(202) 555-0101", "--agent", "bot")
    assert result.exit_code == 2
    assert "give --default-region" in result.stderr

    result = invoke(
        runner, env, "number", "add", "(202) 555-0101", "--agent", "bot", "--region", "US"
    )
    assert result.exit_code == 0, result.output
    assert "added number +12025550101 -> bot" in result.stdout

    result = runner.invoke(
        app,
        ["number", "add", "202-555-0102", "--agent", "bot"],
        env={**env, "SIPBRIDGE_DEFAULT_REGION": "us"},
    )
    assert result.exit_code == 0, result.output
    assert "+12025550102" in result.stdout

    result = invoke(runner, env, "number", "remove", "202 555 0102", "--default-region", "US")
    assert result.exit_code == 0, result.output
    assert "removed number +12025550102" in result.stdout

    result = invoke(runner, env, "number", "add", "2025550103", "--agent", "bot", "--region", "XX")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: default_region: 'XX' is not a known region")


def test_number_list_by_agent(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "ws://a")
    invoke(runner, env, "agent", "add", "other", "--url", "ws://b")
    invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot")
    invoke(runner, env, "number", "add", "+12025550102", "--agent", "other")
    listing = invoke(runner, env, "number", "list", "--agent", "other").stdout
    assert "+12025550102" in listing and "+12025550101" not in listing
    assert invoke(
        runner, env, "number", "list", "--agent", "ghost"
    ).stdout.strip() == "no numbers" + in_db(env)


def test_calls_number_with_region(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    _seed_calls(db_url)
    result = invoke(runner, env, "calls", "--json", "--number", "202-555-0101", "--region", "US")
    assert [c["id"] for c in json.loads(result.stdout)] == ["old"]
    result = invoke(runner, env, "calls", "--number", "2025550101", "--region", "XX")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: default_region: ")


def test_calls_number_without_plus(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    _seed_calls(db_url)
    result = invoke(runner, env, "calls", "--json", "--number", "12025550101")
    assert [c["id"] for c in json.loads(result.stdout)] == ["old"]


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("foo", "error: --number: 'foo' is not a valid phone number"),
        ("anonymous", "error: --number: 'anonymous' is not a valid phone number"),
        ("2025550101", "or give --default-region, e.g. US, for a national number)"),
    ],
)
def test_calls_bad_number_exits_2(
    runner: CliRunner, env: dict[str, str], number: str, message: str
) -> None:
    result = invoke(runner, env, "calls", "--number", number)
    line = _one_error_line(result, 2)
    assert message in line


# --------------------------------------------------------------------- trunks


def test_trunk_add_list_remove(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(
        runner,
        env,
        "trunk",
        "add",
        "telnyx",
        "--allow",
        "192.0.2.0/24",
        "--allow",
        "198.51.100.7",
        "--host",
        "sip.telnyx.example",
        "--username",
        "acct",
        "--password",
        "hunter2",
        "--register",
        "--max-calls",
        "20",
        "--codec",
        "PCMU",
        "--codec",
        "opus",
    )
    assert result.exit_code == 0, result.output
    assert "added trunk telnyx" in result.stdout
    assert invoke(runner, env, "trunk", "add", "plain").exit_code == 0

    listing = invoke(runner, env, "trunk", "list").stdout
    lines = listing.splitlines()
    assert lines[0].split() == [
        "NAME",
        "ALLOW",
        "HOST",
        "USERNAME",
        "PASSWORD",
        "REGISTER",
        "MAX",
        "CALLS",
        "CODECS",
        "NUMBERS",
        "SRTP",
        "RATE",
        "REGISTRATION",
    ]
    assert lines[1].split() == [
        *["plain", "-", "-", "-", "no", "no", "-", "-", "any", "optional", "default", "-"]
    ]
    assert lines[2].split() == [
        "telnyx",
        "192.0.2.0/24,198.51.100.7/32",
        "sip.telnyx.example",
        "acct",
        "yes",
        "yes",
        "20",
        "pcmu,opus",
        "any",
        "optional",
        "default",
        "-",  # no server has written its registration yet
    ]
    assert "hunter2" not in listing

    result = invoke(runner, env, "trunk", "remove", "plain")
    assert result.exit_code == 0
    assert "removed trunk plain" in result.stdout
    assert "plain" not in invoke(runner, env, "trunk", "list").stdout


def test_trunk_list_empty(runner: CliRunner, env: dict[str, str]) -> None:
    assert invoke(runner, env, "trunk", "list").stdout.strip() == "no trunks" + in_db(env)


def test_trunk_password_from_env(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = runner.invoke(
        app,
        ["trunk", "add", "t", "--host", "h.example", "--username", "u", "--register"],
        env={**env, "SIPBRIDGE_TRUNK_PASSWORD": "from-env", "SIPBRIDGE_CODEC": "pcma g722"},
    )
    assert result.exit_code == 0, result.output

    async def read_back() -> tuple[str | None, list[str]]:
        async with Database(db_url) as db:
            trunk = await service.get_trunk(db, "t")
            return trunk.password, trunk.codecs

    assert asyncio.run(read_back()) == ("from-env", [])  # --codec is not read from it


def test_serve_settings_do_not_leak_into_a_trunk(
    runner: CliRunner, env: dict[str, str], db_url: str
) -> None:
    """The variables the README exports for serve leave trunk add at its defaults."""
    serve_env = {
        **env,
        "SIPBRIDGE_MAX_CALLS": "500",
        "SIPBRIDGE_SRTP": "required",
        "SIPBRIDGE_HOST": "h.example",
        "SIPBRIDGE_PASSWORD": "p",
        "SIPBRIDGE_REGISTER": "true",
        "SIPBRIDGE_NUMBER": "+12025550101",
    }
    result = runner.invoke(app, ["trunk", "add", "t", "--allow", "192.0.2.1"], env=serve_env)
    assert result.exit_code == 0, result.output

    async def read_back() -> TrunkRecord:
        async with Database(db_url) as db:
            return await service.get_trunk(db, "t")

    trunk = asyncio.run(read_back())
    assert (trunk.max_calls, trunk.srtp, trunk.host, trunk.password, trunk.register) == (
        None,
        "optional",
        None,
        None,
        False,
    )
    assert trunk.allowed_numbers == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--allow", "10.0.0.0/33"], "allowed_cidrs"),
        (["--codec", "g729"], "codecs"),
        (["--max-calls", "0"], "max_calls"),
        (["--host", "bad host"], "host"),
        (["--register"], "register"),
        (["--srtp", "always"], "srtp"),
        (["--number", "12345"], "allowed_numbers"),
        (["--number", "2025550101"], "allowed_numbers"),  # national, no default region
        (["--number", "+12025550101", "--default-region", "XX"], "default_region"),
    ],
)
def test_trunk_add_bad_options_exit_2(
    runner: CliRunner, env: dict[str, str], args: list[str], field: str
) -> None:
    result = invoke(runner, env, "trunk", "add", "t", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {field}: ")


def test_trunk_duplicate_and_unknown_exit_1(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "trunk", "add", "t")
    result = invoke(runner, env, "trunk", "add", "t")
    assert result.exit_code == 1
    assert "error: trunk 't' already exists" in result.stderr
    result = invoke(runner, env, "trunk", "remove", "ghost")
    assert result.exit_code == 1
    assert "error: trunk 'ghost' not found" in result.stderr


def test_trunk_numbers_and_srtp(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = invoke(
        runner,
        env,
        "trunk",
        "add",
        "secure",
        "--number",
        "+1 (202) 555-0101",
        "--number",
        "202-555-0102",
        "--number",
        "+12025550101",
        "--srtp",
        "required",
        "--default-region",
        "US",
    )
    assert result.exit_code == 0, result.output
    assert "added trunk secure" in result.stdout
    result = invoke(runner, env, "trunk", "add", "plain", "--srtp", "off")
    assert result.exit_code == 0, result.output

    lines = invoke(runner, env, "trunk", "list").stdout.splitlines()
    assert lines[0].split()[-5:] == ["CODECS", "NUMBERS", "SRTP", "RATE", "REGISTRATION"]
    assert lines[1].split()[:-1] == [
        "plain",
        "-",
        "-",
        "-",
        "no",
        "no",
        "-",
        "-",
        "any",
        "off",
        "default",
    ]
    assert lines[2].split()[:-1] == [
        "secure",
        "-",
        "-",
        "-",
        "no",
        "no",
        "-",
        "-",
        "+12025550101,+12025550102",
        "required",
        "default",
    ]

    async def read_back() -> tuple[list[str], str]:
        async with Database(db_url) as db:
            trunk = await service.get_trunk(db, "secure")
            return trunk.allowed_numbers, trunk.srtp

    assert asyncio.run(read_back()) == (["+12025550101", "+12025550102"], "required")


def test_trunk_max_message_rate_add_and_update(
    runner: CliRunner, env: dict[str, str], db_url: str
) -> None:
    result = invoke(runner, env, "trunk", "add", "big", "--max-message-rate", "5000")
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "trunk", "add", "plain").exit_code == 0
    result = invoke(runner, env, "trunk", "update", "plain", "--max-message-rate", "0")
    assert result.exit_code == 0, result.output
    assert "updated trunk plain" in result.stdout
    lines = invoke(runner, env, "trunk", "list").stdout.splitlines()
    assert [line.split()[-2] for line in lines] == ["RATE", "5000", "none"]
    result = invoke(runner, env, "trunk", "update", "big", "--max-calls", "3")
    assert result.exit_code == 0, result.output

    async def read_back() -> list[tuple[int | None, int | None]]:
        async with Database(db_url) as db:
            return [(t.max_message_rate, t.max_calls) for t in await service.list_trunks(db)]

    assert asyncio.run(read_back()) == [(5000, 3), (0, None)]
    assert invoke(runner, env, "trunk", "update", "big").exit_code == 2  # nothing to change
    bad = invoke(runner, env, "trunk", "add", "x", "--max-message-rate", "-1")
    assert bad.exit_code != 0 and "max_message_rate" in bad.output
    assert invoke(runner, env, "trunk", "update", "nobody", "--max-calls", "2").exit_code == 1


def test_trunk_region_from_env_srtp_not(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(
        app,
        ["trunk", "add", "t", "--number", "020 7946 0000"],
        env={**env, "SIPBRIDGE_SRTP": "off", "SIPBRIDGE_DEFAULT_REGION": "GB"},
    )
    assert result.exit_code == 0, result.output
    lines = invoke(runner, env, "trunk", "list").stdout.splitlines()
    assert lines[1].split()[-4:] == ["+442079460000", "optional", "default", "-"]


# ---------------------------------------------------------------------- traces


def test_trace_on_list_off(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    assert invoke(runner, env, "trace", "list").stdout.strip() == "no traces" + in_db(env)
    result = invoke(runner, env, "trace", "on", "--number", "(202) 555-0101", "--region", "US")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"tracing number \+12025550101 until 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n",
        result.stdout,
    )
    result = invoke(runner, env, "trace", "on", "--trunk", "carrier", "--duration", "60")
    assert result.exit_code == 0 and result.stdout.startswith("tracing trunk carrier until ")

    async def traces() -> list[TraceRecord]:
        async with Database(db_url) as db:
            return await service.list_traces(db)

    trunk, number = asyncio.run(traces())  # newest first
    assert (trunk.value, number.value) == ("carrier", "+12025550101")
    assert 59 <= (trunk.expires_at - trunk.created_at).total_seconds() <= 60
    assert (number.expires_at - number.created_at).total_seconds() == 3600
    lines = invoke(runner, env, "trace", "list").stdout.splitlines()
    assert lines[0].split() == ["KIND", "VALUE", "SINCE", "UNTIL"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["trunk", "carrier"],
        ["number", "+12025550101"],
    ]
    result = invoke(runner, env, "trace", "off", "--number", "+12025550101")
    assert result.exit_code == 0 and result.stdout == "trace of number +12025550101 off\n"
    result = invoke(runner, env, "trace", "off", "--trunk", "carrier")
    assert result.stdout == "trace of trunk carrier off\n"
    line = _one_error_line(invoke(runner, env, "trace", "off", "--trunk", "carrier"), 1)
    assert line == "error: no trace of trunk carrier"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "on"], "number: give either a number or a trunk"),
        (["trace", "on", "--number", "+12025550101", "--trunk", "x"], "number: give either"),
        (["trace", "on", "--number", "12"], "12"),
        (["trace", "off", "--trunk", "bad name!"], "name: invalid trunk name"),
    ],
)
def test_trace_bad_input_exits_2(
    runner: CliRunner, env: dict[str, str], args: list[str], message: str
) -> None:
    line = _one_error_line(invoke(runner, env, *args), 2)
    assert line.startswith("error: ") and message in line
    assert invoke(runner, env, "trace", "on", "--trunk", "x", "--duration", "0").exit_code == 2


# ----------------------------------------------------------------------- bans


def test_ban_add_list_remove(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    assert invoke(runner, env, "ban", "list").stdout.strip() == "no bans" + in_db(env)

    result = invoke(runner, env, "ban", "add", "203.0.113.7/24", "--note", "abuse desk")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "banned 203.0.113.0/24 until removed"
    result = invoke(runner, env, "ban", "add", "198.51.100.7", "--duration", "3600")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"banned 198\.51\.100\.7 until 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n", result.stdout
    ), result.stdout

    async def bans() -> list[BanRecord]:
        async with Database(db_url) as db:
            return await service.list_bans(db)

    timed, network = asyncio.run(bans())  # newest first
    assert (network.address, network.note, network.expires_at) == (
        "203.0.113.0/24",
        "abuse desk",
        None,
    )
    assert timed.address == "198.51.100.7" and timed.note is None
    assert timed.expires_at == timed.created_at + timedelta(hours=1)

    lines = invoke(runner, env, "ban", "list").stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "REASON", "SINCE", "UNTIL", "NOTE"]
    assert lines[1].split() == [
        "198.51.100.7",
        "manual",
        timed.created_at.isoformat(timespec="seconds"),
        timed.expires_at.isoformat(timespec="seconds"),
        "-",
    ]
    assert lines[2].split() == [
        "203.0.113.0/24",
        "manual",
        network.created_at.isoformat(timespec="seconds"),
        "never",
        "abuse",
        "desk",
    ]
    assert len(lines) == 3

    result = invoke(runner, env, "ban", "remove", "203.0.113.0/24")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "removed ban on 203.0.113.0/24"
    result = invoke(runner, env, "ban", "remove", "198.51.100.7/32")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "removed ban on 198.51.100.7"
    assert invoke(runner, env, "ban", "list").stdout.strip() == "no bans" + in_db(env)


def test_ban_list_all(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    async def seed() -> None:
        async with Database(db_url) as db:
            await db.upgrade()
            await service.add_ban(db, "192.0.2.1", reason="flood", duration=60, now=T0)
            await service.add_ban(db, "2001:db8::/32", reason="scanner")

    asyncio.run(seed())
    current = invoke(runner, env, "ban", "list").stdout
    assert "2001:db8::/32" in current and "scanner" in current
    assert "192.0.2.1" not in current
    result = invoke(runner, env, "ban", "list", "--all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["2001:db8::/32", "192.0.2.1"]
    assert lines[2].split()[1:4] == [
        "flood",
        T0.isoformat(timespec="seconds"),
        (T0 + timedelta(seconds=60)).isoformat(timespec="seconds"),
    ]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["not-an-ip"], "address"),
        (["10.0.0.0/33"], "address"),
        (["192.0.2.1", "--duration", "0"], "duration"),
        (["192.0.2.1", "--note", "x" * 256], "note"),
    ],
)
def test_ban_add_bad_input_exits_2(
    runner: CliRunner, env: dict[str, str], args: list[str], field: str
) -> None:
    result = invoke(runner, env, "ban", "add", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {field}: ")
    assert invoke(runner, env, "ban", "list", "--all").stdout.strip() == "no bans" + in_db(env)


def test_ban_remove_unknown_exits_1(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "ban", "add", "198.51.100.0/24")
    result = invoke(runner, env, "ban", "remove", "192.0.2.1")
    assert result.exit_code == 1
    assert "error: no ban on 192.0.2.1" in result.stderr
    result = invoke(runner, env, "ban", "remove", "198.51.100.7")  # inside, but not the ban
    assert result.exit_code == 1
    result = invoke(runner, env, "ban", "remove", "bogus")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: address: ")
    assert "198.51.100.0/24" in invoke(runner, env, "ban", "list").stdout


# ------------------------------------------------------------------- API keys


def test_apikey_create_list_revoke(runner: CliRunner, env: dict[str, str], db_url: str) -> None:
    result = invoke(runner, env, "apikey", "create", "dashboard")
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("sb_") and "\n" not in secret  # stdout is the key alone
    assert "cannot be shown again" in result.stderr

    async def verify(key: str) -> str | None:
        async with Database(db_url) as db:
            record = await service.verify_api_key(db, key)
            return None if record is None else record.name

    assert asyncio.run(verify(secret)) == "dashboard"

    listing = invoke(runner, env, "apikey", "list").stdout
    lines = listing.splitlines()
    assert lines[0].split()[:2] == ["NAME", "PREFIX"]
    assert lines[1].split()[:2] == ["dashboard", secret[:8] + "..."]
    assert secret not in listing

    result = invoke(runner, env, "apikey", "create", "dashboard")
    assert result.exit_code == 1
    assert "error: API key 'dashboard' already exists" in result.stderr

    result = invoke(runner, env, "apikey", "revoke", "dashboard")
    assert result.exit_code == 0
    assert "revoked API key dashboard" in result.stdout
    assert asyncio.run(verify(secret)) is None
    assert invoke(runner, env, "apikey", "list").stdout.strip() == "no API keys" + in_db(env)

    result = invoke(runner, env, "apikey", "revoke", "dashboard")
    assert result.exit_code == 1
    assert "error: API key 'dashboard' not found" in result.stderr
    result = invoke(runner, env, "apikey", "create", "bad name")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: name: ")


# ------------------------------------------------------------------ PostgreSQL


def test_cli_on_postgresql(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The management commands work the same against PostgreSQL (--db postgresql+asyncpg)."""
    from tests.conftest import (
        create_postgres_database,
        drop_postgres_database,
        postgres_server_url,
    )

    server = postgres_server_url()
    assert server is not None
    url = asyncio.run(create_postgres_database(server))
    try:
        pg_env = {"SIPBRIDGE_DB": url}
        for name in list(os.environ):
            if name.startswith("SIPBRIDGE_"):
                monkeypatch.delenv(name)
        assert invoke(runner, pg_env, "db", "upgrade").stdout.strip().endswith("0015")
        result = invoke(
            runner, pg_env, "agent", "add", "bot", "--url", "wss://a", "--url", "wss://b"
        )
        assert result.exit_code == 0, result.output
        result = invoke(
            runner, pg_env, "number", "add", "202 555 0101", "--agent", "bot", "--region", "US"
        )
        assert result.exit_code == 0, result.output
        assert invoke(runner, pg_env, "trunk", "add", "t", "--allow", "192.0.2.1").exit_code == 0
        secret = invoke(runner, pg_env, "apikey", "create", "k").stdout.strip()
        assert secret.startswith("sb_")
        assert "wss://a,wss://b" in invoke(runner, pg_env, "agent", "list").stdout
        assert "+12025550101" in invoke(runner, pg_env, "number", "list").stdout
        assert "192.0.2.1/32" in invoke(runner, pg_env, "trunk", "list").stdout
        assert invoke(runner, pg_env, "agent", "add", "bot", "--url", "ws://x").exit_code == 1
        assert invoke(runner, pg_env, "apikey", "revoke", "k").exit_code == 0
    finally:
        asyncio.run(drop_postgres_database(server, url))


def test_serve_rejects_unknown_codec(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--codecs", "pcmu,g729", "--db", f"sqlite:///{tmp_path / 'c.db'}"]
    )
    assert result.exit_code == 2
    assert "--codecs: unknown codec 'g729'" in result.output


def test_serve_transport_options(
    runner: CliRunner,
    env: dict[str, str],
    fake_server: list[ServeSettings],
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    tls = ["--tls-port", "5161", "--tls-cert", str(cert), "--tls-key", str(key)]
    assert runner.invoke(app, ["serve", "--no-tcp", *tls], env=env).exit_code == 0
    environ = {**env, "SIPBRIDGE_TCP": "false", "SIPBRIDGE_TLS_PORT": "6061"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    explicit, from_env, default = fake_server
    assert (explicit.tcp, explicit.tls_port, explicit.tls_cert, explicit.tls_key) == (
        False,
        5161,
        str(cert),
        str(key),
    )
    assert (from_env.tcp, from_env.tls_port) == (False, 6061)
    assert (default.tcp, default.tls_port, default.tls_cert, default.tls_key) == (
        True,
        5061,
        None,
        None,
    )
    only_cert = runner.invoke(app, ["serve", "--tls-cert", str(cert)], env=env)
    assert only_cert.exit_code == 2 and "--tls-key" in only_cert.stderr
    missing = ["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)]
    unreadable = runner.invoke(app, ["serve", *missing], env=env)
    assert unreadable.exit_code == 2 and unreadable.stderr.startswith("error: --tls-cert")
    assert len(fake_server) == 3


def test_serve_unknown_connection_timeout(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    assert (
        runner.invoke(app, ["serve", "--unknown-connection-timeout", "2.5"], env=env).exit_code == 0
    )
    environ = {**env, "SIPBRIDGE_UNKNOWN_CONNECTION_TIMEOUT": "7"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    assert [s.unknown_connection_timeout for s in fake_server] == [2.5, 7.0, 5.0]
    bad = runner.invoke(app, ["serve", "--unknown-connection-timeout", "0"], env=env)
    assert bad.exit_code == 2


def test_serve_max_connections_per_source(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    args = ["serve", "--max-connections-per-source", "8"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    environ = {**env, "SIPBRIDGE_MAX_CONNECTIONS_PER_SOURCE": "100"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    assert [s.max_connections_per_source for s in fake_server] == [8, 100, 32]
    bad = runner.invoke(app, ["serve", "--max-connections-per-source", "0"], env=env)
    assert bad.exit_code == 2


# ----------------------------------------------------------------------- help


def _commands(group: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command and group under ``group`` with its path of names."""
    found: list[tuple[list[str], Any]] = []
    for name, command in group.commands.items():
        found.append(([*path, name], command))
        if hasattr(command, "commands"):
            found += _commands(command, [*path, name])
    return found


def test_help_at_80_columns_shows_every_option_whole(runner: CliRunner) -> None:
    commands = _commands(typer.main.get_command(app), [])
    assert len(commands) > 20
    for path, command in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (path, result.output)
        assert all(len(line) <= 80 for line in result.stdout.splitlines()), path
        assert "…" not in result.stdout, path
        for param in command.params:
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("-"):
                    assert re.search(rf"(^|[\s,]){re.escape(name)}([\s,]|$)", result.stdout), (
                        path,
                        name,
                    )
        options = [line for line in result.stdout.splitlines() if line.startswith("  -")]
        assert not any(re.search(r"<(str|int|float|list)", line) for line in options), path
        # NAME, not typer's {name} or {NAME} (a required argument in the usage line)
        assert not re.search(r"\{[A-Za-z_]+\}", result.stdout), path


def test_sip_port_help_says_udp_and_tcp(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "80"})
    text = " ".join(result.stdout.split())
    assert "--sip-port PORT Port for SIP over UDP and TCP" in text


def test_serve_with_codecs_naming_opus_without_libopus_is_one_line(
    runner: CliRunner, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sipbridge.runtime import server as server_module

    monkeypatch.setattr(server_module, "opus_available", lambda: False)
    args = ["serve", "--sip-host", "127.0.0.1", "--sip-port", "0", "--http-port", "0"]
    line = _one_error_line(runner.invoke(app, [*args, "--codecs", "opus,pcmu"], env=env), 2)
    assert "--codecs names opus" in line and "apt-get install libopus0" in line


def test_calls_show_prints_the_whole_call(
    runner: CliRunner, env: dict[str, str], db_url: str
) -> None:
    _seed_calls(db_url)

    async def events() -> None:
        db = Database(db_url)
        try:
            await service.save_call_events(
                db,
                "old",
                [
                    CallEvent(
                        "old",
                        T0 + timedelta(seconds=2),
                        "transcript",
                        {"role": "caller", "text": "my bill is wrong"},
                    ),
                    CallEvent("old", T0 + timedelta(seconds=3), "metadata", {"intent": "billing"}),
                    CallEvent("old", T0 + timedelta(seconds=4), "dtmf", {"digit": "5"}),
                ],
            )
        finally:
            await db.close()

    asyncio.run(events())
    result = invoke(runner, env, "calls", "show", "old")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert re.search(r"^id\s+old$", text, re.M)
    assert re.search(r"^mos\s+4\.3", text, re.M) and re.search(r"^jitter_ms\s+12", text, re.M)
    assert "caller: my bill is wrong" in text
    assert '{"intent": "billing"}' in text
    assert re.search(r"dtmf\s+\{\"digit\": \"5\"\}", text)
    assert "answered" in text.split("timeline:")[1]
    assert re.search(
        r"^recording\s+/var/lib/sipbridge/recordings/2025-03-03/old\.wav \(12\.4 s, 396844 "
        r"bytes, 2 channels: left caller, right agent, 8000 Hz; GET /api/calls/old/recording\)$",
        text,
        re.M,
    )
    data = json.loads(invoke(runner, env, "calls", "show", "old", "--json").stdout)
    assert data["id"] == "old" and data["transcript"][0]["text"] == "my bill is wrong"
    assert data["recording"]["duration_s"] == 12.4
    new = invoke(runner, env, "calls", "show", "new").stdout
    assert re.search(r"^recording\s+-$", new, re.M)
    missing = invoke(runner, env, "calls", "show", "nope")
    assert missing.exit_code == 1 and "call 'nope' not found" in missing.stderr
    assert invoke(runner, env, "calls", "--limit", "1").stdout.startswith("ID ")  # still lists


def test_calls_and_calls_show_escape_control_characters(
    runner: CliRunner, env: dict[str, str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written before the store cleaned its text (or by another program) may hold
    ESC, CR/LF and bidi overrides: neither the table nor ``calls show`` prints them raw."""
    from sipbridge.store.service import calls as calls_service

    monkeypatch.setattr(calls_service, "clean", lambda text: text)
    monkeypatch.setattr(calls_service, "_clean_json", lambda value: value)
    hostile = "x\x1b[2J\r\n2026-12-06 WARNING forged\u202e"

    async def seed() -> None:
        async with Database(db_url) as db:
            await db.upgrade()
            record = CallRecord(
                id="raw",
                sip_call_id="raw@t",
                from_number=hostile,
                to_number="+12025550101",
                agent="bot",
                received_at=T0,
                status=CallStatus.FAILED,
                reason="r\x07",
            )
            await service.save_call(db, record)
            events = [CallEvent("raw", T0, "transcript", {"role": "caller", "text": hostile})]
            await service.save_call_events(db, "raw", events)

    asyncio.run(seed())
    assert asyncio.run(_stored_from(db_url)) == hostile  # the row really holds them
    unsafe = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]")
    table = invoke(runner, env, "calls")
    assert table.exit_code == 0 and unsafe.search(table.stdout) is None, repr(table.stdout)
    assert "x\\x1b[2J\\r\\n2026-12-06" in table.stdout
    shown = invoke(runner, env, "calls", "show", "raw")
    assert shown.exit_code == 0 and unsafe.search(shown.stdout) is None, repr(shown.stdout)
    assert "caller: x\\x1b[2J\\r\\n2026-12-06 WARNING forged\\u202e" in shown.stdout
    assert not re.search(r"^2026-12-06", shown.stdout, re.M)  # no forged line


async def _stored_from(db_url: str) -> str | None:
    async with Database(db_url) as db:
        return (await service.get_call(db, "raw")).record.from_number


def test_number_update(runner: CliRunner, env: dict[str, str]) -> None:
    invoke(runner, env, "agent", "add", "bot", "--url", "wss://a.example/ws")
    invoke(runner, env, "agent", "add", "bot2", "--url", "wss://b.example/ws")
    invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot")
    moved = invoke(runner, env, "number", "update", "+1 202 555 0101", "--agent", "bot2")
    assert moved.exit_code == 0 and moved.stdout.strip() == "updated number +12025550101 -> bot2"
    assert "+12025550101  bot2" in invoke(runner, env, "number", "list").stdout
    cleared = invoke(runner, env, "number", "update", "+12025550101", "--no-agent")
    assert cleared.exit_code == 0 and "- (no agent)" in cleared.stdout
    assert invoke(runner, env, "number", "update", "+12025550101").exit_code == 2
    both = invoke(runner, env, "number", "update", "+12025550101", "--agent", "bot", "--no-agent")
    assert both.exit_code == 2
    unknown = invoke(runner, env, "number", "update", "+12025550199", "--agent", "bot")
    assert unknown.exit_code == 1 and "not found" in unknown.stderr
    assert invoke(runner, env, "number", "update", "+12025550101", "--agent", "x").exit_code == 1


def test_agent_and_number_record_settings(runner: CliRunner, env: dict[str, str]) -> None:
    """``--record`` on an agent, ``--record/--no-record/--record-from-agent`` on a number
    (the number's own setting wins)."""
    assert invoke(runner, env, "agent", "add", "bot", "--url", "ws://a", "--record").exit_code == 0
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[8] == "yes"
    assert invoke(runner, env, "agent", "update", "bot", "--no-record").exit_code == 0
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[8] == "no"
    added = invoke(runner, env, "number", "add", "+12025550101", "--agent", "bot", "--record")
    assert added.exit_code == 0, added.output
    assert invoke(runner, env, "number", "list").stdout.splitlines()[1].split()[2] == "yes"
    off = invoke(runner, env, "number", "update", "+12025550101", "--no-record")
    assert off.stdout.strip() == "updated number +12025550101 -> bot (record: no)"
    inherit = invoke(runner, env, "number", "update", "+12025550101", "--record-from-agent")
    assert inherit.stdout.strip() == "updated number +12025550101 -> bot (record: agent's)"
    both = invoke(
        runner, env, "number", "update", "+12025550101", "--record", "--record-from-agent"
    )
    assert both.exit_code == 2


def test_agent_transfer_allow(runner: CliRunner, env: dict[str, str]) -> None:
    result = invoke(runner, env, "agent", "add", "bot", "--url", "wss://a")
    assert result.exit_code == 0, result.output
    lines = invoke(runner, env, "agent", "list").stdout.splitlines()
    assert "TRANSFERS" in lines[0] and lines[1].split()[7] == "default"
    result = invoke(
        runner,
        env,
        "agent",
        "update",
        "bot",
        "--transfer-allow",
        "+1202555*",
        "--transfer-allow",
        "PBX.example.com",
    )
    assert result.exit_code == 0, result.output
    row = invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()
    assert row[7] == "+1202555*,pbx.example.com"
    result = invoke(runner, env, "agent", "update", "bot", "--transfer-allow", "bad host")
    assert result.exit_code == 2 and "transfer_allow" in result.output
    assert invoke(runner, env, "agent", "update", "bot", "--clear-transfer-allow").exit_code == 0
    assert invoke(runner, env, "agent", "list").stdout.splitlines()[1].split()[7] == "default"
    result = invoke(runner, env, "agent", "add", "two", "--url", "wss://b", "--transfer-allow", "*")
    assert result.exit_code == 0, result.output


def test_serve_agent_limits(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings]
) -> None:
    args = ["serve", "--agent-limits", "transcripts=5000,message_rate=1000"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    environ = {**env, "SIPBRIDGE_AGENT_LIMITS": "dtmf_pending=8"}
    assert runner.invoke(app, ["serve"], env=environ).exit_code == 0
    assert runner.invoke(app, ["serve"], env=env).exit_code == 0
    explicit, from_env, default = fake_server
    assert (explicit.agent_limits.transcripts, explicit.agent_limits.message_rate) == (5000, 1000)
    assert from_env.agent_limits.dtmf_pending == 8
    assert default.agent_limits == AgentLimits()
    result = runner.invoke(app, ["serve", "--agent-limits", "bogus=1"], env=env)
    assert result.exit_code == 2 and "--agent-limits" in result.output


def test_trunk_update_changes_every_setting(
    runner: CliRunner, env: dict[str, str], db_url: str
) -> None:
    """Every trunk setting add takes can be changed by update; a list option replaces the
    list, options left out stay, --password - reads standard input."""
    result = invoke(runner, env, "trunk", "add", "carrier", "--allow", "192.0.2.0/24")
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            *("trunk", "update", "carrier"),
            *("--allow", "198.51.100.7", "--allow", "203.0.113.0/24"),
            *("--host", "sip.carrier.example;transport=tcp", "--username", "acct"),
            *("--password", "-", "--register", "--codec", "pcma", "--codec", "pcmu"),
            *("--number", "+12025550101", "--srtp", "required"),
        ],
        env=env,
        input="s3cret\n",
    )
    assert result.exit_code == 0, result.output

    async def read_back() -> TrunkRecord:
        async with Database(db_url) as db:
            return await service.get_trunk(db, "carrier")

    trunk = asyncio.run(read_back())
    assert trunk.allowed_cidrs == ["198.51.100.7/32", "203.0.113.0/24"]
    assert (trunk.host, trunk.username, trunk.password) == (
        "sip.carrier.example;transport=tcp",
        "acct",
        "s3cret",
    )
    assert trunk.register is True
    assert (trunk.codecs, trunk.allowed_numbers, trunk.srtp) == (
        ["pcma", "pcmu"],
        ["+12025550101"],
        "required",
    )
    result = invoke(runner, env, "trunk", "update", "carrier", "--no-register", "--srtp", "off")
    assert result.exit_code == 0, result.output
    trunk = asyncio.run(read_back())
    assert (trunk.register, trunk.srtp, trunk.username) == (False, "off", "acct")
    bad = invoke(runner, env, "trunk", "update", "carrier", "--srtp", "sometimes")
    assert bad.exit_code != 0 and "srtp" in bad.output
    # An exported add-time password never reaches another trunk through update.
    result = runner.invoke(
        app,
        ["trunk", "update", "carrier", "--max-calls", "4"],
        env={**env, "SIPBRIDGE_TRUNK_PASSWORD": "other"},
    )
    assert result.exit_code == 0, result.output
    assert asyncio.run(read_back()).password == "s3cret"
