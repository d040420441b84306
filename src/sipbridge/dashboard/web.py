"""What every dashboard page shares: templates, the signed-in check, CSRF, forms, cookies.

A page handler takes the request, asks :func:`signed_in` for the key (a redirect to the
sign-in page when there is none), reads a POST through :func:`read_form` (which checks the
CSRF token) and answers with :func:`render`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from sipbridge import __version__
from sipbridge.dashboard.reasons import explain
from sipbridge.dashboard.security import SessionSigner, SignInThrottle
from sipbridge.runtime.live import LiveCalls
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import ApiKeyRecord

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "Dashboard",
    "Form",
    "SignInNeeded",
    "dashboard_of",
    "read_form",
    "render",
    "signed_in",
]

SESSION_COOKIE = "sipbridge_session"
CSRF_COOKIE = "sipbridge_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM = 64 * 1024
NONE = "\u2013"
# Every page: our own files only (no inline script or style), never framed (the hang-up
# and delete buttons must not be clickjacked), not cached (pages show secrets once).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}  # an en dash: the cell of a value the call does not have


@dataclass
class Dashboard:
    """The dashboard's state, kept on ``app.state.dashboard``."""

    db: Database
    default_region: str | None
    signer: SessionSigner
    throttle: SignInThrottle
    live: LiveCalls | None = None
    bans_changed: Callable[[], Any] | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("sipbridge.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["seconds"] = _seconds
        self.env.filters["figure"] = _figure
        self.env.filters["percent"] = _percent
        self.env.globals["explain"] = explain
        self.env.globals["version"] = __version__


class SignInNeeded(Exception):
    """No valid session: the handler installed by the dashboard redirects to sign-in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A state-changing request without a valid CSRF token (403)."""


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


async def signed_in(request: Request) -> ApiKeyRecord:
    """The API key of the request's session; :class:`SignInNeeded` without one (or when
    the key was revoked)."""
    dashboard = dashboard_of(request)
    session = dashboard.signer.read(request.cookies.get(SESSION_COOKIE), dashboard.wall_clock())
    key = None if session is None else await service.api_key_by_hash(dashboard.db, session.key_hash)
    if key is None:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        raise SignInNeeded(path)
    request.state.dashboard_key = key
    return key


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never ``//host``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/calls"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/calls"
    return target


def _same_origin(request: Request) -> bool:
    """A browser's Origin (or Referer), when it sent one, must be this site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", request.url.netloc)


class Form:
    """A urlencoded form: ``get`` the last value of a field, ``getlist`` all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        value = default
        for key, item in self.pairs:
            if key == name:
                value = item
        return value

    def getlist(self, name: str) -> list[str]:
        return [item for key, item in self.pairs if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.pairs)


async def read_form(request: Request) -> Form:
    """The POSTed form, after the CSRF check (token in the form or the X-CSRF-Token
    header, made for this browser's CSRF cookie; Origin, when sent, this site)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise CsrfRefused("form too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        pairs = []
    form = Form(pairs)
    dashboard = dashboard_of(request)
    token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not _same_origin(request) or not dashboard.signer.csrf_ok(
        request.cookies.get(CSRF_COOKIE), token
    ):
        raise CsrfRefused("missing or wrong CSRF token")
    return form


def cookie_flags(request: Request) -> dict[str, Any]:
    """HttpOnly, SameSite=Strict, path /, and Secure when the page came over HTTPS."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }


def _csrf_nonce(request: Request) -> tuple[str, bool]:
    nonce = request.cookies.get(CSRF_COOKIE)
    if nonce and 16 <= len(nonce) <= 64:
        return nonce, False
    return SessionSigner.new_nonce(), True


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page (or, for a template whose name starts with ``_``, a fragment) with the
    CSRF token, the signed-in key and the current section in its context."""
    dashboard = dashboard_of(request)
    nonce = getattr(request.state, "csrf_nonce", None)
    fresh = False
    if nonce is None:
        nonce, fresh = _csrf_nonce(request)
    values = {
        "request": request,
        "csrf": dashboard.signer.csrf_token(nonce),
        "key": getattr(request.state, "dashboard_key", None),
        "path": request.url.path,
        "live_available": dashboard.live is not None,
        **(context or {}),
    }
    html = dashboard.env.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers.update(SECURITY_HEADERS)
    if fresh:
        response.set_cookie(CSRF_COOKIE, nonce, **cookie_flags(request))
    return response


def redirect(request: Request, target: str) -> Response:
    """303 to ``target``; for htmx, an HX-Location so the page changes without reload."""
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=204)
        response.headers["HX-Redirect"] = target
        return response
    return RedirectResponse(target, status_code=303)


def sign_in_redirect(request: Request, next_path: str) -> Response:
    return redirect(request, "/login?next=" + quote(next_path, safe="/"))


# ---------------------------------------------------------------------- filters


def _when(value: datetime | None, seconds: bool = True) -> str:
    if value is None:
        return NONE
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _seconds(value: float | None) -> str:
    """A duration as ``1:02:03``, ``2:05`` or ``4.2 s``."""
    if value is None:
        return NONE
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _figure(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return NONE
    return f"{value:.{digits}f}{unit}"


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f} %"
