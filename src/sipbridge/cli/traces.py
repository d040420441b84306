"""``sipbridge trace ...``: per-call SIP traces, switched on and off without a restart.

While a trace is in force, the server writes every SIP message of the calls to or from its
number, or of its trunk's calls, to its log under ``sipbridge.sip.trace`` (secrets masked;
docs/operations.md, "SIP trace"). The traces are stored: a running server, and every
instance sharing the database, picks a change up within seconds.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import DbOption, RegionOption, _echo_table, _option, _run
from sipbridge.store import service
from sipbridge.store.records import TraceRecord

trace_app = typer.Typer(
    rich_markup_mode=None,
    help="Switch the SIP trace of a number's or a trunk's calls on and off.",
    no_args_is_help=True,
)

NumberOption = Annotated[
    str | None, _option("--number", help="Trace the calls to or from this number.")
]
TrunkOption = Annotated[str | None, _option("--trunk", help="Trace the calls of this trunk.")]


def _trace_row(trace: TraceRecord) -> list[str]:
    return [
        trace.kind,
        trace.value,
        trace.created_at.isoformat(timespec="seconds"),
        trace.expires_at.isoformat(timespec="seconds"),
    ]


@trace_app.command("on")
def trace_on(
    number: NumberOption = None,
    trunk: TrunkOption = None,
    duration: Annotated[
        int,
        _option(
            "--duration",
            min=1,
            max=service.MAX_TRACE_SECONDS,
            help="Seconds the trace lasts (default: one hour).",
        ),
    ] = service.DEFAULT_TRACE_SECONDS,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Write every SIP message of the calls to or from --number, or of --trunk's calls,
    to the server's log (secrets masked) until the trace ends."""
    record = _run(
        db,
        lambda d: service.add_trace(
            d, number=number, trunk=trunk, duration=duration, default_region=default_region
        ),
    )
    until = record.expires_at.isoformat(timespec="seconds")
    typer.echo(f"tracing {record.kind} {record.value} until {until}")


@trace_app.command("off")
def trace_off(
    number: NumberOption = None,
    trunk: TrunkOption = None,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Switch the trace of --number or --trunk off."""
    kind, value = _run(
        db,
        lambda d: service.remove_trace(
            d, number=number, trunk=trunk, default_region=default_region
        ),
    )
    typer.echo(f"trace of {kind} {value} off")


@trace_app.command("list")
def trace_list(
    include_expired: Annotated[bool, _option("--all", help="Also traces that have ended.")] = False,
    db: DbOption = None,
) -> None:
    """List the traces in force, newest first."""
    traces = _run(db, lambda d: service.list_traces(d, include_expired=include_expired))
    _echo_table(traces, "no traces", ["KIND", "VALUE", "SINCE", "UNTIL"], _trace_row, db)
