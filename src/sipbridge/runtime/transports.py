"""SIP over TCP and TLS (RFC 3261 §18): the listeners, the connection table and its limits.

Each connection frames its byte stream with :class:`~sipbridge.sip.framing.StreamFramer`
and hands every complete message to :meth:`SipBridgeServer.receive` (the one entry point
of received SIP, as for UDP) with the connection's
:class:`~sipbridge.sip.framing.StreamAddress` as the source. What the UA core queues for
a :class:`StreamAddress` comes back through :meth:`StreamTransports.send`, which finds
the connection in the table (RFC 3261 §18.2.2: responses on the request's connection;
our in-dialog BYE/REFER reuse it too), or opens a new one to the address's ``target``
when it is gone (§18.1.1).

Limits (docs/security.md, "Transports"): every accepted connection goes through
``SipBridgeServer.accept_connection``. The table holds at most
:attr:`StreamTransports.max_connections` (derived from the open-file limit:
:func:`connection_cap`); sources of no trunk nor proxy (``SipBridgeServer.knows_peer``) share at
most ``UNKNOWN_SHARE`` of it, so trunks always find a free slot, and their per-source cap
(``max_connections_per_source``) counts a whole /24 (IPv4) or /64 (IPv6) as one source
(:func:`source_group`): an attacker with many addresses in one network counts once. A
connection from such a source is closed when it sends no admitted request
(``UserAgent.receive_datagram``) within ``unknown_connection_timeout`` seconds of its
accept; a trunk's connection with no complete message (or keep-alive) for
``IDLE_TIMEOUT`` seconds is closed unless a call uses it, and one that starts a message
without finishing it within ``INCOMPLETE_TIMEOUT`` seconds is closed (slowloris). A
framing error answers 400 to a known source when the broken message was a request, then
closes the connection. Refused connections are logged once per source and minute, with
their count (:class:`RefusalLog`). The TLS listener is an accept loop of our own: a
connection is judged and counted before its handshake (:meth:`SipConnection.handshake`),
so handshakes hold slots like connections.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sipbridge.sip.access import parse_address
from sipbridge.sip.framing import FramingError, StreamAddress, StreamFramer, Transport

if TYPE_CHECKING:  # pragma: no cover
    from sipbridge.runtime.server import SipBridgeServer

log = logging.getLogger("sipbridge.transports")

Address = tuple[str, int]
ConnectionKey = tuple[Transport, str, int]

# Seconds without a complete message or keep-alive before an unused connection closes.
IDLE_TIMEOUT = 300.0
# Seconds a started message may take to arrive in full (slowloris).
INCOMPLETE_TIMEOUT = 10.0
# Connections of all sources together, at most; fewer when the open-file limit is low
# (connection_cap).
MAX_CONNECTIONS = 4096
# The share of the connection slots that sources matching no trunk may hold together:
# the rest is kept for trunks.
UNKNOWN_SHARE = 0.75
# Open files kept out of every count: listeners, the database pool, log files, the HTTP
# server's own connections.
FD_RESERVE = 64
# Unknown sources are counted per network of these prefix lengths (one /24 or /64 is
# usually one customer, one attacker).
UNKNOWN_PREFIX_V4 = 24
UNKNOWN_PREFIX_V6 = 64
# Refused connections are logged once per source and window (seconds), with a count; at
# most REFUSAL_LOG_SOURCES sources per window by name, the rest as ``source=others``.
REFUSAL_LOG_WINDOW = 60.0
REFUSAL_LOG_SOURCES = 1000
# Seconds for a TLS handshake, and for opening a connection of our own.
HANDSHAKE_TIMEOUT = 10.0
# Bytes queued for a peer that does not read before its connection is dropped.
MAX_WRITE_BUFFER = 1 << 20


def source_group(host: str) -> str:
    """The key an unknown source's connections are counted under: its /24 (IPv4,
    IPv4-mapped IPv6 included) or /64 (IPv6) network; ``host`` itself when it is not an
    address."""
    address = parse_address(host)
    if address is None:
        return host
    prefix = UNKNOWN_PREFIX_V4 if address.version == 4 else UNKNOWN_PREFIX_V6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def connection_cap(fd_limit: int) -> int:
    """The connection slots (TCP and TLS, handshakes included) for a process allowed
    ``fd_limit`` open files: half of what ``FD_RESERVE`` leaves, so the other half stays
    for RTP/RTCP sockets (two a call), and never more than ``MAX_CONNECTIONS``; at
    least 16."""
    return max(16, min(MAX_CONNECTIONS, (fd_limit - FD_RESERVE) // 2))


def raise_fd_limit(
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> int:
    """Raise the soft open-file limit (RLIMIT_NOFILE) to the hard one where allowed;
    the soft limit in force afterwards. An unlimited hard limit raises the soft one to
    ``MAX_CONNECTIONS * 16`` (the kernel refuses "unlimited")."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, MAX_CONNECTIONS * 16)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("event=fd_limit_not_raised soft=%d hard=%d error=%s", soft, hard, exc)
        return soft
    return target


