"""The FastAPI application: management REST API, health probes and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from sipbridge import __version__
from sipbridge.api import (
    routes_agents,
    routes_bans,
    routes_calls,
    routes_health,
    routes_instances,
    routes_numbers,
    routes_stats,
    routes_traces,
    routes_trunks,
)
from sipbridge.api.errors import install_error_handlers
from sipbridge.api.routes_health import Readiness
from sipbridge.dashboard import install_dashboard
from sipbridge.numbers import normalize_region
from sipbridge.runtime.live import LiveCalls
from sipbridge.runtime.outbound import DialParams
from sipbridge.store.db import Database

__all__ = ["MAX_BODY_SIZE", "create_app"]

MAX_BODY_SIZE = 64 * 1024
DOCS_ASSETS = "/docs/assets"  # Swagger UI's files, from the swagger-ui-bundle package

DESCRIPTION = """\
Manage sipbridge's agents, numbers, trunks, bans and SIP traces, read call records and
statistics and the instances sharing the database.

Every `/api/...` route needs `Authorization: Bearer <key>` with a key from
`sipbridge apikey create NAME`. `/healthz`, `/readyz` and `/metrics` need none.
"""


class _AsgiEndpoint:
    """Wraps an ASGI callable so a Starlette Route serves it as-is at one exact path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(
    db: Database,
    *,
    readiness: Readiness | None = None,
    metrics_app: ASGIApp | None = None,
    default_region: str | None = None,
    bans_changed: Callable[[], Awaitable[None]] | None = None,
    traces_changed: Callable[[], Awaitable[None]] | None = None,
    registration: Callable[[str], dict[str, Any] | None] | None = None,
    dial: Callable[[DialParams], Awaitable[str]] | None = None,
    live: LiveCalls | None = None,
    dashboard_secret: bytes | None = None,
    recordings_dir: Path | None = None,
) -> FastAPI:
    """The HTTP application for ``sipbridge serve``.

    ``db`` must already be upgraded. ``readiness`` is an async callable returning
    ``(ready, detail)`` for ``/readyz`` (default: the database answers a query);
    ``metrics_app`` (e.g. ``prometheus_client.make_asgi_app()``) is served at ``/metrics``;
    ``default_region`` (ISO 3166, e.g. ``"US"``) reads numbers given in national format;
    an unknown code raises :class:`~sipbridge.numbers.InvalidField` here, not per request.
    ``bans_changed`` is awaited after a ban is added or lifted (the server reloads them),
    ``traces_changed`` after a SIP trace is switched on or off.
    ``registration`` gives a trunk's registration state (the server's REGISTER clients;
    None: it does not register), shown as each trunk's ``registration``. ``dial`` places
    an outbound call (``POST /api/calls``; None: answered 503, no SIP stack runs here).
    ``live`` is the server's table of calls in progress for the dashboard's Live calls
    page (None: the page says there is none to show); ``dashboard_secret`` signs its
    cookies (default: random per process). The dashboard is served at ``/``.
    ``recordings_dir``: the only folder ``/api/calls/{id}/recording`` serves files from
    (None: any recording path the store names).
    """
    default_region = normalize_region(default_region)
    app = FastAPI(
        title="sipbridge",
        version=__version__,
        description=DESCRIPTION,
        max_body_size=MAX_BODY_SIZE,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: served below instead
        redoc_url=None,
    )
    app.state.db = db
    app.state.readiness = readiness
    app.state.default_region = default_region
    app.state.bans_changed = bans_changed
    app.state.traces_changed = traces_changed
    app.state.registration = registration
    app.state.dial = dial
    app.state.recordings_dir = recordings_dir
    app.state.live = live
    install_error_handlers(app)
    app.include_router(routes_health.router)
    for module in (
        routes_agents,
        routes_numbers,
        routes_trunks,
        routes_bans,
        routes_traces,
        routes_calls,
        routes_stats,
        routes_instances,
    ):
        app.include_router(module.router)
    _serve_docs(app)
    install_dashboard(
        app,
        db,
        default_region=default_region,
        live=live,
        bans_changed=bans_changed,
        secret=dashboard_secret,
    )
    if metrics_app is not None:
        metrics: Any = _AsgiEndpoint(metrics_app)
        app.router.routes.append(Route("/metrics", metrics, include_in_schema=False))
    return app


def _serve_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI for ``/openapi.json`` with every file served by this process
    (a server without internet access shows the page too)."""
    app.mount(
        DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="sipbridge API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)
