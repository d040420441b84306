"""Fixtures of the cluster tests: a fresh PostgreSQL database (the instances share it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import create_postgres_database, drop_postgres_database, postgres_server_url


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    server = postgres_server_url()
    assert server is not None
    url = await create_postgres_database(server)
    try:
        yield url
    finally:
        await drop_postgres_database(server, url)
