"""``sipbridge doctor``: what would stop a deployment from taking its first call.

Each check is a small function returning :class:`Check` values (``ok``, ``info``,
``warning`` or ``problem``, a message, and the fix: a command where one exists). The
checks read the same :class:`~sipbridge.config.ServeSettings` as ``serve`` and the store
through the service layer, and change nothing: sockets are bound and closed again, the
database is read (never migrated), each agent gets one WebSocket handshake that is closed
at once. :func:`run_checks` runs them all, the agent handshakes concurrently, each with a
short timeout. The command line (``cli/doctor_command.py``) prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from sipbridge.agent.factory import make_session
from sipbridge.codecs.opus import opus_available
from sipbridge.config import ConfigError, ServeSettings, usable_codecs
from sipbridge.listen import Listener, bind_each
from sipbridge.numbers import InvalidNumber, normalize_e164
from sipbridge.runtime.agent_client import AgentConnection, AgentUnreachable
from sipbridge.runtime.transports import server_ssl_context
from sipbridge.sip.registration import registrar_network
from sipbridge.store import service
from sipbridge.store.db import Database, alembic_config, display_url, normalize_url
from sipbridge.store.records import AgentRecord, NumberRecord, TrunkRecord

__all__ = [
    "AGENT_TIMEOUT",
    "CERT_WARNING_DAYS",
    "Check",
    "Status",
    "certificate_not_after",
    "check_advertised_address",
    "check_agent_url",
    "check_codecs",
    "check_database",
    "check_numbers",
    "check_ports",
    "check_rtp_ports",
    "check_tls",
    "check_trunks",
    "problems",
    "run_checks",
    "sipbridge_answers",
]

Status = Literal["ok", "info", "warning", "problem"]
STATUSES: tuple[Status, ...] = ("ok", "info", "warning", "problem")

AGENT_TIMEOUT = 3.0  # seconds for each agent URL's TCP connect, and again for its handshake
CERT_WARNING_DAYS = 14  # a TLS certificate ending sooner is a warning
RTP_SAMPLE_PAIRS = 8  # RTP/RTCP port pairs of --rtp-ports bound as a sample
HEALTHZ_TIMEOUT = 1.0


@dataclass(frozen=True)
class Check:
    """One finding. ``id`` names the check (``port``, ``database``, ``agent_url``...),
    ``subject`` what it looked at (a port, an agent and URL, a number), ``fix`` what to do
    (a command where there is one), None when there is nothing to do."""

    id: str
    status: Status
    message: str
    fix: str | None = None
    subject: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "subject": self.subject,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
        }


# ----------------------------------------------------------------------------- ports


def _connect_host(host: str) -> str:
    """Where to reach a server bound to ``host``: its wildcard means this machine."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def sipbridge_answers(host: str, port: int, timeout: float = HEALTHZ_TIMEOUT) -> bool:
    """True when ``GET /healthz`` on ``host:port`` answers like sipbridge's
    (``200`` and ``{"status":"ok"}``): a running sipbridge holds that port."""
    try:
        with socket.create_connection((_connect_host(host), port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: doctor\r\nConnection: close\r\n\r\n")
            answer = b""
            while len(answer) < 65536:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
    except OSError:
        return False
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and b'"status":"ok"' in body.replace(
        b" ", b""
    )


def check_ports(listeners: list[Listener], http_host: str, http_port: int) -> list[Check]:
    """Bind and release every socket ``serve`` listens on (all at once, as ``serve`` does);
    a port in use names the port, and whether a sipbridge answers on the HTTP port."""
    results = bind_each(listeners)
    running: bool | None = None
    checks: list[Check] = []
    for result in results:
        listener = result.listener
        subject = f"{listener.what} {listener.endpoint}"
        if result.problem is None:
            checks.append(
                Check(
                    "port",
                    "ok",
                    f"{listener.what} can listen on {listener.endpoint}",
                    subject=subject,
                )
            )
            continue
        message = result.problem
        fix = f"free the port, or choose another {listener.port_option}"
        if result.errno == errno.EADDRINUSE:
            if running is None:
                running = sipbridge_answers(http_host, http_port)
            if running:
                where = f"{_connect_host(http_host)}:{http_port}"
                message += (
                    f"; a sipbridge answers /healthz on {where}: it is probably this server, "
                    "already running"
                )
                fix = (
                    "stop the running sipbridge before starting another one on these ports "
                    f"(or give this one another {listener.port_option})"
                )
        elif result.errno == errno.EADDRNOTAVAIL:
            fix = f"give {listener.host_option} one of this host's addresses, or 0.0.0.0"
        elif result.errno == errno.EACCES:
            fix = (
                f"run as root or with CAP_NET_BIND_SERVICE, or choose a {listener.port_option} "
                "of 1024 or above"
            )
        checks.append(Check("port", "problem", message, fix, subject))
    return checks


def _rtp_sample(low: int, high: int, pairs: int = RTP_SAMPLE_PAIRS) -> list[int]:
    """Up to ``pairs`` even RTP ports spread over ``[low, high]`` (first and last included),
    each with its RTCP port + 1 inside the range."""
    first = low + (low % 2)
    evens = list(range(first, high, 2))  # as RtpPortAllocator: RTCP (port + 1) <= high
    if len(evens) <= pairs:
        return evens
    step = (len(evens) - 1) / (pairs - 1)
    return sorted({evens[round(i * step)] for i in range(pairs)})


def _media_bind_host(settings: ServeSettings) -> str:
    host = settings.sip_host.strip().strip("[]")
    return "0.0.0.0" if host in ("", "0.0.0.0") else host


def check_rtp_ports(settings: ServeSettings) -> Check:
    """Bind a sample of the RTP range (RTP and RTCP ports). The server skips ports another
    program holds, so some in use is a warning; none bindable at all is a problem."""
    low, high = settings.rtp_port_min, settings.rtp_port_max
    subject = f"{low}-{high}"
    host = _media_bind_host(settings)
    in_use: list[int] = []
    other: list[str] = []
    sample = _rtp_sample(low, high)
    for port in sample:
        for candidate in (port, port + 1):
            try:
                infos = socket.getaddrinfo(host, candidate, type=socket.SOCK_DGRAM)
                with socket.socket(infos[0][0], socket.SOCK_DGRAM) as sock:
                    sock.bind(infos[0][4])
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    in_use.append(candidate)
                else:
                    other.append(f"{candidate}: {exc.strerror or exc}")
    bound = 2 * len(sample) - len(in_use) - len(other)
    if other:
        return Check(
            "rtp_ports",
            "problem",
            f"RTP ports on {host} cannot be bound ({'; '.join(other[:3])})",
            "choose another --rtp-ports (1024-65535 without root), or another --sip-host",
            subject,
        )
    if in_use:
        status: Status = "problem" if bound == 0 else "warning"
        return Check(
            "rtp_ports",
            status,
            f"RTP ports {', '.join(map(str, in_use))} of --rtp-ports {subject} are in use by "
            f"another program ({bound} of {2 * len(sample)} sampled ports free): calls skip "
            "ports in use",
            "keep --rtp-ports for sipbridge alone (stop the other program, or choose another "
            "range)",
            subject,
        )
    return Check(
        "rtp_ports",
        "ok",
        f"RTP ports {subject}: a sample of {2 * len(sample)} ports can be bound on {host}",
        subject=subject,
    )


# ------------------------------------------------------------------- advertised address


# Addresses no caller on the internet reaches: RFC 1918, RFC 6598 (carrier-grade NAT),
# RFC 4193 (unique local), loopback and link-local. Documentation ranges (RFC 5737, 3849)
# count as public: they stand for public addresses in examples (as in config.py).
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "::1/128",
        "fe80::/10",
    )
)


