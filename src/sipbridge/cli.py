"""The ``sipbridge`` command line.

Every option can also be given as an environment variable ``SIPBRIDGE_<OPTION>``
(``--db`` is ``SIPBRIDGE_DB``, ``--sip-port`` is ``SIPBRIDGE_SIP_PORT`` ...).

Exit codes: 0 success, 1 the operation failed (unknown agent, duplicate, database
error), 2 bad input (usage error, invalid number, URL or port range).
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from importlib import metadata
from typing import Annotated, NoReturn, TypeVar

import typer
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from sipbridge.config import (
    DEFAULT_CODECS,
    UNKNOWN_SOURCES,
    ServeSettings,
    parse_codecs,
    parse_port_range,
)
from sipbridge.numbers import InvalidNumber, normalize_e164, normalize_region
from sipbridge.sip.auth import parse_algorithms
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord

__all__ = ["app", "main"]

T = TypeVar("T")

RUNTIME_SERVER = "sipbridge.runtime.server"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

app = typer.Typer(
    name="sipbridge",
    help="Self-hosted SIP server that bridges phone calls to AI voice agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
agent_app = typer.Typer(help="Manage AI agents (WebSocket endpoints).", no_args_is_help=True)
number_app = typer.Typer(help="Manage phone numbers and their agents.", no_args_is_help=True)
trunk_app = typer.Typer(help="Manage SIP trunks (providers).", no_args_is_help=True)
apikey_app = typer.Typer(help="Manage REST API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(number_app, name="number")
app.add_typer(trunk_app, name="trunk")
app.add_typer(apikey_app, name="apikey")
app.add_typer(db_app, name="db")


def _env(option: str) -> str:
    return "SIPBRIDGE_" + option.upper().replace("-", "_")


DbOption = Annotated[
    str,
    typer.Option("--db", envvar=_env("db"), help="Database URL (sqlite:///file.db, ...)."),
]


RegionOption = Annotated[
    str | None,
    typer.Option(
        "--default-region",
        "--region",
        envvar=_env("default-region"),
        help="ISO 3166 region for numbers written without +country code (e.g. US).",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(db_url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database, bring it to the latest schema, run ``action``, close."""

    async def go() -> T:
        database = Database(db_url)
        try:
            await database.upgrade()
            return await action(database)
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (service.NotFound, service.AlreadyExists) as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # InvalidNumber, bad URL, bad database URL
        _fail(str(exc), 2)
    except CommandError as exc:
        _fail(f"database migration failed: {exc}", 1)
    except SQLAlchemyError as exc:
        _fail(f"database error: {exc}", 1)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _version_callback(value: bool) -> None:
    if value:
        try:
            version = metadata.version("sipbridge")
        except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
            version = "unknown"
        typer.echo(f"sipbridge {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Self-hosted SIP server that bridges phone calls to AI voice agents."""


# ---------------------------------------------------------------------------- serve


@app.command()
def serve(
    sip_host: Annotated[
        str, typer.Option("--sip-host", envvar=_env("sip-host"), help="Address to bind SIP on.")
    ] = "0.0.0.0",
    sip_port: Annotated[
        int,
        typer.Option(
            "--sip-port", envvar=_env("sip-port"), min=0, max=65535, help="UDP port for SIP."
        ),
    ] = 5060,
    rtp_ports: Annotated[
        str,
        typer.Option("--rtp-ports", envvar=_env("rtp-ports"), help="UDP port range for RTP."),
    ] = "10000-20000",
    public_ip: Annotated[
        str | None,
        typer.Option(
            "--public-ip",
            envvar=_env("public-ip"),
            help="Address to advertise in SIP/SDP (default: the bind address or this host's).",
        ),
    ] = None,
    db: DbOption = "sqlite:///sipbridge.db",
    agent_connect_timeout: Annotated[
        float,
        typer.Option(
            "--agent-connect-timeout",
            envvar=_env("agent-connect-timeout"),
            min=0.1,
            help="Seconds to wait for an agent's WebSocket to connect.",
        ),
    ] = 5.0,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", envvar=_env("log-level"), help="debug, info, warning or error."
        ),
    ] = "info",
    http_host: Annotated[
        str,
        typer.Option(
            "--http-host",
            envvar=_env("http-host"),
            help="Address to bind the HTTP API (/api, /healthz, /readyz, /metrics) on.",
        ),
    ] = "127.0.0.1",
    http_port: Annotated[
        int,
        typer.Option(
            "--http-port", envvar=_env("http-port"), min=0, max=65535, help="TCP port for HTTP."
        ),
    ] = 8080,
    default_region: RegionOption = None,
    codecs: Annotated[
        str,
        typer.Option(
            "--codecs",
            envvar=_env("codecs"),
            help="Phone-side codecs in order of preference (pcmu, pcma, g722, opus).",
        ),
    ] = ",".join(DEFAULT_CODECS),
    media_timeout: Annotated[
        float,
        typer.Option(
            "--media-timeout",
            envvar=_env("media-timeout"),
            min=1.0,
            help="Seconds without caller RTP (when not on hold) before the call is hung up.",
        ),
    ] = 30.0,
    reject_unknown: Annotated[
        str,
        typer.Option(
            "--reject-unknown",
            envvar=_env("reject-unknown"),
            help="Requests from sources matching no trunk: 'drop' (no answer) or '403'.",
        ),
    ] = "drop",
    auth_realm: Annotated[
        str | None,
        typer.Option(
            "--auth-realm",
            envvar=_env("auth-realm"),
            help="Digest authentication realm (default: the advertised address).",
        ),
    ] = None,
    auth_algorithms: Annotated[
        str,
        typer.Option(
            "--auth-algorithms",
            envvar=_env("auth-algorithms"),
            help="Digest algorithms to offer and accept, in order (sha-256, md5).",
        ),
    ] = "sha-256,md5",
) -> None:
    """Run the SIP server and its HTTP API."""
    try:
        rtp_min, rtp_max = parse_port_range(rtp_ports)
    except ValueError as exc:
        _fail(f"--rtp-ports: {exc}", 2)
    if public_ip is not None:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            _fail(f"--public-ip: {public_ip!r} is not an IP address", 2)
    level = log_level.strip().lower()
    if level not in LOG_LEVELS:
        _fail(f"--log-level: {log_level!r} is not one of {', '.join(LOG_LEVELS)}", 2)
    try:
        region = normalize_region(default_region)
    except ValueError as exc:
        _fail(f"--default-region: {exc}", 2)
    try:
        codec_list = parse_codecs(codecs)
    except ValueError as exc:
        _fail(f"--codecs: {exc}", 2)
    unknown = reject_unknown.strip().lower()
    if unknown not in UNKNOWN_SOURCES:
        _fail(f"--reject-unknown: {reject_unknown!r} is not one of {', '.join(UNKNOWN_SOURCES)}", 2)
    if auth_realm is not None and (not auth_realm.strip() or not auth_realm.isprintable()):
        _fail("--auth-realm: must be printable, non-empty text", 2)
    try:
        algorithms = parse_algorithms(auth_algorithms)
    except ValueError as exc:
        _fail(f"--auth-algorithms: {exc}", 2)
    settings = ServeSettings(
        sip_host=sip_host,
        sip_port=sip_port,
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        public_ip=public_ip,
        db=db,
        agent_connect_timeout=agent_connect_timeout,
        log_level=level,
        default_region=region,
        http_host=http_host,
        http_port=http_port,
        codecs=codec_list,
        media_timeout=media_timeout,
        unknown_sources="403" if unknown == "403" else "drop",
        auth_realm=auth_realm,
        auth_algorithms=algorithms,
    )

    async def migrate(_database: Database) -> None:
        return None

    _run(db, migrate)  # a bad database URL or schema fails here, before any socket opens

    run_server(settings)


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
    run(settings)


