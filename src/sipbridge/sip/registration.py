"""Outbound registration of our contact with a trunk's registrar (RFC 3261 §10), sans-I/O.

:class:`RegistrationClient` is one trunk's REGISTER client; :class:`Registrations` holds
one per registering trunk and is what the UA core drives (``UserAgent.registrations``).
Nothing here reads the clock or opens a socket: ``now`` comes with every call, requests
are queued as ``(bytes, address)`` for the runtime to send (a
:class:`~sipbridge.sip.framing.StreamAddress` for TCP and TLS), and the next deadline is
:meth:`Registrations.get_timer`. The caller does this:

1. :meth:`Registrations.configure` with the registering trunks at start and whenever
   they change (a new trunk registers at once, a removed one un-registers);
2. every response that matches no transaction of the UA core goes to
   :meth:`Registrations.receive_response`; :meth:`Registrations.handle_timer` when
   :meth:`Registrations.get_timer` is due;
3. after each of those, send :meth:`Registrations.datagrams_to_send` and handle
   :meth:`Registrations.events` (log lines, metrics);
4. at shutdown :meth:`Registrations.unregister_all` (REGISTER with ``Expires: 0``), then
   feed responses and timers until :attr:`Registrations.idle` or a short bound.

Behaviour (docs/operations.md, "Registration"):

* Call-ID and From tag are fixed for the client's life, CSeq increases with every
  request (RFC 3261 §10.2); the Contact is ``sip:<username>@<our address>`` with the
  trunk's transport, so calls to it carry the registered user in the Request-URI.
* Transactions (retransmissions over UDP, Timer F) are
  :class:`~sipbridge.sip.transaction.NonInviteClientTransaction`.
* 401/407 are answered once per challenge with digest credentials (MD5 or SHA-256,
  qop=auth with cnonce and nonce-count); a challenge to a request that already carried
  credentials for that realm is a refusal of them unless it says ``stale=true``. Later
  requests reuse the last challenge with the next nonce-count, saving a round trip.
* 2xx: registered for the expiry the registrar granted (our Contact's ``expires`` in
  the 200, else its Expires header, else what we asked); refreshed at half of it.
* 423: asked again at once with the Min-Expires the registrar wants (up to a day).
* Any other failure (or a timeout) is retried after a back-off with ±20 % jitter:
  :func:`backoff`.
"""

from __future__ import annotations

import enum
import ipaddress
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sipbridge.sip.auth import Challenge, authorization, pick_challenge
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request, Response
from sipbridge.sip.transaction import (
    Address,
    NonInviteClientState,
    NonInviteClientTransaction,
    TransactionOutcome,
)
from sipbridge.sip.uri import Uri

__all__ = [
    "DEFAULT_EXPIRES",
    "MIN_EXPIRES",
    "RegistrarTarget",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationEvent",
    "RegistrationState",
    "RegistrationStatus",
    "Registrations",
    "backoff",
    "parse_registrar",
    "registrar_network",
]

DEFAULT_EXPIRES = 3600  # what we ask for (RFC 3261 §10.2.1.1 leaves it to the UA)
MIN_EXPIRES = 60  # RFC 3261 §10.2.8: registrars refuse less than an hour by default; 60 s
MAX_EXPIRES = 86400  # a 423 asking for more than a day is a failure, not a retry
REFRESH_SHARE = 0.5  # refresh at half the granted expiry
MIN_REFRESH = 1.0  # but not sooner than this (seconds)
MAX_CHALLENGES = 3  # challenges answered per attempt, at most
JITTER = 0.2  # back-offs vary by ±20 %

# Back-offs (seconds): first delay, cap; doubling with each failure in a row.
BACKOFF_SHORT = (30.0, 900.0)  # timeouts, 408, 5xx, 6xx: the registrar may come back soon
BACKOFF_OTHER = (60.0, 900.0)  # other 4xx (a request it did not like)
BACKOFF_LONG = (300.0, 3600.0)  # 401/407 refused credentials, 403, 404: needs an operator
LONG_STATUSES = frozenset({401, 403, 404, 407})
MAX_RETRY_AFTER = 3600.0


class RegistrationState(enum.Enum):
    REGISTERING = "registering"  # a REGISTER is out and no binding is known to hold
    REGISTERED = "registered"  # the registrar holds our binding (until registered_until)
    FAILING = "failing"  # the last attempt failed; the next one is at next_attempt
    UNREGISTERING = "unregistering"  # the Expires: 0 REGISTER is out (shutdown, removal)
    UNREGISTERED = "unregistered"  # no binding and none asked for


