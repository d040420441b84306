import httpx
import pytest
from fastapi import FastAPI

from sipbridge.api import (
    routes_agents,
    routes_calls,
    routes_numbers,
    routes_stats,
    routes_trunks,
)
from sipbridge.api.auth import AuthenticatedRoute
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.api.conftest import make_client

API_PATHS = [
    ("GET", "/api/agents"),
    ("POST", "/api/agents"),
    ("GET", "/api/agents/x"),
    ("PATCH", "/api/agents/x"),
    ("DELETE", "/api/agents/x"),
    ("GET", "/api/numbers"),
    ("POST", "/api/numbers"),
    ("GET", "/api/numbers/+12025550101"),
    ("PATCH", "/api/numbers/+12025550101"),
    ("DELETE", "/api/numbers/+12025550101"),
    ("GET", "/api/trunks"),
    ("POST", "/api/trunks"),
    ("GET", "/api/trunks/x"),
    ("PATCH", "/api/trunks/x"),
    ("DELETE", "/api/trunks/x"),
    ("GET", "/api/calls"),
    ("POST", "/api/calls"),
    ("GET", "/api/calls.csv"),
    ("GET", "/api/calls/x"),
    ("GET", "/api/calls/x/recording"),
    ("POST", "/api/calls/x/hangup"),
    ("GET", "/api/stats"),
]


@pytest.mark.parametrize(("method", "path"), API_PATHS)
async def test_every_api_route_needs_a_key(anon: httpx.AsyncClient, method: str, path: str) -> None:
    response = await anon.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sb_wrong",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "sb_just-the-key",
        "Bearer " + "x" * 2000,
    ],
)
async def test_wrong_key_is_401(app: FastAPI, api_key: str, header: str) -> None:
    async with make_client(app) as http:
        response = await http.get("/api/agents", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_key_says_invalid_token(app: FastAPI, api_key: str) -> None:
    async with make_client(app, api_key + "x") as http:
        response = await http.get("/api/agents")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == {"detail": "invalid API key"}


async def test_right_key_works_and_scheme_is_case_insensitive(app: FastAPI, api_key: str) -> None:
    async with make_client(app) as http:
        for scheme in ("Bearer", "bearer", "BEARER"):
            response = await http.get(
                "/api/agents", headers={"Authorization": f"{scheme} {api_key}"}
            )
            assert response.status_code == 200, scheme


async def test_revoked_key_stops_working(app: FastAPI, db: Database, api_key: str) -> None:
    async with make_client(app, api_key) as http:
        assert (await http.get("/api/agents")).status_code == 200
        await service.revoke_api_key(db, "tests")
        assert (await http.get("/api/agents")).status_code == 401


async def test_key_use_is_recorded(app: FastAPI, db: Database, api_key: str) -> None:
    async with make_client(app, api_key) as http:
        await http.get("/api/agents")
    (key,) = await service.list_api_keys(db)
    assert key.last_used_at is not None


async def test_unauthenticated_body_is_not_read(anon: httpx.AsyncClient) -> None:
    # auth comes before body parsing: no hint about the body to a client without a key
    response = await anon.post(
        "/api/agents", content=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


async def test_probes_need_no_key(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/healthz")).status_code == 200
    assert (await anon.get("/readyz")).status_code == 200
    assert (await anon.get("/openapi.json")).status_code == 200
    assert (await anon.get("/docs")).status_code == 200


def test_all_api_routes_authenticate() -> None:
    routes = [
        route
        for module in (routes_agents, routes_numbers, routes_trunks, routes_calls, routes_stats)
        for route in module.router.routes
    ]
    assert len(routes) == len(API_PATHS)
    for route in routes:
        assert isinstance(route, AuthenticatedRoute)
        assert route.path.startswith("/api/")


def test_openapi_declares_bearer_security(app: FastAPI) -> None:
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `sipbridge apikey create NAME`, "
        "as `Authorization: Bearer <key>`.",
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path.startswith("/api/"):
                assert operation["security"] == [{"ApiKey": []}], path
                assert "401" in operation["responses"], path
            else:
                assert "security" not in operation, path
