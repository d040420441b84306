"""The management pages over HTTP: create, edit and delete agents, numbers, trunks, bans
and API keys, with the service's refusals shown next to their field (dashboard/manage.py)."""

from __future__ import annotations

import re

from fastapi import FastAPI

from sipbridge.store import service
from sipbridge.store.db import Database
from tests.dashboard.conftest import Browser


def _field_error(html: str, field: str) -> str:
    """The error message shown under ``field`` (its input is marked invalid)."""
    assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', html), f"{field} not marked"
    match = re.search(rf'id="f-{field}-error" class="error" role="alert">([^<]+)<', html)
    assert match is not None, f"no error under {field}"
    return match.group(1)


async def test_agents_create_edit_delete(db: Database, signed_in: Browser) -> None:
    response = await signed_in.post(
        "/agents",
        {
            "name": "support",
            "urls": "ws://127.0.0.1:9001/a\nws://127.0.0.1:9002/a",
            "token": "s3cret",
            "protocol": "twilio",
            "sample_rate": "16000",
            "voice_enabled": "1",
        },
    )
    assert response.status_code == 303 and response.headers["location"] == "/agents"
    agent = await service.get_agent(db, "support")
    assert agent.urls == ["ws://127.0.0.1:9001/a", "ws://127.0.0.1:9002/a"]
    assert (agent.protocol, agent.sample_rate, agent.token) == ("twilio", 16000, "s3cret")
    assert agent.voice_enabled
    page = await signed_in.get("/agents/support")
    assert "s3cret" not in page.text  # secrets never go back to the browser
    # Edit: no voice, token kept when left empty.
    response = await signed_in.post(
        "/agents/support",
        {"urls": "ws://127.0.0.1:9001/a", "protocol": "native", "sample_rate": "8000"},
    )
    assert response.status_code == 303
    agent = await service.get_agent(db, "support")
    assert (agent.voice_enabled, agent.token, agent.urls) == (
        False,
        "s3cret",
        ["ws://127.0.0.1:9001/a"],
    )
    response = await signed_in.post(
        "/agents/support",
        {
            "urls": "ws://127.0.0.1:9001/a",
            "protocol": "native",
            "sample_rate": "8000",
            "clear_token": "1",
        },
    )
    assert (await service.get_agent(db, "support")).token is None
    assert (await signed_in.post("/agents/support/delete")).status_code == 303
    assert await service.list_agents(db) == []


async def test_agent_validation_errors_inline(db: Database, signed_in: Browser) -> None:
    response = await signed_in.post(
        "/agents", {"name": "bot", "urls": "http://127.0.0.1/", "sample_rate": "8000"}
    )
    assert response.status_code == 422
    assert "must start with ws:// or wss://" in _field_error(response.text, "urls")
    assert 'value="bot"' in response.text  # what was typed stays in the form
    response = await signed_in.post(
        "/agents", {"name": "bad name!", "urls": "ws://127.0.0.1/", "sample_rate": "8000"}
    )
    assert "invalid agent name" in _field_error(response.text, "name")
    await service.add_agent(db, "bot", "ws://127.0.0.1/")
    response = await signed_in.post(
        "/agents", {"name": "bot", "urls": "ws://127.0.0.1/", "sample_rate": "8000"}
    )
    assert response.status_code == 422 and "bot" in _field_error(response.text, "name")
    response = await signed_in.post(
        "/agents/bot", {"urls": "ws://127.0.0.1/", "sample_rate": "44100", "protocol": "native"}
    )
    assert response.status_code == 422 and "44100" in _field_error(response.text, "sample_rate")
    assert (await signed_in.get("/agents/ghost")).status_code == 404


