"""``sipbridge serve``: validate the settings, migrate the database, run the server."""

from __future__ import annotations

import importlib
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Annotated, Any, TypeVar

from sipbridge.agent.limits import parse_agent_limits
from sipbridge.cli._common import DbOption, RegionOption, _fail, _run, _setting, database_url
from sipbridge.cli.config_file import CONFIG_HELP, load_config_callback, option_label
from sipbridge.config import (
    DEFAULT_CODECS,
    SRTP_MODES,
    UNKNOWN_SOURCES,
    ConfigError,
    ServeSettings,
    parse_codecs,
    parse_port_range,
)
from sipbridge.listen import Listener, listen_problem
from sipbridge.logs import LOG_FORMATS, LOG_LEVELS, parse_log_levels
from sipbridge.numbers import normalize_region
from sipbridge.sip.auth import parse_algorithms
from sipbridge.sip.proxy import TrustedProxies
from sipbridge.store.db import Database

S = TypeVar("S")
T = TypeVar("T")

RUNTIME_SERVER = "sipbridge.runtime.server"


def _parsed(option: str, parse: Callable[[S], T], value: S) -> T:
    """``parse(value)``, or exit 2 naming ``option`` if it raises ``ValueError``."""
    try:
        return parse(value)
    except ValueError as exc:
        _fail(f"{option_label(option)}: {exc}", 2)


def _choice(option: str, value: str, choices: Sequence[str]) -> str:
    """``value`` normalized (stripped, lower case), or exit 2 if not one of ``choices``."""
    normalized = value.strip().lower()
    if normalized not in choices:
        _fail(f"{option_label(option)}: {value!r} is not one of {', '.join(choices)}", 2)
    return normalized


