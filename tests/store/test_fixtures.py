"""The shared ``db`` fixture's PostgreSQL switch (tests/conftest.py)."""

import pytest

from tests.conftest import POSTGRES_ENV, postgres_server_url


def test_postgres_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POSTGRES_ENV, " postgresql+asyncpg://u:p@db/postgres ")
    assert postgres_server_url() == "postgresql+asyncpg://u:p@db/postgres"


def test_postgres_missing_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        postgres_server_url()


def test_postgres_missing_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run on CI"):
        postgres_server_url()


async def test_db_fixture_is_upgraded(db, backend: str) -> None:  # type: ignore[no-untyped-def]
    assert backend in ("sqlite", "postgresql")
    assert db.url.get_backend_name() == backend
    assert await db.current_revision() == "0015"
