import asyncio
import gzip
import json
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from sipbridge.store import service
from sipbridge.store.backup import (
    FORMAT,
    FORMAT_VERSION,
    BackupError,
    DatabaseNotEmpty,
    backup,
    read_header,
    restore,
    schema_revisions,
    schema_tables,
)
from sipbridge.store.db import Database
from sipbridge.store.models import (
    Agent,
    Ban,
    Call,
    CallEventRow,
    Instance,
    PhoneNumber,
    Registration,
    SipTrace,
    Trunk,
)
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HEAD = schema_revisions()[-1]


@asynccontextmanager
async def open_database(backend: str, tmp_path: Path, name: str) -> AsyncIterator[Database]:
    """An upgraded, empty database: a SQLite file ``name``.db, or a fresh PostgreSQL one."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        async with Database(url) as database:
            await database.upgrade()
            yield database
        return
    server = postgres_server_url()
    assert server is not None
    url = await create_postgres_database(server)
    try:
        async with Database(url) as database:
            await database.upgrade()
            yield database
    finally:
        await drop_postgres_database(server, url)


async def populate(db: Database, calls: int = 3) -> None:
    """Every table with rows, unicode and odd values: None, long text, microseconds."""
    long_text = "Grüße, 世界! " * 5000
    async with db.engine.begin() as connection:
        await connection.execute(
            insert(Agent),
            [
                {
                    "name": "Zoë 🤖",
                    "urls": ["wss://agent.example/ws", "wss://b.example/ws?x=é"],
                    "voice_enabled": True,
                    "created_at": T0,
                    "protocol": "twilio",
                    "token": "tok-sécret\u00a0🔑",
                    "sample_rate": 16000,
                    "updated_at": None,
                    "ca_bundle": None,
                    "transfer_allow": ["+1*", "sip:*@pbx.example"],
                },
                {
                    "name": "quiet",
                    "urls": [],
                    "voice_enabled": False,
                    "created_at": T0 + timedelta(microseconds=1),
                    "protocol": "native",
                    "token": None,
                    "sample_rate": 8000,
                    "updated_at": T0 + timedelta(days=1, microseconds=999999),
                    "ca_bundle": "/etc/ssl/ca.pem",
                    "transfer_allow": [],
                },
            ],
        )
        agent_id = (
            await connection.execute(select(Agent.id).where(Agent.name == "quiet"))
        ).scalar_one()
        await connection.execute(
            insert(PhoneNumber),
            [
                {"number": "+12025550101", "agent_id": agent_id, "created_at": T0},
                {"number": "+442079460958", "agent_id": None, "created_at": None},
            ],
        )
        await connection.execute(
            insert(Trunk),
            [
                {
                    "name": "telnyx",
                    "allowed_cidrs": ["192.0.2.0/24", "2001:db8::/32"],
                    "host": "sip.telnyx.example",
                    "username": "user",
                    "password": "p@ss wörd\"'\\",
                    "register": True,
                    "max_calls": None,
                    "codecs": ["pcmu", "opus"],
                    "created_at": T0,
                    "allowed_numbers": [],
                    "srtp": "required",
                    "max_message_rate": 0,
                }
            ],
        )
        await connection.execute(
            insert(Ban),
            [
                {"address": "198.51.100.7", "reason": "scanner", "created_at": T0},
                {
                    "address": "2001:db8::/64",
                    "reason": "operator",
                    "note": "ünïcode\nnote",
                    "created_at": T0,
                    "expires_at": T0 + timedelta(hours=1),
                },
            ],
        )
        await connection.execute(
            insert(SipTrace),
            [
                {
                    "kind": "number",
                    "value": "+12025550101",
                    "created_at": T0,
                    "expires_at": T0 + timedelta(hours=1),
                },
                {
                    "kind": "trunk",
                    "value": "telnyx",
                    "created_at": T0 + timedelta(microseconds=7),
                    "expires_at": T0 + timedelta(days=7),
                },
            ],
        )
        rows = []
        events = []
        for index in range(calls):
            at = T0 + timedelta(seconds=index, microseconds=index)
            rows.append(
                {
                    "id": f"call-{index:06d}",
                    "sip_call_id": f"{index}@trunk ☎",
                    "from_number": "+12025550100" if index % 2 else None,
                    "to_number": "+12025550101",
                    "agent_name": "Zoë 🤖",
                    "received_at": at,
                    "answered_at": at + timedelta(microseconds=500001) if index % 3 else None,
                    "ended_at": at + timedelta(seconds=61),
                    "duration_s": 60.499999 if index % 2 else None,
                    "status": "answered",
                    "reason": "x" * 255 if index == 0 else None,
                    "sip_code": 200,
                    "received_day": date(2025, 3, 1),
                    "received_hour": 12,
                    "loss_percent": 0.1 + 0.2,
                    "mos": 4.41,
                    "packets_in": 2**31 - 1,
                }
            )
            events.append(
                {
                    "call_id": f"call-{index:06d}",
                    "at": at + timedelta(microseconds=7),
                    "kind": "transcript",
                    "data": {
                        "text": long_text if index == 0 else "héllo",
                        "final": True,
                        "none": None,
                        "nested": {"list": [1, 2.5, "ü"]},
                    },
                }
            )
        await connection.execute(insert(Call), rows)
        await connection.execute(insert(CallEventRow), events)
        await connection.execute(
            insert(Instance),
            [
                {
                    "id": "sb-1 ☁",
                    "sip_address": "[2001:db8::11]:5071",
                    "state": "lost",
                    "started_at": T0,
                    "seen_at": T0 + timedelta(microseconds=3),
                    "lost_at": T0 + timedelta(seconds=31),
                    "lost_by": "sb-2",
                    "lost_calls": 0,
                },
                {
                    "id": "sb-2",
                    "sip_address": None,
                    "state": "running",
                    "started_at": T0,
                    "seen_at": T0,
                    "lost_at": None,
                    "lost_by": None,
                    "lost_calls": None,
                },
            ],
        )
        await connection.execute(
            insert(Registration),
            [
                {
                    "trunk": "telnyx",
                    "instance": "sb-1 ☁",
                    "state": "registered",
                    "registered_until": T0 + timedelta(seconds=3600, microseconds=9),
                    "last_status": 200,
                    "last_reason": "ok",
                    "next_attempt": T0 + timedelta(seconds=1800),
                    "failures": 0,
                    "updated_at": T0,
                },
                {
                    "trunk": "telnyx",
                    "instance": "sb-2",
                    "state": "failing",
                    "registered_until": None,
                    "last_status": None,
                    "last_reason": "timeout",
                    "next_attempt": T0 + timedelta(seconds=30),
                    "failures": 2,
                    "updated_at": T0,
                },
            ],
        )
    await service.create_api_key(db, "dashboard")


async def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    result = {}
    async with db.engine.connect() as connection:
        for table in schema_tables():
            query = select(table).order_by(*table.primary_key.columns)
            result[table.name] = [tuple(row) for row in (await connection.execute(query)).all()]
    return result


PAIRS = [
    ("sqlite", "sqlite"),
    ("sqlite", "postgresql"),
    ("postgresql", "sqlite"),
    ("postgresql", "postgresql"),
]


@pytest.mark.parametrize(("source_backend", "target_backend"), PAIRS)
async def test_backup_then_restore_gives_the_same_rows(
    source_backend: str, target_backend: str, tmp_path: Path
) -> None:
    path = tmp_path / "sipbridge.backup"
    async with open_database(source_backend, tmp_path, "source") as source:
        await populate(source, calls=25)
        expected = await dump(source)
        info = await backup(source, path, batch_size=10, now=T0)
    assert info.revision == HEAD
    assert info.dialect == source_backend
    assert {t.name: t.rows for t in info.tables}["calls"] == 25
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async with open_database(target_backend, tmp_path, "target") as target:
        restored = await restore(target, path, batch_size=7)
        assert restored == info
        assert await dump(target) == expected
        assert all(expected[table.name] for table in schema_tables())
        # ids go on after the restored ones (PostgreSQL sequences set)
        await service.add_agent(target, "after", ["wss://after.example"])
        ids = [row[0] for row in (await dump(target))["agents"]]
        assert ids[-1] > max(ids[:-1])


async def test_header_and_values_are_portable(db: Database, tmp_path: Path) -> None:
    await populate(db, calls=1)
    path = tmp_path / "b.gz"
    await backup(db, path, now=T0)
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = [json.loads(line) for line in file]
    header = lines[0]
    assert header["format"] == FORMAT
    assert header["version"] == FORMAT_VERSION
    assert header["revision"] == HEAD
    assert header["created_at"] == "2025-03-01T12:00:00.123456+00:00"
    tables = {t["name"]: t for t in header["tables"]}
    assert set(tables) == {t.name for t in schema_tables()}
    assert tables["calls"]["rows"] == 1
    assert ["received_at", "datetime"] in tables["calls"]["columns"]
    assert ["received_day", "date"] in tables["calls"]["columns"]
    assert ["urls", "json"] in tables["agents"]["columns"]
    assert lines[-1] == {"end": True, "rows": sum(t["rows"] for t in header["tables"])}
    start = lines.index({"table": "calls"})
    columns = [name for name, _ in tables["calls"]["columns"]]
    call = dict(zip(columns, lines[start + 1], strict=True))
    assert call["received_at"] == "2025-03-01T12:00:00.123456+00:00"
    assert call["received_day"] == "2025-03-01"
    assert call["answered_at"] is None
    # the agents' names are in the header's order: parents before children
    names = [t["name"] for t in header["tables"]]
    assert names.index("agents") < names.index("phone_numbers")


# ----------------------------------------------------------- non-empty targets


async def test_restore_refuses_a_database_that_is_not_empty(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "b.gz"
    await populate(db)
    await backup(db, path)
    before = await dump(db)
    with pytest.raises(DatabaseNotEmpty, match=r"not empty .*--force"):
        await restore(db, path)
    assert await dump(db) == before


async def test_restore_with_force_replaces_the_contents(
    backend: str, db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "b.gz"
    async with open_database("sqlite", tmp_path, "source") as source:
        await populate(source, calls=4)
        expected = await dump(source)
        await backup(source, path)
    await service.add_agent(db, "other", ["wss://other.example"])
    await service.add_ban(db, "203.0.113.9", reason="manual")
    await restore(db, path, force=True)
    assert await dump(db) == expected


async def test_a_ban_alone_makes_the_database_not_empty(db: Database, tmp_path: Path) -> None:
    async with open_database("sqlite", tmp_path, "source") as source:
        await backup(source, tmp_path / "empty.gz")
    await service.add_ban(db, "203.0.113.9", reason="manual")
    with pytest.raises(DatabaseNotEmpty, match="rows in bans"):
        await restore(db, tmp_path / "empty.gz")
    await restore(db, tmp_path / "empty.gz", force=True)
    assert all(not rows for rows in (await dump(db)).values())


# ----------------------------------------------------------- damaged files


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.readlines()


def write_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(lines)


def edit_header(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    lines = read_lines(path)
    header = json.loads(lines[0])
    change(header)
    write_lines(path, [json.dumps(header) + "\n", *lines[1:]])


@pytest.fixture
async def good_backup(tmp_path: Path) -> Path:
    path = tmp_path / "good.gz"
    async with open_database("sqlite", tmp_path, "source") as source:
        await populate(source, calls=30)
        await backup(source, path, batch_size=8)
    return path


def cut_bytes(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cut_lines(path: Path) -> None:
    lines = read_lines(path)
    write_lines(path, lines[: len(lines) - 5])


def drop_end(path: Path) -> None:
    write_lines(path, read_lines(path)[:-1])


def bad_value(path: Path) -> None:
    lines = read_lines(path)
    index = lines.index('{"table":"calls"}\n') + 20
    row = json.loads(lines[index])
    row[0] = 12  # an integer where the call id (a string) belongs
    lines[index] = json.dumps(row) + "\n"
    write_lines(path, lines)


def bad_json(path: Path) -> None:
    lines = read_lines(path)
    lines[-10] = lines[-10][:5] + "\n"
    write_lines(path, lines)


def garbage_after(path: Path) -> None:
    write_lines(path, [*read_lines(path), "[1]\n"])


def not_gzip(path: Path) -> None:
    path.write_text("agents,calls\n1,2\n")


def not_a_backup(path: Path) -> None:
    write_lines(path, ['{"hello": "world"}\n'])


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (cut_bytes, "cut short or damaged"),
        (cut_lines, "cut short"),
        (drop_end, "no end line"),
        (bad_value, "12 is not a string value"),
        (bad_json, "not JSON"),
        (garbage_after, "data after the end line"),
        (not_gzip, "not a sipbridge backup \\(not a gzip file\\)"),
        (not_a_backup, "not a sipbridge backup \\(no backup header\\)"),
        (empty, "not a sipbridge backup"),
    ],
)
async def test_a_damaged_file_leaves_the_target_untouched(
    db: Database,
    good_backup: Path,
    damage: Callable[[Path], None],
    message: str,
) -> None:
    await service.add_agent(db, "keep", ["wss://keep.example"])
    await service.add_ban(db, "203.0.113.9", reason="manual")
    before = await dump(db)
    damage(good_backup)
    with pytest.raises(BackupError, match=message):
        await restore(db, good_backup, force=True)
    assert await dump(db) == before


async def test_a_missing_file(db: Database, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"cannot read .*No such file"):
        await restore(db, tmp_path / "missing.gz")
    with pytest.raises(BackupError, match=r"cannot read .*No such file"):
        read_header(tmp_path / "missing.gz")


# ----------------------------------------------------------- revisions


async def test_a_backup_from_a_newer_revision_is_refused(db: Database, good_backup: Path) -> None:
    edit_header(good_backup, lambda header: header.update(revision="0099"))
    with pytest.raises(BackupError, match="revision 0099, which this sipbridge does not know"):
        read_header(good_backup)
    with pytest.raises(BackupError, match="newer sipbridge"):
        await restore(db, good_backup)
    assert all(not rows for rows in (await dump(db)).values())


async def test_a_newer_format_version_is_refused(good_backup: Path) -> None:
    edit_header(good_backup, lambda header: header.update(version=2))
    with pytest.raises(BackupError, match="format version 2"):
        read_header(good_backup)


def drop_column(path: Path, table: str, column: str, revision: str) -> None:
    """Make the backup look as if it came from ``revision``, before ``column`` existed."""
    lines = read_lines(path)
    header = json.loads(lines[0])
    header["revision"] = revision
    spec = next(t for t in header["tables"] if t["name"] == table)
    index = [name for name, _ in spec["columns"]].index(column)
    del spec["columns"][index]
    out = [json.dumps(header) + "\n"]
    current = None
    for line in lines[1:]:
        value = json.loads(line)
        if isinstance(value, dict):
            current = value.get("table")
        elif current == table:
            del value[index]
            line = json.dumps(value) + "\n"
        out.append(line)
    write_lines(path, out)


async def test_an_older_backup_restores_when_its_columns_still_exist(
    db: Database, good_backup: Path
) -> None:
    # 0010 added agents.transfer_allow (not null, default '[]')
    drop_column(good_backup, "agents", "transfer_allow", "0009")
    info = await restore(db, good_backup)
    assert info.revision == "0009"
    agents = await service.list_agents(db)
    assert {agent.name for agent in agents} == {"Zoë 🤖", "quiet"}
    assert all(agent.transfer_allow == [] for agent in agents)


async def test_an_older_backup_lacking_a_required_column_is_refused(
    db: Database, good_backup: Path
) -> None:
    drop_column(good_backup, "calls", "status", "0009")
    with pytest.raises(BackupError, match=r"no values for calls.status"):
        await restore(db, good_backup)


async def test_a_column_of_another_type_is_refused(db: Database, good_backup: Path) -> None:
    def change(header: dict[str, Any]) -> None:
        calls = next(t for t in header["tables"] if t["name"] == "calls")
        calls["columns"][0][1] = "integer"

    edit_header(good_backup, change)
    with pytest.raises(BackupError, match=r"calls.id holds integer values"):
        await restore(db, good_backup)


async def test_backup_needs_the_database_at_this_schema(tmp_path: Path) -> None:
    async with Database(f"sqlite:///{tmp_path / 'old.db'}") as old:
        await old.upgrade("0009")
        with pytest.raises(BackupError, match=r"at revision 0009.*sipbridge db upgrade"):
            await backup(old, tmp_path / "b.gz")
    assert not (tmp_path / "b.gz").exists()


# ----------------------------------------------------------- files


async def test_backup_replaces_the_file_only_when_complete(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "b.gz"
    path.write_text("previous")
    path.chmod(0o644)
    await populate(db)

    def fail(table: str, done: int, total: int) -> None:
        if table == "calls" and done:
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        await backup(db, path, progress=fail)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.gz")] == []  # noqa: ASYNC240
    await backup(db, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_header(path).revision == HEAD


async def test_backup_into_a_missing_folder(db: Database, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"cannot write .*No such file or directory"):
        await backup(db, tmp_path / "missing" / "b.gz")


async def test_progress_is_reported_per_table(db: Database, tmp_path: Path) -> None:
    await populate(db, calls=25)
    seen: list[tuple[str, int, int]] = []
    await backup(db, tmp_path / "b.gz", batch_size=10, progress=lambda *a: seen.append(a))
    calls = [entry for entry in seen if entry[0] == "calls"]
    assert calls == [("calls", 0, 25), ("calls", 10, 25), ("calls", 20, 25), ("calls", 25, 25)]
    assert ("bans", 2, 2) in seen
    seen.clear()
    async with open_database("sqlite", tmp_path, "target") as target:
        await restore(target, tmp_path / "b.gz", batch_size=10, progress=lambda *a: seen.append(a))
    assert [entry for entry in seen if entry[0] == "calls"] == calls


# ----------------------------------------------------------- batches


async def test_reading_and_writing_go_in_batches(
    backend: str, db: Database, tmp_path: Path
) -> None:
    """3,000 calls with batches of 500: six keyset pages read, six inserts written, never
    one query for the whole table."""
    await populate(db, calls=3000)
    statements: list[tuple[str, int]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        count = len(parameters) if many else 1
        statements.append((" ".join(statement.split()), count))

    async with open_database(backend, tmp_path, "target") as target:
        for database in (db, target):
            event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        path = tmp_path / "b.gz"
        await backup(db, path, batch_size=500)
        reads = [s for s, _ in statements if s.startswith("SELECT") and "FROM calls" in s]
        pages = [s for s in reads if "count(" not in s]
        assert len(pages) == 7  # six full pages, then an empty one ends the table
        assert all("LIMIT" in s for s in pages)
        assert all("calls.id >" in s for s in pages[1:])
        statements.clear()
        await restore(target, path, batch_size=500)
        inserts = [(s, n) for s, n in statements if s.startswith("INSERT INTO calls")]
        assert sum(n for _, n in inserts) == 3000
        assert max(n for _, n in inserts) <= 500
        assert len(await service.list_calls(target, limit=5000)) == 3000


async def test_a_row_the_database_refuses_rolls_everything_back(
    db: Database, good_backup: Path
) -> None:
    """A row that breaks a constraint of the target (two numbers made equal) fails at its
    insert, after earlier tables were written: none of them stays."""
    lines = read_lines(good_backup)
    start = lines.index('{"table":"phone_numbers"}\n')
    first, second = json.loads(lines[start + 1]), json.loads(lines[start + 2])
    second[1] = first[1]
    lines[start + 2] = json.dumps(second) + "\n"
    write_lines(good_backup, lines)
    with pytest.raises(IntegrityError):
        await restore(db, good_backup)
    assert all(not rows for rows in (await dump(db)).values())


async def test_every_table_of_the_database_is_backed_up(db: Database, tmp_path: Path) -> None:
    """The tables come from the models; a migration's table without a model would be left
    out, so the database's own list must match (alembic's bookkeeping aside)."""

    def names(connection: Any) -> set[str]:
        return set(inspect(connection).get_table_names()) - {"alembic_version"}

    async with db.engine.connect() as connection:
        in_database = await connection.run_sync(names)
    info = await backup(db, tmp_path / "b.gz")
    assert {table.name for table in info.tables} == in_database


async def test_a_backup_is_one_snapshot(db_url: str, db: Database, tmp_path: Path) -> None:
    """Rows written while the backup runs (a server taking calls) are not in it, and do not
    make the counts disagree: every table is read in one read transaction."""
    await populate(db, calls=30)

    async def write() -> None:
        async with Database(db_url) as other, other.engine.begin() as connection:
            await connection.execute(
                insert(Call),
                [
                    {"id": name, "sip_call_id": name, "received_at": T0, "status": "ringing"}
                    for name in ("late", "late2")
                ],
            )
            await connection.execute(delete(Call).where(Call.id == "call-000003"))

    def write_meanwhile(table: str, done: int, total: int) -> None:
        if table == "call_events" and done == 0:  # calls are read after call_events
            thread = threading.Thread(target=asyncio.run, args=(write(),))
            thread.start()
            thread.join()

    info = await backup(db, tmp_path / "b.gz", batch_size=10, progress=write_meanwhile)
    assert {t.name: t.rows for t in info.tables}["calls"] == 30
    assert len(await service.list_calls(db, limit=100)) == 31  # the writes happened
    async with open_database("sqlite", tmp_path, "copy") as copy:
        await restore(copy, tmp_path / "b.gz")
        ids = [row[0] for row in (await dump(copy))["calls"]]
    assert "late" not in ids
    assert "call-000003" in ids
