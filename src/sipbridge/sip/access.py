"""Who may call: the trunk a request comes from, or nobody (sans-I/O).

:class:`AccessPolicy` holds the configured trunks and a
:class:`~sipbridge.sip.auth.DigestAuthenticator`. The UA core asks it about every request
that does not belong to a call already admitted (see ``UserAgent``):

* :meth:`AccessPolicy.knows` — may this source address get any answer at all? (Used for
  requests that do not parse and requests that start nothing, e.g. OPTIONS pings.)
* :meth:`AccessPolicy.check` — the verdict on a request: :class:`Allowed` (from which
  trunk), :class:`Challenged` (answer 401 with these headers) or :class:`Refused`
  (answer :attr:`AccessPolicy.refuse_status`, or nothing when it is None).

The rules:

* A trunk has allowed networks (CIDRs), credentials (username and password), or both.
* CIDRs only: a source inside them is that trunk. Credentials only: an INVITE that
  passes digest authentication for that username is that trunk, from anywhere. Both: the
  source must be inside the CIDRs *and* the INVITE must authenticate.
* A trunk with neither matches nothing.
* Only INVITE (which starts a call) is ever challenged. Other requests that start no
  call (OPTIONS pings, stray BYEs, unknown methods) are answered only for sources inside
  some trunk's CIDRs, or when they carry valid credentials; everyone else gets nothing,
  so a scanner probing with OPTIONS learns nothing.
* No trunk at all: only 127.0.0.1 and ::1 are let in (not the rest of 127.0.0.0/8:
  exactly what ``serve`` says at start).
* When several open (CIDR-only) trunks hold the source, the most specific network wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipbridge.sip.auth import AuthResult, Credentials, DigestAuthenticator, find_credentials
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.guard import DEFAULT_TRUNK_MESSAGE_RATE
from sipbridge.sip.message import Request, Uri

__all__ = [
    "AccessDecision",
    "AccessPolicy",
    "Allowed",
    "Challenged",
    "Network",
    "Refused",
    "TrunkAccess",
    "parse_address",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)
# Methods that start a call and so may be challenged (RFC 3261 §22.1: a UAS may
# challenge any request; we only do it where a call would start).
CHALLENGED_METHODS = frozenset({"INVITE"})


@dataclass(frozen=True)
class TrunkAccess:
    """What the policy needs to know of one trunk."""

    name: str
    networks: tuple[Network, ...] = ()
    username: str | None = None
    password: str | None = None
    # Messages per second its networks may send (sip/guard.py); 0: no limit; None: the
    # guard's DEFAULT_TRUNK_MESSAGE_RATE.
    max_message_rate: float | None = None

    @classmethod
    def from_cidrs(
        cls,
        name: str,
        cidrs: Iterable[str],
        username: str | None = None,
        password: str | None = None,
        max_message_rate: float | None = None,
    ) -> TrunkAccess:
        """Build from CIDR text (host bits allowed: ``10.0.0.1/24`` is ``10.0.0.0/24``);
        ValueError for text that is not a network."""
        networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)
        return cls(name, networks, username, password, max_message_rate)

    @property
    def has_credentials(self) -> bool:
        return bool(self.username) and self.password is not None

    def holds(self, address: IpAddress) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Allowed:
    """The request may go on; ``trunk`` is None for loopback with no trunk configured."""

    trunk: str | None


@dataclass(frozen=True)
class Challenged:
    """Answer 401 with ``headers`` (WWW-Authenticate). ``reason`` says why, for logs:
    ``auth_required`` (no credentials), ``auth_failed`` (wrong ones), ``auth_stale``,
    ``auth_replayed``."""

    headers: list[tuple[str, str]]
    reason: str


@dataclass(frozen=True)
class Refused:
    """Nobody we know: answer :attr:`AccessPolicy.refuse_status` or nothing."""

    reason: str = "unknown_source"


AccessDecision = Allowed | Challenged | Refused


def parse_address(host: str) -> IpAddress | None:
    """``host`` as an IP address (IPv4-mapped IPv6 taken as IPv4); None if it is not one."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class AccessPolicy:
    """The trunks and the verdicts. See the module docstring for the rules.

    ``refuse_status`` is None to drop requests from unknown sources without an answer
    (the default: scanners learn nothing), or a status such as 403 to answer them.
    Call :meth:`set_trunks` whenever the configured trunks change.
    """

    authenticator: DigestAuthenticator
    refuse_status: int | None = None
    _trunks: tuple[TrunkAccess, ...] = field(default=(), init=False)

    def set_trunks(self, trunks: Iterable[TrunkAccess]) -> None:
        self._trunks = tuple(trunks)

    @property
    def trunks(self) -> tuple[TrunkAccess, ...]:
        return self._trunks

    def knows(self, host: str) -> bool:
        """True when ``host`` is inside some trunk's networks (or is loopback while no
        trunk is configured): such a source gets answers even to requests that start
        nothing or do not parse."""
        address = parse_address(host)
        if address is None:
            return False
        if not self._trunks:
            return any(address in network for network in LOOPBACK)
        return any(trunk.holds(address) for trunk in self._trunks)

    def message_rate(self, host: str) -> float | None:
        """The messages per second ``host`` may send when it is inside a trunk's networks:
        that of the trunk with the most specific network holding it (0: no limit), else
        None (the guard's limit for unknown sources; loopback with no trunk too)."""
        address = parse_address(host)
        if address is None:
            return None
        best: TrunkAccess | None = None
        best_prefix = -1
        for trunk in self._trunks:
            for network in trunk.networks:
                if address in network and network.prefixlen > best_prefix:
                    best, best_prefix = trunk, network.prefixlen
        if best is None:
            return None
        if best.max_message_rate is None:
            return DEFAULT_TRUNK_MESSAGE_RATE
        return best.max_message_rate

    def check(self, request: Request, host: str, now: float) -> AccessDecision:
        """The verdict on ``request`` from ``host``, a request that belongs to no call yet."""
        address = parse_address(host)
        if address is None:
            return Refused()
        if not self._trunks:
            if any(address in network for network in LOOPBACK):
                return Allowed(None)
            return Refused()
        open_trunk = self._open_trunk(address)
        if open_trunk is not None:
            return Allowed(open_trunk.name)
        candidates = [
            t for t in self._trunks if t.has_credentials and (not t.networks or t.holds(address))
        ]
        credentials = find_credentials(
            request.headers.get_lines("Authorization"), self.authenticator.realm
        )
        challengeable = request.method in CHALLENGED_METHODS and bool(candidates)
        if credentials is None:
            if challengeable:
                return self._challenge(now, "auth_required")
            if request.method not in CHALLENGED_METHODS and self.knows(host):
                return Allowed(self._any_trunk(address))
            return Refused()
        outcome = self._authenticate(credentials, request, candidates, now)
        if isinstance(outcome, TrunkAccess):
            return Allowed(outcome.name)
        if request.method not in CHALLENGED_METHODS:
            # Credentials that fail on a request that starts nothing: answer it only
            # if the source is known anyway, never with a challenge.
            return Allowed(self._any_trunk(address)) if self.knows(host) else Refused("auth_failed")
        if not candidates:
            return Refused("auth_failed")  # credentials, but no trunk they could be for
        if outcome is AuthResult.STALE:
            return self._challenge(now, "auth_stale", stale=True)
        if outcome is AuthResult.REUSED:
            return self._challenge(now, "auth_replayed")
        return self._challenge(now, "auth_failed")

    # ------------------------------------------------------------------ helpers

    def _open_trunk(self, address: IpAddress) -> TrunkAccess | None:
        """The CIDR-only trunk with the most specific network holding ``address``."""
        best: TrunkAccess | None = None
        best_prefix = -1
        for trunk in self._trunks:
            if trunk.has_credentials:
                continue
            for network in trunk.networks:
                if address in network and network.prefixlen > best_prefix:
                    best, best_prefix = trunk, network.prefixlen
        return best

    def _any_trunk(self, address: IpAddress) -> str | None:
        for trunk in self._trunks:
            if trunk.holds(address):
                return trunk.name
        return None

    def _authenticate(
        self,
        credentials: Credentials,
        request: Request,
        candidates: list[TrunkAccess],
        now: float,
    ) -> TrunkAccess | AuthResult:
        """The trunk the credentials authenticate, else the best failure seen (STALE
        over REUSED over FAILED: a client with the right password learns why)."""
        if not _same_uri(credentials.uri, request.uri):
            return AuthResult.FAILED
        worst_to_best = (AuthResult.FAILED, AuthResult.REUSED, AuthResult.STALE)
        found = AuthResult.FAILED
        for trunk in candidates:
            if trunk.username != credentials.username or trunk.password is None:
                continue
            result = self.authenticator.verify(
                credentials, method=request.method, password=trunk.password, now=now
            )
            if result is AuthResult.OK:
                return trunk
            if worst_to_best.index(result) > worst_to_best.index(found):
                found = result
        return found

    def _challenge(self, now: float, reason: str, *, stale: bool = False) -> Challenged:
        return Challenged(self.authenticator.challenge(now, stale=stale), reason)


def _same_uri(digest_uri: str, request_uri: Uri) -> bool:
    """RFC 7616 §3.4.6: the digest-uri names the Request-URI. Compared on scheme and
    host, and on the user part when the digest-uri has one: a port or parameters added
    on the way do not matter, and a UAC that authenticates the domain (SIPp uses
    ``sip:host:port``) still gets in, but credentials for another number do not."""
    try:
        uri = Uri.parse(digest_uri.strip())
    except SipParseError:
        return False
    if uri.user is not None and uri.user != request_uri.user:
        return False
    return (uri.scheme, uri.host.lower()) == (request_uri.scheme, request_uri.host.lower())
