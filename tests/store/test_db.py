from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text

from sipbridge.store import service
from sipbridge.store.db import (
    MIGRATIONS_DIR,
    Database,
    alembic_config,
    display_url,
    normalize_url,
)
from sipbridge.store.models import Base, Call

HEAD = "0015"


def test_normalize_url() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("sqlite:///x.db").database == "x.db"
    assert normalize_url("sqlite+aiosqlite:////abs/x.db").database == "/abs/x.db"
    assert normalize_url("sqlite://").drivername == "sqlite+aiosqlite"
    url = normalize_url("postgresql+asyncpg://u:p@h/db")
    assert url.drivername == "postgresql+asyncpg"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_driverless_postgresql_url_uses_asyncpg(scheme: str) -> None:
    url = normalize_url(f"{scheme}://u:p@h:5433/db")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "u",
        "p",
        "h",
        5433,
        "db",
    )
    Database(f"{scheme}://u:p@h/db")  # no "No module named 'psycopg'"


def test_display_url_masks_the_password() -> None:
    assert display_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert display_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert "secret" not in display_url("postgresql://u:secret@h:port/db")  # unparseable
    with pytest.raises(ValueError) as info:
        Database("postgresql+nosuchdriver://u:secret@h/db")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("url", ["not a url", "://nothing"])
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match="invalid database URL"):
        Database(url)


def test_missing_driver() -> None:
    with pytest.raises(ValueError, match="cannot use database URL"):
        Database("postgresql+nosuchdriver://u@h/db")


def test_missing_sqlite_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist") as info:
        Database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    assert f"folder '{tmp_path / 'nope'}' does not exist" in str(info.value)
    assert not (tmp_path / "nope").exists()  # an explicit path's folder is never created
    Database(f"sqlite:///{tmp_path / 'x.db'}")  # existing directory: fine
    Database("sqlite:///relative.db")  # current directory: fine


def test_missing_relative_sqlite_directory_names_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        Database("sqlite:///nope/x.db")
    assert f"cannot open database '{tmp_path / 'nope' / 'x.db'}'" in str(info.value)


def test_packaged_migrations() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    first = script.get_revision("0001")
    assert first is not None and first.down_revision is None
    second = script.get_revision("0002")
    assert second is not None and second.down_revision == "0001"
    third = script.get_revision("0003")
    assert third is not None and third.down_revision == "0002"
    fourth = script.get_revision("0004")
    assert fourth is not None and fourth.down_revision == "0003"
    fifth = script.get_revision("0005")
    assert fifth is not None and fifth.down_revision == "0004"
    sixth = script.get_revision("0006")
    assert sixth is not None and sixth.down_revision == "0005"
    seventh = script.get_revision("0007")
    assert seventh is not None and seventh.down_revision == "0006"
    eighth = script.get_revision("0008")
    assert eighth is not None and eighth.down_revision == "0007"
    ninth = script.get_revision("0009")
    assert ninth is not None and ninth.down_revision == "0008"
    tenth = script.get_revision("0010")
    assert tenth is not None and tenth.down_revision == "0009"
    eleventh = script.get_revision("0011")
    assert eleventh is not None and eleventh.down_revision == "0010"
    twelfth = script.get_revision("0012")
    assert twelfth is not None and twelfth.down_revision == "0011"
    thirteenth = script.get_revision("0013")
    assert thirteenth is not None and thirteenth.down_revision == "0012"
    fourteenth = script.get_revision("0014")
    assert fourteenth is not None and fourteenth.down_revision == "0013"
    fifteenth = script.get_revision("0015")
    assert fifteenth is not None and fifteenth.down_revision == "0014"


async def test_upgrade_creates_tables(db: Database) -> None:
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    expected = {
        "agents",
        "phone_numbers",
        "calls",
        "trunks",
        "api_keys",
        "call_events",
        "bans",
        "instances",
        "sip_traces",
        "registrations",
    }
    assert expected | {"alembic_version"} <= tables
    assert await db.current_revision() == HEAD


async def test_calls_indexes(db: Database) -> None:
    async with db.engine.connect() as conn:
        indexes = await conn.run_sync(
            lambda c: {i["name"]: i["column_names"] for i in inspect(c).get_indexes("calls")}
        )
    assert indexes["ix_calls_received_at_id"] == ["received_at", "id"]
    for column in ("from_number", "to_number", "agent_name", "status", "reason"):
        assert indexes[f"ix_calls_{column}_received_at"] == [column, "received_at", "id"]


async def test_upgrade_is_idempotent(db: Database) -> None:
    await db.upgrade()
    await db.upgrade()
    assert await db.current_revision() == HEAD


async def test_fresh_database_has_no_revision(db_url: str) -> None:
    async with Database(db_url) as database:
        assert await database.current_revision() is None


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(db: Database) -> None:
    async with db.engine.connect() as conn:
        diffs = await conn.run_sync(_diff)
    assert diffs == []


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))