@dataclass(frozen=True, slots=True)
class RegistrarTarget:
    """Where a trunk's ``host`` says to register: host (name or address, no brackets),
    port (None: 5060, or 5061 for TLS) and transport."""

    host: str
    port: int | None
    transport: Transport

    @property
    def address(self) -> Address:
        """Where requests go: a (host, port) for UDP, a StreamAddress for TCP/TLS."""
        port = self.port or (5061 if self.transport is Transport.TLS else 5060)
        if self.transport is Transport.UDP:
            return (self.host, port)
        return StreamAddress(self.host, port, self.transport, target=(self.host, port))

    def uri(self, user: str | None = None) -> str:
        """``sip:[user@]host[:port][;transport=tcp|tls]`` (RFC 3261 §10.2: the Request-URI
        names the registrar's domain; the AOR adds the user and drops the port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if user is not None:
            return f"sip:{user}@{host}"
        port = f":{self.port}" if self.port is not None else ""
        param = "" if self.transport is Transport.UDP else f";transport={self.transport.name}"
        return f"sip:{host}{port}{param.lower()}"


def parse_registrar(host: str) -> RegistrarTarget:
    """A trunk's ``host`` (``host``, ``host:port``, ``[v6]:port``, each optionally followed
    by ``;transport=udp|tcp|tls``) as a :class:`RegistrarTarget`; ValueError when it is
    none of those (the store validates it first)."""
    text, _, param = host.strip().partition(";")
    transport = Transport.UDP
    if param:
        name, _, value = param.partition("=")
        known = value.strip().upper() in ("UDP", "TCP", "TLS")
        if name.strip().lower() != "transport" or not known:
            raise ValueError(f"{host!r}: only ;transport=udp, tcp or tls may follow the host")
        transport = Transport[value.strip().upper()]
    try:
        uri = Uri.parse(f"sip:{text}")
    except SipParseError:
        raise ValueError(f"{host!r} is not a host, host:port or [IPv6]:port") from None
    if not uri.host or uri.user is not None or uri.params or uri.headers:
        raise ValueError(f"{host!r} is not a host, host:port or [IPv6]:port")
    return RegistrarTarget(uri.host, uri.port, transport)


def registrar_network(host: str) -> str | None:
    """The registrar's address as a network (``192.0.2.10/32``) when a registering trunk's
    ``host`` is an IP address: the calls for our binding come from there, and are that
    trunk's. None for a host name (its networks must be the trunk's allowed CIDRs) or a
    ``host`` that does not parse."""
    try:
        registrar = parse_registrar(host)
    except ValueError:
        return None
    try:
        address = ipaddress.ip_address(registrar.host)
    except ValueError:
        return None
    return f"{address}/{address.max_prefixlen}"


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """One trunk's registration: its registrar, credentials and our contact address
    (advertised host and port for the trunk's transport)."""

    trunk: str
    registrar: RegistrarTarget
    username: str
    password: str | None
    contact_host: str
    contact_port: int
    expires: int = DEFAULT_EXPIRES


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """What an operator sees of one trunk's registration; times are the caller's clock
    (``now``), None when unknown or not due."""

    state: RegistrationState
    registered_until: float | None
    last_status: int | None  # the last final status (None: none yet, or a timeout)
    last_reason: str  # ``ok``, ``timeout``, ``auth_failed``, the reason phrase...
    next_attempt: float | None  # the next REGISTER (refresh or retry)
    failures: int  # failed attempts in a row


@dataclass(frozen=True, slots=True)
class RegistrationEvent:
    """An attempt ended: ``outcome`` is ``ok`` (``expires`` granted), ``failed`` (retry in
    ``retry_in`` seconds) or ``unregistered``."""

    trunk: str
    outcome: str
    status: int | None
    reason: str
    expires: int | None = None
    retry_in: float | None = None


def backoff(
    failures: int, status: int | None, rand: float, retry_after: int | None = None
) -> float:
    """Seconds before the next attempt after ``failures`` failed ones in a row, the last
    with ``status`` (None: a timeout); ``rand`` in [0, 1) draws the ±20 % jitter.

    Timeouts, 408, 5xx and 6xx: 30 s doubling to 15 min. 401/407 (credentials refused),
    403 and 404: 5 min doubling to 1 h (an operator must fix the account; hammering a
    provider with bad credentials gets the address banned). Other statuses: 1 min
    doubling to 15 min. A Retry-After (RFC 3261 §20.33) is honoured up to an hour when it
    asks for longer.
    """
    if status is None or status == 408 or status >= 500:
        first, cap = BACKOFF_SHORT
    elif status in LONG_STATUSES:
        first, cap = BACKOFF_LONG
    else:
        first, cap = BACKOFF_OTHER
    delay: float = min(cap, first * 2.0 ** min(max(failures - 1, 0), 20))
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
    return delay * (1 - JITTER + 2 * JITTER * rand)


def _token() -> str:
    return secrets.token_hex(8)


class RegistrationClient:
    """One trunk's REGISTER client. See the module docstring for what the caller does;
    :meth:`start` sends the first REGISTER."""

    def __init__(
        self,
        config: RegistrationConfig,
        outbox: list[tuple[bytes, Address]],
        events: list[RegistrationEvent],
        *,
        new_token: Callable[[], str] = _token,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._outbox = outbox
        self._events = events
        self._new_token = new_token
        self._rand = rand
        self.call_id = f"{new_token()}{new_token()}"
        self.from_tag = new_token()
        self._cseq = secrets.randbelow(2**16)  # RFC 3261 §8.1.1.5: arbitrary, below 2**31
        self.state = RegistrationState.UNREGISTERED
        self.tx: NonInviteClientTransaction | None = None
        self.registered_until: float | None = None
        self.last_status: int | None = None
        self.last_reason = ""
        self.failures = 0
        self._next_at: float | None = None
        self._expires = max(MIN_EXPIRES, config.expires)  # what we ask for
        self._challenge: Challenge | None = None
        self._nc = 0
        self._challenges = 0  # challenges answered in this attempt
        self._sent_credentials = False  # the request out answers a challenge it got
        self._asked_expires = self._expires  # Expires of the request out
        self._destination = config.registrar.address

    # ------------------------------------------------------------------ driving

    @property
    def deadline(self) -> float | None:
        times = [t for t in (self._next_at, self.tx.deadline if self.tx else None) if t is not None]
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        """Nothing out and nothing planned: un-registered (or never registered)."""
        return self.tx is None and self.state is RegistrationState.UNREGISTERED

    @property
    def branch(self) -> str | None:
        return self.tx.request.vias[0].branch if self.tx is not None else None

    def status(self) -> RegistrationStatus:
        return RegistrationStatus(
            state=self.state,
            registered_until=self.registered_until,
            last_status=self.last_status,
            last_reason=self.last_reason,
            next_attempt=self._next_at,
            failures=self.failures,
        )

    def start(self, now: float) -> None:
        """Register now (at start, or when the trunk was added)."""
        self.state = RegistrationState.REGISTERING
        self._attempt(now)

    def unregister(self, now: float) -> None:
        """Remove our binding (``Expires: 0``, RFC 3261 §10.2.2). Nothing is sent when no
        binding can exist (no 2xx ever came, and no REGISTER is out)."""
        self._next_at = None
        if self.state is RegistrationState.UNREGISTERING:
            return
        maybe_bound = self.registered_until is not None and self.registered_until > now
        if not maybe_bound and self.tx is None:
            self.state = RegistrationState.UNREGISTERED
            return
        self.state = RegistrationState.UNREGISTERING
        self._challenges = 0
        self._send(now, expires=0)

    def handle_timer(self, now: float) -> None:
        tx = self.tx
        if tx is not None:
            tx.on_timer(now)
            if tx.state is NonInviteClientState.TERMINATED:
                self.tx = None
                if tx.outcome is TransactionOutcome.TIMEOUT:
                    self._failed(now, None, "timeout")
        if self._next_at is not None and now >= self._next_at:
            self._next_at = None
            if self.state is not RegistrationState.REGISTERED:
                self.state = RegistrationState.REGISTERING
            self._attempt(now)

    def connection_failed(
        self, transport: Transport, host: str, port: int, reason: str, now: float
    ) -> None:
        """See :meth:`Registrations.connection_failed`."""
        destination = self._destination
        if (
            self.tx is None
            or not isinstance(destination, StreamAddress)
            or (destination.transport, destination.target) != (transport, (host, port))
        ):
            return
        self.tx = None
        self._failed(now, None, reason)

    def matches(self, response: Response) -> bool:
        return (
            self.tx is not None
            and response.vias[0].branch == self.branch
            and response.call_id == self.call_id
            and response.cseq.method == "REGISTER"
        )

    def receive_response(self, response: Response, now: float) -> None:
        """A response to our REGISTER (:meth:`matches` said so)."""
        tx = self.tx
        if tx is None or not tx.receive_response(response, now):
            return  # provisional, or a retransmitted final response
        self.tx = None  # a retransmission of this final response is dropped unmatched
        status = response.status
        if self.state is RegistrationState.UNREGISTERING:
            if status in (401, 407) and self._answer_challenge(response, now, expires=0):
                return
            self.registered_until = None
            self._record(status, "ok" if status < 300 else response.reason)
            self.state = RegistrationState.UNREGISTERED
            self._events.append(
                RegistrationEvent(self.config.trunk, "unregistered", status, self.last_reason)
            )
            return
        if 200 <= status < 300:
            self._registered(response, now)
        elif status in (401, 407):
            if not self._answer_challenge(response, now, expires=self._expires):
                self._failed(now, status, "auth_failed")
        elif status == 423:
            wanted = _int_header(response.headers, "Min-Expires")
            if wanted is None or wanted > MAX_EXPIRES or wanted <= self._asked_expires:
                self._failed(now, status, "interval_too_brief")
            else:
                self._expires = wanted  # RFC 3261 §10.2.8: ask again with at least that
                self._send(now, expires=wanted)
        elif status >= 300:
            retry_after = _int_header(response.headers, "Retry-After")
            self._failed(now, status, response.reason, retry_after)

    # ------------------------------------------------------------------ outcomes

    def _attempt(self, now: float) -> None:
        self._challenges = 0
        self._send(now, expires=self._expires)

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted_expires(response)
        if granted <= 0:
            self._failed(now, response.status, "binding_not_kept")
            return
        self.registered_until = now + granted
        # A registrar granting a second or two must not make us send REGISTERs in a loop.
        self._next_at = now + max(MIN_REFRESH, granted * REFRESH_SHARE)
        self.state = RegistrationState.REGISTERED
        self.failures = 0
        self._record(response.status, "ok")
        self._events.append(
            RegistrationEvent(self.config.trunk, "ok", response.status, "ok", expires=granted)
        )

    def _failed(
        self, now: float, status: int | None, reason: str, retry_after: int | None = None
    ) -> None:
        self.failures += 1
        self._record(status, reason)
        if self.state is RegistrationState.UNREGISTERING:
            self.registered_until = None
            self.state = RegistrationState.UNREGISTERED
            self._events.append(
                RegistrationEvent(self.config.trunk, "unregistered", status, reason)
            )
            return
        delay = backoff(self.failures, status, self._rand(), retry_after)
        self._next_at = now + delay
        self.state = RegistrationState.FAILING
        if self.registered_until is not None and self.registered_until <= now:
            self.registered_until = None
        self._events.append(
            RegistrationEvent(self.config.trunk, "failed", status, reason, retry_in=delay)
        )

    def _record(self, status: int | None, reason: str) -> None:
        self.last_status = status
        self.last_reason = reason

    def _granted_expires(self, response: Response) -> int:
        """RFC 3261 §10.2.4: our Contact's ``expires`` in the 200, else its Expires
        header, else what we asked for."""
        ours = self._contact_uri()
        try:
            contacts = response.contacts
        except SipParseError:
            contacts = []
        for contact in contacts:
            uri = contact.uri
            if (uri.user, uri.host.lower(), uri.port) == (
                ours.user,
                ours.host.lower(),
                ours.port,
            ):
                value = contact.params.get("expires")
                if value is not None and value.strip().isdigit():
                    return int(value)
        header = _int_header(response.headers, "Expires")
        return header if header is not None else self._asked_expires

    def _answer_challenge(self, response: Response, now: float, *, expires: int) -> bool:
        """Send the request again with credentials for the response's challenge; False
        when it cannot or must not be answered (no password, nothing usable, our
        credentials refused, too many challenges)."""
        challenge = pick_challenge(
            response.headers.get_lines("WWW-Authenticate"),
            response.headers.get_lines("Proxy-Authenticate"),
        )
        if challenge is None or self.config.password is None:
            return False
        refused = (
            self._sent_credentials
            and self._challenge is not None
            and self._challenge.realm == challenge.realm
            and not challenge.stale
        )
        self._challenges += 1
        if refused or self._challenges > MAX_CHALLENGES:
            return False
        self._challenge = challenge
        self._nc = 0
        self._send(now, expires=expires, answering=True)
        return True

    # ------------------------------------------------------------------ the request

    def _contact_uri(self) -> Uri:
        config = self.config
        host = config.contact_host
        text = f"sip:{config.username}@{f'[{host}]' if ':' in host else host}:{config.contact_port}"
        transport = config.registrar.transport
        if transport is not Transport.UDP:
            text += f";transport={transport.name.lower()}"
        return Uri.parse(text)

    def _send(self, now: float, *, expires: int, answering: bool = False) -> None:
        config = self.config
        target = config.registrar
        self._cseq += 1
        request_uri = target.uri()
        host = config.contact_host
        via_host = f"[{host}]" if ":" in host else host
        headers = Headers()
        headers.add(
            "Via",
            f"SIP/2.0/{target.transport.value} {via_host}:{config.contact_port}"
            f";branch=z9hG4bK{self._new_token()};rport",
        )
        headers.add("Max-Forwards", "70")
        aor = target.uri(config.username)
        headers.add("From", f"<{aor}>;tag={self.from_tag}")
        headers.add("To", f"<{aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        contact = f"<{self._contact_uri()}>"
        headers.add("Contact", f"{contact};expires=0" if expires == 0 else contact)
        headers.add("Expires", str(expires))
        self._sent_credentials = answering
        if self._challenge is not None and config.password is not None:
            # RFC 7616 §3.4: a nonce may be reused with the next nonce-count; a registrar
            # that does not take it challenges again (stale=true or a new nonce).
            self._nc += 1
            headers.add(
                self._challenge.answer_header,
                authorization(
                    self._challenge,
                    username=config.username,
                    password=config.password,
                    method="REGISTER",
                    uri=request_uri,
                    nc=self._nc,
                    cnonce=self._new_token(),
                ),
            )
        headers.add("Content-Length", "0")
        request = Request("REGISTER", Uri.parse(request_uri), headers)
        self._asked_expires = expires
        self.tx = NonInviteClientTransaction(request, self._destination, self._outbox, now)


def _int_header(headers: Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.split(";", 1)[0].strip()  # Retry-After may carry a comment or params
    text = text.split("(", 1)[0].strip()
    return int(text) if text.isdigit() and len(text) <= 10 else None


@dataclass
class Registrations:
    """Every registering trunk's :class:`RegistrationClient`. See the module docstring."""

    new_token: Callable[[], str] = _token
    rand: Callable[[], float] = random.random
    _outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    _events: list[RegistrationEvent] = field(default_factory=list)
    clients: dict[str, RegistrationClient] = field(default_factory=dict)
    # Clients of removed or changed trunks, until their un-REGISTER is answered.
    _leaving: list[RegistrationClient] = field(default_factory=list)

    def configure(self, configs: Iterable[RegistrationConfig], now: float) -> None:
        """The trunks that register now: new ones start, removed ones un-register, a
        changed one un-registers its old binding and registers anew."""
        wanted = {c.trunk: c for c in configs}
        for name, client in list(self.clients.items()):
            if wanted.get(name) != client.config:
                del self.clients[name]
                client.unregister(now)
                if not client.idle:
                    self._leaving.append(client)
        for name, config in wanted.items():
            if name not in self.clients:
                client = RegistrationClient(
                    config, self._outbox, self._events, new_token=self.new_token, rand=self.rand
                )
                self.clients[name] = client
                client.start(now)

    def status(self, trunk: str) -> RegistrationStatus | None:
        client = self.clients.get(trunk)
        return client.status() if client is not None else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._outbox[:]
        self._outbox.clear()  # transactions hold this very list
        return out

    def events(self) -> list[RegistrationEvent]:
        out = self._events[:]
        self._events.clear()  # clients hold this very list
        return out

    def _all(self) -> list[RegistrationClient]:
        return [*self.clients.values(), *self._leaving]

    def get_timer(self) -> float | None:
        deadlines = [d for c in self._all() if (d := c.deadline) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for client in self._all():
            deadline = client.deadline
            if deadline is not None and deadline <= now:
                client.handle_timer(now)
        self._prune()

    def receive_response(self, response: Response, now: float) -> bool:
        """True when ``response`` answers one of our REGISTERs."""
        for client in self._all():
            if client.matches(response):
                client.receive_response(response, now)
                self._prune()
                return True
        return False

    def connection_failed(
        self, transport: Transport, host: str, port: int, reason: str, now: float
    ) -> None:
        """The runtime could not open the TCP/TLS connection to ``host``:``port`` (refused,
        a TLS certificate that does not verify...): the REGISTERs waiting for it fail at
        once with ``reason`` (RFC 3261 §8.1.3.1), and are retried after the back-off."""
        for client in self._all():
            client.connection_failed(transport, host, port, reason, now)
        self._prune()

    def unregister_all(self, now: float) -> None:
        for client in self.clients.values():
            client.unregister(now)

    @property
    def idle(self) -> bool:
        """Nothing out: every client un-registered (or never registered)."""
        return all(client.idle for client in self._all())

    def destinations(self) -> list[Address]:
        """Where the registrations send (the runtime keeps those connections open)."""
        return [c.config.registrar.address for c in self.clients.values()]

    def _prune(self) -> None:
        self._leaving = [c for c in self._leaving if not c.idle]
