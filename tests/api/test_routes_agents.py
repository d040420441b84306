from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.store import service
from sipbridge.store.db import Database

AGENT = {"name": "support", "urls": ["wss://agent.example/ws"]}


def error_fields(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_create_agent_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/agents", json=AGENT)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "support"
    assert body["urls"] == ["wss://agent.example/ws"]
    assert body["protocol"] == "native"
    assert body["sample_rate"] == 8000
    assert body["voice_enabled"] is True
    assert body["has_token"] is False
    assert body["created_at"].startswith("20")
    assert "token" not in body


async def test_create_agent_all_fields_token_never_returned(
    client: httpx.AsyncClient, db: Database
) -> None:
    response = await client.post(
        "/api/agents",
        json={
            "name": "tw",
            "urls": ["wss://a.example/ws", "ws://b.example:9000/ws"],
            "protocol": "twilio",
            "token": "s3cret-token",
            "sample_rate": 16000,
            "voice_enabled": False,
        },
    )
    assert response.status_code == 201, response.text
    assert "s3cret-token" not in response.text
    body = response.json()
    assert body["has_token"] is True
    assert body["urls"] == ["wss://a.example/ws", "ws://b.example:9000/ws"]
    assert (body["protocol"], body["sample_rate"], body["voice_enabled"]) == (
        "twilio",
        16000,
        False,
    )
    assert (await service.get_agent(db, "tw")).token == "s3cret-token"
    for path in ("/api/agents", "/api/agents/tw"):
        answer = await client.get(path)
        assert answer.status_code == 200
        assert "s3cret-token" not in answer.text


async def test_list_and_get_agents(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/agents")).json() == []
    for name in ("zeta", "alpha"):
        await client.post("/api/agents", json={**AGENT, "name": name})
    listed = (await client.get("/api/agents")).json()
    assert [agent["name"] for agent in listed] == ["alpha", "zeta"]
    one = await client.get("/api/agents/zeta")
    assert one.status_code == 200
    assert one.json() == listed[1]


async def test_duplicate_agent_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/agents", json=AGENT)).status_code == 201
    response = await client.post("/api/agents", json=AGENT)
    assert response.status_code == 409
    assert "support" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"urls": ["wss://a.example"]}, "name"),
        ({**AGENT, "name": "bad name!"}, "name"),
        ({**AGENT, "name": "x" * 101}, "name"),
        ({"name": "a"}, "urls"),
        ({**AGENT, "urls": []}, "urls"),
        ({**AGENT, "urls": "wss://a.example"}, "urls"),
        ({**AGENT, "urls": ["http://a.example/ws"]}, "urls"),
        ({**AGENT, "urls": ["wss://a\x00.example/ws"]}, "urls"),
        ({**AGENT, "protocol": "sip"}, "protocol"),
        ({**AGENT, "sample_rate": 44100}, "sample_rate"),
        ({**AGENT, "voice_enabled": "maybe"}, "voice_enabled"),
        ({**AGENT, "token": ""}, "token"),
        ({**AGENT, "token": "x" * 1025}, "token"),
        ({**AGENT, "ca_bundle": ""}, "ca_bundle"),
        ({**AGENT, "ca_bundle": "/" + "x" * 1024}, "ca_bundle"),
        ({**AGENT, "ca_bundle": "/tmp/a\x00b"}, "ca_bundle"),
        ({**AGENT, "ca_bundle": 42}, "ca_bundle"),
        ({**AGENT, "url": "wss://a.example"}, "url"),
    ],
)
async def test_create_agent_invalid_names_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/agents", json=body)
    locs = error_fields(response)
    assert any(loc[:2] == ["body", field] for loc in locs), locs


async def test_create_agent_url_without_host_is_422_naming_urls(
    client: httpx.AsyncClient,
) -> None:
    # passes the schema's ws:// pattern; the service layer rejects it
    response = await client.post("/api/agents", json={**AGENT, "urls": ["ws://:80/x"]})
    locs = error_fields(response)
    assert locs[0][:2] == ["body", "urls"]


async def test_create_agent_body_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/agents", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    response = await client.post(
        "/api/agents", content=b'{"name": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    response = await client.post(
        "/api/agents", content=b"name=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 422


async def test_update_agent_partial(client: httpx.AsyncClient, db: Database) -> None:
    await client.post("/api/agents", json={**AGENT, "token": "t1"})
    response = await client.patch(
        "/api/agents/support", json={"urls": ["wss://new.example/ws"], "sample_rate": 16000}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["urls"] == ["wss://new.example/ws"]
    assert body["sample_rate"] == 16000
    assert body["protocol"] == "native"
    assert body["has_token"] is True  # left out: unchanged
    assert body["updated_at"] is not None

    response = await client.patch("/api/agents/support", json={"voice_enabled": False})
    assert response.json()["voice_enabled"] is False
    assert response.json()["urls"] == ["wss://new.example/ws"]


async def test_update_agent_token_set_and_clear(client: httpx.AsyncClient, db: Database) -> None:
    await client.post("/api/agents", json=AGENT)
    response = await client.patch("/api/agents/support", json={"token": "abc"})
    assert response.json()["has_token"] is True
    assert "abc" not in response.text
    assert (await service.get_agent(db, "support")).token == "abc"
    response = await client.patch("/api/agents/support", json={"token": None})
    assert response.json()["has_token"] is False
    assert (await service.get_agent(db, "support")).token is None


async def test_update_agent_empty_body_changes_nothing(client: httpx.AsyncClient) -> None:
    created = (await client.post("/api/agents", json=AGENT)).json()
    response = await client.patch("/api/agents/support", json={})
    assert response.status_code == 200
    assert response.json()["urls"] == created["urls"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"urls": None}, "urls"),
        ({"urls": []}, "urls"),
        ({"protocol": None}, "protocol"),
        ({"sample_rate": 11025}, "sample_rate"),
        ({"voice_enabled": None}, "voice_enabled"),
        ({"name": "renamed"}, "name"),
    ],
)
async def test_update_agent_invalid(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await client.post("/api/agents", json=AGENT)
    locs = error_fields(await client.patch("/api/agents/support", json=body))
    assert any(loc[:2] == ["body", field] for loc in locs), locs


async def test_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/api/agents/nobody"),
        await client.patch("/api/agents/nobody", json={"voice_enabled": False}),
        await client.delete("/api/agents/nobody"),
    ):
        assert response.status_code == 404
        assert "nobody" in response.json()["detail"]