async def test_numbers_create_reassign_delete(db: Database, signed_in: Browser) -> None:
    await service.add_agent(db, "support", "ws://127.0.0.1/")
    await service.add_agent(db, "sales", "ws://127.0.0.1/")
    # A national number is read with the app's default region (US), stored as E.164.
    response = await signed_in.post("/numbers", {"number": "(202) 555-0101", "agent": "support"})
    assert response.status_code == 303
    assert [(n.number, n.agent) for n in await service.list_numbers(db)] == [
        ("+12025550101", "support")
    ]
    bad = await signed_in.post("/numbers", {"number": "555", "agent": "support"})
    assert bad.status_code == 422 and "not a valid phone number" in _field_error(bad.text, "number")
    taken = await signed_in.post("/numbers", {"number": "+12025550101", "agent": "sales"})
    assert taken.status_code == 422 and _field_error(taken.text, "number")
    no_agent = await signed_in.post("/numbers", {"number": "+12025550102", "agent": ""})
    assert "choose the agent" in _field_error(no_agent.text, "agent")
    assert (await signed_in.post("/numbers/+12025550101", {"agent": "sales"})).status_code == 303
    assert (await service.get_number(db, "+12025550101")).agent == "sales"
    assert (await signed_in.post("/numbers/+12025550101", {"agent": ""})).status_code == 303
    assert (await service.get_number(db, "+12025550101")).agent is None
    assert (await signed_in.post("/numbers/+12025550101/delete")).status_code == 303
    assert await service.list_numbers(db) == []


async def test_trunks_create_edit_delete(db: Database, signed_in: Browser) -> None:
    response = await signed_in.post(
        "/trunks",
        {
            "name": "carrier",
            "allowed_cidrs": "192.0.2.0/24\n198.51.100.7",
            "max_calls": "10",
            "codecs": "pcmu",
            "srtp": "optional",
        },
    )
    assert response.status_code == 303, response.text
    trunk = await service.get_trunk(db, "carrier")
    assert trunk.allowed_cidrs == ["192.0.2.0/24", "198.51.100.7/32"]
    assert (trunk.max_calls, trunk.codecs) == (10, ["pcmu"])
    page = await signed_in.get("/trunks/carrier")
    assert "192.0.2.0/24" in page.text
    bad = await signed_in.post(
        "/trunks/carrier", {"allowed_cidrs": "not-a-network", "srtp": "optional"}
    )
    assert bad.status_code == 422
    assert "not an IP address or network" in _field_error(bad.text, "allowed_cidrs")
    bad = await signed_in.post("/trunks/carrier", {"max_calls": "ten", "srtp": "optional"})
    assert "not a whole number" in _field_error(bad.text, "max_calls")
    response = await signed_in.post(
        "/trunks/carrier", {"allowed_cidrs": "192.0.2.0/24", "srtp": "required", "max_calls": ""}
    )
    assert response.status_code == 303
    trunk = await service.get_trunk(db, "carrier")
    assert (trunk.srtp, trunk.max_calls, trunk.codecs) == ("required", None, [])
    assert (await signed_in.post("/trunks/carrier/delete")).status_code == 303
    assert await service.list_trunks(db) == []


async def test_bans_add_and_lift_tell_the_server(
    app: FastAPI, db: Database, signed_in: Browser
) -> None:
    reloads: list[int] = []

    async def changed() -> None:
        reloads.append(1)

    app.state.dashboard.bans_changed = changed
    response = await signed_in.post(
        "/bans", {"address": "198.51.100.0/24", "duration": "3600", "note": "scanner"}
    )
    assert response.status_code == 303
    [ban] = await service.list_bans(db)
    assert (ban.address, ban.note, ban.expires_at is not None) == (
        "198.51.100.0/24",
        "scanner",
        True,
    )
    assert "198.51.100.0/24" in (await signed_in.get("/bans")).text
    bad = await signed_in.post("/bans", {"address": "nowhere"})
    assert bad.status_code == 422 and _field_error(bad.text, "address")
    bad = await signed_in.post("/bans", {"address": "192.0.2.1", "duration": "-5"})
    assert bad.status_code == 422 and _field_error(bad.text, "duration")
    assert (await signed_in.post("/bans/remove", {"address": "198.51.100.0/24"})).status_code == 303
    assert await service.list_bans(db) == []
    assert len(reloads) == 2


async def test_api_keys_create_once_and_revoke(db: Database, signed_in: Browser) -> None:
    response = await signed_in.post("/keys", {"name": "grafana"})
    assert response.status_code == 200
    secret = re.search(r'id="new-key" readonly value="(sb_[^"]+)"', response.text)
    assert secret is not None
    assert await service.verify_api_key(db, secret.group(1)) is not None
    assert secret.group(1) not in (await signed_in.get("/keys")).text  # shown once
    bad = await signed_in.post("/keys", {"name": "grafana"})
    assert bad.status_code == 422 and "grafana" in _field_error(bad.text, "name")
    assert (await signed_in.post("/keys/grafana/revoke")).status_code == 303
    assert [k.name for k in await service.list_api_keys(db)] == ["admin"]
