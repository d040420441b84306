"""``sipbridge db backup`` and ``sipbridge db restore`` (sipbridge/cli/db.py); ``db upgrade``
is tested with the other commands in test_cli.py."""

import asyncio
import gzip
import io
import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.cli.db import ProgressBar
from sipbridge.store import service
from sipbridge.store.backup import schema_revisions, schema_tables
from sipbridge.store.db import Database
from sipbridge.store.records import CallEvent, CallRecord, CallStatus
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_server_url

HEAD = schema_revisions()[-1]
TABLES = len(schema_tables())
T0 = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIPBRIDGE_* variable from outside; the default database under tmp_path; no root
    log handler left by an earlier test's ``serve`` (writing to that test's closed stderr)."""
    monkeypatch.setattr(logging.root, "handlers", [])
    for name in list(os.environ):
        if name.startswith("SIPBRIDGE_") and not name.startswith("SIPBRIDGE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def sqlite(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def seed(url: str) -> None:
    """Configuration and a call with its events, through the CLI and the service layer."""
    assert run("agent", "add", "support", "--url", "wss://a.example", "--db", url).exit_code == 0
    assert run("number", "add", "+12025550101", "--agent", "support", "--db", url).exit_code == 0

    async def go() -> None:
        async with Database(url) as db:
            await service.write_call(
                db,
                CallRecord(
                    id="c1",
                    sip_call_id="c1@trunk",
                    from_number="+12025550100",
                    to_number="+12025550101",
                    agent="support",
                    received_at=T0,
                    status=CallStatus.ANSWERED,
                ),
                [CallEvent("c1", T0, "transcript", {"text": "héllo 👋"})],
            )

    asyncio.run(go())


def contents(url: str) -> tuple[list[str], list[str], list[tuple[str, datetime]], int]:
    async def go() -> tuple[list[str], list[str], list[tuple[str, datetime]], int]:
        async with Database(url) as db:
            agents = [a.name for a in await service.list_agents(db)]
            numbers = [n.number for n in await service.list_numbers(db)]
            calls = [(c.id, c.received_at) for c in await service.list_calls(db)]
            events = len((await service.get_call(db, "c1")).events) if calls else 0
            return agents, numbers, calls, events

    return asyncio.run(go())


def test_backup_then_restore_into_postgresql(tmp_path: Path) -> None:
    source = sqlite(tmp_path, "source.db")
    seed(source)
    path = tmp_path / "backup.gz"
    result = run("db", "backup", str(path), "--db", source)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"backed up 4 rows of {TABLES} tables (schema revision {HEAD}) to {path} "
        f"(database {source})"
    )
    assert result.stderr.strip() == (
        f"warning: {path} holds secrets (trunk passwords, agent tokens): keep it private"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    server = postgres_server_url()
    assert server is not None
    target = asyncio.run(create_postgres_database(server))
    try:
        result = run("db", "restore", str(path), "--db", target)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"restored 4 rows of {TABLES} tables from {path} (made ")
        assert f"from sqlite, schema revision {HEAD})" in result.stdout
        assert (
            contents(target)
            == contents(source)
            == (
                ["support"],
                ["+12025550101"],
                [("c1", T0)],
                1,
            )
        )
        # and back: PostgreSQL to SQLite
        again = tmp_path / "again.gz"
        assert run("db", "backup", str(again), "--db", target, "--quiet").exit_code == 0
        copy = sqlite(tmp_path, "copy.db")
        assert run("db", "restore", str(again), "--db", copy).exit_code == 0
        assert contents(copy) == contents(source)
    finally:
        asyncio.run(drop_postgres_database(server, target))


def test_restore_into_a_database_that_is_not_empty(tmp_path: Path) -> None:
    source = sqlite(tmp_path, "source.db")
    seed(source)
    path = tmp_path / "backup.gz"
    run("db", "backup", str(path), "--db", source)
    target = sqlite(tmp_path, "target.db")
    assert run("agent", "add", "other", "--url", "ws://o", "--db", target).exit_code == 0

    result = run("db", "restore", str(path), "--db", target)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: the database is not empty (rows in agents): restoring would mix the backup "
        f"with them; give --force to replace its contents (database {target})\n"
    )
    assert contents(target)[0] == ["other"]

    result = run("db", "restore", str(path), "--db", target, "--force")
    assert result.exit_code == 0, result.output
    assert contents(target) == contents(source)


def test_restore_of_a_file_that_is_no_backup_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "notes.gz"
    path.write_text("not a backup\n")
    target = tmp_path / "target.db"
    result = run("db", "restore", str(path), "--db", f"sqlite:///{target}")
    assert result.exit_code == 1
    assert result.stderr == f"error: {path} is not a sipbridge backup (not a gzip file)\n"
    assert not target.exists()  # not even created or migrated

    result = run("db", "restore", str(tmp_path / "missing.gz"), "--db", f"sqlite:///{target}")
    assert result.exit_code == 1
    assert "error: cannot read " in result.stderr
    assert "No such file or directory" in result.stderr


def test_restore_of_a_truncated_file(tmp_path: Path) -> None:
    source = sqlite(tmp_path, "source.db")
    seed(source)
    path = tmp_path / "backup.gz"
    run("db", "backup", str(path), "--db", source)
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.readlines()
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(lines[:-3])
    target = sqlite(tmp_path, "target.db")
    result = run("db", "restore", str(path), "--db", target)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path} is not a valid sipbridge backup: line ")
    assert "cut short" in result.stderr
    assert contents(target) == ([], [], [], 0)


def test_restore_of_a_backup_from_a_newer_sipbridge(tmp_path: Path) -> None:
    source = sqlite(tmp_path, "source.db")
    seed(source)
    path = tmp_path / "backup.gz"
    run("db", "backup", str(path), "--db", source)
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.readlines()
    header = json.loads(lines[0])
    header["revision"] = "0042"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines([json.dumps(header) + "\n", *lines[1:]])
    result = run("db", "restore", str(path), "--db", sqlite(tmp_path, "target.db"))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: the backup is from schema revision 0042, which this sipbridge does not know "
        f"(its newest is {HEAD}): it was made by a newer sipbridge"
    )


def test_backup_of_a_database_not_upgraded(tmp_path: Path) -> None:
    url = sqlite(tmp_path, "old.db")

    async def old() -> None:
        async with Database(url) as db:
            await db.upgrade("0009")

    asyncio.run(old())
    result = run("db", "backup", str(tmp_path / "b.gz"), "--db", url)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: the database is at revision 0009, this sipbridge's schema is {HEAD}: run "
        f"`sipbridge db upgrade` first (database {url})\n"
    )
    assert not (tmp_path / "b.gz").exists()


def test_backup_into_a_missing_folder(tmp_path: Path) -> None:
    url = sqlite(tmp_path, "db.db")
    run("db", "upgrade", "--db", url)
    path = tmp_path / "missing" / "b.gz"
    result = run("db", "backup", str(path), "--db", url)
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot write {path}: No such file or directory\n"


def test_backup_of_a_database_that_does_not_exist(tmp_path: Path) -> None:
    url = sqlite(tmp_path, "nothing.db")
    result = run("db", "backup", str(tmp_path / "b.gz"), "--db", url)
    assert result.exit_code == 1
    assert result.stderr == f"error: no database at {tmp_path / 'nothing.db'} (database {url})\n"
    assert not (tmp_path / "nothing.db").exists()
    assert not (tmp_path / "b.gz").exists()


def test_bad_database_url_exits_2(tmp_path: Path) -> None:
    result = run("db", "backup", str(tmp_path / "b.gz"), "--db", "not a url")
    assert result.exit_code == 2
    assert "invalid database URL" in result.stderr


def test_quiet_prints_only_the_warning(tmp_path: Path) -> None:
    url = sqlite(tmp_path, "db.db")
    seed(url)
    result = run("db", "backup", str(tmp_path / "b.gz"), "--db", url, "-q")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith("warning: ")
    result = run("db", "restore", str(tmp_path / "b.gz"), "--db", url, "--force", "--quiet")
    assert result.exit_code == 0
    assert result.stdout == ""


def test_the_default_database_through_sipbridge_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite(tmp_path, "env.db")
    seed(url)
    monkeypatch.setenv("SIPBRIDGE_DB", url)
    result = run("db", "backup", str(tmp_path / "b.gz"))
    assert result.exit_code == 0, result.output
    assert f"(database {url})" in result.stdout


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    out = Terminal()
    bar = ProgressBar(out, enabled=True)
    bar("calls", 0, 2000)
    bar("calls", 1000, 2000)  # within 0.1 s of the last drawing: skipped
    bar("calls", 2000, 2000)
    bar("bans", 0, 0)
    assert out.getvalue() == (
        "\rcalls            [------------------------------] 0/2,000"
        "\rcalls            [##############################] 2,000/2,000\n"
        "\rbans             [##############################] 0/0\n"
    )


def test_no_progress_bar_off_a_terminal_or_when_quiet() -> None:
    plain = io.StringIO()
    ProgressBar(plain, enabled=True)("calls", 5, 10)
    assert plain.getvalue() == ""
    terminal = Terminal()
    ProgressBar(terminal, enabled=False)("calls", 5, 10)
    assert terminal.getvalue() == ""
