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

from sipbridge.config import ServeSettings, parse_port_range
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
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(number_app, name="number")
app.add_typer(db_app, name="db")


def _env(option: str) -> str:
    return "SIPBRIDGE_" + option.upper().replace("-", "_")


DbOption = Annotated[
    str,
    typer.Option("--db", envvar=_env("db"), help="Database URL (sqlite:///file.db, ...)."),
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
) -> None:
    """Run the SIP server."""
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
    settings = ServeSettings(
        sip_host=sip_host,
        sip_port=sip_port,
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        public_ip=public_ip,
        db=db,
        agent_connect_timeout=agent_connect_timeout,
        log_level=level,
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


@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="Agent name, e.g. support-bot.")],
    url: Annotated[
        str, typer.Option("--url", envvar=_env("url"), help="ws:// or wss:// URL of the agent.")
    ],
    voice: Annotated[
        bool,
        typer.Option(
            "--voice/--no-voice", envvar=_env("voice"), help="Whether the agent takes calls."
        ),
    ] = True,
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Add an agent."""
    record = _run(db, lambda d: service.add_agent(d, name, url, voice_enabled=voice))
    typer.echo(f"added agent {record.name} -> {record.url}")


@agent_app.command("list")
def agent_list(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """List agents."""
    agents = _run(db, service.list_agents)
    if not agents:
        typer.echo("no agents")
        return
    rows = [
        [a.name, a.url, "yes" if a.voice_enabled else "no", _when(a.created_at)] for a in agents
    ]
    typer.echo(_table(["NAME", "URL", "VOICE", "CREATED (UTC)"], rows))


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
    number: Annotated[str, typer.Argument(help="Phone number in E.164, e.g. +12025550101.")],
    agent: Annotated[
        str, typer.Option("--agent", envvar=_env("agent"), help="Agent that answers it.")
    ],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Route a phone number to an agent."""
    record = _run(db, lambda d: service.add_number(d, number, agent))
    typer.echo(f"added number {record.number} -> {record.agent}")


@number_app.command("list")
def number_list(db: DbOption = "sqlite:///sipbridge.db") -> None:
    """List phone numbers."""
    numbers = _run(db, service.list_numbers)
    if not numbers:
        typer.echo("no numbers")
        return
    rows = [[n.number, n.agent if n.agent is not None else "- (no agent)"] for n in numbers]
    typer.echo(_table(["NUMBER", "AGENT"], rows))


@number_app.command("remove")
def number_remove(
    number: Annotated[str, typer.Argument(help="Phone number.")],
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Remove a phone number."""
    removed = _run(db, lambda d: service.remove_number(d, number))
    typer.echo(f"removed number {removed}")


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
    db: DbOption = "sqlite:///sipbridge.db",
) -> None:
    """Show recent calls, newest first."""
    records = _run(db, lambda d: service.list_calls(d, number=number, limit=limit))
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