# ---------------------------------------------------------------------------- agent


UrlsOption = Annotated[
    list[str],
    typer.Option(
        "--url",
        envvar=_env("url"),
        help="ws:// or wss:// URL of the agent; repeat for fallbacks, tried in order.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar=_env("token"), help="Secret sent to the agent (never displayed)."
    ),
]
ProtocolOption = Annotated[
    str | None,
    typer.Option("--protocol", envvar=_env("protocol"), help="Agent protocol: native or twilio."),
]
SampleRateOption = Annotated[
    int | None,
    typer.Option("--sample-rate", envvar=_env("sample-rate"), help="8000 or 16000 (Hz)."),
]
CaBundleOption = Annotated[
    str | None,
    typer.Option(
        "--ca-bundle",
        envvar=_env("ca-bundle"),
        help="PEM file of CA certificates that verify the agent's wss:// certificate "
        "(instead of the system's); stored as an absolute path.",
    ),
]


@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="Agent name, e.g. support-bot.")],
    url: UrlsOption,
    voice: Annotated[
        bool,
        typer.Option(
            "--voice/--no-voice", envvar=_env("voice"), help="Whether the agent takes calls."
        ),
    ] = True,
    token: TokenOption = None,
    protocol: ProtocolOption = None,
    sample_rate: SampleRateOption = None,
    ca_bundle: CaBundleOption = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Add an agent."""
    record = _run(
        db,
        lambda d: service.add_agent(
            d,
            name,
            url,
            voice_enabled=voice,
            protocol=protocol or "native",
            token=token,
            sample_rate=8000 if sample_rate is None else sample_rate,
            ca_bundle=ca_bundle,
        ),
    )
    typer.echo(f"added agent {record.name} -> {', '.join(record.urls)}")


@agent_app.command("update")
def agent_update(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    url: Annotated[
        list[str] | None,
        typer.Option("--url", envvar=_env("url"), help="Replace the URLs (repeat for fallbacks)."),
    ] = None,
    voice: Annotated[
        bool | None,
        typer.Option(
            "--voice/--no-voice", envvar=_env("voice"), help="Whether the agent takes calls."
        ),
    ] = None,
    token: TokenOption = None,
    clear_token: Annotated[
        bool,
        typer.Option("--clear-token", envvar=_env("clear-token"), help="Remove the token."),
    ] = False,
    protocol: ProtocolOption = None,
    sample_rate: SampleRateOption = None,
    ca_bundle: CaBundleOption = None,
    clear_ca_bundle: Annotated[
        bool,
        typer.Option(
            "--clear-ca-bundle",
            "--no-ca-bundle",
            envvar=_env("clear-ca-bundle"),
            help="Remove the CA bundle (verify with the system's CAs again).",
        ),
    ] = False,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Change an agent's settings (only the options given)."""
    if clear_token and token is not None:
        _fail("--token and --clear-token cannot be used together", 2)
    if clear_ca_bundle and ca_bundle is not None:
        _fail("--ca-bundle and --clear-ca-bundle cannot be used together", 2)
    new_token: str | service.Unset | None = service.UNSET
    if clear_token:
        new_token = None
    elif token is not None:
        new_token = token
    new_ca_bundle: str | service.Unset | None = service.UNSET
    if clear_ca_bundle:
        new_ca_bundle = None
    elif ca_bundle is not None:
        new_ca_bundle = ca_bundle
    record = _run(
        db,
        lambda d: service.update_agent(
            d,
            name,
            urls=url or None,
            voice_enabled=voice,
            protocol=protocol,
            token=new_token,
            sample_rate=sample_rate,
            ca_bundle=new_ca_bundle,
        ),
    )
    typer.echo(f"updated agent {record.name} -> {', '.join(record.urls)}")


