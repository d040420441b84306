"""Settings for ``sipbridge serve``."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits

__all__ = [
    "DEFAULT_SCANNER_USER_AGENTS",
    "SRTP_MODES",
    "UNKNOWN_SOURCES",
    "ConfigError",
    "ServeSettings",
    "default_db_path",
    "is_ip_address",
    "local_ipv4",
    "local_ipv6",
    "parse_port_range",
    "routed_address",
    "usable_codecs",
]

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_ip_address(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address literal, not a name to resolve."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_usable_ipv4(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return (
        isinstance(address, ipaddress.IPv4Address)
        and not address.is_loopback
        and not address.is_unspecified
        and not address.is_link_local
    )


def _is_usable_ipv6(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return (
        isinstance(address, ipaddress.IPv6Address)
        and address.ipv4_mapped is None
        and not address.is_loopback
        and not address.is_unspecified
        and not address.is_link_local  # needs a scope: useless in SDP
    )


# Documentation ranges (RFC 5737, RFC 3849): never a real host, and routed by the default
# route like any public address. ``connect()`` on a UDP socket only asks the kernel which
# route and source address it would use: no packet is sent.
_ROUTE_PROBES: dict[socket.AddressFamily, str] = {
    socket.AF_INET: "198.51.100.1",
    socket.AF_INET6: "2001:db8::1",
}


def routed_address(family: socket.AddressFamily) -> str | None:
    """The source address of the interface that routes outward (to a public address) in
    ``family``; None without such a route. Sends nothing."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((_ROUTE_PROBES[family], 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def local_ipv6() -> str:
    """This machine's global IPv6 address: the one of the interface that routes outward,
    else the first global one its host name resolves to, else ``::1``. No packet is sent."""
    routed = routed_address(socket.AF_INET6)
    if routed is not None and _is_usable_ipv6(routed):
        return routed
    with contextlib.suppress(OSError):
        hostname = socket.gethostname()
        for info in socket.getaddrinfo(hostname, None, socket.AF_INET6):
            candidate = str(info[4][0])
            if _is_usable_ipv6(candidate):
                return candidate
    return "::1"


def local_ipv4() -> str:
    """This machine's IPv4 address: the one of the interface that routes outward (a host
    whose name resolves to 127.0.0.1 still has one), else the first non-loopback address
    its host name resolves to, else ``127.0.0.1``. No packet is sent."""
    routed = routed_address(socket.AF_INET)
    if routed is not None and _is_usable_ipv4(routed):
        return routed
    try:
        hostname = socket.gethostname()
    except OSError:
        return "127.0.0.1"
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(hostname))
    with contextlib.suppress(OSError):
        candidates.extend(socket.gethostbyname_ex(hostname)[2])
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(hostname, None, socket.AF_INET):
            candidates.append(str(info[4][0]))
    for candidate in candidates:
        if _is_usable_ipv4(candidate):
            return candidate
    return "127.0.0.1"


