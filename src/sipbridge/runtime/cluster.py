"""This instance among its peers on one database: its heartbeat, and the calls of peers
that died.

:class:`InstanceBeat` writes the instance's row at start (``running``), at every beat of
the server's periodic refresh (``running``, or ``draining`` while the server drains) and
at a clean exit (``stopped``); at each beat it also closes the open calls of every peer not
seen for ``--instance-timeout`` seconds (store/service/instances.py: one peer wins each
lost instance, times are the database's clock).

A peer is only declared lost by an instance that has itself reached the database at its
previous beat, within the timeout: after a database outage every instance's last
heartbeat is old, and the first to get through must not take its live peers for dead.
"""

from __future__ import annotations

import asyncio
import logging

from sipbridge.runtime.metrics import Metrics
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["InstanceBeat", "heartbeat_interval"]

log = logging.getLogger("sipbridge.cluster")


def heartbeat_interval(refresh: float, timeout: float) -> float:
    """Seconds between beats: the server's refresh period, shorter when the timeout needs
    it (three beats per timeout, so one late beat does not make a live peer look dead)."""
    return min(refresh, timeout / 3)


class InstanceBeat:
    """One instance's row in ``instances``. Every method logs and swallows database
    errors: a database that is down must not stop the server (it retries at the next
    beat)."""

    def __init__(self, db: Database, instance_id: str, timeout: float, metrics: Metrics) -> None:
        self.db = db
        self.id = instance_id
        self.timeout = timeout
        self.metrics = metrics
        self._last_ok: bool = False  # the previous beat reached the database

    async def register(self, sip_address: str) -> None:
        """At start, once the SIP socket is bound: ``running``."""
        try:
            await service.register_instance(self.db, self.id, sip_address)
        except Exception as exc:
            log.error("event=instance_register_failed instance=%s error=%s", self.id, exc)
            self._last_ok = False
            return
        self._last_ok = False  # peers are judged from the next beat on
        log.info("event=instance_registered instance=%s sip=%s", self.id, sip_address)

    async def beat(self, *, draining: bool, sip_address: str | None = None) -> None:
        """One heartbeat, then the lost peers' calls (when this instance may judge)."""
        try:
            beat = await service.instance_heartbeat(
                self.db, self.id, draining=draining, sip_address=sip_address
            )
        except Exception as exc:
            if self._last_ok:
                log.warning("event=instance_heartbeat_failed instance=%s error=%s", self.id, exc)
            self._last_ok = False
            return
        if beat.was_lost:
            log.warning(
                "event=instance_was_declared_lost instance=%s: a peer closed this instance's "
                "open calls while its heartbeat did not reach the database; calls that end "
                "now are recorded with their real end",
                self.id,
            )
        previous = beat.previous_seen_at
        # The database's clock only: our previous beat got through within the timeout.
        may_judge = (
            self._last_ok
            and previous is not None
            and (beat.now - previous).total_seconds() <= self.timeout
        )
        self._last_ok = True
        if may_judge:
            await self.close_lost()

    async def close_lost(self) -> None:
        try:
            lost = await service.close_lost_instances(self.db, self.id, self.timeout)
        except Exception as exc:
            log.warning("event=close_lost_failed instance=%s error=%s", self.id, exc)
            return
        for peer in lost:
            self.metrics.lost_instances.inc()
            self.metrics.lost_instance_calls.inc(len(peer.calls))
            log.warning(
                "event=instance_lost instance=%s seen_at=%s closed_by=%s count=%d calls=%s",
                peer.id,
                peer.seen_at.isoformat(),
                self.id,
                len(peer.calls),
                ",".join(peer.calls[:20]),
            )

    async def stop(self, timeout: float) -> None:
        """At a clean exit, after the last record writes: ``stopped`` (given up after
        ``timeout`` seconds: an unreachable database must not hold the exit up)."""
        try:
            await asyncio.wait_for(service.stop_instance(self.db, self.id), timeout)
        except Exception as exc:
            log.warning("event=instance_stop_failed instance=%s error=%s", self.id, exc)
