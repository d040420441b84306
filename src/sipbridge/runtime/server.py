"""The asyncio runtime: the SIP socket, the UA core's timer, the calls, and shutdown.

This is the only place that feeds the sans-I/O :class:`~sipbridge.sip.ua.UserAgent`:
every datagram and every timer expiry goes in with ``loop.time()``, then
:meth:`SipBridgeServer.flush` sends what the core produced, dispatches its
events to the calls and re-arms the single timer at ``ua.get_timer()``.

Who may call is the UA core's :class:`~sipbridge.sip.access.AccessPolicy`; this layer
loads the trunks from the store at start and every ``TRUNK_REFRESH`` seconds, and
enforces each trunk's ``max_calls`` and allowed numbers when a call arrives.

The same periodic refresh writes this instance's heartbeat into the shared store and
closes the open calls of peers that stopped writing theirs (runtime/cluster.py).
Trunks with ``register`` are registered with their ``host`` by the REGISTER clients of
:mod:`sipbridge.sip.registration`, driven through the UA core like its transactions and
kept in step with the trunks, the API, metrics, logs and the store by
:class:`~sipbridge.runtime.registrations.RegistrationSync`; every binding is removed at
shutdown (docs/operations.md, "Registration"). An INVITE refused before a call exists
gets its 503, record, count and log line from
:class:`~sipbridge.runtime.refusals.RefusalRecorder`; the SIP trace is
:class:`~sipbridge.runtime.trace.TraceSync`'s.

Every received message first meets the :class:`~sipbridge.sip.guard.SourceGuard` (bans
and per-source rates, before parsing); the bans it makes are logged, counted and stored,
and the stored bans (the operator's, other instances') are read back with the trunks.
Behind a proxy (``--trusted-proxy``, sip/proxy.py) a message from a trusted proxy meets
the guard as its real source, named by the proxy's ``X-Sipbridge-Source`` header; the
proxy itself is never rate-limited or banned.

A proxy in front (Kamailio's dispatcher) routes around an instance that answers its
OPTIONS probes and new INVITEs 503: this one does while it drains, is at ``--max-calls``,
is overloaded, or is unhealthy (database unreachable, or every agent endpoint in its
failure back-off). ``ua.busy`` holds that verdict, updated when one of its inputs changes,
so a probe costs no lookup. :func:`serve` drains at the first SIGTERM or SIGINT and stops
at the second (docs/operations.md, "Graceful drain").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import gc
import logging
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from sqlalchemy import text

from sipbridge.codecs.opus import opus_available
from sipbridge.config import ServeSettings, is_ip_address, usable_codecs
from sipbridge.logs import setup_logging
from sipbridge.media.overload import LoadLimits, LoadMonitor
from sipbridge.numbers import dialed_number
from sipbridge.runtime.agent_client import EndpointHealth
from sipbridge.runtime.bans import BanSync
from sipbridge.runtime.call import Call
from sipbridge.runtime.cluster import InstanceBeat, heartbeat_interval
from sipbridge.runtime.media import MediaClock, RtpPortAllocator
from sipbridge.runtime.metrics import Metrics
from sipbridge.runtime.outbound import DialParams, OutboundCall, place_call
from sipbridge.runtime.recorder import RecordWriter
from sipbridge.runtime.recordings import RecordingWriter
from sipbridge.runtime.refusals import DRAIN_RETRY_AFTER, TRUNK_BUSY_RETRY_AFTER, RefusalRecorder
from sipbridge.runtime.registrations import RegistrationSync
from sipbridge.runtime.trace import TraceSync
from sipbridge.runtime.transports import (
    FD_RESERVE,
    StreamTransports,
    connection_cap,
    raise_fd_limit,
)
from sipbridge.sip.access import AccessPolicy, TrunkAccess
from sipbridge.sip.auth import DigestAuthenticator
from sipbridge.sip.calls import (
    AckTimeout,
    ByeCompleted,
    ByeReceived,
    CallCancelled,
    CallConfirmed,
    InboundCall,
    IncomingCall,
    InfoReceived,
    NotifyReceived,
    OutboundAnswered,
    OutboundChallenged,
    OutboundEnded,
    OutboundProgress,
    ReferCompleted,
    RefreshAnswered,
    ReInviteReceived,
    RequestRejected,
    SessionExpired,
    UpdateReceived,
)
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.guard import Admission, GuardLimits, Offence, SourceGuard
from sipbridge.sip.message import Request
from sipbridge.sip.proxy import Relayed, TrustedProxies, admit_message, carries_source_header
from sipbridge.sip.registration import (
    Registrations,
    registrar_network,
)
from sipbridge.sip.ua import UserAgent
from sipbridge.store import service
from sipbridge.store.db import Database, display_url
from sipbridge.store.records import CallEvent, TrunkRecord
from sipbridge.store.spool import RecordSpool

log = logging.getLogger("sipbridge.server")

Address = tuple[str, int]
# How long shutdown waits for BYE responses and record writes.
SHUTDOWN_GRACE = 3.0
# How often the trunk list is read again from the store (API or CLI changes).
TRUNK_REFRESH = 5.0
# The recordings' retention sweep: at start, then this often (seconds).
RECORDING_SWEEP_SECONDS = 3600.0
# The load monitor's heartbeat (it also sees the loop's lag when no call is up).
HEARTBEAT_SECONDS = 0.1
# --sip-port 0: kernel-picked UDP ports tried for one whose number is free for TCP too.
SIP_PORT_ATTEMPTS = 20
# An overload with at least this many calls up sets a ceiling on calls, kept until this
# long after the last overload.
CEILING_MIN_CALLS = 10
CEILING_SECONDS = 60.0
# /readyz says not ready while more record writes than this wait in the spool.
READY_SPOOL_DEPTH = 100


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipBridgeServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.server.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("sip socket error: %s", exc)


class SipBridgeServer:
    """Owns the SIP socket, the UA core, the RTP port pool, the database and the calls."""

    def __init__(self, settings: ServeSettings) -> None:
        # Only codecs this machine can run are offered (ValueError: the operator named
        # one it cannot).
        codecs, warning = usable_codecs(
            settings.codecs, frozenset() if opus_available() else frozenset({"opus"})
        )
        if warning is not None:
            log.warning("event=codec_unavailable %s", warning)
            settings = dataclasses.replace(settings, codecs=codecs)
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.db = Database(settings.db)
        self.rtp_ports = RtpPortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.access = AccessPolicy(
            DigestAuthenticator(
                settings.realm, secrets.token_bytes(32), algorithms=settings.auth_algorithms
            ),
            refuse_status=403 if settings.unknown_sources == "403" else None,
        )
        # Proxies in front whose X-Sipbridge-Source is believed (sip/proxy.py).
        self.proxies = TrustedProxies.parse(settings.trusted_proxies)
        self._proxied = bool(self.proxies)
        self.guard = SourceGuard(
            GuardLimits(
                ban_time=settings.ban_time,
                rate=settings.flood_rate,
                burst=settings.flood_burst,
                auth_failures=settings.auth_failure_limit,
                unknown_numbers=settings.unknown_number_limit,
                transactions_per_source=settings.max_transactions_per_source,
                scanner_user_agents=settings.scanner_user_agents,
            ),
            # A trunk's own networks are never banned automatically (docs/security.md),
            # and have the trunk's own, higher message rate; nor is a trusted proxy.
            trusted=self.knows_peer,
            source_rate=self.access.message_rate,
        )
        # Where a call's media binds and what its SDP answer gives, for IPv4 and IPv6
        # callers (config.py); worked out once: the wildcard case resolves host names.
        self._media_addresses = {ipv6: settings.media_address(ipv6) for ipv6 in (False, True)}
        ipv6_media = self._media_addresses[True]
        self.ua = UserAgent(
            settings.advertised_ip,
            settings.sip_port,
            # IPv6 callers of a dual-stack server get our IPv6 address in Via/Contact.
            local_host_v6=ipv6_media[1] if ipv6_media is not None else None,
            access=self.access,
            guard=self.guard,
            session_expires=settings.session_expires or None,
            min_se=settings.min_se,
            proxies=self.proxies,
        )
        # Our registrations with the trunks that have register=true (sip/registration.py):
        # driven through the UA core, configured once the sockets are open.
        self.registrations = Registrations()
        self.ua.registrations = self.registrations
        # Kept in step with the trunks, the metrics and the store (runtime/registrations.py).
        self.registration_sync = RegistrationSync(self)
        # ACK, BYE, CANCEL and responses of live calls pass the rate limit (sip/guard.py).
        self.guard.in_dialog = self.ua.in_dialog
        self.trunks: dict[str, TrunkRecord] = {}
        self._trunks_seen: list[tuple[object, ...]] | None = None
        self._trunk_task: asyncio.Future[None] | None = None
        self.calls: dict[str, Call] = {}
        self._trunk_calls: collections.Counter[str] = collections.Counter()  # calls per trunk
        self.draining = False
        self._drained: asyncio.Future[None] | None = None  # done when the last call ends
        self._drain_started: float | None = None  # loop time
        # Health for the 503s (docs/operations.md): the database answered the last
        # refresh; the voice agents' endpoints; until when every one of them is in its
        # failure back-off (0.0: one can be tried).
        self.db_ok = True
        self._agent_urls: tuple[str, ...] = ()
        self._agents_down_until = 0.0
        self._busy_reason: str | None = None  # why ua.busy is set
        self._transport: asyncio.DatagramTransport | None = None
        self._family = socket.AF_INET  # the SIP UDP socket's
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._sdp_session = random.getrandbits(31)
        self.metrics = Metrics()
        self.agent_health = EndpointHealth(on_change=self._agents_changed)
        self.metrics.active_calls.set_function(lambda: len(self.calls))
        self.metrics.watch_guard(self.guard, self.loop.time)
        self.bans = BanSync(self.guard, self.db, self.metrics, self.loop, self._spawn)
        # Call records: written in the background, kept in a local spool while the
        # database refuses them (runtime/recorder.py).
        self.records = RecordWriter(
            self.db,
            RecordSpool(settings.spool_file, settings.spool_max_bytes),
            self.metrics,
            settings.owner_id,
        )
        # The INVITEs refused before a call existed: 503s, records, counts, log lines
        # (runtime/refusals.py).
        self.refusals = RefusalRecorder(self)
        # Call recordings: WAV files written by a thread off the media path, kept for
        # --recording-retention-days (runtime/recordings.py).
        self.recordings = RecordingWriter(settings.recordings_path, metrics=self.metrics)
        self._sweep_task: asyncio.Future[None] | None = None
        # This instance among its peers on the database (runtime/cluster.py); the refresh
        # period is shortened when --instance-timeout needs more frequent heartbeats.
        self.instance = InstanceBeat(
            self.db, settings.owner_id, settings.instance_timeout, self.metrics
        )
        self._refresh_period = heartbeat_interval(TRUNK_REFRESH, settings.instance_timeout)
        self._stopping = False
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Future[None] | None = None
        self.streams = StreamTransports(self)  # SIP over TCP and TLS (runtime/transports.py)
        self.fd_limit = 0  # the soft open-file limit, raised at start
        # One send clock for every call's media, and the overload verdict fed by its lag
        # and by a heartbeat that also runs without calls (media/overload.py).
        self.load = LoadMonitor(
            LoadLimits(max_lag=settings.overload_lag_ms / 1000, max_cpu=settings.overload_cpu)
        )
        self.media_clock = MediaClock(self.loop, on_lag=self._clock_lag)
        # After an overload with many calls up, their number is a measured capacity: new
        # calls stay refused at that number for a while after recovery, so a fast ramp
        # does not push the instance over again and again.
        self._ceiling: int | None = None
        self._ceiling_until = 0.0
        self._heartbeat: asyncio.TimerHandle | None = None
        self._heartbeat_due = 0.0
        # The per-call SIP trace (runtime/trace.py): the traces in force, read from the
        # store with the trunks; the message path only reads ``tracer.armed``.
        self.traces = TraceSync(self)
        self.tracer = self.traces.tracer

    @property
    def tls_address(self) -> Address | None:
        """The bound TLS listener (host, port), None without TLS."""
        return self.streams.tls_address

    @property
    def sip_address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    async def _listen_sip(self) -> None:
        """The UDP socket, and TCP on the same number. With ``--sip-port 0`` the kernel
        picks the UDP port, whose number may be taken for TCP (by an outgoing
        connection's local port, say): then another number, a bounded number of times."""
        host = self.settings.sip_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._family = family
        attempts = SIP_PORT_ATTEMPTS if self.settings.sip_port == 0 else 1
        for attempt in range(1, attempts + 1):
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _SipProtocol(self),
                local_addr=(host, self.settings.sip_port),
                family=family,
            )
            self._transport = transport
            try:
                await self.streams.listen_tcp(host, self.sip_address[1])
            except OSError as exc:
                transport.close()
                self._transport = None
                if exc.errno != errno.EADDRINUSE or attempt == attempts:
                    raise
                log.info("event=sip_port_retry reason=tcp_port_in_use error=%s", exc)
            else:
                return

    async def start(self) -> None:
        # Connections are capped well below the open-file limit: a connection flood must
        # leave room for RTP sockets, the database and HTTP (runtime/transports.py).
        self.fd_limit = raise_fd_limit()
        self.streams.max_connections = connection_cap(self.fd_limit)
        await self.db.upgrade()
        # What an earlier run could not write comes first; then the calls this instance
        # left open when its process ended (a crash: nobody closed them).
        await self.records.start()
        try:
            closed = await service.close_interrupted(self.db, self.records.owner)
        except Exception as exc:
            log.error("event=close_interrupted_failed owner=%s error=%s", self.records.owner, exc)
        else:
            if closed:
                log.warning(
                    "event=calls_interrupted owner=%s count=%d calls=%s",
                    self.records.owner,
                    len(closed),
                    ",".join(closed[:20]),
                )
        await self.reload_trunks()  # before the socket opens: no request meets an empty list
        await self.bans.reload()
        await self.traces.reload()
        await self._listen_sip()
        port = self.sip_address[1]
        if port != self.ua.local_port:  # --sip-port 0: advertise the real port
            self.ua.local_port = port
        await self.streams.start(self.settings.sip_host)
        tls = self.streams.tls_address
        self.ua.tls_port = tls[1] if tls is not None else None
        host = self.settings.sip_host
        listeners = [f"udp:{host}:{port}"]
        if self.streams.tcp_address is not None:
            listeners.append(f"tcp:{host}:{port}")
        if tls is not None:
            listeners.append(f"tls:{host}:{tls[1]}")
        await self._start_http()
        await self.instance.register(self.instance_address)
        await self._read_agents()
        self._trunk_task = asyncio.ensure_future(self._refresh_trunks())
        if self.settings.recording_retention_days > 0:
            self._sweep_task = asyncio.ensure_future(self._sweep_recordings())
        self._heartbeat_due = self.loop.time() + HEARTBEAT_SECONDS
        self._heartbeat = self.loop.call_at(self._heartbeat_due, self._beat)
        # Everything allocated so far (FastAPI, SQLAlchemy, pydantic: ~10^5 objects) lives
        # as long as the process: move it out of the collector's sight, so a full
        # collection takes microseconds instead of stalling every call's media for tens
        # of milliseconds (measured by bench/bench_agent.py).
        gc.freeze()
        log.info(
            "listening sip=%s rtp=%d-%d http=%s advertise=%s db=%s fd_limit=%d "
            "max_connections=%d max_unknown_connections=%d%s",
            ",".join(listeners),
            self.settings.rtp_port_min,
            self.settings.rtp_port_max,
            "{}:{}".format(*self.http_address) if self._http is not None else "off",
            self.settings.advertised_ip,
            display_url(self.settings.db),  # as the user wrote it, as the CLI names it
            self.fd_limit,
            self.streams.max_connections,
            self.streams.max_unknown,
            f" trusted_proxies={self.proxies}" if self.proxies else "",
        )
        rtp_sockets = 2 * self.settings.max_calls
        if self.streams.max_connections + rtp_sockets + FD_RESERVE > self.fd_limit:
            log.warning(
                "event=fd_limit_low fd_limit=%d max_connections=%d max_calls=%d: %d calls "
                "need %d RTP/RTCP sockets; raise the open-file limit (LimitNOFILE=, "
                "ulimit -n) or lower --max-calls",
                self.fd_limit,
                self.streams.max_connections,
                self.settings.max_calls,
                self.settings.max_calls,
                rtp_sockets,
            )
        if self.proxies.broad:
            log.warning(
                "event=trusted_proxy_broad networks=%s: every address in them may claim any "
                "source with X-Sipbridge-Source; trust only the proxies' own addresses",
                ",".join(str(n) for n in self.proxies.broad),
            )
        warning = self.settings.loopback_warning(self.ua.local_host)
        if warning is not None:
            log.warning("event=loopback_advertised %s", warning)
        self.registration_sync.configure()  # the sockets are open: REGISTERs can go out

    # -- load ------------------------------------------------------------------

    def _clock_lag(self, lag: float, now: float) -> None:
        """Every wake-up of the media clock or the heartbeat: how late it ran."""
        self.metrics.media_clock_lag_seconds.observe(lag)
        load = self.load
        if load.clock_fired(lag, now) and load.close_window(now, time.process_time()):
            self._update_busy()
            self.metrics.overloaded.set(1 if load.overloaded else 0)
            if load.overloaded and len(self.calls) >= CEILING_MIN_CALLS:
                # 90 %: the window that noticed the overload had already admitted more.
                ceiling = int(len(self.calls) * 0.9)
                self._ceiling = ceiling if self._ceiling is None else min(self._ceiling, ceiling)
            if self._ceiling is not None:
                self._ceiling_until = now + CEILING_SECONDS
            window = load.last
            assert window is not None
            cpu = "n/a" if window.cpu is None else f"{window.cpu:.2f}"
            if load.overloaded:
                log.warning(
                    "event=overload state=refusing_new_calls calls=%d clock_lag_max_ms=%.1f "
                    "late_wakeups=%d cpu=%s",
                    len(self.calls),
                    window.max_lag * 1000,
                    window.late_wakeups,
                    cpu,
                )
            else:
                log.warning(
                    "event=overload state=accepting_calls calls=%d cpu=%s", len(self.calls), cpu
                )

    def _at_ceiling(self, now: float) -> bool:
        """True while new calls are held at the number that overloaded the instance."""
        if self._ceiling is None:
            return False
        if now >= self._ceiling_until:
            self._ceiling = None
            return False
        return len(self.calls) >= self._ceiling

    def _beat(self) -> None:
        now = self.loop.time()
        if self._agents_down_until and now >= self._agents_down_until:
            self._agents_changed()  # a back-off ended: an endpoint may be probed
        self._clock_lag(max(0.0, now - self._heartbeat_due), now)
        self._heartbeat_due = max(self._heartbeat_due + HEARTBEAT_SECONDS, now)
        self._heartbeat = self.loop.call_at(self._heartbeat_due, self._beat)

    # -- availability ----------------------------------------------------------

    def _refusal(self, now: float) -> str | None:
        """Why the instance refuses every new call now (None: it takes them); in the
        order :meth:`_dispatch` checks an INVITE, so a probe hears what a call would."""
        if self.draining:
            return "draining"
        if len(self.calls) >= self.settings.max_calls:
            return "server_busy"
        if self.load.overloaded:
            return "overload"
        if self.unhealthy(now) is not None:
            return "unhealthy"
        return None

    def _update_busy(self) -> None:
        """``ua.busy`` (OPTIONS 503) from the refusal in force; called whenever one of
        its inputs changes (drain, health, overload, a call added or ended), so that an
        OPTIONS probe reads one attribute."""
        reason = self._refusal(self.loop.time())
        if reason == self._busy_reason:
            return
        self._busy_reason = reason
        retry_after = DRAIN_RETRY_AFTER if reason == "draining" else TRUNK_BUSY_RETRY_AFTER
        self.ua.set_busy(reason, retry_after)

    def unhealthy(self, now: float) -> str | None:
        """Why this instance cannot complete a call (None: it can): the database did not
        answer its last refresh (``database_unreachable``), or every endpoint of every
        voice agent is in its failure back-off (``no_agent_reachable``). No agent at all
        is healthy: every instance shares the store, so routing elsewhere would not help
        (the calls get their 404 or 480)."""
        if not self.db_ok:
            return "database_unreachable"
        if now < self._agents_down_until:
            return "no_agent_reachable"
        return None

    def _agents_changed(self) -> None:
        """An agent endpoint went down or came back, a back-off ended, or the agent list
        changed: when can the next call reach an agent again, and is the instance busy."""
        self._agents_down_until = self.agent_health.down_until(self._agent_urls, self.loop.time())
        self.metrics.unhealthy.set(1 if self.unhealthy(self.loop.time()) is not None else 0)
        self._update_busy()

    def database_failed(self, exc: BaseException) -> None:
        """A call's lookup found the database gone: unhealthy now, not at the next
        refresh (which brings it back once the database answers again)."""
        if self.db_ok:
            log.warning("event=lookup_failed error=%s", str(exc) or type(exc).__name__)
        self._set_db_ok(False)

    def _set_db_ok(self, ok: bool) -> None:
        if ok != self.db_ok:
            self.db_ok = ok
            if ok:
                log.info("event=database_reachable")
            else:
                log.warning("event=database_unreachable state=refusing_new_calls")
            self._agents_changed()

    async def _read_agents(self) -> None:
        """The voice agents' endpoints, for :meth:`unhealthy`."""
        agents = await service.list_agents(self.db)
        urls = tuple(dict.fromkeys(u for a in agents if a.voice_enabled for u in a.urls))
        if urls != self._agent_urls:
            self._agent_urls = urls
            self._agents_changed()

    # -- trunks ----------------------------------------------------------------

    async def reload_trunks(self) -> None:
        """Read the trunks from the store and hand them to the access policy."""
        self.apply_trunks(await service.list_trunks(self.db))

    def apply_trunks(self, trunks: list[TrunkRecord]) -> None:
        seen: list[tuple[object, ...]] = [
            (
                t.name,
                tuple(t.allowed_cidrs),
                t.username,
                t.password,
                t.max_calls,
                tuple(t.allowed_numbers),
                t.srtp,
                t.max_message_rate,
                t.host,
                t.register,
                tuple(t.codecs),
            )
            for t in trunks
        ]
        if seen == self._trunks_seen:
            return
        self._trunks_seen = seen
        access: list[TrunkAccess] = []
        for trunk in trunks:
            try:
                entry = TrunkAccess.from_cidrs(
                    trunk.name,
                    _access_cidrs(trunk),
                    # A registering trunk's credentials are ours for its registrar, not
                    # a password its calls must prove (docs/operations.md).
                    None if trunk.register else trunk.username,
                    None if trunk.register else trunk.password,
                    None if trunk.max_message_rate is None else float(trunk.max_message_rate),
                )
            except ValueError as exc:  # the store validates CIDRs; a hand-edited row may not
                log.warning("trunk=%s event=trunk_ignored error=%s", trunk.name, exc)
                continue
            if not entry.networks and trunk.register:
                log.warning(
                    "trunk=%s registers with a host name and has no allowed CIDRs: no call "
                    "can come from it (add its registrar's networks with --allow)",
                    trunk.name,
                )
            elif not entry.networks and not entry.has_credentials:
                log.warning(
                    "trunk=%s has no allowed CIDRs and no username/password: "
                    "no call can come from it",
                    trunk.name,
                )
            access.append(entry)
        self.trunks = {t.name: t for t in trunks}
        self.access.set_trunks(access)
        self.registration_sync.configure()
        self.guard.reset_rates()  # each source's rate is looked up again
        if not trunks:
            log.warning(
                "no trunk configured: accepting calls from 127.0.0.1 and ::1 only "
                "(add one with `sipbridge trunk add`)"
            )
        else:
            log.info("event=trunks_loaded count=%d names=%s", len(trunks), ",".join(self.trunks))

    def connection_failed(self, transport: Transport, host: str, port: int, reason: str) -> None:
        """A TCP/TLS connection of ours could not be opened (runtime/transports.py): the
        REGISTERs and outbound INVITEs waiting for it fail now, with ``reason``."""
        now = self.loop.time()
        self.registrations.connection_failed(transport, host, port, reason, now)
        self.ua.connection_failed(transport, host, port, reason, now)
        self.flush()

    async def _refresh_trunks(self) -> None:
        """Every ``TRUNK_REFRESH`` seconds (shorter when ``--instance-timeout`` needs it):
        the trunks, bans and agents from the store (whether the store answered within that
        time is the database's health), then this instance's heartbeat."""
        while True:
            await asyncio.sleep(self._refresh_period)
            await self.refresh()
            await self.instance.beat(draining=self.draining)  # logs its own failures

    async def _sweep_recordings(self) -> None:
        """Retention: the recordings older than --recording-retention-days deleted and
        their records cleared, at start and every :data:`RECORDING_SWEEP_SECONDS`."""
        while True:
            try:
                await self.recordings.sweep(self.db, self.settings.recording_retention_days)
            except Exception as exc:
                log.warning("event=recording_sweep_failed error=%s", str(exc) or repr(exc))
            await asyncio.sleep(RECORDING_SWEEP_SECONDS)

    async def refresh(self) -> None:
        """One refresh of the trunk, ban and agent lists, and of the database health."""
        try:
            await asyncio.wait_for(self.reload_trunks(), TRUNK_REFRESH)
        except Exception as exc:  # keep the last good lists; say why
            log.warning("event=trunk_reload_failed error=%s", str(exc) or type(exc).__name__)
            self._set_db_ok(False)
            return
        self._set_db_ok(True)
        self.registration_sync.retry()
        try:
            await self.bans.reload()
            await self._read_agents()
            await self.traces.reload()
        except Exception as exc:
            log.warning("event=trunk_reload_failed error=%s", str(exc) or type(exc).__name__)

    @property
    def instance_address(self) -> str:
        """This instance's SIP address as its peers and a proxy reach it: the advertised
        address and the bound port (``host:port``, ``[v6]:port``)."""
        host = self.ua.local_host
        return f"[{host}]:{self.ua.local_port}" if ":" in host else f"{host}:{self.ua.local_port}"

    async def _start_http(self) -> None:
        """The REST API, /metrics and health checks, on uvicorn in this event loop."""
        from sipbridge.api.app import create_app  # FastAPI is only needed when serving HTTP
        from sipbridge.runtime.live import LiveCalls
        from sipbridge.runtime.session_key import session_key

        app = create_app(
            self.db,
            readiness=self.readiness,
            metrics_app=self.metrics.asgi_app,
            default_region=self.settings.default_region,
            bans_changed=self.bans.reload,
            traces_changed=self.traces.reload,
            registration=self.registration_sync.view,
            dial=self.dial,
            live=LiveCalls(self),
            recordings_dir=self.settings.recordings_path,
            dashboard_secret=await asyncio.to_thread(session_key, self.settings),
        )
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,  # no software name on the wire
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.ensure_future(self._http.serve())
        deadline = self.loop.time() + 10
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped during start-up")
            if self.loop.time() > deadline:
                raise RuntimeError("HTTP server did not start within 10 s")
            await asyncio.sleep(0.01)

    async def _ping_db(self) -> None:
        async with self.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @property
    def http_address(self) -> Address:
        assert self._http is not None
        sock = self._http.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return host, port

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """/readyz: SIP socket bound, database reachable, not draining."""
        sip_ok = self._transport is not None and not self._transport.is_closing()
        try:
            await asyncio.wait_for(self._ping_db(), 2.0)
            db_ok = True
        except Exception:
            db_ok = False
        # A database that answers SELECT 1 may still refuse writes (locked, read-only):
        # the record writes say so.
        records = self.records
        depth = records.spool.depth
        writes_ok = records.healthy and depth <= READY_SPOOL_DEPTH
        agents_ok = self.unhealthy(self.loop.time()) != "no_agent_reachable"
        detail: dict[str, Any] = {
            "sip": sip_ok,
            "database": db_ok,
            "agents": "ok" if agents_ok else "unreachable",
            "draining": self.draining,
            "record_writes": "ok" if records.healthy else f"failing: {records.last_error}",
            "record_spool_depth": depth,
        }
        if depth > READY_SPOOL_DEPTH:
            detail["record_spool"] = f"more than {READY_SPOOL_DEPTH} records wait"
        return sip_ok and db_ok and agents_ok and writes_ok and not self.draining, detail

    # -- SIP plumbing --------------------------------------------------------

    def receive(self, data: bytes, addr: Address) -> bool:
        """Every received SIP message: a UDP datagram (``addr`` its source), or a message
        framed from a TCP/TLS connection (``addr`` the connection's StreamAddress). True
        when the UA core admitted it (``UserAgent.receive_datagram``)."""
        now = self.loop.time()
        # Flood and ban check before any parsing (sip/guard.py): one dict lookup for a
        # banned source, a token bucket update otherwise; for a trusted proxy's message,
        # on the real source its X-Sipbridge-Source names (sip/proxy.py). Without trusted
        # proxies (the default) the guard is asked directly: a flood's datagrams cost the
        # least possible before they are dropped.
        relayed: Relayed | None = None
        if self._proxied:
            admission, relayed = admit_message(self.guard, self.proxies, data, addr, now)
        else:
            admission = self.guard.admit(addr[0], now, data)
        if admission is not Admission.ADMIT:
            if self.guard.has_new_bans:
                self.bans.store_new()  # a refused source never reaches flush()
            if (
                admission is Admission.BANNED
                and relayed is None  # a proxy's connection carries other sources too
                and isinstance(addr, StreamAddress)
            ):
                self.streams.drop(addr)  # no more framing work for a banned source
            return False
        source = addr if isinstance(addr, StreamAddress) else (addr[0], addr[1])
        if relayed is None and log.isEnabledFor(logging.DEBUG) and carries_source_header(data):
            log.debug(
                "event=source_header_ignored source=%s:%d: not a trusted proxy",
                addr[0],
                addr[1],
            )
        if self.tracer.armed:  # a trace in force: see runtime/trace.py
            self.tracer.received(data, source)
        admitted = False
        try:
            if relayed is None:  # not from a trusted proxy
                admitted = self.ua.receive_datagram(data, source, now)
            else:
                admitted = self.ua.receive_datagram(data, source, now, relayed)
        except Exception:
            # The core answers bad input itself; anything else is our bug and
            # must not stop the server from serving the next request.
            log.exception("internal error handling a datagram from %s:%d", addr[0], addr[1])
        self.flush()
        return admitted

    def flush(self) -> None:
        """Send what the UA produced, dispatch its events, re-arm its timer.

        Dispatching may make the UA produce more (a 503 from ``_dispatch``): the loop
        sends that at once too.
        """
        transport = self._transport
        tracer = self.tracer
        while True:
            out = self.ua.datagrams_to_send()
            for data, destination in out:
                if isinstance(destination, StreamAddress):
                    self.streams.send(data, destination)
                elif transport is None:
                    break
                elif is_ip_address(destination[0]):
                    transport.sendto(data, destination)
                else:
                    self._spawn(self._send_resolved(data, destination))
            if tracer.armed:
                tracer.sent(out)
            for registration in self.registrations.events():
                self.registration_sync.on_event(registration)
            events = self.ua.events()
            if not events:
                break
            for event in events:
                self._dispatch(event)
        if self.guard.has_new_bans:
            self.bans.store_new()
        if tracer.armed:
            tracer.done()
        deadline = self.ua.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.ua.handle_timer(self.loop.time())
        self.flush()

    async def _send_resolved(self, data: bytes, destination: Address) -> None:
        """Send to a host name (a Contact or Via with a name): resolved in the SIP socket's
        family; on an IPv6 socket an IPv4-only name becomes its v4-mapped address, which a
        dual-stack socket (``::``) can reach."""
        family = self._family
        flags = int(socket.AI_V4MAPPED) if family == socket.AF_INET6 else 0
        try:
            infos = await self.loop.getaddrinfo(
                destination[0], destination[1], family=family, type=socket.SOCK_DGRAM, flags=flags
            )
        except OSError as exc:
            log.warning("cannot resolve %s: %s", destination[0], exc)
            return
        if infos and self._transport is not None:
            self._transport.sendto(data, infos[0][4][:2])

    def _dispatch(self, event: object) -> None:
        if isinstance(event, IncomingCall):
            if self.tracer.armed:
                self.traces.invite(event.call.invite, event.call.trunk, event.call.id)
            now = self.loop.time()
            if self.draining:
                self.refusals.refuse_busy(event.call, "draining", DRAIN_RETRY_AFTER)
                return
            if len(self.calls) >= self.settings.max_calls:
                self.refusals.refuse_busy(event.call, "server_busy")
                return
            if self.load.overloaded or self._at_ceiling(now):
                # The calls already up come first: refuse before they degrade.
                self.metrics.overload_refusals.inc()
                self.refusals.refuse_busy(event.call, "overload")
                return
            cause = self.unhealthy(now)
            if cause is not None:
                self.refusals.refuse_busy(event.call, "unhealthy", cause=cause)
                return
            if self._trunk_full(event.call.trunk):
                self.refusals.refuse_busy(event.call, "trunk_busy")
                return
            if not self._number_allowed(event.call):
                return
            trunk = self.trunks.get(event.call.trunk) if event.call.trunk else None
            if trunk is not None and trunk.username and trunk.password is not None:
                # A far end that challenges our BYE, refresh or REFER (RFC 3261 §22.2)
                # gets the trunk's credentials, as an outbound call's does.
                event.call.credentials = (trunk.username, trunk.password)
            self.add_call(Call(self, event.call))  # in the store as ringing from now on
            return
        if isinstance(event, RequestRejected):
            self.refusals.rejected(event)
            return
        if isinstance(event, OutboundChallenged):
            return  # its INVITE went out again with the trunk's credentials
        if isinstance(event, OutboundProgress | OutboundAnswered | OutboundEnded):
            outbound = self.calls.get(event.attempt.id)
            if isinstance(outbound, OutboundCall):
                outbound.on_outbound_event(event)
            elif isinstance(event, OutboundAnswered):
                # Nobody waits for it any more (its call gave up meanwhile): end it.
                self.ua.hangup(event.call, self.loop.time())
            return
        target = self.calls.get(event.call.id)  # type: ignore[attr-defined]
        if target is None:
            return
        if isinstance(event, CallCancelled):
            target.on_cancel()
        elif isinstance(event, CallConfirmed):
            target.on_confirmed(event.request)
        elif isinstance(event, ByeReceived):
            target.on_remote_bye()
        elif isinstance(event, AckTimeout):
            target.on_ack_timeout()
        elif isinstance(event, ReInviteReceived):
            target.on_reinvite(event.request)
        elif isinstance(event, UpdateReceived):
            target.on_update(event.request)
        elif isinstance(event, RefreshAnswered):
            target.on_refresh_answer(event.body)
        elif isinstance(event, SessionExpired):
            target.on_session_expired(event.reason)
        elif isinstance(event, InfoReceived):
            target.on_info(event.request)
        elif isinstance(event, ReferCompleted):
            target.on_refer_completed(event.status)
        elif isinstance(event, NotifyReceived):
            target.on_notify(event.sipfrag_status, event.terminated)
        elif isinstance(event, ByeCompleted):
            pass  # the call already ended on our side

    def _admit(self, host: str, now: float, data: bytes = b"") -> Admission:
        """The guard's verdict on one message (``data``) or connection from ``host``; a ban
        it made just now is stored (a refused source never reaches :meth:`flush`)."""
        admission = self.guard.admit(host, now, data)
        if admission is not Admission.ADMIT and self.guard.has_new_bans:
            self.bans.store_new()
        return admission

    def accept_connection(self, host: str) -> str | None:
        """Admit a new TCP/TLS connection from ``host`` (every accepted connection comes
        through here); None when it may stay, else why not. None from a banned source,
        and a new connection counts like a message towards the source's rate (a
        connection flood is banned as a message flood is); then a free slot
        (``StreamTransports.slot_refusal``): ``max_connections_per_source`` per trunk
        address or per unknown /24 and /64, the unknown sources' share, the total."""
        if not self.proxies.trusts(host):  # a trusted proxy is never limited or banned
            admission = self._admit(host, self.loop.time())
            if admission is not Admission.ADMIT:
                return str(admission.value)
        return self.streams.slot_refusal(
            host, self.knows_peer(host), self.settings.max_connections_per_source
        )

    def knows_peer(self, host: str) -> bool:
        """True for a transport source inside a trunk's networks (or loopback with no
        trunk) and for a trusted proxy: trusted by the guard (never banned automatically)
        and by the connection limits (runtime/transports.py)."""
        return self.access.knows(host) or self.proxies.trusts(host)

    # -- calls -----------------------------------------------------------------

    def dialed_users(self, trunk: str | None, invite: Request) -> tuple[str | None, str | None]:
        """(Request-URI user, To user) to read the dialed number from (``router.route``):
        a call to the contact a trunk registered carries the trunk's username in the
        Request-URI, not the number, so that user is left out for calls from a
        registering trunk and the To header's number is taken (docs/operations.md,
        "Registration"); a username of digits would otherwise read as a number."""
        request_uri_user = invite.uri.user
        record = self.trunks.get(trunk) if trunk is not None else None
        if record is not None and record.register and request_uri_user == record.username:
            request_uri_user = None
        return request_uri_user, invite.to.uri.user

    def _trunk_full(self, trunk: str | None) -> bool:
        """True when ``trunk`` already has its ``max_calls`` calls (the new one is not in
        ``self.calls`` yet)."""
        record = self.trunks.get(trunk) if trunk is not None else None
        if record is None or record.max_calls is None:
            return False
        assert trunk is not None
        return self._trunk_calls[trunk] >= record.max_calls

    def _number_allowed(self, call: InboundCall) -> bool:
        """The trunk's allowed numbers: a call to any other number gets 404 (as if the
        number did not exist: the trunk learns nothing) and a record; it counts as a
        call to an unknown number for the source's ban limit."""
        record = self.trunks.get(call.trunk) if call.trunk is not None else None
        if record is None or not record.allowed_numbers:
            return True
        number = dialed_number(
            *self.dialed_users(call.trunk, call.invite), self.settings.default_region
        )
        if number in record.allowed_numbers:
            return True
        self.ua.reject(
            call,
            404,
            self.loop.time(),
            headers=[("Reason", 'SIP ;cause=404 ;text="number_not_allowed"')],
        )
        self.refusals.record_rejected_invite(
            call.invite, call.origin, 404, "number_not_allowed", call.trunk, record_id=call.id
        )
        self.guard.offence(call.origin[0], Offence.UNKNOWN_NUMBER, self.loop.time())
        return False

    @property
    def pending_tasks(self) -> int:
        """Background tasks still running (calls) and record writes not yet stored or
        spooled."""
        return len(self._tasks) + self.records.pending

    def media_address(self, ipv6: bool) -> tuple[str, str] | None:
        """(bind address, SDP address) for a caller's media in IPv6 or IPv4; None when
        this server has none (see ``ServeSettings.media_address``)."""
        return self._media_addresses[ipv6]

    def new_sdp_session_id(self) -> int:
        self._sdp_session += 1
        return self._sdp_session

    async def dial(self, params: DialParams) -> str:
        """Place an outbound call (``POST /api/calls``, ``sipbridge dial``): its id at
        once, its outcome in its record; DialRefused when it cannot be placed."""
        call = await place_call(self, params)
        return call.id

    def add_call(self, call: Call) -> None:
        """A call from now on: counted (``--max-calls``, its trunk's ``max_calls``), in the
        store as ringing, running as a task."""
        self.calls[call.id] = call
        self.records.submit(call.record)
        if call.trunk is not None:
            self._trunk_calls[call.trunk] += 1
        self._spawn(call.run())
        if len(self.calls) >= self.settings.max_calls:
            self._update_busy()  # now at --max-calls

    def refusal_for_new_call(self, trunk: str | None) -> tuple[str, int] | None:
        """Why a new call must be refused now, with its Retry-After, in the order an
        INVITE is checked (None: it may go ahead): draining, --max-calls, overload,
        unhealthy, the trunk's max_calls."""
        now = self.loop.time()
        if self.draining:
            return "draining", DRAIN_RETRY_AFTER
        if len(self.calls) >= self.settings.max_calls:
            return "server_busy", TRUNK_BUSY_RETRY_AFTER
        if self.load.overloaded or self._at_ceiling(now):
            self.metrics.overload_refusals.inc()
            return "overload", TRUNK_BUSY_RETRY_AFTER
        if self.unhealthy(now) is not None:
            return "unhealthy", TRUNK_BUSY_RETRY_AFTER
        if self._trunk_full(trunk):
            return "trunk_busy", TRUNK_BUSY_RETRY_AFTER
        return None

    def codecs_for(self, trunk: str | None) -> list[str]:
        """The phone-side codecs of a call on ``trunk``: ``--codecs`` in its order, only
        those the trunk's ``codecs`` list names when it has one (both directions: what an
        inbound offer may choose, what an outbound offer holds). Empty: none in common."""
        record = self.trunks.get(trunk) if trunk is not None else None
        if record is None or not record.codecs:
            return list(self.settings.codecs)
        allowed = {name.lower() for name in record.codecs}
        return [name for name in self.settings.codecs if name.lower() in allowed]

    def call_finished(self, call: Call, events: list[CallEvent] | None = None) -> None:
        if self.tracer.armed:
            self.tracer.end(call.sip.invite.call_id, self.loop.time())
        if self.calls.pop(call.id, None) is not None and call.trunk is not None:
            self._trunk_calls[call.trunk] -= 1
            if not self._trunk_calls[call.trunk]:
                del self._trunk_calls[call.trunk]
        if self._busy_reason is not None:
            self._update_busy()  # at --max-calls no more, or another reason in force
        drained = self._drained
        if not self.calls and drained is not None and not drained.done():
            drained.set_result(None)
        if call.record.reason == "unknown_number":
            # Dialling numbers that do not exist, in a burst, is how scanners look for
            # open routes: counted towards the source's ban (sip/guard.py).
            self.guard.offence(call.origin[0], Offence.UNKNOWN_NUMBER, self.loop.time())
            if self.guard.has_new_bans:
                self.bans.store_new()
        self.records.submit(call.record, events or [])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- shutdown --------------------------------------------------------------

    async def drain(self, timeout: float, interrupt: asyncio.Event | None = None) -> str:
        """Refuse new calls (503, reason ``draining``) while the calls up go on, until
        the last one ends, ``timeout`` seconds pass or ``interrupt`` is set; then
        :meth:`stop` hangs up what is left. Says which: ``calls_ended``, ``timeout``,
        ``interrupted``."""
        self.start_drain(timeout)
        started = self._drain_started
        assert started is not None
        outcome = "calls_ended"
        if self.calls:
            drained = self._drained = self.loop.create_future()
            waiters: set[asyncio.Future[Any]] = {drained}
            if interrupt is not None:
                waiters.add(asyncio.ensure_future(interrupt.wait()))
            try:
                done, _ = await asyncio.wait(
                    waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
                self._drained = None
            if drained not in done:
                outcome = "interrupted" if done else "timeout"
        log.warning(
            "event=drain_done outcome=%s active=%d seconds=%.1f",
            outcome,
            len(self.calls),
            self.loop.time() - started,
        )
        return outcome

    def start_drain(self, timeout: float) -> None:
        """The drain's first step, at once (from the signal handler: no INVITE in the
        same turn of the loop is taken any more); :meth:`drain` waits for its end."""
        if self._drain_started is not None:
            return
        self._drain_started = self.loop.time()
        self._start_draining()
        log.warning("event=drain_started active=%d timeout=%g", len(self.calls), timeout)

    def _start_draining(self) -> None:
        if not self.draining:
            self.draining = True
            self.metrics.draining.set(1)
            self._update_busy()

    async def stop(self) -> None:
        """Refuse new calls, hang up the active ones, write their records, close."""
        self._start_draining()
        for call in list(self.calls.values()):
            call.on_shutdown()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        while self._tasks and self.loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - self.loop.time())
        # Give our BYEs a moment to be retransmitted/answered.
        while self.ua.active_calls and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._stopping = True
        await self.registration_sync.unregister()
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep_task
        await self.recordings.close()  # recordings of calls that never reached their end
        await self.registration_sync.wait_written()  # the un-REGISTERs' answers
        # The last records: into the store, or the spool when it does not take them.
        await self.records.close(max(0.5, deadline - self.loop.time()))
        # The refresh ran until now: its heartbeat says "draining" while calls end, so a
        # drain longer than --instance-timeout does not look like a dead instance.
        if self._trunk_task is not None:
            self._trunk_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trunk_task
        await self.instance.stop(SHUTDOWN_GRACE)  # every record written: a clean exit
        if self._timer is not None:
            self._timer.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.media_clock.close()
        self.streams.close()
        if self._transport is not None:
            self._transport.close()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 5)
        await self.db.close()


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: signals stay ours (serve() ends it via should_exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ShutdownRequests:
    """What SIGTERM and SIGINT ask of :func:`serve`: the first one a drain (with a
    ``drain_timeout`` of 0, a stop), any further one a stop at once. :func:`serve` makes
    :meth:`received` the handler of both signals; tests call it directly."""

    drain_timeout: float
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0
    # Set by serve() once the server runs: the drain starts in the signal handler itself.
    on_drain: Callable[[float], None] | None = None

    def received(self, sig: int) -> None:
        self.count += 1
        name = signal.Signals(sig).name
        if self.count == 1 and self.drain_timeout > 0:
            # Ctrl-C in a terminal drains too (a call may be up); the user is told how
            # to stop at once.
            hint = ": press Ctrl-C again to stop at once" if sig == signal.SIGINT else ""
            log.warning("event=signal signal=%s action=drain%s", name, hint)
            self.drain.set()
            if self.on_drain is not None:
                self.on_drain(self.drain_timeout)
        else:
            log.warning("event=signal signal=%s action=stop", name)
            self.stop.set()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def serve(settings: ServeSettings, requests: ShutdownRequests | None = None) -> None:
    """Run the server until SIGTERM/SIGINT (or ``requests``): the first drains (new calls
    get 503, the calls up go on for at most ``settings.drain_timeout`` seconds), a second
    stops at once; then the calls left are hung up and every record is written."""
    shutdown = requests or ShutdownRequests(settings.drain_timeout)
    loop = asyncio.get_running_loop()
    # Before start(): a signal during start-up must still stop the server cleanly.
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, shutdown.received, sig)
            installed.append(sig)
    try:
        server = SipBridgeServer(settings)
        await server.start()
        shutdown.on_drain = server.start_drain
        try:
            await _first_of(shutdown.drain, shutdown.stop)
            if not shutdown.stop.is_set():
                await server.drain(settings.drain_timeout, shutdown.stop)
        finally:
            log.info("shutting down calls=%d", len(server.calls))
            await server.stop()
            log.info("stopped")
    finally:
        shutdown.on_drain = None
        for number in installed:
            loop.remove_signal_handler(number)


def run(settings: ServeSettings) -> None:
    """Entry point of ``sipbridge serve``: logging, uvloop, and the event loop."""
    # One line per record, control characters escaped; text or JSON; levels per component.
    setup_logging(
        settings.log_level, log_format=settings.log_format, levels=dict(settings.log_levels)
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


def _access_cidrs(trunk: TrunkRecord) -> list[str]:
    """The networks a trunk's calls may come from: its allowed CIDRs and, when it
    registers with a registrar given as an address, that address (the registrar sends
    the calls for our binding)."""
    cidrs = list(trunk.allowed_cidrs)
    if trunk.register and trunk.host:
        network = registrar_network(trunk.host)
        if network is not None:
            cidrs.append(network)
    return cidrs
