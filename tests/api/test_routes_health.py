from typing import Any

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.api.routes_health import database_readiness
from sipbridge.store.db import Database
from tests.api.conftest import make_client


async def test_healthz_needs_no_key(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_default_checks_the_database(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok"}


@pytest.mark.parametrize("ready", [True, False])
async def test_readyz_uses_the_readiness_callable(db: Database, ready: bool) -> None:
    detail = {"sip": "bound", "database": "ok", "draining": not ready}

    async def readiness() -> tuple[bool, dict[str, Any]]:
        return ready, detail

    async with make_client(create_app(db, readiness=readiness)) as http:
        response = await http.get("/readyz")
    assert response.status_code == (200 if ready else 503)
    assert response.json() == detail


async def test_readyz_failing_check_is_503(db: Database) -> None:
    async def readiness() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("boom")

    async with make_client(create_app(db, readiness=readiness)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"error": "readiness check failed"}


async def test_database_readiness_reports_unreachable(tmp_path: Any) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    await database.close()
    (tmp_path / "x.db").mkdir()  # a directory where the file should be: cannot open
    ready, detail = await database_readiness(database)()
    assert ready is False
    assert detail["database"].startswith("unreachable")