class RefusalLog:
    """Refused connections counted per source and window (sans-I/O: ``now`` comes in).

    Call :meth:`refused` for each refusal; when it returns True a new window started:
    call :meth:`flush` at ``window_end`` and log what it returns (one line per source,
    with the count and the reasons)."""

    def __init__(self, window: float, max_sources: int) -> None:
        self.window = window
        self.max_sources = max_sources
        self.window_end: float | None = None
        self._counts: dict[str, collections.Counter[str]] = {}
        self._others: collections.Counter[str] = collections.Counter()

    def refused(self, source: str, reason: str, now: float) -> bool:
        started = self.window_end is None
        if started:
            self.window_end = now + self.window
        counts = self._counts.get(source)
        if counts is None:
            if len(self._counts) >= self.max_sources:
                self._others[reason] += 1
                return started
            counts = self._counts[source] = collections.Counter()
        counts[reason] += 1
        return started

    def flush(self) -> list[tuple[str, int, str]]:
        """(source, count, reasons as ``reason:count,...``) of the window, which ends."""
        lines = [
            (source, sum(counts.values()), _reasons(counts))
            for source, counts in self._counts.items()
        ]
        if self._others:
            lines.append(("others", sum(self._others.values()), _reasons(self._others)))
        self._counts = {}
        self._others = collections.Counter()
        self.window_end = None
        return lines


def _reasons(counts: collections.Counter[str]) -> str:
    return ",".join(f"{reason}:{n}" for reason, n in counts.most_common())


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The TLS server context: TLS 1.2 or later, our certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS client context for the connections we open (registrars, trunks): TLS 1.2
    or later, the peer's certificate verified against the system's CAs and ``ca_file``'s
    (``--tls-ca``), and its name or address checked against the host we connect to.
    ssl.SSLError or OSError when ``ca_file`` holds no usable certificate."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