def _local_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """``"a loopback"``, ``"a private"`` or None (public) for an address."""
    if address.is_loopback:
        return "a loopback"
    if any(address in network for network in _LOCAL_NETWORKS):
        return "a private"
    return None


def _public_network(cidr: str) -> bool:
    """Whether a trunk's network holds addresses outside :data:`_LOCAL_NETWORKS`."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    first, last = network.network_address, network.broadcast_address
    return not any(first in local and last in local for local in _LOCAL_NETWORKS)


def check_advertised_address(settings: ServeSettings, trunks: Sequence[TrunkRecord]) -> Check:
    """The address Contact and SDP give (``--public-ip``, the bind address or this host's):
    a loopback or private one while trunks call from public networks is a warning."""
    advertised = settings.advertised_ip
    try:
        address = ipaddress.ip_address(advertised.strip("[]"))
    except ValueError:
        return Check("advertised_address", "ok", f"advertising {advertised} in Contact and SDP")
    kind = _local_kind(address)
    if kind is None:
        return Check("advertised_address", "ok", f"advertising {advertised} in Contact and SDP")
    public_trunks = [
        trunk.name for trunk in trunks if any(_public_network(cidr) for cidr in trunk.allowed_cidrs)
    ]
    fix = (
        "give the address callers reach: sipbridge serve --public-ip ADDRESS (SIPBRIDGE_PUBLIC_IP)"
    )
    if public_trunks:
        return Check(
            "advertised_address",
            "warning",
            f"advertising {kind} address {advertised} in Contact and SDP while trunk(s) "
            f"{', '.join(public_trunks)} call from public networks: their answers and media "
            "would go to an address they cannot reach (behind NAT?)",
            fix,
            advertised,
        )
    loopback = settings.loopback_warning(advertised)
    if loopback is not None:
        return Check("advertised_address", "warning", loopback, fix, advertised)
    return Check(
        "advertised_address",
        "ok",
        f"advertising {kind} address {advertised} in Contact and SDP (no trunk calls from a "
        "public network)",
        subject=advertised,
    )


# ------------------------------------------------------------------------- database


def _head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _database_reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
        return os.strerror(cause.errno)
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _missing_sqlite_file(url: str) -> Path | None:
    parsed = normalize_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    path = Path(database).expanduser().absolute()
    return None if path.exists() else path


async def check_database(url: str) -> tuple[Check, Database | None]:
    """Reachable, and its schema at the migrations' head. Returns the open database when
    it can be read (the caller closes it), else None. Never migrates."""
    shown = display_url(url)
    upgrade = (
        f"sipbridge db upgrade --db '{shown}'" if "***" not in shown else "sipbridge db upgrade"
    )
    try:
        missing = _missing_sqlite_file(url)
    except ValueError as exc:
        return Check("database", "problem", str(exc), "correct --db", shown), None
    if missing is not None:
        return (
            Check(
                "database",
                "problem",
                f"the database {missing} does not exist yet (no agents, numbers or trunks)",
                f"create it: {upgrade} (serve creates it too), then add an agent and a number",
                shown,
            ),
            None,
        )
    try:
        database = Database(url)
    except ValueError as exc:
        return Check("database", "problem", str(exc), "correct --db", shown), None
    head = _head_revision()
    try:
        current = await database.current_revision()
    except (SQLAlchemyError, OSError) as exc:
        await database.close()
        return (
            Check(
                "database",
                "problem",
                f"cannot reach the database {shown}: {_database_reason(exc)}",
                "start the database server, or correct --db (SIPBRIDGE_DB)",
                shown,
            ),
            None,
        )
    if current == head:
        return Check(
            "database", "ok", f"database {shown} is at the latest revision {head}", subject=shown
        ), database
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current is not None and current not in known:
        return (
            Check(
                "database",
                "problem",
                f"database {shown} is at revision {current}, which this sipbridge does not know "
                "(a newer version migrated it)",
                "run the sipbridge version that migrated it, or upgrade this one",
                shown,
            ),
            database,
        )
    at = "empty (no schema)" if current is None else f"at revision {current}"
    return (
        Check(
            "database",
            "problem",
            f"database {shown} is {at}, behind the latest revision {head}",
            upgrade,
            shown,
        ),
        database,
    )


# --------------------------------------------------------------------------- codecs


def check_codecs(settings: ServeSettings) -> Check:
    """``--codecs`` against what this machine can run (``opus`` needs libopus), as the
    server decides at start (``config.usable_codecs``)."""
    unavailable = frozenset() if opus_available() else frozenset({"opus"})
    try:
        kept, warning = usable_codecs(settings.codecs, unavailable)
    except ConfigError as exc:
        return Check(
            "codecs",
            "problem",
            str(exc),
            "apt-get install libopus0, or leave opus out of --codecs",
            ",".join(settings.codecs),
        )
    if warning is not None:
        return Check(
            "codecs",
            "warning",
            warning,
            "apt-get install libopus0 (or give --codecs without opus)",
            ",".join(settings.codecs),
        )
    return Check("codecs", "ok", f"codecs offered: {','.join(kept)}", subject=",".join(kept))


# ------------------------------------------------------------------------------ TLS


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER element")
    return tag, pos, end


def _der_time(tag: int, text: bytes) -> datetime:
    value = text.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1: 50-99 are 19xx)
        parsed = datetime.strptime(value, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(value, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected time tag {tag:#x}")
    return parsed.replace(tzinfo=UTC)


def certificate_not_after(der: bytes) -> datetime:
    """The end of an X.509 certificate's validity (RFC 5280 4.1: Certificate ->
    tbsCertificate -> [version], serialNumber, signature, issuer, validity)."""
    _, cert_start, _ = _der_element(der, 0)
    _, tbs_start, tbs_end = _der_element(der, cert_start)
    pos = tbs_start
    tag, _, end = _der_element(der, pos)
    if tag == 0xA0:  # explicit version
        pos = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, pos = _der_element(der, pos)
    tag, validity, validity_end = _der_element(der, pos)
    if tag != 0x30 or validity_end > tbs_end:
        raise ValueError("no validity in the certificate")
    _, _, not_before_end = _der_element(der, validity)
    tag, start, end = _der_element(der, not_before_end)
    return _der_time(tag, der[start:end])


def _first_certificate(path: str) -> bytes:
    text = Path(path).read_text(encoding="ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate in the file")
    return ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])


def check_tls(cert: str | None, key: str | None, now: datetime | None = None) -> list[Check]:
    """``--tls-cert``/``--tls-key``: readable, loadable as a pair by the server's own TLS
    context, and the certificate not expired (ending within 14 days: a warning)."""
    if cert is None or key is None:
        return []
    now = now or datetime.now(UTC)
    checks: list[Check] = []
    unreadable = [
        (option, path)
        for option, path in (("--tls-cert", cert), ("--tls-key", key))
        if not os.access(path, os.R_OK)
    ]
    for option, path in unreadable:
        checks.append(
            Check(
                "tls",
                "problem",
                f"{option} {path} cannot be read: serve would refuse to start",
                f"give a readable file to {option} (the user running sipbridge must read it)",
                path,
            )
        )
    if unreadable:
        return checks
    try:
        server_ssl_context(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return [
            Check(
                "tls",
                "problem",
                f"--tls-cert {cert} and --tls-key {key} do not load as a certificate chain and "
                f"its key ({reason})",
                "give the PEM certificate chain and the private key that belongs to it",
                cert,
            )
        ]
    try:
        not_after = certificate_not_after(_first_certificate(cert))
    except (ValueError, IndexError, OSError) as exc:
        return [Check("tls", "warning", f"cannot read the expiry of {cert}: {exc}", None, cert)]
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if not_after <= now:
        return [
            Check(
                "tls",
                "problem",
                f"the TLS certificate {cert} expired on {when}: TLS callers refuse it",
                "renew the certificate (e.g. certbot renew) and restart serve",
                cert,
            )
        ]
    if not_after - now < timedelta(days=CERT_WARNING_DAYS):
        days = (not_after - now).days
        return [
            Check(
                "tls",
                "warning",
                f"the TLS certificate {cert} expires on {when} (in {days} day(s))",
                "renew the certificate (e.g. certbot renew) and restart serve",
                cert,
            )
        ]
    return [Check("tls", "ok", f"the TLS certificate {cert} is valid until {when}", subject=cert)]


# --------------------------------------------------------------------------- agents


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _quoted(text: str) -> str:
    """``text`` as one shell word (single quotes when it needs them)."""
    if text and all(c.isalnum() or c in "+-_.:/@=," for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


async def check_agent_url(agent: AgentRecord, url: str, timeout: float = AGENT_TIMEOUT) -> Check:
    """One agent URL as a call would open it: TCP connect, then the WebSocket handshake
    through :class:`~sipbridge.runtime.agent_client.AgentConnection` (the agent's token as a
    Bearer header, wss verified with the agent's CA bundle or the system's), closed at once."""
    name = agent.name
    subject = f"{name} {url}"
    update = f"sipbridge agent update {_quoted(name)}"
    try:
        wsuri = parse_uri(url)
    except InvalidURI as exc:
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: {exc}",
            f"{update} --url ws[s]://HOST:PORT/PATH",
            subject,
        )
    where = f"[{wsuri.host}]:{wsuri.port}" if ":" in wsuri.host else f"{wsuri.host}:{wsuri.port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(wsuri.host, wsuri.port), timeout)
    except TimeoutError:
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: no TCP connection to {where} within {timeout:g} s (a firewall, "
            "or a host that is down?)",
            f"start the agent or open the way to it, or correct the URL: {update} --url URL",
            subject,
        )
    except OSError as exc:
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: nothing accepts connections at {where} ({_os_reason(exc)})",
            f"start the agent, or correct its URL: {update} --url URL",
            subject,
        )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    session = make_session(agent.protocol, "sipbridge-doctor", sample_rate=agent.sample_rate)
    connection = AgentConnection(session, lambda _events: None)
    try:
        await connection.open(url, timeout, token=agent.token, ca_bundle=agent.ca_bundle)
    except AgentUnreachable as exc:
        return _handshake_problem(agent, url, subject, exc, timeout)
    except (OSError, ssl.SSLError) as exc:  # the CA bundle cannot be loaded
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: its CA bundle {agent.ca_bundle} cannot be loaded ({exc})",
            f"{update} --ca-bundle PEM",
            subject,
        )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), timeout)
    how = "the WebSocket handshake succeeded"
    if url.startswith("wss://"):
        how += " (TLS certificate valid" + (f" for {agent.ca_bundle})" if agent.ca_bundle else ")")
    if agent.token:
        how += ", with its token"
    return Check("agent_url", "ok", f"agent {name}: {url}: {how}", subject=subject)


def _handshake_problem(
    agent: AgentRecord, url: str, subject: str, exc: AgentUnreachable, timeout: float
) -> Check:
    name = agent.name
    update = f"sipbridge agent update {_quoted(name)}"
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause)
        if agent.ca_bundle:
            fix = (
                f"give the CA that signed the agent's certificate: {update} --ca-bundle PEM "
                f"(now {agent.ca_bundle}), or install a certificate it verifies on the agent"
            )
        else:
            fix = (
                f"install a certificate from a public CA on the agent, or give its CA: "
                f"{update} --ca-bundle PEM"
            )
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: {url}: the TLS certificate is not valid ({reason})",
            fix,
            subject,
        )
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        message = (
            f"agent {name}: {url}: the agent refused the WebSocket handshake with HTTP {status}"
        )
        if status in (401, 403):
            fix = (
                f"check the agent's token: {update} --token SECRET"
                if agent.token
                else f"the agent may want a token: {update} --token SECRET"
            )
        elif status == 404:
            fix = f"check the URL's path: {update} --url URL"
        else:
            fix = "see the agent's logs for why it refuses the connection"
        return Check("agent_url", "problem", message, fix, subject)
    if isinstance(cause, TimeoutError) or cause is None:
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: {url}: no WebSocket handshake within {timeout:g} s (the port "
            "answers, but not as a WebSocket server)",
            f"check that the URL is the agent's WebSocket endpoint: {update} --url URL",
            subject,
        )
    if isinstance(cause, ssl.SSLError):
        return Check(
            "agent_url",
            "problem",
            f"agent {name}: {url}: the TLS handshake failed ({cause.reason or cause})",
            f"check that the agent serves TLS on that port (else use ws://): {update} --url URL",
            subject,
        )
    return Check(
        "agent_url",
        "problem",
        f"agent {name}: {url}: the WebSocket handshake failed ({cause})",
        f"check that the URL is the agent's WebSocket endpoint: {update} --url URL",
        subject,
    )


# ----------------------------------------------------------- numbers, agents, trunks


def check_numbers(numbers: Sequence[NumberRecord], agents: Sequence[AgentRecord]) -> list[Check]:
    """Every number E.164 and routed to an existing, voice-enabled agent; agents that no
    number reaches as information."""
    by_name = {agent.name: agent for agent in agents}
    voice = sorted(agent.name for agent in agents if agent.voice_enabled)
    target = voice[0] if len(voice) == 1 else "NAME"
    checks: list[Check] = []
    if not agents:
        checks.append(
            Check(
                "agents",
                "problem",
                "no agent is configured: no call can be answered",
                "sipbridge agent add NAME --url wss://HOST/PATH [--token SECRET]",
            )
        )
    if not numbers:
        checks.append(
            Check(
                "numbers",
                "problem",
                "no number is routed: every call gets 404",
                f"sipbridge number add +E164 --agent {target}",
            )
        )
    for record in numbers:
        number = record.number
        try:
            e164 = normalize_e164(number)
        except InvalidNumber:
            e164 = None
        if e164 != number:
            fix = (
                f"sipbridge number remove {_quoted(number)}, then sipbridge number add +E164 "
                f"--agent {record.agent or target}"
            )
            checks.append(
                Check(
                    "number",
                    "problem",
                    f"number {number!r} is not in E.164 form"
                    + (f" (it reads as {e164})" if e164 else ""),
                    fix,
                    number,
                )
            )
            continue
        agent = by_name.get(record.agent) if record.agent is not None else None
        update = f"sipbridge number update {number} --agent {target}"
        if agent is None:
            checks.append(
                Check(
                    "number",
                    "problem",
                    f"number {number} is routed to no existing agent"
                    + (
                        f" ({record.agent!r} is gone)"
                        if record.agent
                        else " (its agent was removed)"
                    )
                    + ": its calls get 480 agent_missing",
                    update,
                    number,
                )
            )
        elif not agent.voice_enabled:
            checks.append(
                Check(
                    "number",
                    "problem",
                    f"number {number} is routed to agent {agent.name}, which is not "
                    "voice-enabled: its calls get 480 agent_not_voice_enabled",
                    f"sipbridge agent update {_quoted(agent.name)} --voice, or {update}",
                    number,
                )
            )
        else:
            checks.append(
                Check("number", "ok", f"number {number} goes to agent {agent.name}", subject=number)
            )
    routed = {record.agent for record in numbers}
    for agent in agents:
        if agent.name not in routed:
            checks.append(
                Check(
                    "agent",
                    "info",
                    f"agent {agent.name} has no number: no call reaches it",
                    f"sipbridge number add +E164 --agent {_quoted(agent.name)}",
                    agent.name,
                )
            )
    return checks


def check_trunks(trunks: Sequence[TrunkRecord]) -> list[Check]:
    """Each trunk has an access rule (allowed networks or digest credentials; for a
    registering trunk, networks: docs/operations.md, "Registration")."""
    if not trunks:
        return [
            Check(
                "trunks",
                "warning",
                "no trunk is configured: only 127.0.0.1 and ::1 may call",
                "sipbridge trunk add NAME --allow CIDR (your provider's signalling networks), "
                "or --username U --password P",
            )
        ]
    checks: list[Check] = []
    for trunk in trunks:
        name = _quoted(trunk.name)
        bad = [cidr for cidr in trunk.allowed_cidrs if not _valid_network(cidr)]
        if bad:
            checks.append(
                Check(
                    "trunk",
                    "problem",
                    f"trunk {trunk.name}: {', '.join(bad)} is not a network: the server "
                    "ignores the trunk",
                    f"sipbridge trunk remove {name}, then sipbridge trunk add {name} --allow CIDR",
                    trunk.name,
                )
            )
            continue
        # A registering trunk's credentials are ours, for its registrar: its calls are
        # admitted by address, its networks and the registrar's when host is an address.
        credentials = (
            not trunk.register and trunk.username is not None and trunk.password is not None
        )
        networks = list(trunk.allowed_cidrs)
        registrar = registrar_network(trunk.host) if trunk.register and trunk.host else None
        if registrar is not None:
            networks.append(registrar)
        if trunk.register and not networks:
            checks.append(
                Check(
                    "trunk",
                    "problem",
                    f"trunk {trunk.name} registers with {trunk.host} (a host name) and has "
                    "no allowed network: the calls for its registration are refused",
                    f"PATCH /api/trunks/{trunk.name} with allowed_cidrs (the provider's "
                    "signalling networks)",
                    trunk.name,
                )
            )
            continue
        if not networks and not credentials:
            checks.append(
                Check(
                    "trunk",
                    "problem",
                    f"trunk {trunk.name} has no access rule (no allowed network, no "
                    "username/password): no call can come from it",
                    f"sipbridge trunk remove {name}, then sipbridge trunk add {name} --allow "
                    "CIDR (or --username U --password P); or PATCH /api/trunks/"
                    f"{trunk.name} with allowed_cidrs",
                    trunk.name,
                )
            )
            continue
        rules = []
        if networks:
            rules.append("networks " + ", ".join(networks))
        if credentials:
            rules.append("digest authentication")

        checks.append(
            Check(
                "trunk",
                "ok",
                f"trunk {trunk.name} admits calls by {' and '.join(rules)}"
                + (f"; registers with {trunk.host}" if trunk.register else ""),
                subject=trunk.name,
            )
        )
    return checks


def _valid_network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ all


async def run_checks(
    settings: ServeSettings,
    listeners: list[Listener],
    *,
    tls_files: tuple[str, str] | None = None,
    timeout: float = AGENT_TIMEOUT,
) -> list[Check]:
    """Every check, in the order they are printed. ``listeners`` are the sockets ``serve``
    would open (``serve_command.listeners``); ``tls_files`` the ``--tls-cert`` and
    ``--tls-key`` given (also when ``settings`` left them out as unreadable)."""
    checks = check_ports(listeners, settings.http_host, settings.http_port)
    checks.append(check_rtp_ports(settings))
    checks.append(check_codecs(settings))
    if tls_files is not None:
        checks.extend(check_tls(*tls_files))
    database_check, database = await check_database(settings.db)
    agents: list[AgentRecord] = []
    numbers: list[NumberRecord] = []
    trunks: list[TrunkRecord] = []
    store_checks: list[Check] = []
    if database is not None:
        try:
            agents = await service.list_agents(database)
            numbers = await service.list_numbers(database)
            trunks = await service.list_trunks(database)
        except (SQLAlchemyError, OSError) as exc:
            store_checks.append(
                Check(
                    "store",
                    "problem",
                    f"cannot read agents, numbers and trunks: {_database_reason(exc)}",
                    database_check.fix or "sipbridge db upgrade",
                )
            )
            agents, numbers, trunks = [], [], []
        finally:
            await database.close()
    checks.append(check_advertised_address(settings, trunks))
    checks.append(database_check)
    checks.extend(store_checks)
    if database is None or store_checks:
        return checks
    agent_checks = await asyncio.gather(
        *(check_agent_url(agent, url, timeout) for agent in agents for url in agent.urls)
    )
    checks.extend(agent_checks)
    checks.extend(check_numbers(numbers, agents))
    checks.extend(check_trunks(trunks))
    return checks


def problems(checks: Iterable[Check]) -> int:
    """How many checks found a problem (the command exits 1 when any did)."""
    return sum(1 for check in checks if check.status == "problem")
