"""The dashboard's session key: from --session-secret, or kept beside the database."""

from __future__ import annotations

import hashlib
import logging
import stat
from pathlib import Path

import pytest

from sipbridge.config import ServeSettings
from sipbridge.runtime.session_key import KEY_BYTES, session_key


def settings(tmp_path: Path, **extra: object) -> ServeSettings:
    return ServeSettings(db=f"sqlite:///{tmp_path / 'x.db'}", **extra)  # type: ignore[arg-type]


def test_a_given_secret_is_the_same_key_on_every_instance(tmp_path: Path) -> None:
    one = session_key(settings(tmp_path / "a", session_secret="shared words"))
    two = session_key(settings(tmp_path / "b", session_secret="shared words"))
    assert one == two == hashlib.sha256(b"shared words").digest()
    assert not (tmp_path / "a").exists()  # nothing written


def test_without_a_secret_the_key_is_kept_private_and_outlives_a_restart(tmp_path: Path) -> None:
    first = session_key(settings(tmp_path))
    path = tmp_path / "x.db.session-key"
    assert len(first) == KEY_BYTES and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_key(settings(tmp_path)) == first  # the next start reads it back
    path.write_bytes(b"short")  # damaged: replaced by a new one
    third = session_key(settings(tmp_path))
    assert third != first and path.read_bytes() == third


def test_an_unwritable_folder_gives_a_key_for_this_process_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        key = session_key(ServeSettings(db=f"sqlite:///{blocker / 'x.db'}"))
    assert len(key) == KEY_BYTES
    assert "session_key_not_kept" in caplog.text


async def test_a_dashboard_session_outlives_a_restart_of_serve(tmp_path: Path) -> None:
    """Signed in on one run of the server, the same cookie still opens a page on the next
    (the key file beside the database), and not on a server with another key."""
    import httpx

    from sipbridge.runtime.server import SipBridgeServer
    from sipbridge.store import service
    from tests.dashboard.conftest import Browser
    from tests.support.settings import loopback_settings

    async def started(db: Path, **extra: object) -> SipBridgeServer:
        server = SipBridgeServer(loopback_settings(db, **extra))
        await server.start()
        return server

    server = await started(tmp_path / "d.db")
    try:
        _record, key = await service.create_api_key(server.db, "admin")
        base = "http://{}:{}".format(*server.http_address)
        async with httpx.AsyncClient(base_url=base) as http:
            await Browser(http).sign_in(key)
            cookies = dict(http.cookies)
    finally:
        await server.stop()

    async def page(server: SipBridgeServer) -> int:
        base = "http://{}:{}".format(*server.http_address)
        async with httpx.AsyncClient(base_url=base, cookies=cookies) as http:
            return (await http.get("/calls")).status_code

    again = await started(tmp_path / "d.db")
    try:
        assert await page(again) == 200
    finally:
        await again.stop()
    other = await started(tmp_path / "d.db", session_secret="another key")
    try:
        assert await page(other) in (303, 401)  # signed with another key: sign in again
    finally:
        await other.stop()