def connect_error(exc: BaseException) -> str:
    """Why a connection of ours failed, in an operator's words (a registration's
    ``last_reason``): ``tls certificate verify failed: self-signed certificate``..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"tls handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connect failed: {exc.strerror}"
    return f"connect failed: {exc}"


class SipConnection(asyncio.Protocol):
    """One TCP or TLS connection: framing, keep-alive answers, timeouts."""

    def __init__(self, streams: StreamTransports, kind: Transport, *, outbound: bool = False):
        self.streams = streams
        self.kind = kind
        self.outbound = outbound
        self.address: StreamAddress | None = None
        self.framer = StreamFramer(streams.server.ua.max_message_size)
        self.transport: asyncio.Transport | None = None
        # Set at accept: whether the source matched a trunk (or loopback with no trunk),
        # the key its slot is counted under, and whether it sent an admitted request
        # (until then an unknown source has ``unknown_connection_timeout`` seconds).
        self.known = True
        self.group = ""
        self.admitted = True
        self.accepted_at = 0.0
        self.last_activity = 0.0
        self.incomplete_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._handshaking = False  # a TLS connection counted before its handshake ends

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TLS transport is no asyncio.Transport subclass
        # but has the same methods (write, abort, close, get_extra_info).
        transport = cast(asyncio.Transport, transport)
        if self.address is None:
            peer = transport.get_extra_info("peername")
            if not self.accept(str(peer[0]), int(peer[1])):
                transport.abort()
                return
        # else: a TLS connection accepted (and counted) before its handshake
        self._handshaking = False
        self.transport = transport
        self._arm()

    def accept(self, host: str, port: int) -> bool:
        """Judge and count a new connection from ``host`` (ours are not judged); False
        when it is refused (counted for the log)."""
        now = self.streams.loop.time()
        self.group = host
        if not self.outbound:
            refusal = self.streams.server.accept_connection(host)
            if refusal is not None:
                self.streams.refused(host, refusal, now)
                return False
            self.known = self.admitted = self.streams.server.knows_peer(host)
            if not self.known:
                self.group = source_group(host)
        self.address = StreamAddress(host, port, self.kind)
        self.streams.register(self)
        self.accepted_at = self.last_activity = now
        return True

    async def handshake(self, sock: socket.socket) -> None:
        """The server side of the TLS handshake on a connection :meth:`accept` took
        (within ``HANDSHAKE_TIMEOUT``, or the unknown-source timeout when shorter);
        :meth:`connection_made` follows when it succeeds."""
        streams = self.streams
        timeout = HANDSHAKE_TIMEOUT
        if not self.known:
            timeout = min(timeout, streams.server.settings.unknown_connection_timeout)
        self._handshaking = True
        try:
            await streams.loop.connect_accepted_socket(
                lambda: self, sock, ssl=streams.ssl_context, ssl_handshake_timeout=timeout
            )
        except Exception as exc:  # failed or timed out: the transport closed the socket
            log.info(
                "event=tls_handshake_failed source=%s error=%s",
                self.address[0] if self.address is not None else "-",
                (str(exc) or type(exc).__name__).replace(" ", "_")[:120],
            )
        finally:
            if self._handshaking:  # cancelled (shutdown) or failed
                self.streams.unregister(self)

    def data_received(self, data: bytes) -> None:
        address = self.address
        if address is None or self.transport is None:
            return
        try:
            messages, reply = self.framer.feed(data)
        except FramingError as exc:
            log.info(
                "event=framing_error transport=%s source=%s:%d reason=%s",
                self.kind.value,
                address[0],
                address[1],
                exc.reason.replace(" ", "_")[:120],
            )
            if exc.response is not None and self.streams.server.knows_peer(address[0]):
                self.transport.write(exc.response)
            self.close()
            return
        if reply:
            self.write(reply)
        if messages or reply:
            self.last_activity = self.streams.loop.time()
        if self.framer.pending:
            if self.incomplete_since is None:
                self.incomplete_since = self.streams.loop.time()
                self._arm()
        else:
            self.incomplete_since = None
        for message in messages:
            if self.streams.server.receive(message, address) is True:
                self.admitted = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.streams.unregister(self)
        self.transport = None

    # -- sending and closing ----------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.info("event=connection_dropped reason=peer_not_reading address=%s", self.address)
            transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close at once (a TLS handshake still running is cancelled by
        :meth:`StreamTransports.close` or its timeout)."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    # -- timeouts ---------------------------------------------------------------

    def _deadline(self) -> float:
        deadline = self.last_activity + IDLE_TIMEOUT
        if not self.admitted:
            deadline = min(deadline, self._unadmitted_deadline)
        if self.incomplete_since is not None:
            deadline = min(deadline, self.incomplete_since + INCOMPLETE_TIMEOUT)
        return deadline

    @property
    def _unadmitted_deadline(self) -> float:
        return self.accepted_at + self.streams.server.settings.unknown_connection_timeout

    def _arm(self) -> None:
        """One timer per connection; it re-checks when it fires, so it is only moved
        when a deadline comes earlier than the one it is set for."""
        deadline = self._deadline()
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = self.streams.loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def _timed_out(self, now: float, address: StreamAddress) -> str | None:
        if self.incomplete_since is not None and now >= self.incomplete_since + INCOMPLETE_TIMEOUT:
            return "incomplete_message"
        if now >= self.last_activity + IDLE_TIMEOUT:
            if not self.streams.in_use(address):
                return "idle"
            self.last_activity = now  # a long call's connection stays open
        return None

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing or self.address is None:
            return
        now = self.streams.loop.time()
        reason = None
        if not self.admitted and now >= self._unadmitted_deadline:
            if self.streams.server.knows_peer(self.address[0]):
                self.admitted = True  # a trunk added since its accept
            else:
                reason = "no_admitted_request"
        if reason is None:
            reason = self._timed_out(now, self.address)
        if reason is not None:
            log.info(
                "event=connection_timeout transport=%s source=%s:%d reason=%s",
                self.kind.value,
                self.address[0],
                self.address[1],
                reason,
            )
            self.close()
            return
        self._arm()


class StreamTransports:
    """The TCP and TLS listeners of a :class:`SipBridgeServer` and their connections."""

    def __init__(self, server: SipBridgeServer) -> None:
        self.server = server
        self.loop = server.loop
        self.connections: dict[ConnectionKey, SipConnection] = {}
        # Connections per source: per address for trunk sources, per /24 or /64 for the
        # others (source_group); and how many come from sources matching no trunk.
        self.per_source: dict[str, int] = {}
        self.unknown = 0
        # Set by the server from the open-file limit at start (connection_cap).
        self.max_connections = MAX_CONNECTIONS
        self.refusals = RefusalLog(REFUSAL_LOG_WINDOW, REFUSAL_LOG_SOURCES)
        self._refusal_timer: asyncio.TimerHandle | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: socket.socket | None = None
        self._tls_task: asyncio.Future[None] | None = None
        self._connecting: dict[ConnectionKey, list[bytes]] = {}
        # Connections we opened to a host *name* (a trunk's registrar), under that name:
        # the table knows them by the address they resolved to.
        self._by_name: dict[ConnectionKey, SipConnection] = {}
        self._handshakes: set[asyncio.Future[None]] = set()
        self._client_context: ssl.SSLContext | None = None

    async def listen_tcp(self, host: str, port: int) -> None:
        """Listen for TCP on ``port``, the UDP port's number (RFC 3261 section 18.2.1:
        a server listening on UDP listens on TCP on the same port); nothing without
        ``--tcp``. Raises OSError when the number is taken."""
        if self.server.settings.tcp:
            self._tcp = await self.loop.create_server(
                lambda: SipConnection(self, Transport.TCP),
                host,
                port,
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                reuse_address=True,
            )

    async def start(self, host: str) -> None:
        """Listen for TLS on the configured ``tls_port`` when a certificate is configured
        (TCP is ``listen_tcp``, opened with the UDP socket)."""
        settings = self.server.settings
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # At start, so that a --tls-ca without a certificate stops serve at once.
        self._client_context = client_ssl_context(settings.tls_ca)
        if settings.tls_cert is not None and settings.tls_key is not None:
            self.ssl_context = server_ssl_context(settings.tls_cert, settings.tls_key)
            # Our own accept loop: each connection is judged and counted at its accept,
            # before its handshake (SipConnection.handshake), so handshakes hold slots
            # like connections and a refused one costs no TLS work.
            listener = socket.create_server(
                (host.strip("[]"), settings.tls_port), family=family, backlog=1024
            )
            listener.setblocking(False)
            self._tls = listener
            self._tls_task = asyncio.ensure_future(self._accept_tls(listener))

    @property
    def tcp_address(self) -> Address | None:
        return _bound(self._tcp)

    @property
    def tls_address(self) -> Address | None:
        if self._tls is None:
            return None
        host, port = self._tls.getsockname()[:2]
        return str(host), int(port)

    async def _accept_tls(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, peer = await self.loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                log.warning("event=accept_failed transport=tls error=%s", exc)
                await asyncio.sleep(0.1)
                continue
            connection = SipConnection(self, Transport.TLS)
            if not connection.accept(str(peer[0]), int(peer[1])):
                sock.close()
                continue
            self.handshake(connection, sock)

    @property
    def total(self) -> int:
        return len(self.connections)

    @property
    def max_unknown(self) -> int:
        """The slots sources matching no trunk may hold together."""
        return int(self.max_connections * UNKNOWN_SHARE)

    def slot_refusal(self, host: str, known: bool, per_source: int) -> str | None:
        """Why a new connection from ``host`` finds no slot (None: it does): ``full``,
        ``unknown_share`` (the unknown sources' share is taken) or ``per_source`` (its
        address, or for an unknown source its /24 or /64, has ``per_source``)."""
        if self.total >= self.max_connections:
            return "full"
        if not known and self.unknown >= self.max_unknown:
            return "unknown_share"
        group = host if known else source_group(host)
        if self.per_source.get(group, 0) >= per_source:
            return "per_source"
        return None

    def register(self, connection: SipConnection) -> None:
        address = connection.address
        assert address is not None
        self.connections[(connection.kind, address[0], address[1])] = connection
        group = connection.group
        self.per_source[group] = self.per_source.get(group, 0) + 1
        if not connection.known:
            self.unknown += 1

    def unregister(self, connection: SipConnection) -> None:
        address = connection.address
        if address is None:
            return
        key = (connection.kind, address[0], address[1])
        if self.connections.get(key) is connection:
            del self.connections[key]
            group = connection.group
            left = self.per_source.get(group, 1) - 1
            if left > 0:
                self.per_source[group] = left
            else:
                self.per_source.pop(group, None)
            if not connection.known:
                self.unknown -= 1

    def handshake(self, connection: SipConnection, sock: socket.socket) -> None:
        """Run ``connection``'s TLS handshake (cancelled by :meth:`close`)."""
        task = asyncio.ensure_future(connection.handshake(sock))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def refused(self, host: str, reason: str, now: float) -> None:
        """Count a refused connection; the counts are logged when the window ends."""
        if self.refusals.refused(host, reason, now):
            end = self.refusals.window_end
            assert end is not None
            self._refusal_timer = self.loop.call_at(end, self.log_refusals)

    def log_refusals(self) -> None:
        """One INFO line per source that had connections refused in the window."""
        self._refusal_timer = None
        for source, count, reasons in self.refusals.flush():
            log.info(
                "event=connection_refused source=%s count=%d reasons=%s window=%ds",
                source,
                count,
                reasons,
                round(self.refusals.window),
            )

    def in_use(self, address: StreamAddress) -> bool:
        """True when an active call came in on this connection, or a registration uses it
        (the registrar may send calls for our binding on it: RFC 5626 §3)."""
        if any(call.sip_source == address for call in self.server.calls.values()):
            return True
        for destination in self.server.registrations.destinations():
            if isinstance(destination, StreamAddress) and destination.target is not None:
                connection = self._open_to((destination.transport, *destination.target))
                if connection is not None and connection.address == address:
                    return True
        return False

    def _open_to(self, key: ConnectionKey) -> SipConnection | None:
        """The open connection to ``key`` (an address, or a host name we connected to)."""
        connection = self.connections.get(key) or self._by_name.get(key)
        if connection is None or connection.closing:
            self._by_name.pop(key, None)
            return None
        return connection

    # -- sending ------------------------------------------------------------------

    def send(self, data: bytes, destination: StreamAddress) -> None:
        """Write to the destination's connection; when it is gone, to a connection to its
        ``target`` over the same transport, opened if need be (RFC 3261 §18.1.1)."""
        kind = destination.transport
        connection = self.connections.get((kind, destination[0], destination[1]))
        if connection is not None and not connection.closing:
            connection.write(data)
            return
        target = destination.target
        if target is None:
            # A response whose connection closed: RFC 3261 §18.2.2 would try the Via's
            # sent-by; the client's transaction retries or times out instead.
            log.info(
                "event=send_failed transport=%s destination=%s:%d reason=connection_gone",
                kind.value,
                destination[0],
                destination[1],
            )
            return
        key = (kind, target[0], target[1])
        connection = self._open_to(key)
        if connection is not None:
            connection.write(data)
            return
        queued = self._connecting.get(key)
        if queued is not None:
            queued.append(data)
            return
        self._connecting[key] = [data]
        self.server._spawn(self._connect(key))

    async def _connect(self, key: ConnectionKey) -> None:
        kind, host, port = key
        context: ssl.SSLContext | None = None
        if kind is Transport.TLS:
            if self._client_context is None:
                self._client_context = client_ssl_context(self.server.settings.tls_ca)
            context = self._client_context
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: SipConnection(self, kind, outbound=True),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning(
                "event=connect_failed transport=%s target=%s:%d error=%s",
                kind.value,
                host,
                port,
                exc,
            )
            self._connecting.pop(key, None)
            # What waited for the connection fails now, not at its transaction's timeout
            # (RFC 3261 §8.1.3.1: a transport error).
            self.server.connection_failed(kind, host, port, connect_error(exc))
            return
        pending = self._connecting.pop(key, [])
        log.info("event=connected transport=%s target=%s:%d", kind.value, host, port)
        if key not in self.connections:
            self._by_name[key] = protocol
        for data in pending:
            protocol.write(data)

    def drop(self, address: StreamAddress) -> None:
        """Close the connection at ``address`` at once (its source was banned)."""
        connection = self.connections.get((address.transport, address[0], address[1]))
        if connection is not None:
            log.info(
                "event=connection_closed transport=%s source=%s reason=banned",
                address.transport.value,
                address[0],
            )
            connection.abort()

    def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._tls_task is not None:
            self._tls_task.cancel()
        if self._tls is not None:
            self._tls.close()
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self.log_refusals()
        for task in list(self._handshakes):
            task.cancel()
        for connection in list(self.connections.values()):
            connection.abort()


def _bound(listener: asyncio.Server | None) -> Address | None:
    if listener is None or not listener.sockets:
        return None
    host, port = listener.sockets[0].getsockname()[:2]
    return str(host), int(port)
