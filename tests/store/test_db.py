from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text

from sipbridge.store.db import MIGRATIONS_DIR, Database, alembic_config, normalize_url
from sipbridge.store.models import Base, Call


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    await database.upgrade()
    yield database
    await database.close()


def test_normalize_url() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("sqlite:///x.db").database == "x.db"
    assert normalize_url("sqlite+aiosqlite:////abs/x.db").database == "/abs/x.db"
    assert normalize_url("sqlite://").drivername == "sqlite+aiosqlite"
    url = normalize_url("postgresql+asyncpg://u:p@h/db")
    assert url.drivername == "postgresql+asyncpg"


@pytest.mark.parametrize("url", ["not a url", "://nothing"])
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match="invalid database URL"):
        Database(url)


def test_missing_driver() -> None:
    with pytest.raises(ValueError, match="cannot use database URL"):
        Database("postgresql+nosuchdriver://u@h/db")


def test_missing_sqlite_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    Database(f"sqlite:///{tmp_path / 'x.db'}")  # existing directory: fine
    Database("sqlite:///relative.db")  # current directory: fine


def test_packaged_migrations() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0001"]
    revision = script.get_revision("0001")
    assert revision is not None
    assert revision.down_revision is None


async def test_upgrade_creates_tables(db: Database) -> None:
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"agents", "phone_numbers", "calls", "alembic_version"} <= tables
    assert await db.current_revision() == "0001"


async def test_upgrade_is_idempotent(db: Database) -> None:
    await db.upgrade()
    await db.upgrade()
    assert await db.current_revision() == "0001"


async def test_fresh_database_has_no_revision(tmp_path: Path) -> None:
    async with Database(f"sqlite:///{tmp_path / 'empty.db'}") as database:
        assert await database.current_revision() is None


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(db: Database) -> None:
    async with db.engine.connect() as conn:
        diffs = await conn.run_sync(_diff)
    assert diffs == []


async def test_downgrade_then_upgrade(db: Database) -> None:
    def downgrade(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), "base")

    async with db.engine.begin() as conn:
        await conn.run_sync(downgrade)
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables <= {"alembic_version"}
    await db.upgrade()
    assert await db.current_revision() == "0001"


async def test_sqlite_pragmas(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000


async def test_foreign_key_sets_null_on_agent_delete(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO agents (id, name, url, voice_enabled, created_at) "
                "VALUES (1, 'a', 'ws://x', 1, '2025-01-01 00:00:00.000000')"
            )
        )
        await conn.execute(text("INSERT INTO phone_numbers (number, agent_id) VALUES ('+1', 1)"))
        await conn.execute(text("DELETE FROM agents WHERE id = 1"))
        agent_id = (await conn.execute(text("SELECT agent_id FROM phone_numbers"))).scalar_one()
    assert agent_id is None


async def test_datetimes_round_trip_as_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dt.db'}"
    received = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with Database(url) as database:
        await database.upgrade()
        async with database.sessionmaker() as session, session.begin():
            session.add(
                Call(
                    id="x",
                    sip_call_id="y",
                    received_at=received,
                    answered_at=datetime(2025, 6, 1, 12, 30, 16),  # naive = UTC
                    status="answered",
                )
            )
    # a new Database on the same file: values come back aware UTC
    async with Database(url) as database:
        async with database.sessionmaker() as session:
            call = (await session.scalars(select(Call))).one()
        async with database.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT received_at FROM calls"))).scalar_one()
    assert call.received_at == received
    assert call.received_at.tzinfo is UTC
    assert call.received_at.hour == 12
    assert call.answered_at == datetime(2025, 6, 1, 12, 30, 16, tzinfo=UTC)
    assert stored.startswith("2025-06-01 12:30:15")  # stored as UTC wall time


async def test_in_memory_database_is_shared_across_sessions() -> None:
    async with Database("sqlite://") as database:
        await database.upgrade()
        async with database.sessionmaker() as session:
            count = (await session.execute(text("SELECT count(*) FROM agents"))).scalar()
        assert count == 0