async def test_downgrade_then_upgrade(db: Database) -> None:
    def downgrade(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), "base")

    async with db.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert await _tables(db) <= {"alembic_version"}
    await db.upgrade()
    assert await db.current_revision() == HEAD


async def test_0010_gives_existing_agents_the_default_transfer_policy(db_url: str) -> None:
    async with Database(db_url) as database:
        await database.upgrade("0009")
        async with database.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agents (name, urls, voice_enabled, created_at) "
                    "VALUES ('bot', '[\"wss://bot.example/ws\"]', :yes, :at)"
                ),
                {"yes": True, "at": datetime(2026, 1, 1, tzinfo=UTC)},
            )
        await database.upgrade()
        agent = await service.get_agent(database, "bot")
        assert agent.transfer_allow == []
        await service.update_agent(database, "bot", transfer_allow=["+1202555*", "PBX.example"])
        agent = await service.get_agent(database, "bot")
        assert agent.transfer_allow == ["+1202555*", "pbx.example"]


async def test_0002_migrates_existing_rows(db_url: str) -> None:
    """A database written by 0001 keeps its agents, numbers and calls through 0002."""
    async with Database(db_url) as database:
        await database.upgrade("0001")
        async with database.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agents (id, name, url, voice_enabled, created_at) "
                    "VALUES (1, 'bot', 'wss://bot.example/ws', :yes, :at)"
                ),
                {"yes": True, "at": datetime(2025, 1, 1, tzinfo=UTC)},
            )
            await conn.execute(
                text("INSERT INTO phone_numbers (number, agent_id) VALUES ('+12025550101', 1)")
            )
            await conn.execute(
                text(
                    "INSERT INTO calls (id, sip_call_id, from_number, to_number, agent_name, "
                    "received_at, status) VALUES ('c1', 's1', '+12025550100', '+12025550101', "
                    "'bot', :at, 'failed'), ('c2', 's2', 'anonymous', '+12025550101', 'bot', "
                    ":at, 'failed')"
                ),
                {"at": datetime(2025, 3, 1, 23, 30, tzinfo=UTC)},
            )
        await database.upgrade()
        assert await database.current_revision() == HEAD

        agent = await service.get_agent(database, "bot")
        assert agent.urls == ["wss://bot.example/ws"]
        assert agent.url == "wss://bot.example/ws"
        assert (agent.protocol, agent.sample_rate, agent.token) == ("native", 8000, None)
        route = await service.lookup_number(database, "+12025550101")
        assert route is not None and route.agent == agent  # the number kept its agent
        [number] = await service.list_numbers(database)
        assert number.created_at is None

        async with database.sessionmaker() as session:
            rows = {c.id: c for c in await session.scalars(select(Call))}
        assert rows["c1"].received_day == date(2025, 3, 1)
        assert rows["c1"].received_hour == 23
        assert (rows["c1"].caller_country, rows["c1"].caller_region) == ("US", "Washington D.C.")
        assert rows["c2"].caller_country is None

        stats = await service.call_stats(database)
        assert stats.by_hour_of_day[23] == 2
        assert stats.callers_by_country == [{"country": "US", "count": 1}]

        def downgrade(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "0001")

        async with database.engine.begin() as conn:
            await conn.run_sync(downgrade)
            url = (await conn.execute(text("SELECT url FROM agents"))).scalar_one()
            agent_id = (await conn.execute(text("SELECT agent_id FROM phone_numbers"))).scalar_one()
        assert url == "wss://bot.example/ws"
        assert agent_id == 1
        assert await database.current_revision() == "0001"


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    async with Database(f"sqlite:///{tmp_path / 'p.db'}") as db, db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000


async def test_foreign_key_sets_null_on_agent_delete(db: Database) -> None:
    await service.add_agent(db, "a", "ws://x")
    await service.add_number(db, "+12025550101", "a")
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM agents WHERE name = 'a'"))
        agent_id = (await conn.execute(text("SELECT agent_id FROM phone_numbers"))).scalar_one()
    assert agent_id is None


async def test_datetimes_round_trip_as_utc(db_url: str, backend: str) -> None:
    received = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with Database(db_url) as database:
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
    # a new Database on the same database: values come back aware UTC
    async with Database(db_url) as database:
        async with database.sessionmaker() as session:
            call = (await session.scalars(select(Call))).one()
        async with database.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT received_at FROM calls"))).scalar_one()
    assert call.received_at == received
    assert call.received_at.tzinfo is UTC
    assert call.received_at.hour == 12
    assert call.answered_at == datetime(2025, 6, 1, 12, 30, 16, tzinfo=UTC)
    if backend == "sqlite":
        assert stored.startswith("2025-06-01 12:30:15")  # stored as UTC wall time
    else:
        assert stored == received  # timestamptz


async def test_in_memory_database_is_shared_across_sessions() -> None:
    async with Database("sqlite://") as database:
        await database.upgrade()
        async with database.sessionmaker() as session:
            count = (await session.execute(text("SELECT count(*) FROM agents"))).scalar()
        assert count == 0
