from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.api.conftest import make_client

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def error_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


class Counter:
    """A ``bans_changed`` callback counting how often it was awaited."""

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
    """A client of an app built with a counting ``bans_changed``."""
    async with make_client(create_app(db, bans_changed=changes), api_key) as http:
        yield http


async def test_create_list_delete(client: httpx.AsyncClient, db: Database) -> None:
    assert (await client.get("/api/bans")).json() == []
    before = datetime.now(UTC)
    response = await client.post("/api/bans", json={"address": "203.0.113.7"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"address", "reason", "note", "created_at", "expires_at"}
    assert (body["address"], body["reason"], body["note"], body["expires_at"]) == (
        "203.0.113.7",
        "manual",
        None,
        None,
    )
    created = datetime.fromisoformat(body["created_at"])
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    assert [b.address for b in await service.list_bans(db)] == ["203.0.113.7"]

    listed = await client.get("/api/bans")
    assert listed.status_code == 200
    assert listed.json() == [body]

    response = await client.delete("/api/bans/203.0.113.7")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert (await client.get("/api/bans")).json() == []
    assert await service.list_bans(db, include_expired=True) == []


async def test_create_with_duration_and_note(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/bans", json={"address": "198.51.100.7/24", "duration": 3600, "note": "abuse #7"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["address"] == "198.51.100.0/24"  # normalised
    assert body["note"] == "abuse #7"
    created = datetime.fromisoformat(body["created_at"])
    assert datetime.fromisoformat(body["expires_at"]) == created + timedelta(hours=1)


async def test_create_replaces_ban_on_same_address(client: httpx.AsyncClient) -> None:
    first = await client.post("/api/bans", json={"address": "192.0.2.1", "duration": 60})
    assert first.status_code == 201
    second = await client.post("/api/bans", json={"address": "192.0.2.1/32", "note": "for good"})
    assert second.status_code == 201
    [ban] = (await client.get("/api/bans")).json()
    assert (ban["address"], ban["expires_at"], ban["note"]) == ("192.0.2.1", None, "for good")


async def test_delete_network(client: httpx.AsyncClient, db: Database) -> None:
    await client.post("/api/bans", json={"address": "198.51.100.0/24"})
    await client.post("/api/bans", json={"address": "2001:db8::/32"})
    # an address inside the network is not the ban
    assert (await client.delete("/api/bans/198.51.100.7")).status_code == 404
    response = await client.delete("/api/bans/198.51.100.0/24")
    assert response.status_code == 204, response.text
    assert [b.address for b in await service.list_bans(db)] == ["2001:db8::/32"]
    response = await client.delete("/api/bans/2001:db8::/32")
    assert response.status_code == 204, response.text
    assert await service.list_bans(db) == []
    assert (await client.delete("/api/bans/198.51.100.0/24")).status_code == 404


async def test_delete_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/bans/192.0.2.99")
    assert response.status_code == 404, response.text
    assert "192.0.2.99" in response.text


@pytest.mark.parametrize("address", ["not-an-ip", "300.1.1.1", "10.0.0.0/33"])
async def test_delete_bad_address_is_422(client: httpx.AsyncClient, address: str) -> None:
    locs = error_locs(await client.delete(f"/api/bans/{address}"))
    assert ["path", "address"] in locs, locs


async def test_list_all_includes_ended(client: httpx.AsyncClient, db: Database) -> None:
    await service.add_ban(db, "192.0.2.1", duration=60, now=T0)  # ended long ago
    await service.add_ban(db, "192.0.2.2", reason="flood")
    current = (await client.get("/api/bans")).json()
    assert [(b["address"], b["reason"]) for b in current] == [("192.0.2.2", "flood")]
    for query in ("?all=true", "?all=1"):
        everything = (await client.get(f"/api/bans{query}")).json()
        assert [b["address"] for b in everything] == ["192.0.2.2", "192.0.2.1"]
    ended = everything[1]
    assert ended["expires_at"] == (T0 + timedelta(seconds=60)).isoformat()
    assert [b["address"] for b in (await client.get("/api/bans?all=false")).json()] == ["192.0.2.2"]
    assert (await client.get("/api/bans?all=perhaps")).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "not-an-ip"}, "address"),
        ({"address": "300.1.1.1"}, "address"),
        ({"address": "10.0.0.0/33"}, "address"),
        ({"address": ""}, "address"),
        ({"address": "1" * 65}, "address"),
        ({"address": 7}, "address"),
        ({}, "address"),
        ({"address": "192.0.2.1", "duration": 0}, "duration"),
        ({"address": "192.0.2.1", "duration": -1}, "duration"),
        ({"address": "192.0.2.1", "duration": 10 * 365 * 86400 + 1}, "duration"),
        ({"address": "192.0.2.1", "duration": 1.5}, "duration"),
        ({"address": "192.0.2.1", "duration": "soon"}, "duration"),
        ({"address": "192.0.2.1", "note": "x" * 256}, "note"),
        ({"address": "192.0.2.1", "note": "a\x00b"}, "note"),
        ({"address": "192.0.2.1", "reason": "flood"}, "reason"),  # not settable
    ],
)
async def test_create_invalid_is_422(
    client: httpx.AsyncClient, db: Database, body: dict[str, Any], field: str
) -> None:
    locs = error_locs(await client.post("/api/bans", json=body))
    assert any(loc[:2] == ["body", field] for loc in locs), locs
    assert await service.list_bans(db, include_expired=True) == []


async def test_bans_need_a_key(anon: httpx.AsyncClient, db: Database) -> None:
    await service.add_ban(db, "192.0.2.1")
    assert (await anon.get("/api/bans")).status_code == 401
    assert (await anon.get("/api/bans?all=true")).status_code == 401
    assert (await anon.post("/api/bans", json={"address": "192.0.2.2"})).status_code == 401
    assert (await anon.delete("/api/bans/192.0.2.1")).status_code == 401
    assert (await anon.delete("/api/bans/198.51.100.0/24")).status_code == 401
    assert [b.address for b in await service.list_bans(db)] == ["192.0.2.1"]


async def test_bans_changed_awaited_per_change(
    notified: httpx.AsyncClient, changes: Counter
) -> None:
    assert (await notified.post("/api/bans", json={"address": "192.0.2.1"})).status_code == 201
    assert changes.calls == 1
    response = await notified.post("/api/bans", json={"address": "198.51.100.0/24"})
    assert response.status_code == 201
    assert changes.calls == 2
    # reading does not count
    assert (await notified.get("/api/bans")).status_code == 200
    assert (await notified.get("/api/bans?all=true")).status_code == 200
    assert changes.calls == 2
    assert (await notified.delete("/api/bans/198.51.100.0/24")).status_code == 204
    assert changes.calls == 3
    assert (await notified.delete("/api/bans/192.0.2.1")).status_code == 204
    assert changes.calls == 4


async def test_bans_changed_not_awaited_on_failure(
    notified: httpx.AsyncClient, changes: Counter
) -> None:
    assert (await notified.post("/api/bans", json={"address": "bogus"})).status_code == 422
    assert (
        await notified.post("/api/bans", json={"address": "192.0.2.1", "duration": 0})
    ).status_code == 422
    assert (await notified.delete("/api/bans/192.0.2.1")).status_code == 404
    assert (await notified.delete("/api/bans/bogus")).status_code == 422
    assert changes.calls == 0