def default_db_path(environ: Mapping[str, str] | None = None, is_root: bool | None = None) -> Path:
    """Where the SQLite database lives when no ``--db`` is given, whatever the working
    directory: ``$XDG_DATA_HOME/sipbridge/sipbridge.db`` when that variable is set,
    ``/var/lib/sipbridge/sipbridge.db`` for root, else
    ``~/.local/share/sipbridge/sipbridge.db`` (the XDG Base Directory default)."""
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    if Path(data_home).is_absolute():  # the XDG spec ignores a relative value
        return Path(data_home) / "sipbridge" / "sipbridge.db"
    if os.geteuid() == 0 if is_root is None else is_root:
        return Path("/var/lib/sipbridge/sipbridge.db")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "share" / "sipbridge" / "sipbridge.db"


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``"10000-20000"`` into ``(10000, 20000)``.

    Both ends are inclusive, must lie in 1-65535 and the range must hold at least two
    ports (one RTP/RTCP pair).
    """
    parts = text.strip().split("-")
    if len(parts) != 2:
        raise ValueError(f"port range {text!r} must look like MIN-MAX, e.g. 10000-20000")
    try:
        low, high = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(
            f"port range {text!r} must be two whole numbers, e.g. 10000-20000"
        ) from None
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"port range {text!r}: port {port} is outside 1-65535")
    if low >= high:
        raise ValueError(
            f"port range {text!r}: the first port must be lower than the second "
            "(the range needs at least 2 ports)"
        )
    return low, high


DEFAULT_CODECS: tuple[str, ...] = ("pcmu", "pcma", "g722", "opus")
# User-Agent substrings (lower case) of SIP scanners and toll-fraud tools: a request
# carrying one bans its source at once.
DEFAULT_SCANNER_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "iwar",
    "sundayddr",
    "pplsip",
    "vaxsipuseragent",
    "vaxipuseragent",
    "smap",
    "eyebeam-scanner",
)
SRTP_MODES: tuple[str, ...] = ("off", "optional", "required")
# What requests from sources matching no trunk get: nothing at all, or 403 Forbidden.
UNKNOWN_SOURCES: tuple[str, ...] = ("drop", "403")


def parse_codecs(text: str) -> tuple[str, ...]:
    """``"pcmu,pcma,g722,opus"`` → the codec preference list, validated against the codec
    registry; ValueError naming the unknown codec (or an empty list)."""
    from sipbridge.codecs import codec_names  # the registry imports numpy: only when needed

    known = codec_names()
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in known:
            raise ValueError(f"unknown codec {raw.strip()!r} (known: {', '.join(known)})")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("the codec list is empty")
    return tuple(names)


class ConfigError(ValueError):
    """A setting the server cannot run with, found at start-up; the message says what to do."""


def usable_codecs(
    codecs: tuple[str, ...], unavailable: frozenset[str]
) -> tuple[tuple[str, ...], str | None]:
    """The codec list without the codecs this machine cannot run (``unavailable``, e.g.
    ``{"opus"}`` without libopus), and a warning saying what was left out.

    The default list loses them with the warning; a list the operator wrote that names an
    unavailable codec is a ValueError with the install hint (they asked for it), as is a
    list left empty (:class:`ConfigError`)."""
    missing = [name for name in codecs if name in unavailable]
    if not missing:
        return codecs, None
    hint = "install libopus (apt-get install libopus0)"
    if codecs != DEFAULT_CODECS:
        raise ConfigError(
            f"--codecs names {', '.join(missing)} but this machine cannot run it: {hint}, "
            "or leave it out of --codecs"
        )
    kept = tuple(name for name in codecs if name not in unavailable)
    return kept, (
        f"{', '.join(missing)} left out of the offer: this machine cannot run it ({hint}); "
        f"offering {','.join(kept)}"
    )


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``sipbridge serve`` needs; built by the CLI, read by the runtime."""

    sip_host: str = "0.0.0.0"
    sip_port: int = 5060
    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    public_ip: str | None = None
    db: str = "sqlite:///sipbridge.db"
    agent_connect_timeout: float = 5.0
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object a line (logs.py)
    # (logger name, level) pairs of --log-levels, e.g. (("sipbridge.call", 10),)
    log_levels: tuple[tuple[str, int], ...] = ()
    default_region: str | None = None  # ISO 3166 code for national number formats
    http_host: str = "127.0.0.1"  # the REST API, /healthz, /readyz and /metrics
    http_port: int = 8080
    # Our codec preference, best first; the seed advises providers to prefer G.711.
    codecs: tuple[str, ...] = DEFAULT_CODECS
    media_timeout: float = 30.0  # seconds without caller RTP (not on hold) before hanging up
    max_calls: int = 1000  # concurrent calls of the whole server; beyond it INVITEs get 503
    max_call_duration: float = 4 * 3600.0  # seconds an answered call may last
    # RFC 4028 session timers (docs/operations.md "Session timers"): the interval we ask
    # for when the caller names none (0: no session timers), and the shortest we accept
    # (422 Session Interval Too Small below it; the RFC's floor is 90, lower values are
    # for tests).
    session_expires: int = 1800
    min_se: int = 90
    # Graceful drain (docs/operations.md): after the first SIGTERM the calls up may go on
    # this many seconds while new ones get 503; then what is left is hung up. 0: at once.
    drain_timeout: float = 300.0
    # What one agent may store, queue and send per call (docs/security.md).
    agent_limits: AgentLimits = DEFAULT_LIMITS
    # Overload (media/overload.py): new calls get 503 while the media clock keeps running
    # late (wake-ups more than ``overload_lag_ms`` late, three or more in a second) or the
    # process uses more than ``overload_cpu`` of one core; the calls already up go on.
    overload_lag_ms: float = 5.0
    overload_cpu: float = 0.85
    # Requests from no configured trunk: "drop" (no answer: scanners learn nothing) or
    # "403" (answered 403 Forbidden). See docs/security.md.
    unknown_sources: Literal["drop", "403"] = "drop"
    auth_realm: str | None = None  # digest realm; None: the advertised address
    # Digest algorithms offered (one challenge each, in this order) and accepted.
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    # SRTP (RFC 4568 SDES) for calls that come from no trunk; a trunk's own ``srtp``
    # setting wins. "off", "optional" (SRTP when offered) or "required".
    srtp: Literal["off", "optional", "required"] = "optional"
    # Flood and scanner defence (docs/security.md). A banned source's datagrams are
    # dropped before parsing for ``ban_time`` seconds.
    ban_time: float = 3600.0
    flood_rate: float = 50.0  # sustained SIP messages per second from one source
    flood_burst: int = 100  # messages one source may send at once above the rate
    auth_failure_limit: int = 5  # failed digest attempts per source and minute
    unknown_number_limit: int = 10  # INVITEs to unknown numbers per source and minute
    max_transactions_per_source: int = 64  # concurrent server transactions per source
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNER_USER_AGENTS
    # Proxies in front (addresses or CIDRs) whose X-Sipbridge-Source header names a
    # request's real source (sip/proxy.py, docs/security.md "Behind a proxy"): they are
    # never rate-limited or banned, and the real source is judged instead.
    trusted_proxies: tuple[str, ...] = ()
    # SIP over TCP on the SIP port's number, and over TLS on ``tls_port`` when a
    # certificate chain and its key are given (RFC 3261 §18, docs/security.md).
    tcp: bool = True
    tls_port: int = 5061
    tls_cert: str | None = None  # PEM certificate chain file
    tls_key: str | None = None  # PEM private key file
    # PEM CA certificates trusted besides the system's, for the TLS connections we open
    # (registrars, trunks): a provider or PBX with a private CA.
    tls_ca: str | None = None
    # TCP/TLS connections from one trunk address, or from one /24 or /64 of sources
    # matching no trunk.
    max_connections_per_source: int = 32
    # Seconds a TCP/TLS connection from a source matching no trunk may stay open without
    # an admitted request (docs/security.md, "Transports").
    unknown_connection_timeout: float = 5.0
    # Call records (docs/operations.md): who owns the open calls this process writes
    # (None: ``<hostname>:<sip_port>``, stable across restarts), and the spool file that
    # keeps records the database refused (None: beside a SQLite file, else in the data
    # directory; see ``spool_file``) and its size cap.
    instance_id: str | None = None
    # Seconds without a heartbeat after which peers sharing the database declare an
    # instance lost and close its open calls (runtime/cluster.py).
    instance_timeout: float = 30.0
    spool_path: str | None = None
    spool_max_bytes: int = 64 * 1024 * 1024
    # Call recordings (runtime/recordings.py, docs/operations.md "Recordings"): where the
    # WAV files go (None: beside the database; see ``recordings_path``) and how many days
    # they are kept (0: forever).
    recordings_dir: str | None = None
    recording_retention_days: float = 30.0
    # The dashboard's session cookies are signed with a key derived from this (give every
    # instance behind one address the same); None: a random key kept in
    # ``session_key_file``, so sessions outlive a restart of this instance.
    session_secret: str | None = None

    def __post_init__(self) -> None:
        if self.instance_id is not None and (
            not self.instance_id.strip()
            or not self.instance_id.isprintable()
            or len(self.instance_id) > 255
        ):
            raise ValueError("instance_id must be printable text of 1-255 characters")
        if self.instance_timeout < 1:
            raise ValueError("instance_timeout must be at least 1 second")
        if self.spool_max_bytes < 4096:
            raise ValueError("spool_max_bytes must be at least 4096")
        if not 0 <= self.recording_retention_days < math.inf:
            raise ValueError("recording_retention_days must be 0 (keep) or a number of days")
        self._check_transports()
        if not 0 <= self.sip_port <= 65535:
            raise ValueError(f"sip_port {self.sip_port} is outside 0-65535")
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port {self.http_port} is outside 0-65535")
        parse_port_range(f"{self.rtp_port_min}-{self.rtp_port_max}")
        if self.agent_connect_timeout <= 0:
            raise ValueError("agent_connect_timeout must be positive")
        if self.media_timeout <= 0:
            raise ValueError("media_timeout must be positive")
        if self.max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if self.max_call_duration <= 0:
            raise ValueError("max_call_duration must be positive")
        if self.min_se < 1:
            raise ValueError("min_se must be at least 1 second")
        if self.session_expires != 0 and self.session_expires < self.min_se:
            raise ValueError("session_expires must be 0 (off) or at least min_se")
        if not 0 <= self.drain_timeout < math.inf:
            raise ValueError("drain_timeout must be a finite number of seconds, 0 or more")
        if self.overload_lag_ms <= 0:
            raise ValueError("overload_lag_ms must be positive")
        if not 0 < self.overload_cpu <= 1:
            raise ValueError("overload_cpu must be in (0, 1]")
        object.__setattr__(self, "codecs", parse_codecs(",".join(self.codecs)))
        if self.unknown_sources not in UNKNOWN_SOURCES:
            raise ValueError(
                f"unknown_sources {self.unknown_sources!r} is not one of "
                + ", ".join(UNKNOWN_SOURCES)
            )
        if self.srtp not in SRTP_MODES:
            raise ValueError(f"srtp {self.srtp!r} is not one of " + ", ".join(SRTP_MODES))
        if self.ban_time <= 0:
            raise ValueError("ban_time must be positive")
        if self.flood_rate <= 0 or self.flood_burst < 1:
            raise ValueError("flood_rate must be positive and flood_burst at least 1")
        for name in ("auth_failure_limit", "unknown_number_limit", "max_transactions_per_source"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        object.__setattr__(
            self,
            "scanner_user_agents",
            tuple(a.strip().lower() for a in self.scanner_user_agents if a.strip()),
        )
        from sipbridge.sip.auth import parse_algorithms
        from sipbridge.sip.proxy import TrustedProxies

        proxies = str(TrustedProxies.parse(self.trusted_proxies))  # ValueError: not one
        object.__setattr__(self, "trusted_proxies", tuple(proxies.split(",")) if proxies else ())

        object.__setattr__(
            self, "auth_algorithms", parse_algorithms(",".join(self.auth_algorithms))
        )
        if self.auth_realm is not None and (
            not self.auth_realm.strip() or not self.auth_realm.isprintable()
        ):
            raise ValueError("auth_realm must be printable text")

    def _check_transports(self) -> None:
        if not 0 <= self.tls_port <= 65535:
            raise ValueError(f"tls_port {self.tls_port} is outside 0-65535")
        if self.max_connections_per_source < 1:
            raise ValueError("max_connections_per_source must be at least 1")
        if self.unknown_connection_timeout <= 0:
            raise ValueError("unknown_connection_timeout must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"{name} {path!r} cannot be read: {exc.strerror}") from exc

    @property
    def owner_id(self) -> str:
        """This instance's id on the calls it writes: ``--instance-id``, else
        ``<hostname>:<sip_port>`` (the same after a restart, different for two instances
        on one host)."""
        if self.instance_id is not None:
            return self.instance_id.strip()
        return f"{socket.gethostname()}:{self.sip_port}"

    def _sqlite_file(self) -> Path | None:
        """The database file when the database is a SQLite file, else None."""
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.db)
        except Exception:  # the database layer reports a bad URL
            return None
        database = url.database
        if (
            url.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
        ):
            return Path(database).expanduser().absolute()
        return None

    @property
    def recordings_path(self) -> Path:
        """Where call recordings go: ``--recordings-dir``; else ``recordings`` beside a
        SQLite database file, or in the default data directory (the folder of
        ``default_db_path()``) for PostgreSQL and in-memory SQLite."""
        if self.recordings_dir is not None:
            return Path(self.recordings_dir).expanduser().absolute()
        database = self._sqlite_file()
        if database is not None:
            return database.parent / "recordings"
        return default_db_path().parent / "recordings"

    @property
    def session_key_file(self) -> Path:
        """Where the dashboard's session key is kept when ``session_secret`` is not set:
        ``<database file>.session-key`` beside a SQLite database, else
        ``dashboard-session.key`` in the default data directory."""
        database = self._sqlite_file()
        if database is not None:
            return database.with_name(database.name + ".session-key")
        return default_db_path().parent / "dashboard-session.key"

    @property
    def spool_file(self) -> Path:
        """The record spool: ``--spool``; else ``<database file>.spool`` beside a SQLite
        database, or ``records-<instance id>.spool`` in the default data directory (the
        folder of ``default_db_path()``) for PostgreSQL and in-memory SQLite."""
        if self.spool_path is not None:
            return Path(self.spool_path).expanduser()
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.db)
        except Exception:  # the database layer reports a bad URL
            url = None
        database = url.database if url is not None else None
        if (
            url is not None
            and url.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
        ):
            path = Path(database).expanduser().absolute()
            return path.with_name(path.name + ".spool")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.owner_id)
        return default_db_path().parent / f"records-{safe}.spool"

    @property
    def realm(self) -> str:
        """The digest authentication realm: ``auth_realm``, else the advertised address
        (no software name: a scanner learns nothing from it)."""
        return self.auth_realm.strip() if self.auth_realm else self.advertised_ip

    def media_address(self, ipv6: bool) -> tuple[str, str] | None:
        """(the address RTP/RTCP sockets bind, the address the SDP answer gives) for a
        caller whose media address (SDP ``c=``) is IPv6 (``ipv6``) or IPv4; None when this
        server has no address of that family.

        The media sockets take the family of the caller's address, so a dual-stack
        server (``--sip-host ::`` or ``0.0.0.0``) serves both: each family binds its
        wildcard address and advertises ``public_ip`` when it is of that family, else the
        machine's first usable address of it (``local_ipv4``/``local_ipv6``). A server
        bound to one address serves the media of that address's family on it (and
        advertises ``public_ip`` or that address); the other family gets None (the
        operator chose one address: no socket is opened on any other).
        """
        host = self.sip_host.strip().strip("[]")
        wildcard = self.sip_host.strip() in _WILDCARD_HOSTS
        public = self.public_ip
        public_fits = public is not None and (":" in public) == ipv6
        if wildcard:
            if public_fits:
                assert public is not None
                return ("::" if ipv6 else "0.0.0.0"), public
            return ("::", local_ipv6()) if ipv6 else ("0.0.0.0", local_ipv4())
        if (":" in host) != ipv6:
            return None
        return host, public if public_fits and public is not None else host

    @property
    def advertised_ip(self) -> str:
        """The address put in SDP and Contact headers.

        ``public_ip`` when set; else ``sip_host`` unless it is a wildcard address, in which
        case the address of the interface that routes outward (``local_ipv4``).
        """
        if self.public_ip:
            return self.public_ip
        if self.sip_host.strip() not in _WILDCARD_HOSTS:
            return self.sip_host
        return local_ipv4()

    def loopback_warning(self, advertised: str) -> str | None:
        """What to tell the operator when ``advertised`` is a loopback address although
        the server listens on every interface (callers elsewhere could not reach it)."""
        if self.sip_host.strip() not in _WILDCARD_HOSTS:
            return None
        try:
            loopback = ipaddress.ip_address(advertised.strip("[]")).is_loopback
        except ValueError:
            return None  # a host name: the operator chose it
        if not loopback:
            return None
        return (
            f"advertising loopback address {advertised} in Contact and SDP while listening "
            f"on all interfaces ({self.sip_host}): no caller on another machine can reach "
            "this server's media; set --public-ip to the address callers reach"
        )
