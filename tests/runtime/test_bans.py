"""BanSync: the guard's bans written to the store, the store's read back (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import pytest

from sipbridge.runtime import bans as bans_module
from sipbridge.runtime.bans import BanSync
from sipbridge.runtime.metrics import Metrics
from sipbridge.sip.guard import GuardLimits, SourceGuard
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import utcnow


class Harness:
    def __init__(self, db: Database) -> None:
        self.guard = SourceGuard(GuardLimits(ban_time=600.0))
        self.metrics = Metrics()
        self.tasks: list[asyncio.Task[None]] = []
        self.sync = BanSync(self.guard, db, self.metrics, asyncio.get_running_loop(), self.spawn)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)
        self.tasks.clear()


async def test_new_bans_are_logged_counted_and_stored(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(db)
    loop = asyncio.get_running_loop()
    h.guard.ban("198.51.100.7", "flood", loop.time())
    with caplog.at_level(logging.WARNING, logger="sipbridge.bans"):
        h.sync.store_new()
    await h.settle()
    [stored] = await service.list_bans(db)
    assert (stored.address, stored.reason) == ("198.51.100.7", "flood")
    assert stored.expires_at is not None
    remaining = (stored.expires_at - utcnow()).total_seconds()
    assert 590 < remaining <= 600
    assert h.metrics.registry.get_sample_value("sipbridge_bans_total", {"reason": "flood"}) == 1
    assert "event=source_banned source=198.51.100.7 reason=flood until=20" in caplog.text
    # Stored: lifting it in the store now lifts it here on the next reload.
    await service.remove_ban(db, "198.51.100.7")
    await h.sync.reload()
    assert not h.guard.is_banned("198.51.100.7", loop.time())


async def test_reload_converts_wall_clock_ends_to_the_loop_clock(db: Database) -> None:
    h = Harness(db)
    loop = asyncio.get_running_loop()
    await service.add_ban(db, "203.0.113.0/24", duration=120)
    await service.add_ban(db, "192.0.2.1")  # no end
    await service.add_ban(db, "192.0.2.2", duration=60, now=utcnow() - timedelta(seconds=61))
    await h.sync.reload()
    bans = {b.address: b for b in h.guard.bans(loop.time())}
    assert set(bans) == {"203.0.113.0/24", "192.0.2.1"}  # the ended one is not loaded
    assert bans["192.0.2.1"].until is None
    network_until = bans["203.0.113.0/24"].until
    assert network_until is not None and 115 < network_until - loop.time() <= 120
    assert h.guard.is_banned("203.0.113.77", loop.time())
    assert not h.guard.is_banned("203.0.113.77", network_until + 1)
    # The ended row is purged from the store on the first reload.
    left = await service.list_bans(db, include_expired=True)
    assert {b.address for b in left} == {"192.0.2.1", "203.0.113.0/24"}


async def test_a_failed_write_is_logged_and_the_ban_kept(
    db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(db)
    loop = asyncio.get_running_loop()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(bans_module.service, "add_ban", broken)
    h.guard.ban("198.51.100.9", "scanner", loop.time())
    with caplog.at_level(logging.ERROR, logger="sipbridge.bans"):
        h.sync.store_new()
        await h.settle()
    assert "event=ban_write_failed source=198.51.100.9" in caplog.text
    # Not stored, so a reload from the (empty) store must not lift it.
    monkeypatch.undo()
    await h.sync.reload()
    assert h.guard.is_banned("198.51.100.9", loop.time())
