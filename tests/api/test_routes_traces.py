"""``/api/traces``: switch a SIP trace on for a number or a trunk, list, switch off; the
running server is told at once (``traces_changed``)."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.api.conftest import make_client


class Counter:
    """A ``traces_changed`` callback counting how often it was awaited."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def changes() -> Counter:
    return Counter()


@pytest.fixture
async def notified(
    db: Database, api_key: str, changes: Counter
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db, traces_changed=changes, default_region="US")
    async with make_client(app, api_key) as http:
        yield http


async def test_on_list_off(notified: httpx.AsyncClient, db: Database, changes: Counter) -> None:
    assert (await notified.get("/api/traces")).json() == []
    before = datetime.now(UTC)
    response = await notified.post("/api/traces", json={"number": "(202) 555-0101"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"kind", "value", "created_at", "expires_at"}
    assert (body["kind"], body["value"]) == ("number", "+12025550101")  # national: US
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=3599) <= expires <= datetime.now(UTC) + timedelta(hours=1)
    response = await notified.post("/api/traces", json={"trunk": "carrier", "duration": 60})
    assert response.status_code == 201 and response.json()["value"] == "carrier"
    listed = (await notified.get("/api/traces")).json()
    assert [(t["kind"], t["value"]) for t in listed] == [
        ("trunk", "carrier"),
        ("number", "+12025550101"),
    ]
    assert changes.calls == 2
    assert (await notified.delete("/api/traces/number/%2B12025550101")).status_code == 204
    assert (await notified.delete("/api/traces/trunk/carrier")).status_code == 204
    assert changes.calls == 4
    assert await service.list_traces(db, include_expired=True) == []
    missing = await notified.delete("/api/traces/trunk/carrier")
    assert missing.status_code == 404 and "no trace of trunk carrier" in missing.text
    assert changes.calls == 4  # nothing changed: nothing to reload


async def test_list_all_includes_ended(client: httpx.AsyncClient, db: Database) -> None:
    long_ago = datetime(2025, 1, 1, tzinfo=UTC)
    await service.add_trace(db, trunk="old", duration=10, now=long_ago)
    assert (await client.get("/api/traces")).json() == []
    [ended] = (await client.get("/api/traces", params={"all": "true"})).json()
    assert ended["value"] == "old" and ended["expires_at"] == "2025-01-01T00:00:10+00:00"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "number"]),
        ({"number": "+12025550101", "trunk": "carrier"}, ["body", "number"]),
        ({"number": "12"}, ["body", "number"]),
        ({"trunk": "bad name!"}, ["body", "trunk"]),
        ({"trunk": "carrier", "duration": 0}, ["body", "duration"]),
        ({"trunk": "carrier", "duration": 8 * 86400}, ["body", "duration"]),
        ({"trunk": "carrier", "extra": 1}, ["body", "extra"]),
    ],
)
async def test_invalid_is_422(
    notified: httpx.AsyncClient, changes: Counter, body: dict[str, Any], loc: list[str]
) -> None:
    response = await notified.post("/api/traces", json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert changes.calls == 0


async def test_delete_bad_kind_or_value_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/api/traces/agent/x")).status_code == 422
    response = await client.delete("/api/traces/number/not-a-number")
    assert response.status_code == 422, response.text


async def test_traces_need_a_key(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/api/traces")).status_code == 401
    assert (await anon.post("/api/traces", json={"trunk": "x"})).status_code == 401
    assert (await anon.delete("/api/traces/trunk/x")).status_code == 401
