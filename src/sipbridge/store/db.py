"""Database engine, session factory and programmatic Alembic migrations."""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

__all__ = ["MIGRATIONS_DIR", "Database", "alembic_config", "display_url", "normalize_url"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_SQLITE_BUSY_TIMEOUT_MS = 5000
# The PostgreSQL advisory lock migrations run under (any fixed 64-bit number: "sipbrdg1").
_MIGRATION_LOCK = 0x7369706272646731


_POSTGRES_DRIVERLESS = frozenset({"postgresql", "postgres"})
_USERINFO = re.compile(r"(://[^:/@]*):[^@]*@")


def display_url(url: str) -> str:
    """``url`` as it may be printed: the password, if any, replaced by ``***``."""
    try:
        return make_url(url.strip()).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _USERINFO.sub(r"\1:***@", url)


def normalize_url(url: str) -> URL:
    """Turn a user supplied database URL into an async SQLAlchemy URL.

    ``sqlite:///path.db`` becomes ``sqlite+aiosqlite:///path.db``, ``postgresql://`` and
    ``postgres://`` become ``postgresql+asyncpg://``; any other URL is used as given and
    must name an async driver.
    """
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        raise ValueError(
            f"invalid database URL {display_url(url)!r} "
            "(expected e.g. sqlite:////var/lib/sipbridge/sipbridge.db or "
            "postgresql://user:password@host/db)"
        ) from exc
    driver = parsed.drivername.lower()
    if driver == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in _POSTGRES_DRIVERLESS:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _check_sqlite_directory(url: URL) -> None:
    """Fail early, with a clear message, when a SQLite file's directory is missing."""
    if url.get_backend_name() != "sqlite" or _is_memory_sqlite(url):
        return
    database = url.database or ""
    if database.startswith("file:"):  # URI filename (?uri=true): leave it to SQLite
        return
    path = Path(database).expanduser().absolute()
    if not path.parent.is_dir():
        raise ValueError(
            f"cannot open database {str(path)!r}: folder {str(path.parent)!r} does not exist "
            "(create it, or choose another --db)"
        )


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class Database:
    """One database: an async engine plus a session factory.

    Usage::

        db = Database("sqlite:///sipbridge.db")
        await db.upgrade()
        async with db.sessionmaker() as session: ...
        await db.close()
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url: URL = normalize_url(url)
        _check_sqlite_directory(self.url)
        engine_args: dict[str, Any] = {"echo": echo}
        if _is_memory_sqlite(self.url):
            # every connection would otherwise get its own, empty, in-memory database
            engine_args["poolclass"] = StaticPool
        try:
            self.engine: AsyncEngine = create_async_engine(self.url, **engine_args)
        except (ArgumentError, ImportError) as exc:
            raise ValueError(f"cannot use database URL {display_url(url)!r}: {exc}") from exc
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _set_sqlite_pragmas)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def upgrade(self, revision: str = "head") -> None:
        """Run Alembic migrations up to ``revision`` (idempotent). On PostgreSQL, under
        an advisory lock: the instances of a cluster starting together on one new database
        migrate it one after the other (the first does the work), not at the same time."""
        async with self.engine.begin() as connection:
            if self.url.get_backend_name() == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            await connection.run_sync(_run_upgrade, revision)

    async def current_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def _run_upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
