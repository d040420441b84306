from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.api.conftest import make_client

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
    # Registration is the running server's state: null for an API without one.
    assert body["registration"] is None
    assert body["username"] == "acct"
    assert len(body["allowed_cidrs"]) == 2
    assert (await service.get_trunk(db, "carrier")).password == "hunter2"
    for path in ("/api/trunks", "/api/trunks/carrier"):
        assert "hunter2" not in (await client.get(path)).text


async def test_stored_registrations_per_instance(client: httpx.AsyncClient, db: Database) -> None:
    # What each instance wrote (runtime/server.py), beside the live state (null here: no
    # server runs this API).
    assert (await client.post("/api/trunks", json=TRUNK)).status_code == 201
    await service.register_instance(db, "sip-a", "192.0.2.1:5060")
    until = datetime(2026, 12, 9, 11, 0, tzinfo=UTC)
    for instance, state in (("sip-a", "registered"), ("sip-b", "failing")):
        await service.save_registration(
            db,
            "carrier",
            instance,
            state=state,
            registered_until=until if state == "registered" else None,
            last_status=200 if state == "registered" else 503,
            last_reason="ok" if state == "registered" else "Service Unavailable",
            next_attempt=until,
            failures=0 if state == "registered" else 1,
        )
    one = (await client.get("/api/trunks/carrier")).json()
    (listed,) = (await client.get("/api/trunks")).json()
    assert one == listed
    assert one["registration"] is None
    a, b = one["registrations"]
    assert (a["instance"], a["instance_state"], a["state"]) == ("sip-a", "running", "registered")
    assert a["registered_until"] == until.isoformat()
    assert (b["instance"], b["instance_state"], b["last_status"]) == ("sip-b", None, 503)
    patched = await client.patch("/api/trunks/carrier", json={"max_calls": 3})
    assert [r["instance"] for r in patched.json()["registrations"]] == ["sip-a", "sip-b"]
    assert (await client.delete("/api/trunks/carrier")).status_code == 204
    assert await service.list_registrations(db) == []


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


# ------------------------------------------------------- trunk numbers and SRTP


async def test_create_trunk_numbers_and_srtp(client: httpx.AsyncClient, db: Database) -> None:
    minimal = (await client.post("/api/trunks", json={"name": "plain"})).json()
    assert (minimal["allowed_numbers"], minimal["srtp"]) == ([], "optional")

    response = await client.post(
        "/api/trunks",
        json={
            "name": "t",
            "allowed_numbers": ["+1 (202) 555-0101", "+442079460000", "+12025550101"],
            "srtp": "required",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["allowed_numbers"] == ["+12025550101", "+442079460000"]
    assert body["srtp"] == "required"
    assert (await client.get("/api/trunks/t")).json() == body
    stored = await service.get_trunk(db, "t")
    assert (stored.allowed_numbers, stored.srtp) == (["+12025550101", "+442079460000"], "required")


async def test_update_trunk_numbers_and_srtp(client: httpx.AsyncClient, db: Database) -> None:
    await client.post(
        "/api/trunks", json={**TRUNK, "allowed_numbers": ["+12025550101"], "srtp": "off"}
    )
    response = await client.patch("/api/trunks/carrier", json={"max_calls": 2})
    body = response.json()
    assert (body["allowed_numbers"], body["srtp"]) == (["+12025550101"], "off")  # unchanged

    response = await client.patch(
        "/api/trunks/carrier", json={"allowed_numbers": ["+12025550188"], "srtp": "required"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["allowed_numbers"], body["srtp"]) == (["+12025550188"], "required")
    assert body["max_calls"] == 2
    stored = await service.get_trunk(db, "carrier")
    assert (stored.allowed_numbers, stored.srtp) == (["+12025550188"], "required")

    response = await client.patch("/api/trunks/carrier", json={"allowed_numbers": []})
    assert (response.json()["allowed_numbers"], response.json()["srtp"]) == ([], "required")


async def test_trunk_national_numbers_use_default_region(db: Database, api_key: str) -> None:
    async with make_client(create_app(db, default_region="US"), api_key) as http:
        response = await http.post(
            "/api/trunks", json={"name": "t", "allowed_numbers": ["(202) 555-0101"]}
        )
        assert response.status_code == 201, response.text
        assert response.json()["allowed_numbers"] == ["+12025550101"]
        response = await http.patch("/api/trunks/t", json={"allowed_numbers": ["202-555-0102"]})
        assert response.status_code == 200, response.text
        assert response.json()["allowed_numbers"] == ["+12025550102"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"srtp": "always"}, "srtp"),
        ({"srtp": "Required"}, "srtp"),
        ({"srtp": None}, "srtp"),
        ({"srtp": 1}, "srtp"),
        ({"allowed_numbers": ["12345"]}, "allowed_numbers"),
        ({"allowed_numbers": ["2025550101"]}, "allowed_numbers"),  # national, no region
        ({"allowed_numbers": ["not a number"]}, "allowed_numbers"),
        ({"allowed_numbers": [""]}, "allowed_numbers"),
        ({"allowed_numbers": "+12025550101"}, "allowed_numbers"),
        ({"allowed_numbers": [12025550101]}, "allowed_numbers"),
    ],
)
async def test_trunk_bad_numbers_or_srtp_is_422(
    client: httpx.AsyncClient, db: Database, body: dict[str, Any], field: str
) -> None:
    locs = error_locs(await client.post("/api/trunks", json={"name": "t", **body}))
    assert any(loc[:2] == ["body", field] for loc in locs), locs
    assert await service.list_trunks(db) == []

    await client.post("/api/trunks", json={"name": "u", "srtp": "off"})
    locs = error_locs(await client.patch("/api/trunks/u", json=body))
    assert any(loc[:2] == ["body", field] for loc in locs), locs
    stored = await service.get_trunk(db, "u")
    assert (stored.allowed_numbers, stored.srtp) == ([], "off")


async def test_trunk_max_message_rate(client: httpx.AsyncClient, db: Database) -> None:
    created = await client.post("/api/trunks", json={"name": "t", "max_message_rate": 3000})
    assert created.status_code == 201, created.text
    assert created.json()["max_message_rate"] == 3000
    minimal = (await client.post("/api/trunks", json={"name": "plain"})).json()
    assert minimal["max_message_rate"] is None
    patched = await client.patch("/api/trunks/t", json={"max_message_rate": 0})
    assert patched.json()["max_message_rate"] == 0
    assert (await service.get_trunk(db, "t")).max_message_rate == 0
    reset = await client.patch("/api/trunks/t", json={"max_message_rate": None})
    assert reset.json()["max_message_rate"] is None
    for bad in (-1, 1_000_001, "fast"):
        response = await client.post("/api/trunks", json={"name": "b", "max_message_rate": bad})
        assert response.status_code == 422
