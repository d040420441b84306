"""``sipbridge calls``: recent calls, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sipbridge.cli._common import (
    DbOption,
    RegionOption,
    _echo_table,
    _fail,
    _option,
    _run,
    _when,
)
from sipbridge.numbers import InvalidNumber, normalize_e164
from sipbridge.store import service
from sipbridge.store.records import CallRecord


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


def calls(
    number: Annotated[
        str | None, _option("--number", help="Only calls from or to this number.")
    ] = None,
    limit: Annotated[int, _option("--limit", min=1, help="How many calls.")] = 50,
    as_json: Annotated[bool, _option("--json", help="Print JSON instead of a table.")] = False,
    default_region: RegionOption = None,
    db: DbOption = None,
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
    headers = ["RECEIVED (UTC)", "FROM", "TO", "AGENT", "STATUS", "REASON", "CODE"]
    headers += ["DURATION", "CODEC"]
    _echo_table(records, "no calls", headers, _call_row, db)