async def test_agent_name_with_nul_is_422(client: httpx.AsyncClient) -> None:
    locs = error_fields(await client.get("/api/agents/a%00b"))
    assert locs[0][:2] == ["path", "name"]


async def test_delete_agent_keeps_its_numbers(client: httpx.AsyncClient) -> None:
    await client.post("/api/agents", json=AGENT)
    await client.post("/api/numbers", json={"number": "+12025550101", "agent": "support"})
    response = await client.delete("/api/agents/support")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/api/agents/support")).status_code == 404
    number = (await client.get("/api/numbers/+12025550101")).json()
    assert number["agent"] is None


async def test_create_agent_with_ca_bundle(
    client: httpx.AsyncClient, db: Database, ca_bundle: Path
) -> None:
    response = await client.post("/api/agents", json={**AGENT, "ca_bundle": str(ca_bundle)})
    assert response.status_code == 201, response.text
    assert response.json()["ca_bundle"] == str(ca_bundle)
    assert (await service.get_agent(db, "support")).ca_bundle == str(ca_bundle)
    assert (await client.get("/api/agents/support")).json()["ca_bundle"] == str(ca_bundle)
    assert (await client.get("/api/agents")).json()[0]["ca_bundle"] == str(ca_bundle)


async def test_create_agent_ca_bundle_defaults_to_null(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/agents", json=AGENT)
    assert response.json()["ca_bundle"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is not a readable PEM CA bundle"), (b"garbage\n", "is not a readable PEM CA bundle")],
)
async def test_create_agent_bad_ca_bundle_is_422_naming_it(
    client: httpx.AsyncClient, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    response = await client.post("/api/agents", json={**AGENT, "ca_bundle": str(path)})
    assert error_fields(response) == [["body", "ca_bundle"]]
    assert message in response.json()["detail"][0]["msg"]
    assert (await client.get("/api/agents")).json() == []


async def test_update_agent_ca_bundle_set_and_clear(
    client: httpx.AsyncClient, db: Database, ca_bundle: Path, tmp_path: Path
) -> None:
    await client.post("/api/agents", json=AGENT)
    response = await client.patch("/api/agents/support", json={"ca_bundle": str(ca_bundle)})
    assert response.status_code == 200, response.text
    assert response.json()["ca_bundle"] == str(ca_bundle)

    response = await client.patch("/api/agents/support", json={"sample_rate": 16000})
    assert response.json()["ca_bundle"] == str(ca_bundle)  # left out: unchanged

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    response = await client.patch("/api/agents/support", json={"ca_bundle": str(garbage)})
    assert error_fields(response) == [["body", "ca_bundle"]]
    assert (await service.get_agent(db, "support")).ca_bundle == str(ca_bundle)

    response = await client.patch("/api/agents/support", json={"ca_bundle": None})
    assert response.status_code == 200, response.text
    assert response.json()["ca_bundle"] is None
    assert (await service.get_agent(db, "support")).ca_bundle is None


async def test_agent_transfer_allow(client: httpx.AsyncClient, db: Database) -> None:
    response = await client.post("/api/agents", json=AGENT)
    assert response.json()["transfer_allow"] == []  # the default policy
    response = await client.patch(
        "/api/agents/support", json={"transfer_allow": ["tel:+1-202-555-*", "PBX.example.com"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["transfer_allow"] == ["+1202555*", "pbx.example.com"]
    stored = await service.get_agent(db, "support")
    assert stored.transfer_allow == [
        "+1202555*",
        "pbx.example.com",
    ]
    response = await client.patch("/api/agents/support", json={"urls": ["wss://b.example/ws"]})
    assert response.json()["transfer_allow"] == ["+1202555*", "pbx.example.com"]  # unchanged
    response = await client.patch("/api/agents/support", json={"transfer_allow": []})
    assert response.json()["transfer_allow"] == []


@pytest.mark.parametrize("allow", [["bad host"], ["+12a"], "pbx.example.com", [""], ["*"] * 101])
async def test_agent_bad_transfer_allow_is_422(client: httpx.AsyncClient, allow: object) -> None:
    response = await client.post("/api/agents", json={**AGENT, "transfer_allow": allow})
    assert response.status_code == 422, response.text
    assert "transfer_allow" in response.text


async def test_agent_record_setting(client: httpx.AsyncClient, db: Database) -> None:
    """``record``: false unless asked; PATCH changes it alone."""
    response = await client.post("/api/agents", json={"name": "rec", "urls": ["ws://a"]})
    assert response.status_code == 201 and response.json()["record"] is False
    response = await client.patch("/api/agents/rec", json={"record": True})
    assert response.status_code == 200 and response.json()["record"] is True
    assert (await service.get_agent(db, "rec")).record is True
    assert (await client.patch("/api/agents/rec", json={"record": None})).status_code == 422
    response = await client.post(
        "/api/agents", json={"name": "rec2", "urls": ["ws://a"], "record": True}
    )
    assert response.json()["record"] is True
