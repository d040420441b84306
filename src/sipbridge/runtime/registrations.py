"""Registration wiring: the runtime side of :mod:`sipbridge.sip.registration`.

Trunks with ``register`` are registered with their ``host`` by the REGISTER clients of
:mod:`sipbridge.sip.registration`, driven through the UA core like its transactions
(``SipBridgeServer.registrations``). :class:`RegistrationSync` keeps them in step with the
trunk list (new trunks register, removed ones un-register), turns each attempt's end into
log lines and metrics, writes every change to the store's ``registrations`` table (what
``sipbridge trunk list`` shows without a server), gives the API its view of a trunk's
registration, and removes every binding at shutdown (docs/operations.md, "Registration").

Its log lines are the server's (logger ``sipbridge.server``: the ``server`` component of
``--log-levels``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from typing import TYPE_CHECKING, Any

from sipbridge.sip.registration import (
    RegistrationConfig,
    RegistrationEvent,
    RegistrationState,
    parse_registrar,
)
from sipbridge.store import service
from sipbridge.store.records import utcnow
from sipbridge.wiretext import clean

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = ["UNREGISTER_GRACE", "RegistrationSync"]

log = logging.getLogger("sipbridge.server")

# How long shutdown waits for the answers to our un-REGISTERs (Expires: 0).
UNREGISTER_GRACE = 2.0


class RegistrationSync:
    """The registering trunks of ``server`` between its trunk list, its REGISTER clients
    (``server.registrations``), its metrics and the store. The server calls
    :meth:`configure` when the trunks change (and once its sockets are open),
    :meth:`on_event` for each event of the clients, :meth:`retry` after a trunk refresh
    that reached the database, and :meth:`unregister` then :meth:`wait_written` when it
    stops."""

    def __init__(self, server: SipBridgeServer) -> None:
        self.server = server
        self._seen: list[RegistrationConfig] | None = None
        self._registered_trunks: set[str] = set()  # trunks with a registered gauge
        # Trunks whose registration changed since it was last written to the store
        # (``registrations``, what `trunk list` shows without a server), and the writer.
        self.dirty: set[str] = set()
        self.writer: asyncio.Future[None] | None = None

    def configure(self) -> None:
        """Hand the registering trunks to the REGISTER clients (new ones register, removed
        ones un-register); only once the SIP sockets are open, and not while stopping."""
        server = self.server
        if server._transport is None or server._stopping:
            return
        configs: list[RegistrationConfig] = []
        for trunk in server.trunks.values():
            if not trunk.register or not trunk.host or not trunk.username:
                continue
            try:
                registrar = parse_registrar(trunk.host)
            except ValueError as exc:  # the store validates hosts; a hand-edited row may not
                log.warning("trunk=%s event=registration_ignored error=%s", trunk.name, exc)
                continue
            transport = registrar.transport.name
            if transport == "TCP" and not server.settings.tcp:
                log.warning("trunk=%s event=registration_ignored error=tcp_disabled", trunk.name)
                continue
            port = server.ua.local_port
            if transport == "TLS":
                if server.ua.tls_port is None:
                    log.warning(
                        "trunk=%s event=registration_ignored error=tls_not_configured",
                        trunk.name,
                    )
                    continue
                port = server.ua.tls_port
            configs.append(
                RegistrationConfig(
                    trunk=trunk.name,
                    registrar=registrar,
                    username=trunk.username,
                    password=trunk.password,
                    contact_host=server.ua.local_host,
                    contact_port=port,
                )
            )
        if configs == self._seen:
            return
        self._seen = configs
        server.registrations.configure(configs, server.loop.time())
        metrics = server.metrics
        for name in list(self._registered_trunks):
            if name not in {c.trunk for c in configs}:
                self._registered_trunks.discard(name)
                metrics.trunk_registered.remove(name)
        for config in configs:
            if config.trunk not in self._registered_trunks:
                self._registered_trunks.add(config.trunk)
                metrics.trunk_registered.labels(config.trunk).set(0)
            self.changed(config.trunk)
        server.flush()

    def on_event(self, event: RegistrationEvent) -> None:
        """Log lines and metrics of one registration attempt's end."""
        metrics = self.server.metrics
        status = "-" if event.status is None else str(event.status)
        reason = clean(event.reason).replace(" ", "_")[:120]  # a registrar's own words
        registered = self.server.registrations.status(event.trunk)
        self.changed(event.trunk)
        if event.trunk in self._registered_trunks:
            up = registered is not None and registered.state is RegistrationState.REGISTERED
            metrics.trunk_registered.labels(event.trunk).set(1 if up else 0)
        if event.outcome == "ok":
            log.info(
                "trunk=%s event=registration_ok status=%s expires=%s",
                event.trunk,
                status,
                event.expires,
            )
        elif event.outcome == "failed":
            metrics.registration_failures.labels(
                event.trunk, "timeout" if event.status is None else str(event.status)
            ).inc()
            log.warning(
                "trunk=%s event=registration_failed status=%s reason=%s retry_in=%.0f",
                event.trunk,
                status,
                reason,
                event.retry_in or 0.0,
            )
        else:
            log.info("trunk=%s event=unregistered status=%s reason=%s", event.trunk, status, reason)

    def changed(self, trunk: str) -> None:
        """Write ``trunk``'s registration to the store soon (one writer, in order)."""
        self.dirty.add(trunk)
        writer = self.writer
        if writer is None or writer.done():
            self.writer = asyncio.ensure_future(self._write())

    def retry(self) -> None:
        """The trunk refresh reached the database: the changes a refused write left are
        written now (not while stopping)."""
        if self.dirty and not self.server._stopping:
            self.changed(next(iter(self.dirty)))

    async def _write(self) -> None:
        """Write the changed registrations, each as it is now; a database that refuses
        keeps them for the next change or trunk refresh (logged)."""
        server = self.server
        while self.dirty:
            trunk = self.dirty.pop()
            if trunk not in server.trunks:
                continue  # removed: its rows went with it
            status = server.registrations.status(trunk)
            now, wall = server.loop.time(), utcnow()
            try:
                await service.save_registration(
                    server.db,
                    trunk,
                    server.settings.owner_id,
                    # A client gone (the trunk stopped registering) left no binding.
                    state=status.state.value if status else "unregistered",
                    registered_until=_wall(status.registered_until, now, wall) if status else None,
                    last_status=status.last_status if status else None,
                    last_reason=(status.last_reason or None) if status else None,
                    next_attempt=_wall(status.next_attempt, now, wall) if status else None,
                    failures=status.failures if status else 0,
                )
            except Exception as exc:
                self.dirty.add(trunk)
                log.warning(
                    "event=registration_write_failed trunk=%s error=%s",
                    trunk,
                    str(exc) or type(exc).__name__,
                )
                return

    def view(self, trunk: str) -> dict[str, Any] | None:
        """A trunk's registration as the API shows it (None: it does not register)."""
        status = self.server.registrations.status(trunk)
        if status is None:
            return None
        now = self.server.loop.time()
        wall = time.time()

        def at(when: float | None) -> str | None:
            if when is None:
                return None
            moment = datetime.datetime.fromtimestamp(wall + (when - now), datetime.UTC)
            return moment.isoformat(timespec="seconds")  # as the records' times

        return {
            "state": status.state.value,
            "registered_until": at(status.registered_until),
            "last_status": status.last_status,
            "last_reason": clean(status.last_reason)[:200] or None,
            "next_attempt": at(status.next_attempt),
            "failures": status.failures,
        }

    async def unregister(self) -> None:
        """Remove our bindings (REGISTER with Expires: 0), waiting at most
        ``UNREGISTER_GRACE`` seconds for the registrars' answers."""
        server = self.server
        if server._transport is None:
            return
        server.registrations.unregister_all(server.loop.time())
        server.flush()
        bound = server.loop.time() + UNREGISTER_GRACE
        while not server.registrations.idle and server.loop.time() < bound:
            await asyncio.sleep(0.02)

    async def wait_written(self) -> None:
        """At shutdown: wait (at most ``UNREGISTER_GRACE`` seconds) for the write of the
        un-REGISTERs' answers."""
        writer = self.writer
        if writer is not None and not writer.done():  # the un-REGISTERs' answers
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), UNREGISTER_GRACE)


def _wall(when: float | None, now: float, wall: datetime.datetime) -> datetime.datetime | None:
    """The loop time ``when`` on the wall clock, given both clocks' ``now``."""
    return None if when is None else wall + datetime.timedelta(seconds=when - now)