@agent_app.command("list")
def agent_list(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """List agents (tokens are never shown)."""
    agents = _run(db, service.list_agents)
    if not agents:
        typer.echo("no agents")
        return
    rows = [
        [
            a.name,
            ",".join(a.urls),
            a.protocol,
            str(a.sample_rate),
            "yes" if a.voice_enabled else "no",
            "yes" if a.token is not None else "no",
            a.ca_bundle or "-",
            _when(a.created_at),
        ]
        for a in agents
    ]
    headers = ["NAME", "URLS", "PROTOCOL", "RATE", "VOICE", "TOKEN", "CA BUNDLE", "CREATED (UTC)"]
    typer.echo(_table(headers, rows))


@agent_app.command("remove")
def agent_remove(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Remove an agent (its numbers stay, without an agent, and answer 480)."""
    orphaned = _run(db, lambda d: service.remove_agent(d, name))
    typer.echo(f"removed agent {name}")
    if orphaned:
        noun = "number now has" if orphaned == 1 else "numbers now have"
        typer.echo(f"{orphaned} {noun} no agent")


# --------------------------------------------------------------------------- number


@number_app.command("add")
def number_add(
    number: Annotated[str, typer.Argument(help="Phone number, e.g. +12025550101.")],
    agent: Annotated[
        str, typer.Option("--agent", envvar=_env("agent"), help="Agent that answers it.")
    ],
    default_region: RegionOption = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Route a phone number to an agent."""
    record = _run(db, lambda d: service.add_number(d, number, agent, default_region))
    typer.echo(f"added number {record.number} -> {record.agent}")


@number_app.command("list")
def number_list(
    agent: Annotated[
        str | None,
        typer.Option("--agent", envvar=_env("agent"), help="Only this agent's numbers."),
    ] = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """List phone numbers."""
    numbers = _run(db, lambda d: service.list_numbers(d, agent=agent))
    if not numbers:
        typer.echo("no numbers")
        return
    rows = [[n.number, n.agent if n.agent is not None else "- (no agent)"] for n in numbers]
    typer.echo(_table(["NUMBER", "AGENT"], rows))


@number_app.command("remove")
def number_remove(
    number: Annotated[str, typer.Argument(help="Phone number.")],
    default_region: RegionOption = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Remove a phone number."""
    removed = _run(db, lambda d: service.remove_number(d, number, default_region))
    typer.echo(f"removed number {removed}")


# --------------------------------------------------------------------------- trunk


@trunk_app.command("add")
def trunk_add(
    name: Annotated[str, typer.Argument(help="Trunk name, e.g. telnyx.")],
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            envvar=_env("allow"),
            help="Source address or CIDR allowed to send calls (repeatable).",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", envvar=_env("host"), help="Where outbound calls and REGISTER go."),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option("--username", envvar=_env("username"), help="Digest user name."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar=_env("password"),
            help="Digest password (prefer the SIPBRIDGE_PASSWORD variable).",
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option("--register", envvar=_env("register"), help="Register with the host."),
    ] = False,
    max_calls: Annotated[
        int | None,
        typer.Option(
            "--max-calls", envvar=_env("max-calls"), help="Concurrent call limit (at least 1)."
        ),
    ] = None,
    codec: Annotated[
        list[str] | None,
        typer.Option(
            "--codec",
            envvar=_env("codec"),
            help="Allowed codec, in order of preference: pcmu, pcma, g722, opus (repeatable).",
        ),
    ] = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Add a SIP trunk (provider)."""
    record = _run(
        db,
        lambda d: service.add_trunk(
            d,
            name,
            allowed_cidrs=allow or (),
            host=host,
            username=username,
            password=password,
            register=register,
            max_calls=max_calls,
            codecs=codec or (),
        ),
    )
    typer.echo(f"added trunk {record.name}")


@trunk_app.command("list")
def trunk_list(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """List trunks (passwords are never shown)."""
    trunks = _run(db, service.list_trunks)
    if not trunks:
        typer.echo("no trunks")
        return
    rows = [
        [
            t.name,
            ",".join(t.allowed_cidrs) or "-",
            t.host or "-",
            t.username or "-",
            "yes" if t.password is not None else "no",
            "yes" if t.register else "no",
            "-" if t.max_calls is None else str(t.max_calls),
            ",".join(t.codecs) or "-",
        ]
        for t in trunks
    ]
    headers = ["NAME", "ALLOW", "HOST", "USERNAME", "PASSWORD", "REGISTER", "MAX CALLS"]
    typer.echo(_table([*headers, "CODECS"], rows))


@trunk_app.command("remove")
def trunk_remove(
    name: Annotated[str, typer.Argument(help="Trunk name.")],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Remove a trunk."""
    _run(db, lambda d: service.remove_trunk(d, name))
    typer.echo(f"removed trunk {name}")


# -------------------------------------------------------------------------- apikey


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="Key name, e.g. dashboard.")],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    record, secret = _run(db, lambda d: service.create_api_key(d, name))
    typer.echo(secret)
    typer.echo(
        f"created API key {record.name}: copy it now, it cannot be shown again "
        "(use it as 'Authorization: Bearer <key>')",
        err=True,
    )


@apikey_app.command("list")
def apikey_list(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """List API keys (name and prefix; the keys themselves are not stored)."""
    keys = _run(db, service.list_api_keys)
    if not keys:
        typer.echo("no API keys")
        return
    rows = [[k.name, k.prefix + "...", _when(k.created_at), _when(k.last_used_at)] for k in keys]
    typer.echo(_table(["NAME", "PREFIX", "CREATED (UTC)", "LAST USED (UTC)"], rows))


@apikey_app.command("revoke")
def apikey_revoke(
    name: Annotated[str, typer.Argument(help="Key name.")],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Revoke (delete) an API key; it stops working at once."""
    _run(db, lambda d: service.revoke_api_key(d, name))
    typer.echo(f"revoked API key {name}")


# ---------------------------------------------------------------------------- calls


def _call_row(call: CallRecord) -> list[str]:
    duration = call.duration_s
    return [
        _when(call.received_at),
        call.from_number or "-",
        call.to_number or "-",
        call.agent or "-",
        call.status.value,
        call.reason or "-",
        "-" if call.sip_code is None else str(call.sip_code),
        "-" if duration is None else f"{duration:.1f}s",
        call.codec or "-",
    ]


@app.command()
def calls(
    number: Annotated[
        str | None,
        typer.Option("--number", envvar=_env("number"), help="Only calls from or to this number."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", envvar=_env("limit"), min=1, help="How many calls.")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", envvar=_env("json"), help="Print JSON instead of a table.")
    ] = False,
    default_region: RegionOption = None,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Show recent calls, newest first."""
    wanted = number
    if number is not None and default_region is not None:
        try:
            wanted = normalize_e164(number, default_region)
        except InvalidNumber:
            pass  # not a number in that region: matched as typed
        except ValueError as exc:  # a bad region
            _fail(str(exc), 2)
    records = _run(db, lambda d: service.list_calls(d, number=wanted, limit=limit))
    if as_json:
        typer.echo(json.dumps([record.to_json() for record in records], indent=2))
        return
    if not records:
        typer.echo("no calls")
        return
    headers = ["RECEIVED (UTC)", "FROM", "TO", "AGENT", "STATUS", "REASON", "CODE"]
    headers += ["DURATION", "CODEC"]
    typer.echo(_table(headers, [_call_row(record) for record in records]))


# ------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """Create or migrate the database schema to the latest version."""
    revision = _run(db, lambda d: d.current_revision())
    typer.echo(f"database is at revision {revision}")


def main() -> None:
    """Console script entry point."""
    app(prog_name="sipbridge")


if __name__ == "__main__":  # pragma: no cover
    main()
