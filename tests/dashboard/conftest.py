"""Fixtures for the dashboard tests: the app on the ``db`` fixture (tests/conftest.py, here
on SQLite only), a
browser-like client that signs in through the form, and helpers to read its pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = _CSRF.search(html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


class Browser:
    """An httpx client that keeps cookies and posts forms with the page's CSRF token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def get(self, url: str, **kwargs: object) -> httpx.Response:
        response = await self.http.get(url, **kwargs)  # type: ignore[arg-type]
        if (
            "text/html" in response.headers.get("content-type", "")
            and 'name="csrf"' in response.text
        ):
            self.csrf = csrf_of(response.text)
        return response

    async def post(self, url: str, data: dict[str, object] | None = None) -> httpx.Response:
        if not self.csrf:
            await self.get("/login")
        form = {"csrf": self.csrf, **(data or {})}
        response = await self.http.post(url, data=form)  # type: ignore[arg-type]
        if (
            "text/html" in response.headers.get("content-type", "")
            and 'name="csrf"' in response.text
        ):
            self.csrf = csrf_of(response.text)
        return response

    async def sign_in(self, key: str) -> httpx.Response:
        await self.get("/login")
        response = await self.post("/login", {"key": key, "next": "/calls"})
        assert response.status_code == 303, response.text
        await self.get("/calls")  # the new session's CSRF token
        return response


def make_browser(app: FastAPI, base_url: str = "http://127.0.0.1:8080") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the pages read through the service layer, whose queries run on both
    backends in tests/store and tests/api; this keeps the dashboard tests to one run."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def api_key(db: Database) -> str:
    _record, secret = await service.create_api_key(db, "admin")
    return secret


@pytest.fixture
def app(db: Database) -> FastAPI:
    return create_app(db, default_region="US")


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[Browser]:
    async with make_browser(app) as http:
        yield Browser(http)


@pytest.fixture
async def signed_in(browser: Browser, api_key: str) -> Browser:
    await browser.sign_in(api_key)
    return browser
