import logging
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, make_asgi_app

from sipbridge.api import create_app
from sipbridge.api.app import MAX_BODY_SIZE
from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.api.conftest import make_client

PATHS = {
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/api/agents": {"get", "post"},
    "/api/agents/{name}": {"get", "patch", "delete"},
    "/api/numbers": {"get", "post"},
    "/api/numbers/{number}": {"get", "patch", "delete"},
    "/api/trunks": {"get", "post"},
    "/api/trunks/{name}": {"get", "patch", "delete"},
    "/api/bans": {"get", "post"},
    "/api/bans/{address}": {"delete"},
    "/api/traces": {"get", "post"},
    "/api/traces/{kind}/{value}": {"delete"},
    "/api/calls": {"get", "post"},
    "/api/calls/{call_id}/hangup": {"post"},
    "/api/calls.csv": {"get"},
    "/api/calls/{call_id}": {"get"},
    "/api/calls/{call_id}/recording": {"get"},
    "/api/stats": {"get"},
    "/api/instances": {"get"},
}


def test_openapi_paths_and_error_responses(app: FastAPI) -> None:
    schema = app.openapi()
    assert {path: set(ops) for path, ops in schema["paths"].items()} == PATHS
    assert "/api/keys" not in schema["paths"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            has_params = bool(operation.get("parameters")) or "requestBody" in operation
            if path.startswith("/api/"):
                assert "401" in codes, (method, path)
            if has_params:
                assert "422" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method == "post":
                # Placing or ending a call is accepted, not done: it comes later (202).
                accepted = path.startswith("/api/calls")
                assert ("202" if accepted else "201") in codes, (method, path)
                # A ban on an address already banned replaces it, and a trace of what
                # is traced already sets its new end: no conflict there.
                conflict_free = path in ("/api/bans", "/api/traces")
                assert ("409" in codes) == (not conflict_free), (method, path)
    csv_ok = schema["paths"]["/api/calls.csv"]["get"]["responses"]["200"]
    assert "text/csv" in csv_ok["content"]


def test_write_only_fields_are_not_in_responses(app: FastAPI) -> None:
    components = app.openapi()["components"]["schemas"]
    assert "token" not in components["AgentOut"]["properties"]
    assert "token" in components["AgentCreate"]["properties"]
    assert "password" not in components["TrunkOut"]["properties"]
    assert "password" in components["TrunkCreate"]["properties"]


async def test_docs_page_needs_nothing_from_the_internet(anon: httpx.AsyncClient) -> None:
    """Every script, style sheet and image of /docs comes from this server: a server
    without internet access must not show a blank page."""
    response = await anon.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by sipbridge"
        served = await anon.get(asset)
        assert served.status_code == 200 and len(served.content) > 0, asset
    assert "http://" not in response.text and "https://" not in response.text


async def test_metrics_app_served_at_metrics(db: Database) -> None:
    registry = CollectorRegistry()
    Counter("sipbridge_test_calls", "test counter", registry=registry).inc(3)
    app = create_app(db, metrics_app=make_asgi_app(registry))
    async with make_client(app) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "sipbridge_test_calls_total 3.0" in response.text
    assert "/metrics" not in app.openapi()["paths"]


async def test_no_metrics_without_metrics_app(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/metrics")).status_code == 404


async def test_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"name": "a", "urls": ["wss://x.example/' + b"a" * MAX_BODY_SIZE + b'"]}'
    response = await client.post(
        "/api/agents", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_default_region_is_checked_up_front(db: Database) -> None:
    with pytest.raises(InvalidField, match="default_region"):
        create_app(db, default_region="XX")
    assert create_app(db, default_region="us").state.default_region == "US"


async def test_unexpected_error_is_a_logged_500(
    db: Database,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(_db: Database) -> list[Any]:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(service, "list_agents", broken)
    transport = httpx.ASGITransport(app=create_app(db), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {api_key}"},
    ) as http:
        with caplog.at_level(logging.ERROR, logger="sipbridge.api"):
            response = await http.get("/api/agents")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "a real bug" not in response.text
    assert any("GET /api/agents" in record.getMessage() for record in caplog.records)
