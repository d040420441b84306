from typing import Any

import httpx
import pytest

from sipbridge.store import service
from sipbridge.store.db import Database

TRUNK = {
    "name": "carrier",
    "allowed_cidrs": ["203.0.113.0/24", "2001:db8::/32"],
    "host": "sip.carrier.example",
    "username": "acct",
    "password": "hunter2",
    "register": True,
    "max_calls": 30,
    "codecs": ["pcmu", "pcma"],
}


def error_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_create_trunk_password_never_returned(
    client: httpx.AsyncClient, db: Database
) -> None:
    response = await client.post("/api/trunks", json=TRUNK)
    assert response.status_code == 201, response.text
    body = response.json()
    assert "hunter2" not in response.text
    assert "password" not in body
    assert body["has_password"] is True
    assert body["register"] is True
    assert body["max_calls"] == 30
    assert body["codecs"] == ["pcmu", "pcma"]
    assert body["host"] == "sip.carrier.example"
    assert body["username"] == "acct"
    assert len(body["allowed_cidrs"]) == 2
    assert (await service.get_trunk(db, "carrier")).password == "hunter2"
    for path in ("/api/trunks", "/api/trunks/carrier"):
        assert "hunter2" not in (await client.get(path)).text


async def test_create_trunk_minimal(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/trunks", json={"name": "t1"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["allowed_cidrs"] == []
    assert body["codecs"] == []
    assert body["register"] is False
    assert body["has_password"] is False
    assert body["host"] is None
    assert body["max_calls"] is None


async def test_list_get_duplicate(client: httpx.AsyncClient) -> None:
    await client.post("/api/trunks", json={"name": "b"})
    await client.post("/api/trunks", json={"name": "a"})
    assert [t["name"] for t in (await client.get("/api/trunks")).json()] == ["a", "b"]
    assert (await client.get("/api/trunks/a")).json()["name"] == "a"
    assert (await client.post("/api/trunks", json={"name": "a"})).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "t", "allowed_cidrs": ["not-an-ip"]}, "allowed_cidrs"),
        ({"name": "t", "allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs"),
        ({"name": "t", "allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs"),
        ({"name": "t", "max_calls": 0}, "max_calls"),
        ({"name": "t", "max_calls": 10**12}, "max_calls"),
        ({"name": "t", "codecs": ["gsm"]}, "codecs"),
        ({"name": "t", "register": "perhaps"}, "register"),
        ({"name": "t", "host": ""}, "host"),
        ({"name": "t", "host": "x" * 256}, "host"),
        ({"name": "t", "username": "a\x00b"}, "username"),
        ({"name": "t", "register_": True}, "register_"),
    ],
)
async def test_create_trunk_invalid(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    locs = error_locs(await client.post("/api/trunks", json=body))
    assert any(loc[:2] == ["body", field] for loc in locs), locs


async def test_lone_surrogate_in_raw_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/trunks",
        content=b'{"name": "t", "password": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert ["body", "password"] in error_locs(response)


async def test_update_trunk(client: httpx.AsyncClient, db: Database) -> None:
    await client.post("/api/trunks", json=TRUNK)
    response = await client.patch(
        "/api/trunks/carrier", json={"max_calls": 5, "register": False, "password": None}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["max_calls"] == 5
    assert body["register"] is False
    assert body["has_password"] is False
    assert body["host"] == "sip.carrier.example"  # left out: unchanged
    assert body["codecs"] == ["pcmu", "pcma"]
    stored = await service.get_trunk(db, "carrier")
    assert stored.password is None
    assert stored.username == "acct"

    response = await client.patch(
        "/api/trunks/carrier", json={"host": None, "codecs": ["opus"], "allowed_cidrs": []}
    )
    body = response.json()
    assert (body["host"], body["codecs"], body["allowed_cidrs"]) == (None, ["opus"], [])


async def test_update_trunk_errors(client: httpx.AsyncClient) -> None:
    await client.post("/api/trunks", json=TRUNK)
    assert (await client.patch("/api/trunks/none", json={"max_calls": 1})).status_code == 404
    for body, field in (
        ({"register": None}, "register"),
        ({"codecs": None}, "codecs"),
        ({"allowed_cidrs": ["300.1.1.1"]}, "allowed_cidrs"),
        ({"name": "x"}, "name"),
    ):
        locs = error_locs(await client.patch("/api/trunks/carrier", json=body))
        assert any(loc[:2] == ["body", field] for loc in locs), (body, locs)


async def test_delete_trunk(client: httpx.AsyncClient) -> None:
    await client.post("/api/trunks", json={"name": "t"})
    assert (await client.delete("/api/trunks/t")).status_code == 204
    assert (await client.get("/api/trunks/t")).status_code == 404
    assert (await client.delete("/api/trunks/t")).status_code == 404
