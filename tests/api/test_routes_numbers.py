from collections.abc import AsyncIterator

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.store.db import Database
from tests.api.conftest import make_client


@pytest.fixture
async def agents(client: httpx.AsyncClient) -> None:
    for name in ("support", "sales"):
        response = await client.post(
            "/api/agents", json={"name": name, "urls": ["wss://agent.example/ws"]}
        )
        assert response.status_code == 201


def error_locs(response: httpx.Response) -> list[list[object]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_create_number_normalizes(client: httpx.AsyncClient, agents: None) -> None:
    response = await client.post(
        "/api/numbers", json={"number": "+1 (202) 555-0101", "agent": "support"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["number"] == "+12025550101"
    assert body["agent"] == "support"
    assert body["created_at"] is not None


async def test_invalid_number_is_422_naming_number(client: httpx.AsyncClient, agents: None) -> None:
    for number in ("12345", "not a number", "2025550101", ""):
        response = await client.post("/api/numbers", json={"number": number, "agent": "support"})
        assert ["body", "number"] in error_locs(response), number


async def test_duplicate_number_is_409(client: httpx.AsyncClient, agents: None) -> None:
    body = {"number": "+12025550101", "agent": "support"}
    assert (await client.post("/api/numbers", json=body)).status_code == 201
    again = await client.post("/api/numbers", json={"number": "+1 202 555 0101", "agent": "sales"})
    assert again.status_code == 409
    assert "+12025550101" in again.json()["detail"]


async def test_unknown_agent_is_422_naming_agent(client: httpx.AsyncClient, agents: None) -> None:
    response = await client.post("/api/numbers", json={"number": "+12025550101", "agent": "ghost"})
    assert error_locs(response) == [["body", "agent"]]
    assert "ghost" in response.json()["detail"][0]["msg"]
    response = await client.post("/api/numbers", json={"number": "+12025550101", "agent": "b d"})
    assert ["body", "agent"] in error_locs(response)


async def test_missing_fields(client: httpx.AsyncClient) -> None:
    locs = error_locs(await client.post("/api/numbers", json={}))
    assert ["body", "number"] in locs
    assert ["body", "agent"] in locs


async def test_list_numbers_and_filter_by_agent(client: httpx.AsyncClient, agents: None) -> None:
    for number, agent in (
        ("+12025550103", "sales"),
        ("+12025550101", "support"),
        ("+12025550102", "support"),
    ):
        response = await client.post("/api/numbers", json={"number": number, "agent": agent})
        assert response.status_code == 201
    listed = (await client.get("/api/numbers")).json()
    assert [n["number"] for n in listed] == ["+12025550101", "+12025550102", "+12025550103"]
    support = (await client.get("/api/numbers", params={"agent": "support"})).json()
    assert [n["number"] for n in support] == ["+12025550101", "+12025550102"]
    assert (await client.get("/api/numbers", params={"agent": "nobody"})).json() == []
    assert ["query", "agent"] in error_locs(
        await client.get("/api/numbers", params={"agent": "bad name"})
    )


async def test_get_number_any_format(client: httpx.AsyncClient, agents: None) -> None:
    await client.post("/api/numbers", json={"number": "+12025550101", "agent": "support"})
    for path in ("/api/numbers/+12025550101", "/api/numbers/%2B12025550101"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.json()["number"] == "+12025550101"
    assert (await client.get("/api/numbers/+12025550109")).status_code == 404
    assert error_locs(await client.get("/api/numbers/garbage")) == [["path", "number"]]


async def test_update_number_moves_it(client: httpx.AsyncClient, agents: None) -> None:
    await client.post("/api/numbers", json={"number": "+12025550101", "agent": "support"})
    response = await client.patch("/api/numbers/+12025550101", json={"agent": "sales"})
    assert response.status_code == 200, response.text
    assert response.json()["agent"] == "sales"
    assert (await client.get("/api/numbers/+12025550101")).json()["agent"] == "sales"


async def test_update_number_errors(client: httpx.AsyncClient, agents: None) -> None:
    await client.post("/api/numbers", json={"number": "+12025550101", "agent": "support"})
    response = await client.patch("/api/numbers/+12025550101", json={"agent": "ghost"})
    assert error_locs(response) == [["body", "agent"]]
    response = await client.patch("/api/numbers/+12025550109", json={"agent": "sales"})
    assert response.status_code == 404
    response = await client.patch("/api/numbers/+12025550101", json={"record": "maybe"})
    assert ["body", "record"] in error_locs(response)
    response = await client.patch("/api/numbers/+12025550101", json={})  # nothing to change
    assert response.status_code == 200 and response.json()["agent"] == "support"


async def test_number_record_setting(client: httpx.AsyncClient, agents: None) -> None:
    """A number's ``record``: null (the agent's) unless given; PATCH changes only what
    it is sent."""
    created = await client.post(
        "/api/numbers", json={"number": "+12025550101", "agent": "support", "record": True}
    )
    assert created.status_code == 201 and created.json()["record"] is True
    other = await client.post("/api/numbers", json={"number": "+12025550102", "agent": "sales"})
    assert other.json()["record"] is None
    response = await client.patch("/api/numbers/+12025550101", json={"agent": "sales"})
    assert response.json() | {"created_at": None} == {
        "number": "+12025550101",
        "agent": "sales",
        "record": True,
        "created_at": None,
    }
    response = await client.patch("/api/numbers/+12025550101", json={"record": None})
    assert response.json()["record"] is None and response.json()["agent"] == "sales"
    response = await client.patch("/api/numbers/+12025550101", json={"record": False})
    assert (await client.get("/api/numbers/+12025550101")).json()["record"] is False


async def test_delete_number(client: httpx.AsyncClient, agents: None) -> None:
    await client.post("/api/numbers", json={"number": "+12025550101", "agent": "support"})
    response = await client.delete("/api/numbers/+12025550101")
    assert response.status_code == 204
    assert (await client.get("/api/numbers")).json() == []
    assert (await client.delete("/api/numbers/+12025550101")).status_code == 404
    assert error_locs(await client.delete("/api/numbers/garbage")) == [["path", "number"]]


@pytest.fixture
async def us_client(db: Database, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(create_app(db, default_region="US"), api_key) as http:
        yield http


async def test_default_region_reads_national_numbers(us_client: httpx.AsyncClient) -> None:
    await us_client.post("/api/agents", json={"name": "support", "urls": ["wss://a.example/ws"]})
    response = await us_client.post(
        "/api/numbers", json={"number": "(202) 555-0101", "agent": "support"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["number"] == "+12025550101"
    assert (await us_client.get("/api/numbers/2025550101")).json()["number"] == "+12025550101"
    assert (await us_client.delete("/api/numbers/202-555-0101")).status_code == 204
