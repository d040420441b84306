"""Sign-in, sessions, CSRF and sign-out over HTTP (dashboard/web.py, pages.py's sign-in)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from sipbridge.dashboard.security import FREE_FAILURES
from sipbridge.dashboard.web import CSRF_COOKIE, SESSION_COOKIE, Dashboard, safe_next
from sipbridge.store import service
from sipbridge.store.db import Database
from tests.dashboard.conftest import Browser, csrf_of, make_browser


def _cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


async def test_pages_redirect_to_sign_in(browser: Browser) -> None:
    for path in ("/calls", "/calls/x", "/stats", "/live", "/agents", "/keys", "/calls.csv"):
        response = await browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=" + path)
    # htmx requests are told where to go instead of getting a page to swap in.
    response = await browser.http.get("/calls", headers={"HX-Request": "true"})
    assert response.headers["HX-Redirect"] == "/login?next=/calls"
    assert (await browser.get("/")).headers["location"] == "/calls"


async def test_sign_in_sets_a_strict_http_only_session(browser: Browser, api_key: str) -> None:
    page = await browser.get("/login?next=/stats")
    assert page.status_code == 200 and 'value="/stats"' in page.text
    assert "HttpOnly" in _cookie(page, CSRF_COOKIE)
    response = await browser.post("/login", {"key": api_key, "next": "/stats"})
    assert response.status_code == 303 and response.headers["location"] == "/stats"
    session = _cookie(response, SESSION_COOKIE)
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/" in session
    assert "Secure" not in session  # plain HTTP: a Secure cookie would never come back
    assert api_key not in session  # the key itself is never in the cookie
    stats = await browser.get("/stats")
    assert stats.status_code == 200
    assert stats.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in stats.headers["Content-Security-Policy"]
    assert stats.headers["Cache-Control"] == "no-store"
    # Signed in, the sign-in page sends on to where the user was going.
    assert (await browser.get("/login?next=/live")).headers["location"] == "/live"
    # The CSRF nonce was renewed with the session: a token from before sign-in is refused.
    assert csrf_of(page.text) != browser.csrf


async def test_session_cookie_is_secure_over_https(app: FastAPI, api_key: str) -> None:
    async with make_browser(app, "https://dash.example") as http:
        browser = Browser(http)
        await browser.get("/login")
        response = await browser.post("/login", {"key": api_key})
        assert "Secure" in _cookie(response, SESSION_COOKIE)


async def test_after_sign_in_only_local_paths(browser: Browser, api_key: str) -> None:
    assert safe_next("//evil.example/x") == "/calls"
    assert safe_next("https://evil.example/") == "/calls"
    assert safe_next("/\\evil.example") == "/calls"
    assert safe_next("/calls?number=1") == "/calls?number=1"
    await browser.get("/login")
    response = await browser.post("/login", {"key": api_key, "next": "//evil.example/"})
    assert response.headers["location"] == "/calls"


async def test_wrong_key_is_refused_and_failures_are_slowed_down(
    app: FastAPI, browser: Browser, api_key: str
) -> None:
    dashboard: Dashboard = app.state.dashboard
    now = [1000.0]
    dashboard.clock = lambda: now[0]
    for _ in range(FREE_FAILURES - 1):
        response = await browser.post("/login", {"key": "sb_wrong"})
        assert response.status_code == 401
        assert "not a valid API key" in response.text
    response = await browser.post("/login", {"key": "sb_wrong"})
    assert response.status_code == 401
    # Now the source must wait, even with the right key.
    response = await browser.post("/login", {"key": api_key})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in response.text
    now[0] += 1.5
    assert (await browser.post("/login", {"key": "sb_wrong"})).status_code == 401
    now[0] += 1.5  # that failure doubled the wait to 2 s
    assert (await browser.post("/login", {"key": api_key})).status_code == 429
    now[0] += 1.0
    assert (await browser.post("/login", {"key": api_key})).status_code == 303
    # A success clears the source's count.
    assert len(dashboard.throttle) == 0


async def test_state_changes_need_the_csrf_token(signed_in: Browser) -> None:
    http = signed_in.http
    response = await http.post("/agents", data={"name": "x", "urls": "ws://127.0.0.1:1/"})
    assert response.status_code == 403
    response = await http.post(
        "/agents", data={"name": "x", "urls": "ws://127.0.0.1:1/", "csrf": "forged"}
    )
    assert response.status_code == 403
    # The right token from another site's page (Origin) is refused too.
    response = await http.post(
        "/agents",
        data={"name": "x", "urls": "ws://127.0.0.1:1/", "csrf": signed_in.csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    # The header htmx sends works like the form field.
    response = await http.post(
        "/agents",
        data={"name": "x", "urls": "ws://127.0.0.1:1/"},
        headers={"X-CSRF-Token": signed_in.csrf, "Origin": "http://127.0.0.1:8080"},
    )
    assert response.status_code == 303
    # Sign-in itself needs the token (no login CSRF).
    async with make_browser(http._transport.app) as other:  # type: ignore[attr-defined]
        assert (await other.post("/login", data={"key": "k"})).status_code == 403


async def test_sign_out_and_revoked_keys_end_the_session(
    db: Database, signed_in: Browser, api_key: str
) -> None:
    assert (await signed_in.get("/calls")).status_code == 200
    response = await signed_in.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert "Max-Age=0" in _cookie(response, SESSION_COOKIE)
    assert (await signed_in.get("/calls")).status_code == 303
    await signed_in.sign_in(api_key)
    assert (await signed_in.get("/calls")).status_code == 200
    await service.revoke_api_key(db, "admin")
    assert (await signed_in.get("/calls")).status_code == 303


async def test_forged_or_expired_session_cookies_are_ignored(
    app: FastAPI, signed_in: Browser
) -> None:
    dashboard: Dashboard = app.state.dashboard
    cookie = signed_in.http.cookies[SESSION_COOKIE]
    payload, mac = cookie.split(".")
    signed_in.http.cookies.set(SESSION_COOKIE, payload + "." + mac[::-1])
    assert (await signed_in.get("/calls")).status_code == 303
    signed_in.http.cookies.set(SESSION_COOKIE, cookie)
    assert (await signed_in.get("/calls")).status_code == 200
    wall = dashboard.wall_clock
    dashboard.wall_clock = lambda: wall() + dashboard.signer.lifetime + 1
    assert (await signed_in.get("/calls")).status_code == 303


async def test_the_api_keeps_its_bearer_keys(
    app: FastAPI, signed_in: Browser, api_key: str
) -> None:
    # A dashboard session is not an API credential...
    assert (await signed_in.get("/api/agents")).status_code == 401
    # ...and the API still takes the key.
    response = await signed_in.http.get(
        "/api/agents", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200
    # The dashboard's routes stay out of the API's OpenAPI document.
    paths = (await signed_in.http.get("/openapi.json")).json()["paths"]
    dashboard_paths = ("/calls", "/stats", "/live", "/agents", "/login", "/logout", "/keys")
    assert not [path for path in paths if path.startswith(dashboard_paths)]
    assert "/api/agents" in paths
