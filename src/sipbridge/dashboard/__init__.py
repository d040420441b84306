"""The web dashboard served by ``sipbridge serve`` at ``/`` (docs/dashboard.md).

Server-rendered Jinja2 pages with htmx (vendored in ``static/``, see ``htmx.VERSION``)
and SVG charts written on the server; every page reads through the service layer the
API and the CLI use. Sign-in turns an API key into a session cookie (security.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles

from sipbridge.dashboard import manage, pages
from sipbridge.dashboard.security import SessionSigner, SignInThrottle
from sipbridge.dashboard.web import (
    CsrfRefused,
    Dashboard,
    SignInNeeded,
    render,
    sign_in_redirect,
)
from sipbridge.runtime.live import LiveCalls
from sipbridge.store.db import Database

__all__ = ["ASSETS", "install_dashboard"]

ASSETS = "/assets"


def install_dashboard(
    app: FastAPI,
    db: Database,
    *,
    default_region: str | None = None,
    live: LiveCalls | None = None,
    bans_changed: Callable[[], Awaitable[None]] | None = None,
    secret: bytes | None = None,
) -> Dashboard:
    """Add the dashboard's pages and assets to ``app``. ``secret`` signs the session
    and CSRF cookies (default: random, made now: a restart signs everyone out)."""
    dashboard = Dashboard(
        db=db,
        default_region=default_region,
        signer=SessionSigner(secret),
        throttle=SignInThrottle(),
        live=live,
        bans_changed=bans_changed,
    )
    app.state.dashboard = dashboard
    static = files("sipbridge.dashboard").joinpath("static")
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="dashboard-assets")
    app.include_router(pages.router)
    app.include_router(manage.router)

    async def sign_in_needed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        return sign_in_redirect(request, exc.next_path)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Request refused",
                "message": "The form was too old or came from another site. "
                "Reload the page and try again.",
            },
            status_code=403,
        )

    app.add_exception_handler(SignInNeeded, sign_in_needed)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    return dashboard
