"""Shared fixtures: ``db`` / ``db_url`` run a test on SQLite and on a real PostgreSQL;
``bridge`` and ``make_bridge`` start servers on 127.0.0.1 (stopped after the test); every
async test runs on uvloop, as the server does in production.

PostgreSQL comes from ``SIPBRIDGE_TEST_POSTGRES`` (a server URL such as
``postgresql+asyncpg://postgres:postgres@127.0.0.1/postgres``); every test gets a fresh
database ``sb_test_<random>`` that is dropped afterwards. Without the variable the
PostgreSQL runs are skipped, except when ``CI=true``, where they fail: CI must not pass by
silently leaving PostgreSQL out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import make_url

from sipbridge.store.db import Database
from tests.support.require import in_ci, require
from tests.support.settings import BridgeFactory, loopback_settings

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

POSTGRES_ENV = "SIPBRIDGE_TEST_POSTGRES"
BACKENDS = ["sqlite", "postgresql"]


def postgres_server_url() -> str | None:
    """The PostgreSQL server to test against; skips (or fails on CI) when there is none."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if url:
        return url
    if in_ci():
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL tests must run on CI")
    pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql+asyncpg://u:p@127.0.0.1/postgres)")
    return None  # pragma: no cover


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def create_postgres_database(server_url: str, template: str | None = None) -> str:
    """Create a database ``sb_test_<random>``, empty or a copy of ``template``; returns its
    SQLAlchemy URL."""
    import asyncpg

    name = f"sb_test_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


_POSTGRES_TEMPLATE: dict[str, str] = {}


async def postgres_template(server_url: str) -> str:
    """A database migrated to the head once per test run (dropped at its end), the
    template of every test's upgraded PostgreSQL database: a copy costs less than the
    migrations."""
    name = _POSTGRES_TEMPLATE.get(server_url)
    if name is None:
        url = await create_postgres_database(server_url)
        async with Database(url) as database:
            await database.upgrade()
        name = str(make_url(url).database)
        _POSTGRES_TEMPLATE[server_url] = name
    return name


def pytest_sessionfinish(session: pytest.Session) -> None:
    import asyncio

    for server_url, name in _POSTGRES_TEMPLATE.items():
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with contextlib.suppress(Exception):  # a server gone meanwhile
            asyncio.run(drop_postgres_database(server_url, url))


async def drop_postgres_database(server_url: str, database_url: str) -> None:
    import asyncpg

    name = make_url(database_url).database
    connection = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """The URL of an empty database (no schema yet): a SQLite file, or a fresh PostgreSQL
    database."""
    # A test that asks for ``db`` gets its database upgraded: copied from a migrated
    # template here, rather than migrated anew for every test.
    upgraded = "db" in request.fixturenames
    if request.param == "sqlite":
        if upgraded:
            migrated_sqlite(sqlite_template, tmp_path / "test.db")
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    server = postgres_server_url()
    assert server is not None
    template = await postgres_template(server) if upgraded else None
    url = await create_postgres_database(server, template)
    try:
        yield url
    finally:
        await drop_postgres_database(server, url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the head once per test run: copying it (a few ms) gives a
    test an upgraded database, where running the migrations costs about half a second."""
    import asyncio
    import sqlite3

    path = tmp_path_factory.mktemp("template") / "head.db"

    async def migrate() -> None:
        async with Database(f"sqlite:///{path}") as database:
            await database.upgrade()

    asyncio.run(migrate())
    with sqlite3.connect(path) as connection:  # everything in the main file, no WAL left
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def migrated_sqlite(template: Path, path: Path) -> None:
    """Put an upgraded SQLite database at ``path`` (see ``sqlite_template``)."""
    shutil.copyfile(template, path)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An upgraded :class:`Database` on each backend (a copy of the migrated template,
    see ``db_url``; the upgrade is then a no-op that checks it)."""
    database = Database(db_url)
    try:
        await database.upgrade()
        yield database
    finally:
        await database.close()


@pytest.fixture
def backend(db_url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``: the backend of this test's database."""
    return make_url(db_url).get_backend_name()


@pytest.fixture(scope="session")
def ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEM CA certificate (self-signed, made with ``openssl``), for agent CA bundles."""
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - openssl ships with Debian and the CI images
        require("openssl")
        raise AssertionError("unreachable")
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=sipbridge-test-ca",
            "-days",
            "1",
            "-keyout",
            str(directory / "ca-key.pem"),
            "-out",
            str(directory / "ca.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return directory / "ca.pem"


# ---------------------------------------------------------------- the event loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test runs on uvloop, the loop ``sipbridge serve`` runs on: a difference
    between the two loops is a production bug the tests must see (uvloop's TLS transport
    is no asyncio.Transport; it has no sock_recvfrom)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


# ---------------------------------------------------------------- running servers


@pytest.fixture
async def make_bridge(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[BridgeFactory]:
    """``await make_bridge(**overrides)``: a started server on 127.0.0.1 with
    ``ServeSettings`` overrides, its own SQLite file, a 2 s agent budget and the digest
    realm ``sipbridge.test``."""
    from sipbridge.runtime.server import SipBridgeServer

    servers: list[SipBridgeServer] = []

    async def make(**overrides: Any) -> SipBridgeServer:
        values: dict[str, Any] = {"agent_connect_timeout": 2.0, "auth_realm": "sipbridge.test"}
        values.update(overrides)
        db_file = tmp_path / f"calls{len(servers)}.db"
        if "db" not in values and not db_file.exists():
            migrated_sqlite(sqlite_template, db_file)  # serve's own upgrade is then a no-op
        server = SipBridgeServer(loopback_settings(db_file, **values))
        await server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            await server.stop()


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> SipBridgeServer:
    """One started server with the default settings of ``make_bridge``."""
    return await make_bridge()


# ---------------------------------------------------------------- what a test needs


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires(...)``: fail under CI, skip elsewhere, when a need is missing."""
    for marker in item.iter_markers(name="requires"):
        require(*marker.args)
