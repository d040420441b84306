"""Trusted proxies: the real source of a request relayed by a SIP proxy in front (sans-I/O).

Behind a proxy (Kamailio's dispatcher spreading calls over instances, docs/operations.md)
every request arrives from the proxy's address, which would hide the trunks' real source
addresses from the access policy (trunk allowlists), the bans and the flood guard. So the
proxy names the original source in a header it adds after removing any copy the client
sent::

    X-Sipbridge-Source: 203.0.113.7:5060;transport=udp
    X-Sipbridge-Source: [2001:db8::7]:5060

(an IP address, IPv6 in brackets, a port 1-65535, optionally ``;transport=udp|tcp|tls``).
The header is believed **only** when the message's transport source (the UDP datagram's
source, the TCP/TLS peer) is a trusted proxy (:class:`TrustedProxies`, from
``--trusted-proxy``); from anyone else it is ignored, and is never read at all: only
messages from a trusted proxy pay for the lookup.

What the caller does (the runtime, and the UA core when fed directly):

1. :meth:`TrustedProxies.trusts` on the transport source; when False nothing changes.
2. Otherwise :meth:`TrustedProxies.relayed` reads the header from the raw bytes, before any
   parsing, and returns a :class:`Relayed`: ``origin`` (the real source) when the header
   is there and well formed; ``error`` when it is malformed (the request is answered 400
   by the UA core); neither when there is no header (a response, or the proxy's own
   request: its OPTIONS probes).
3. :func:`admit_message` puts it together with the :class:`~sipbridge.sip.guard.SourceGuard`:
   a trusted proxy carries everyone's traffic and is never rate-limited or banned itself;
   the per-source rate limit and bans apply to the real source instead, so a flood from
   one source through the proxy bans that source only.
4. The message then goes to ``UserAgent.receive_datagram(data, source, now, relayed)``:
   responses still go back to ``source`` (the proxy, along the Via), while the access
   policy, the guard's offences, the call's record and the log lines see ``origin``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipbridge.sip.framing import Transport
from sipbridge.sip.guard import Admission, SourceGuard

__all__ = [
    "PROXY_OWN",
    "SOURCE_HEADER",
    "Relayed",
    "TrustedProxies",
    "admit_message",
    "carries_source_header",
    "parse_source",
]

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SOURCE_HEADER = "X-Sipbridge-Source"
# Networks wider than these prefixes are hardly a proxy's own addresses: the runtime warns.
BROAD_PREFIX_V4 = 24
BROAD_PREFIX_V6 = 64
# Verdicts of :meth:`TrustedProxies.trusts` on addresses inside no single-address entry
# are remembered for this many hosts (a flood from many addresses cannot grow it).
MAX_REMEMBERED = 4096

# The header field in the header section of a raw message, from its line start; its value
# is the rest of the line (RFC 3261 §7.3.1: name, optional whitespace, colon; an
# extension-header, §25.1, whose name is case-insensitive).
_HEADER = re.compile(rb"\nX-Sipbridge-Source[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
# ``host:port[;transport=t]``: an IPv4 address or a bracketed IPv6 reference (RFC 3261
# §25.1 ``IPv6reference``), as Kamailio writes ``$si:$sp;transport=$proto``.
_VALUE = re.compile(
    r"(?:(?P<v4>[0-9.]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})"
    r"(?:[ \t]*;[ \t]*transport[ \t]*=[ \t]*(?P<transport>[A-Za-z]+))?[ \t]*",
    re.IGNORECASE,
)
_TRANSPORTS = {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}


@dataclass(frozen=True)
class Relayed:
    """What a message from a trusted proxy says of its original source.

    ``origin``: the address the header names (None without a header or with a malformed
    one); ``transport``: its ``;transport=`` (None when not given; checked, but only
    informative: answers go back on the proxy's own transport); ``error``: why the header
    is malformed (the request is answered 400 with it), None when it is not.
    """

    origin: Address | None = None
    transport: Transport | None = None
    error: str | None = None

    @property
    def own(self) -> bool:
        """The proxy's own message (no header): a response, or a request the proxy sent
        itself (its OPTIONS probes)."""
        return self.origin is None and self.error is None


# The verdict on every message of the proxy's own: allocated once.
PROXY_OWN = Relayed()


def parse_source(value: str) -> tuple[Address, Transport | None]:
    """The address and transport of an ``X-Sipbridge-Source`` value; ValueError, saying
    what is wrong, for anything else. The host comes back as the socket layer writes it
    (no brackets, IPv6 compressed; an IPv4-mapped address as IPv4), so it compares with
    real sources and bans."""
    match = _VALUE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not ip:port[;transport=udp|tcp|tls]")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        if match["v4"] is not None:
            address = ipaddress.IPv4Address(match["v4"])
        else:
            address = ipaddress.IPv6Address(match["v6"])
    except ValueError:
        raise ValueError("not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # [::ffff:192.0.2.1] is the IPv4 source 192.0.2.1
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError("port outside 1-65535")
    transport: Transport | None = None
    if match["transport"] is not None:
        found = _TRANSPORTS.get(match["transport"].lower())
        if found is None:
            raise ValueError("transport not udp, tcp or tls")
        transport = found
    return (str(address), port), transport


def _header_section_end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")  # bare LF line ends, tolerated by the parser
    return len(data) if end < 0 else end + 1


def carries_source_header(data: bytes) -> bool:
    """True when the raw message ``data`` has an ``X-Sipbridge-Source`` header (for the
    debug line about one arriving from a source that is not a trusted proxy)."""
    return _HEADER.search(data, 0, _header_section_end(data)) is not None


@dataclass
class TrustedProxies:
    """The addresses and networks (``--trusted-proxy``) whose ``X-Sipbridge-Source`` is
    believed. Empty: nobody's (the default)."""

    networks: tuple[Network, ...] = ()
    # Single addresses as the socket layer writes them (IPv4 also as ::ffff:a.b.c.d, as a
    # dual-stack socket sees it): one set lookup per message.
    _hosts: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _ranges: tuple[Network, ...] = field(default=(), init=False, repr=False)
    _verdicts: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        for network in self.networks:
            if network.num_addresses == 1:
                host = str(network.network_address)
                hosts.add(host)
                if network.version == 4:
                    hosts.add("::ffff:" + host)
        self._hosts = frozenset(hosts)
        self._ranges = tuple(n for n in self.networks if n.num_addresses > 1)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """From addresses and CIDRs (``10.0.0.5``, ``10.0.0.0/29``, ``[2001:db8::5]``), each
        entry possibly a comma-separated list (the environment variable's form); host bits
        allowed (``10.0.0.5/29`` is ``10.0.0.0/29``). ValueError for anything else."""
        networks: list[Network] = []
        for entry in entries:
            for text in entry.split(","):
                text = text.strip()
                if not text:
                    continue
                try:
                    network = ipaddress.ip_network(text.strip("[]"), strict=False)
                except ValueError:
                    raise ValueError(f"{text!r} is not an IP address or network") from None
                if network not in networks:
                    networks.append(network)
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __str__(self) -> str:
        """The entries as ``--trusted-proxy`` takes them, comma-separated (for logs)."""
        return ",".join(
            str(n.network_address) if n.num_addresses == 1 else str(n) for n in self.networks
        )

    @property
    def broad(self) -> tuple[Network, ...]:
        """The entries wider than a /24 (IPv4) or a /64 (IPv6): likely to hold more than the
        proxies (callers, NAT gateways), each of which could then claim any source."""
        return tuple(
            n
            for n in self.networks
            if n.prefixlen < (BROAD_PREFIX_V4 if n.version == 4 else BROAD_PREFIX_V6)
        )

    def trusts(self, host: str) -> bool:
        """True when the transport source ``host`` is a trusted proxy."""
        if host in self._hosts:
            return True
        if not self._ranges:
            return False
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._in_ranges(host)
            if len(self._verdicts) < MAX_REMEMBERED:
                self._verdicts[host] = verdict
        return verdict

    def _in_ranges(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._ranges)

    def relayed(self, data: bytes) -> Relayed:
        """What the raw message ``data`` from a trusted proxy says of its original source
        (see :class:`Relayed`). Responses are the proxy's own: their header is not read."""
        if data.startswith(b"SIP/2.0 "):
            return PROXY_OWN
        end = _header_section_end(data)
        found = list(_HEADER.finditer(data, 0, end))
        if not found:
            return PROXY_OWN
        if len(found) > 1:
            # The proxy removes every copy the client sent before adding its own.
            return Relayed(error="more than one header")
        match = found[0]
        after = match.end(0) + (2 if data.startswith(b"\r\n", match.end(0)) else 1)
        if after < end and data[after : after + 1] in (b" ", b"\t"):
            return Relayed(error="folded over several lines")  # RFC 3261 §7.3.1 LWS
        try:
            origin, transport = parse_source(match.group(1).decode("ascii"))
        except UnicodeDecodeError:
            return Relayed(error="not ASCII")
        except ValueError as exc:
            return Relayed(error=str(exc))
        return Relayed(origin, transport)


def admit_message(
    guard: SourceGuard, proxies: TrustedProxies, data: bytes, source: Address, now: float
) -> tuple[Admission, Relayed | None]:
    """The verdict on one raw message from the transport ``source``, before parsing, and
    what a trusted proxy said of its origin (None: not from a trusted proxy).

    A trusted proxy itself is never rate-limited or banned (it carries every source's
    traffic): its own messages and those with a malformed header are admitted (the UA core
    answers the latter 400); a relayed message meets the guard as its real source would,
    so its bans and its rate apply, and a ban of the proxy's address changes nothing."""
    host = source[0]
    if not proxies.trusts(host):
        return guard.admit(host, now, data), None
    relayed = proxies.relayed(data)
    if relayed.origin is None:
        return Admission.ADMIT, relayed
    return guard.admit(relayed.origin[0], now, data), relayed
