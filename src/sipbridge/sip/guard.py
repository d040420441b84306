"""Flood and scanner defence: per-source rate limits and bans (sans-I/O).

What Kamailio's ``pike`` module and fail2ban do for a SIP server, built in. The runtime asks
:meth:`SourceGuard.admit` about every datagram *before* it is parsed: a banned source is
dropped at the cost of one dict lookup, and a source sending more than ``rate`` messages per
second (after a burst of ``burst``) is banned for ``ban_time`` seconds. The UA core and the
call layer report offences (:meth:`SourceGuard.offence`): repeated failed digest
authentication, INVITEs to unknown numbers in a burst, and scanner User-Agents
(:meth:`SourceGuard.is_scanner`), each banning the source once over its limit.

Trunk networks get their own, higher rate (:attr:`SourceGuard.source_rate`, from each
trunk's ``max_message_rate``, :data:`DEFAULT_TRUNK_MESSAGE_RATE` by default, 0 for none):
a carrier's signalling address carries every call of the trunk, so the per-source limit
for unknown addresses would throttle it at a few calls per second.

The requests that end or confirm a call the server holds (ACK, BYE, CANCEL) and the
responses to our own requests are never dropped by the rate limit: a dropped ACK or BYE
keeps a call up (and its agent connected) until a timer ends it. Only when a message is
over the limit, its first line is checked for these methods and its Call-ID matched
against the live calls of that very source (:attr:`SourceGuard.in_dialog`, the UA core's
:meth:`~sipbridge.sip.ua.UserAgent.in_dialog`); a match is admitted without taking a
token and counted (:attr:`SourceGuard.admitted_in_dialog`). Forged BYEs with made-up
Call-IDs meet the limit as anything else does; a live Call-ID earns a bounded number of
exemptions per call (``IN_DIALOG_EXEMPTIONS`` in ``sip/ua.py``). Bans are never bypassed.

Trusted sources are never banned automatically: the runtime passes a ``trusted(host)``
predicate (a trunk's allowed CIDRs). UDP source addresses can be forged, and a ban on a
carrier's address would stop every call; a trusted source over the rate only has its excess
dropped (:attr:`Admission.THROTTLED`). Manual bans (API, CLI) apply to everyone, and may be
networks (``203.0.113.0/24``) as well as single addresses.

New bans are queued for the runtime (:meth:`SourceGuard.take_new_bans`) to store, log and
count; bans stored by other instances or added by an operator come back through
:meth:`SourceGuard.load`. Times are the caller's monotonic clock (``now``); ``until`` is
None for a ban without end.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_TRUNK_MESSAGE_RATE",
    "Admission",
    "Ban",
    "BanReason",
    "GuardLimits",
    "Offence",
    "SourceGuard",
    "in_dialog_call_id",
    "normalize_ban_address",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Offences are counted over this window (seconds) for the per-minute limits.
OFFENCE_WINDOW = 60.0
# Rate buckets idle this long are forgotten by :meth:`SourceGuard.expire`.
IDLE_BUCKET = 60.0
# At most this many sources are tracked for rates and offences: spoofed floods from
# millions of addresses cannot grow memory without bound. Beyond it, new sources share
# no bucket and are only subject to bans (the oldest entries are evicted by ``expire``).
MAX_TRACKED_SOURCES = 100_000
# Messages per second from a trunk's networks when the trunk sets no ``max_message_rate``:
# 20 calls a second take about 140 (INVITE, ACK, BYE, their retransmissions, OPTIONS).
DEFAULT_TRUNK_MESSAGE_RATE = 1000.0
# A source with its own rate may save up this many seconds of it (its burst).
RATE_BURST_SECONDS = 2.0

# The first line of a message that may belong to a call we hold: ACK, BYE and CANCEL
# requests (RFC 3261 §17.2.3, §15.1.2, §9.2) and responses (to our BYE and REFER).
_IN_DIALOG_START = (b"ACK ", b"BYE ", b"CANCEL ", b"SIP/2.0 ")
# The Call-ID header, long or compact form (RFC 3261 §20.8, §7.3.3), in the header
# section; its value is compared with the live calls' exactly.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n", re.IGNORECASE)


def in_dialog_call_id(data: bytes) -> str | None:
    """The Call-ID of an ACK, BYE, CANCEL or response in ``data`` (raw, unparsed); None
    for anything else. One prefix test, then a scan of the header section only."""
    if not data.startswith(_IN_DIALOG_START):
        return None
    end = data.find(b"\r\n\r\n")
    match = _CALL_ID.search(data, 0, len(data) if end < 0 else end + 2)
    if match is None or not match.group(1):
        return None
    return match.group(1).decode("utf-8", "replace")


class BanReason(enum.StrEnum):
    FLOOD = "flood"
    AUTH_FAILURES = "auth_failures"
    UNKNOWN_NUMBERS = "unknown_numbers"
    SCANNER = "scanner"
    MANUAL = "manual"


class Offence(enum.Enum):
    AUTH_FAILURE = "auth_failure"
    UNKNOWN_NUMBER = "unknown_number"


class Admission(enum.Enum):
    ADMIT = "admit"
    BANNED = "banned"  # the source is banned: drop before parsing
    THROTTLED = "throttled"  # a trusted source over its rate: drop this one only


@dataclass(frozen=True)
class Ban:
    """One ban: an address or a network (``address`` as text), why, and until when
    (monotonic ``now`` of the guard; None: no end)."""

    address: str
    reason: str
    until: float | None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


@dataclass(frozen=True)
class GuardLimits:
    ban_time: float = 3600.0
    rate: float = 50.0  # messages per second, sustained
    burst: int = 100
    auth_failures: int = 5  # per OFFENCE_WINDOW
    unknown_numbers: int = 10  # per OFFENCE_WINDOW
    # Unanswered INVITEs one (untrusted) source may have open at once.
    transactions_per_source: int = 64
    scanner_user_agents: tuple[str, ...] = ()


def normalize_ban_address(text: str) -> str:
    """An address or network as stored: ``203.0.113.7`` or ``203.0.113.0/24`` (host bits
    cleared; a /32 or /128 is written as the single address). ValueError otherwise."""
    text = text.strip()
    if "/" in text:
        network = ipaddress.ip_network(text, strict=False)
        if network.num_addresses == 1:
            return normalize_ban_address(str(network.network_address))
        return str(network)
    address = ipaddress.ip_address(text.strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # ::ffff:192.0.2.1 is 192.0.2.1
    return str(address)


def _trust_nobody(host: str) -> bool:
    return False


def _no_own_rate(host: str) -> float | None:
    return None


def _no_calls(host: str, call_id: str) -> bool:
    return False


@dataclass
class SourceGuard:
    """Rate limits, offence counts and bans per source address. See the module docstring."""

    limits: GuardLimits = field(default_factory=GuardLimits)
    trusted: Callable[[str], bool] = _trust_nobody
    # host -> its own messages per second (a trunk's network), 0 for no limit; None: the
    # default ``limits.rate``. Asked once per source when its bucket is made; call
    # :meth:`reset_rates` when the answers change (trunks reloaded).
    source_rate: Callable[[str], float | None] = _no_own_rate
    # (host, Call-ID) -> True when a call from ``host`` with that Call-ID is live and may
    # take one more message past the rate limit (see the module docstring).
    in_dialog: Callable[[str, str], bool] = _no_calls
    # host -> until (None: forever). Exact addresses: one dict lookup per datagram.
    _hosts: dict[str, Ban] = field(default_factory=dict)
    _networks: list[tuple[Network, Ban]] = field(default_factory=list)
    # host -> [tokens, last refill time, rate, burst]: a list, updated in place (no
    # allocation per packet). rate 0: no limit.
    _buckets: dict[str, list[float]] = field(default_factory=dict)
    # (host, offence) -> [count, window start]
    _offences: dict[tuple[str, Offence], list[float]] = field(default_factory=dict)
    _new: list[Ban] = field(default_factory=list)
    # Bans made here and not yet confirmed stored: kept across :meth:`load`.
    _unsaved: dict[str, Ban] = field(default_factory=dict)
    dropped_banned: int = 0
    dropped_throttled: int = 0
    admitted_in_dialog: int = 0  # over the rate, admitted as part of a live call

    # ------------------------------------------------------------------ hot path

    def admit(self, host: str, now: float, data: bytes = b"") -> Admission:
        """The verdict on one datagram from ``host`` (``data``: the raw message, looked at
        only when it is over the rate), before any parsing."""
        ban = self._hosts.get(host)
        if ban is not None:
            if ban.until is None or ban.until > now:
                self.dropped_banned += 1
                return Admission.BANNED
            del self._hosts[host]
        if self._networks and self._in_banned_network(host, now):
            self.dropped_banned += 1
            return Admission.BANNED
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) < MAX_TRACKED_SOURCES:
                rate = self.source_rate(host)
                if rate is None:
                    rate, burst = self.limits.rate, float(self.limits.burst)
                else:
                    burst = max(rate * RATE_BURST_SECONDS, 1.0)
                self._buckets[host] = [burst - 1.0, now, rate, burst]
            return Admission.ADMIT
        rate, burst = bucket[2], bucket[3]
        if rate <= 0.0:
            return Admission.ADMIT  # a trunk without a message limit
        # Token bucket: ``rate`` tokens per second, at most ``burst`` saved up.
        tokens = bucket[0] + (now - bucket[1]) * rate
        if tokens > burst:
            tokens = burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return Admission.ADMIT
        bucket[0] = tokens
        if data:
            call_id = in_dialog_call_id(data)
            if call_id is not None and self.in_dialog(host, call_id):
                self.admitted_in_dialog += 1
                return Admission.ADMIT
        if self.trusted(host):
            self.dropped_throttled += 1
            return Admission.THROTTLED
        self.ban(host, BanReason.FLOOD, now)
        self.dropped_banned += 1
        return Admission.BANNED

    def reset_rates(self) -> None:
        """Forget every source's rate bucket: the per-source rates changed (trunks were
        reloaded). Every source starts again with a full burst."""
        self._buckets.clear()

    def _in_banned_network(self, host: str, now: float) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network and ban.active(now) for network, ban in self._networks)

    # ------------------------------------------------------------------ offences

    def is_scanner(self, user_agent: str | None) -> bool:
        """True when ``user_agent`` contains one of the scanner strings."""
        if not user_agent:
            return False
        lowered = user_agent.lower()
        return any(pattern in lowered for pattern in self.limits.scanner_user_agents)

    def scanner(self, host: str, now: float) -> Ban | None:
        """A request from ``host`` carried a scanner User-Agent: ban it (unless trusted)."""
        if self.trusted(host):
            return None
        return self.ban(host, BanReason.SCANNER, now)

    def offence(self, host: str, offence: Offence, now: float) -> Ban | None:
        """Count an offence; the ban when this one crossed its limit (never for trusted
        sources)."""
        if offence is Offence.AUTH_FAILURE:
            limit, reason = self.limits.auth_failures, BanReason.AUTH_FAILURES
        else:
            limit, reason = self.limits.unknown_numbers, BanReason.UNKNOWN_NUMBERS
        key = (host, offence)
        counter = self._offences.get(key)
        if counter is None or now - counter[1] >= OFFENCE_WINDOW:
            if counter is None and len(self._offences) >= MAX_TRACKED_SOURCES:
                return None
            counter = [0.0, now]
            self._offences[key] = counter
        counter[0] += 1
        if counter[0] < limit or self.trusted(host):
            return None
        del self._offences[key]
        return self.ban(host, reason, now)

    # ------------------------------------------------------------------ bans

    def ban(
        self, address: str, reason: str, now: float, duration: float | None = -1.0
    ) -> Ban | None:
        """Ban ``address`` (an address or a network) for ``duration`` seconds (default: the
        configured ban time; None: no end). The ban is queued for the runtime to store.
        None when an existing ban already covers at least as long."""
        key = normalize_ban_address(address)
        if duration is not None and duration < 0:
            duration = self.limits.ban_time
        until = None if duration is None else now + duration
        existing = self._find(key)
        if (
            existing is not None
            and existing.active(now)
            and (existing.until is None or (until is not None and existing.until >= until))
        ):
            return None
        new = Ban(key, str(reason), until)
        self._put(new)
        self._buckets.pop(key, None)
        self._new.append(new)
        self._unsaved[key] = new
        return new

    def unban(self, address: str) -> bool:
        """Lift the ban on ``address`` (exactly as banned); True if there was one."""
        key = normalize_ban_address(address)
        self._unsaved.pop(key, None)
        if key in self._hosts:
            del self._hosts[key]
            self._hosts.pop("::ffff:" + key, None)
            return True
        before = len(self._networks)
        self._networks = [(n, b) for n, b in self._networks if b.address != key]
        return len(self._networks) != before

    def is_banned(self, host: str, now: float) -> bool:
        ban = self._hosts.get(host)
        if ban is not None and ban.active(now):
            return True
        return bool(self._networks) and self._in_banned_network(host, now)

    def bans(self, now: float) -> list[Ban]:
        """Every active ban."""
        found = [b for host, b in self._hosts.items() if host == b.address and b.active(now)]
        found.extend(b for _, b in self._networks if b.active(now))
        return found

    @property
    def has_new_bans(self) -> bool:
        return bool(self._new)

    def take_new_bans(self) -> list[Ban]:
        """Bans made since the last call, for the runtime to store, log and count."""
        out, self._new = self._new, []
        return out

    def saved(self, ban: Ban) -> None:
        """The runtime stored ``ban``: :meth:`load` may now replace it."""
        if self._unsaved.get(ban.address) is ban:
            del self._unsaved[ban.address]

    def load(self, bans: Iterable[Ban], now: float) -> None:
        """Replace the bans with ``bans`` (from the store: other instances' and the
        operator's), keeping bans made here that are not stored yet."""
        self._hosts.clear()
        self._networks.clear()
        for ban in bans:
            if ban.active(now):
                self._put(ban)
        for ban in self._unsaved.values():
            if ban.active(now):
                self._put(ban)

    def expire(self, now: float) -> None:
        """Forget ended bans, idle rate buckets and old offence counts (call every few
        seconds: keeps memory bounded under a flood from many addresses)."""
        for host in [h for h, b in self._hosts.items() if not b.active(now)]:
            del self._hosts[host]
        self._networks = [(n, b) for n, b in self._networks if b.active(now)]
        for host in [h for h, b in self._buckets.items() if now - b[1] > IDLE_BUCKET]:
            del self._buckets[host]
        for offence in [k for k, c in self._offences.items() if now - c[1] >= OFFENCE_WINDOW]:
            del self._offences[offence]
        for address in [k for k, b in self._unsaved.items() if not b.active(now)]:
            del self._unsaved[address]

    def _find(self, key: str) -> Ban | None:
        ban = self._hosts.get(key)
        if ban is not None:
            return ban
        for _, existing in self._networks:
            if existing.address == key:
                return existing
        return None

    def _put(self, ban: Ban) -> None:
        if "/" in ban.address:
            network = ipaddress.ip_network(ban.address)
            self._networks = [(n, b) for n, b in self._networks if b.address != ban.address]
            self._networks.append((network, ban))
        else:
            self._hosts[ban.address] = ban
            if "." in ban.address:
                # A dual-stack socket ("::") sees IPv4 peers as ::ffff:a.b.c.d.
                self._hosts["::ffff:" + ban.address] = ban