def serve(
    config: Annotated[
        str | None,
        _setting(
            "--config",
            metavar="PATH",
            is_eager=True,
            callback=load_config_callback,
            help=CONFIG_HELP,
        ),
    ] = None,
    sip_host: Annotated[str, _setting("--sip-host", help="Address to bind SIP on.")] = "0.0.0.0",
    sip_port: Annotated[
        int,
        _setting(
            "--sip-port",
            min=0,
            max=65535,
            help="Port for SIP over UDP and TCP (TLS: --tls-port).",
        ),
    ] = 5060,
    rtp_ports: Annotated[
        str, _setting("--rtp-ports", help="UDP port range for RTP.")
    ] = "10000-20000",
    public_ip: Annotated[
        str | None,
        _setting(
            "--public-ip",
            help="Address to advertise in SIP/SDP (default: the bind address or this host's).",
        ),
    ] = None,
    db: DbOption = None,
    agent_connect_timeout: Annotated[
        float,
        _setting(
            "--agent-connect-timeout",
            min=0.1,
            help="Seconds to wait for an agent's WebSocket to connect.",
        ),
    ] = 5.0,
    log_level: Annotated[
        str, _setting("--log-level", help="debug, info, warning or error.")
    ] = "info",
    log_format: Annotated[
        str,
        _setting(
            "--log-format",
            metavar="text|json",
            help="Log lines as text for a terminal, or one JSON object a line "
            "(call_id, event and its fields as keys).",
        ),
    ] = "text",
    log_levels: Annotated[
        str,
        _setting(
            "--log-levels",
            metavar="COMPONENT=LEVEL,...",
            help="A level per component over --log-level, e.g. call=debug,media=warning "
            "(components: docs/operations.md, Logs).",
        ),
    ] = "",
    http_host: Annotated[
        str,
        _setting(
            "--http-host",
            help="Address to bind the HTTP API (/api, /healthz, /readyz, /metrics) on.",
        ),
    ] = "127.0.0.1",
    http_port: Annotated[
        int, _setting("--http-port", min=0, max=65535, help="TCP port for HTTP.")
    ] = 8080,
    default_region: RegionOption = None,
    codecs: Annotated[
        str,
        _setting(
            "--codecs", help="Phone-side codecs in order of preference (pcmu, pcma, g722, opus)."
        ),
    ] = ",".join(DEFAULT_CODECS),
    media_timeout: Annotated[
        float,
        _setting(
            "--media-timeout",
            min=1.0,
            help="Seconds without caller RTP (when not on hold) before the call is hung up.",
        ),
    ] = 30.0,
    max_calls: Annotated[
        int,
        _setting(
            "--max-calls",
            min=1,
            help="Concurrent calls of the whole server; beyond it new calls get 503.",
        ),
    ] = 1000,
    max_call_duration: Annotated[
        float,
        _setting(
            "--max-call-duration",
            min=1.0,
            help="Seconds an answered call may last before sipbridge hangs it up.",
        ),
    ] = 4 * 3600.0,
    session_expires: Annotated[
        int,
        _setting(
            "--session-expires",
            min=0,
            help="RFC 4028 session interval (seconds) asked of callers that name none;"
            " refreshes at half of it, BYE when the caller's refresh never comes; 0: off.",
        ),
    ] = 1800,
    min_se: Annotated[
        int,
        _setting(
            "--min-se",
            min=1,
            help="Shortest session interval accepted (422 below it); RFC 4028 says 90.",
        ),
    ] = 90,
    drain_timeout: Annotated[
        float,
        _setting(
            "--drain-timeout",
            min=0.0,
            max=7 * 24 * 3600.0,
            help="After SIGTERM, seconds the calls up may go on while new ones get 503; "
            "then the rest are hung up (0: at once). A second SIGTERM stops at once.",
        ),
    ] = 300.0,
    overload_lag_ms: Annotated[
        float,
        _setting(
            "--overload-lag-ms",
            min=0.1,
            help="New calls get 503 while the media clock runs this many ms late "
            "(3+ times a second): the calls already up keep their audio.",
        ),
    ] = 5.0,
    overload_cpu: Annotated[
        float,
        _setting(
            "--overload-cpu",
            min=0.05,
            max=1.0,
            help="New calls get 503 while the process uses more than this share of one core.",
        ),
    ] = 0.85,
    reject_unknown: Annotated[
        str,
        _setting(
            "--reject-unknown",
            metavar="drop|403",
            help="Requests from sources matching no trunk: 'drop' (no answer) or '403'.",
        ),
    ] = "drop",
    auth_realm: Annotated[
        str | None,
        _setting(
            "--auth-realm", help="Digest authentication realm (default: the advertised address)."
        ),
    ] = None,
    agent_limits: Annotated[
        str,
        _setting(
            "--agent-limits",
            metavar="NAME=VALUE,...",
            help="Change what each call's agent may store, queue and send, e.g. "
            "transcripts=5000,message_rate=1000 (names and defaults: docs/security.md).",
        ),
    ] = "",
    auth_algorithms: Annotated[
        str,
        _setting(
            "--auth-algorithms",
            help="Digest algorithms to offer and accept, in order (sha-256, md5).",
        ),
    ] = "sha-256,md5",
    srtp: Annotated[
        str,
        _setting(
            "--srtp",
            metavar="MODE",
            help="SRTP for calls from no trunk (a trunk's own setting wins): "
            "off, optional or required.",
        ),
    ] = "optional",
    ban_time: Annotated[
        float,
        _setting("--ban-time", min=1.0, help="Seconds an automatic ban lasts."),
    ] = 3600.0,
    flood_rate: Annotated[
        float,
        _setting(
            "--flood-rate",
            min=0.1,
            help="SIP messages per second one source may send (sustained) before a ban.",
        ),
    ] = 50.0,
    flood_burst: Annotated[
        int,
        _setting("--flood-burst", min=1, help="Messages one source may send at once."),
    ] = 100,
    auth_failure_limit: Annotated[
        int,
        _setting(
            "--auth-failure-limit",
            min=1,
            help="Failed digest authentications per source and minute before a ban.",
        ),
    ] = 5,
    unknown_number_limit: Annotated[
        int,
        _setting(
            "--unknown-number-limit",
            min=1,
            help="Calls to unknown numbers per source and minute before a ban.",
        ),
    ] = 10,
    max_transactions_per_source: Annotated[
        int,
        _setting(
            "--max-transactions-per-source",
            metavar="N",
            min=1,
            help="Unanswered INVITEs one source (outside trunk networks) may have open.",
        ),
    ] = 64,
    trusted_proxy: Annotated[
        list[str] | None,
        _setting(
            "--trusted-proxy",
            envvar="SIPBRIDGE_TRUSTED_PROXIES",
            metavar="ADDRESS|CIDR",
            help="A SIP proxy in front (repeatable; the variable: comma-separated) whose "
            "X-Sipbridge-Source header gives each request's real source: trunks, bans and "
            "flood limits apply to that source. Only ever the proxy's own addresses.",
        ),
    ] = None,
    tcp: Annotated[
        bool,
        _setting("--tcp/--no-tcp", help="Also accept SIP over TCP on the SIP port."),
    ] = True,
    tls_port: Annotated[
        int, _setting("--tls-port", min=0, max=65535, help="TCP port for SIP over TLS.")
    ] = 5061,
    tls_cert: Annotated[
        str | None,
        _setting("--tls-cert", help="PEM certificate chain for SIP over TLS (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        str | None,
        _setting("--tls-key", help="PEM private key of --tls-cert; TLS is off without both."),
    ] = None,
    tls_ca: Annotated[
        str | None,
        _setting(
            "--tls-ca",
            help="PEM CA certificates trusted, besides the system's, for the certificates of "
            "registrars and trunks we connect to over TLS.",
        ),
    ] = None,
    unknown_connection_timeout: Annotated[
        float,
        _setting(
            "--unknown-connection-timeout",
            min=0.1,
            help="Seconds a TCP/TLS connection from a source matching no trunk may stay "
            "open without an admitted request.",
        ),
    ] = 5.0,
    max_connections_per_source: Annotated[
        int,
        _setting(
            "--max-connections-per-source",
            min=1,
            help="TCP/TLS connections one trunk address, or one /24 (IPv4) or /64 (IPv6) of "
            "sources matching no trunk, may hold open.",
        ),
    ] = 32,
    instance_id: Annotated[
        str | None,
        _setting(
            "--instance-id",
            help="This instance's id on the calls it records; at start it closes its own "
            "calls left open as interrupted (default: hostname:sip-port).",
        ),
    ] = None,
    instance_timeout: Annotated[
        float,
        _setting(
            "--instance-timeout",
            min=1.0,
            help="Seconds without a heartbeat in the database after which the other "
            "instances sharing it declare this one lost and close its open calls.",
        ),
    ] = 30.0,
    spool: Annotated[
        str | None,
        _setting(
            "--spool",
            help="File keeping call records the database refused until it takes them "
            "(default: beside a SQLite file, else in the data directory).",
        ),
    ] = None,
    spool_max_mb: Annotated[
        int,
        _setting("--spool-max-mb", min=1, help="Size cap of the spool file, MiB."),
    ] = 64,
    recordings_dir: Annotated[
        str | None,
        _setting(
            "--recordings-dir",
            metavar="PATH",
            help="Folder of call recordings (agents and numbers with record on; "
            "default: 'recordings' beside a SQLite file, else in the data directory).",
        ),
    ] = None,
    recording_retention_days: Annotated[
        float,
        _setting(
            "--recording-retention-days",
            min=0.0,
            max=36500.0,
            help="Days a call recording is kept before it is deleted (0: keep forever).",
        ),
    ] = 30.0,
    session_secret: Annotated[
        str | None,
        _setting(
            "--session-secret",
            metavar="TEXT",
            help="Signs the dashboard's session cookies: the same on every instance behind "
            "one address (default: a random key kept beside the database).",
        ),
    ] = None,
) -> None:
    """Run the SIP server and its HTTP API."""
    settings = serve_settings(locals())

    async def migrate(_database: Database) -> None:
        return None

    problem = listen_problem(listeners(settings))
    if problem is not None:
        _fail(problem, 1)
    _run(settings.db, migrate)  # a bad database URL or schema fails here, before any socket opens

    run_server(settings)


def serve_settings(options: Mapping[str, Any], *, tls_files: bool = True) -> ServeSettings:
    """The :class:`ServeSettings` of ``serve``'s options (its parameters by name), or exit 2
    naming the option that is wrong. ``sipbridge doctor`` takes the same options; it passes
    ``tls_files=False`` to report unreadable TLS files itself (they are left out of the
    settings then)."""
    o = SimpleNamespace(**options)
    rtp_min, rtp_max = _parsed("--rtp-ports", parse_port_range, o.rtp_ports)
    public_ip, tls_cert, tls_key = o.public_ip, o.tls_cert, o.tls_key
    if public_ip is not None:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            _fail(f"{option_label('--public-ip')}: {public_ip!r} is not an IP address", 2)
    level = _choice("--log-level", o.log_level, LOG_LEVELS)
    log_format = _choice("--log-format", o.log_format, LOG_FORMATS)
    component_levels = _parsed("--log-levels", parse_log_levels, o.log_levels)
    region = _parsed("--default-region", normalize_region, o.default_region)
    codec_list = _parsed("--codecs", parse_codecs, o.codecs)
    unknown = _choice("--reject-unknown", o.reject_unknown, UNKNOWN_SOURCES)
    if o.auth_realm is not None and (not o.auth_realm.strip() or not o.auth_realm.isprintable()):
        _fail(f"{option_label('--auth-realm')}: must be printable, non-empty text", 2)
    algorithms = _parsed("--auth-algorithms", parse_algorithms, o.auth_algorithms)
    limits = _parsed("--agent-limits", parse_agent_limits, o.agent_limits)
    srtp_mode = _choice("--srtp", o.srtp, SRTP_MODES)
    proxies = _parsed("--trusted-proxy", TrustedProxies.parse, o.trusted_proxy or [])
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key must be given together", 2)
    for option, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not os.access(path, os.R_OK):
            if tls_files:
                _fail(f"{option_label(option)}: {path!r} cannot be read", 2)
            tls_cert = tls_key = None
    tls_ca = o.tls_ca
    if tls_ca is not None and not os.access(tls_ca, os.R_OK):
        if tls_files:
            _fail(f"{option_label('--tls-ca')}: {tls_ca!r} cannot be read", 2)
        tls_ca = None
    if o.instance_id is not None and (
        not o.instance_id.strip() or not o.instance_id.isprintable() or len(o.instance_id) > 255
    ):
        label = option_label("--instance-id")
        _fail(f"{label}: must be printable, non-empty text of at most 255 characters", 2)
    if o.session_expires and o.session_expires < o.min_se:
        _fail("--session-expires must be 0 (no session timers) or at least --min-se", 2)
    db_url = database_url(o.db)
    return ServeSettings(
        sip_host=o.sip_host,
        sip_port=o.sip_port,
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        public_ip=public_ip,
        db=db_url,
        agent_connect_timeout=o.agent_connect_timeout,
        log_level=level,
        log_format=log_format,
        log_levels=tuple(component_levels.items()),
        default_region=region,
        http_host=o.http_host,
        http_port=o.http_port,
        codecs=codec_list,
        media_timeout=o.media_timeout,
        max_calls=o.max_calls,
        max_call_duration=o.max_call_duration,
        session_expires=o.session_expires,
        min_se=o.min_se,
        drain_timeout=o.drain_timeout,
        agent_limits=limits,
        overload_lag_ms=o.overload_lag_ms,
        overload_cpu=o.overload_cpu,
        unknown_sources="403" if unknown == "403" else "drop",
        auth_realm=o.auth_realm,
        auth_algorithms=algorithms,
        srtp="off" if srtp_mode == "off" else "required" if srtp_mode == "required" else "optional",
        ban_time=o.ban_time,
        flood_rate=o.flood_rate,
        flood_burst=o.flood_burst,
        auth_failure_limit=o.auth_failure_limit,
        unknown_number_limit=o.unknown_number_limit,
        max_transactions_per_source=o.max_transactions_per_source,
        trusted_proxies=tuple(str(proxies).split(",")) if proxies else (),
        tcp=o.tcp,
        tls_port=o.tls_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        unknown_connection_timeout=o.unknown_connection_timeout,
        max_connections_per_source=o.max_connections_per_source,
        instance_id=o.instance_id,
        instance_timeout=o.instance_timeout,
        spool_path=o.spool,
        spool_max_bytes=o.spool_max_mb * 1024 * 1024,
        recordings_dir=o.recordings_dir,
        recording_retention_days=o.recording_retention_days,
        session_secret=o.session_secret,
    )


def listeners(settings: ServeSettings) -> list[Listener]:
    """The sockets ``serve`` will listen on, SIP first."""
    host = settings.sip_host
    sip = [Listener("SIP over UDP", host, settings.sip_port, "--sip-host", "--sip-port", udp=True)]
    if settings.tcp:
        sip.append(Listener("SIP over TCP", host, settings.sip_port, "--sip-host", "--sip-port"))
    if settings.tls_cert is not None:
        sip.append(Listener("SIP over TLS", host, settings.tls_port, "--sip-host", "--tls-port"))
    http = Listener("HTTP", settings.http_host, settings.http_port, "--http-host", "--http-port")
    return [*sip, http]


def run_server(settings: ServeSettings) -> None:
    """Hand over to ``sipbridge.runtime.server.run`` (imported lazily: it pulls in the
    whole asyncio runtime, which management commands do not need)."""
    try:
        server = importlib.import_module(RUNTIME_SERVER)
    except ModuleNotFoundError as exc:
        if exc.name != RUNTIME_SERVER:
            raise
        _fail("the SIP runtime (sipbridge.runtime.server) is not installed", 1)
    run: Callable[[ServeSettings], None] = server.run
    try:
        run(settings)
    except OSError as exc:  # a socket taken between the check and the start
        _fail(f"cannot start the server: {exc}", 1)
    except ConfigError as exc:  # e.g. --codecs names a codec this machine cannot run
        _fail(str(exc), 2)
