"""Bans between the guard and the store: the runtime side of flood and scanner defence.

The sans-I/O :class:`~sipbridge.sip.guard.SourceGuard` bans sources by itself; this keeps
it in step with the ``bans`` table: every new ban is logged, counted and written, and the
stored bans (the operator's, other instances') are read back into the guard, with their
wall-clock ends turned into the event loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from sipbridge.runtime.metrics import Metrics
from sipbridge.sip.guard import Ban, SourceGuard
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import utcnow

__all__ = ["BAN_PURGE_INTERVAL", "BanSync"]

log = logging.getLogger("sipbridge.bans")

# How often ended bans are deleted from the store (seconds).
BAN_PURGE_INTERVAL = 300.0


class BanSync:
    """Moves bans between ``guard`` and the store ``db``; ``spawn`` runs a write in the
    background (the server's task set, so shutdown waits for it)."""

    def __init__(
        self,
        guard: SourceGuard,
        db: Database,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.guard = guard
        self.db = db
        self.metrics = metrics
        self.loop = loop
        self.spawn = spawn
        self._purged_at: float | None = None

    async def reload(self) -> None:
        """Read the bans in force from the store and hand them to the guard, which keeps
        its own bans not stored yet; now and then delete the ended ones."""
        wall = utcnow()
        now = self.loop.time()
        if self._purged_at is None or now - self._purged_at >= BAN_PURGE_INTERVAL:
            self._purged_at = now
            await service.purge_expired_bans(self.db, wall)
        stored = await service.list_bans(self.db, now=wall)
        now = self.loop.time()
        self.guard.load(
            (
                Ban(
                    b.address,
                    b.reason,
                    None if b.expires_at is None else now + (b.expires_at - wall).total_seconds(),
                )
                for b in stored
            ),
            now,
        )
        self.guard.expire(now)

    def store_new(self) -> None:
        """Log, count and store the bans the guard made since the last look."""
        now = self.loop.time()
        for ban in self.guard.take_new_bans():
            duration = None if ban.until is None else max(1.0, ban.until - now)
            until = "never" if duration is None else utcnow() + timedelta(seconds=duration)
            log.warning(
                "event=source_banned source=%s reason=%s until=%s",
                ban.address,
                ban.reason,
                until if isinstance(until, str) else until.isoformat(),
            )
            self.metrics.bans.labels(ban.reason).inc()
            self.spawn(self._save(ban, duration))

    async def _save(self, ban: Ban, duration: float | None) -> None:
        try:
            await service.add_ban(self.db, ban.address, reason=ban.reason, duration=duration)
        except Exception:
            log.exception("event=ban_write_failed source=%s", ban.address)
            return
        self.guard.saved(ban)
