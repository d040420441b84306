"""``sipbridge calls``: recent calls, newest first; ``sipbridge calls show ID``: one call
whole (its record, quality figures, timeline, transcript and metadata)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sipbridge.cli._common import (
    Command,
    DbOption,
    RegionOption,
    _echo_table,
    _fail,
    _option,
    _run,
    _when,
    invalid_number_message,
)
from sipbridge.logs import escape_controls
from sipbridge.numbers import InvalidNumber, read_number
from sipbridge.store import service
from sipbridge.store.records import CallDetail, CallRecord

calls_app = typer.Typer(
    rich_markup_mode=None,
    help="Show recent calls, newest first (calls show ID: one call whole).",
)


def _call_row(call: CallRecord) -> list[str]:
    duration = call.duration_s
    return [
        call.id,
        _when(call.received_at),
        call.from_number or "-",
        call.to_number or "-",
        call.agent or "-",
        "out" if call.direction == "outbound" else "in",
        call.status.value,
        call.reason or "-",
        "-" if call.sip_code is None else str(call.sip_code),
        "-" if duration is None else f"{duration:.1f}s",
        call.codec or "-",
        _figure(call.mos, "{:.1f}"),
        _figure(call.jitter_ms, "{:.0f}ms"),
        _figure(call.loss_percent, "{:.1f}%"),
    ]


def _figure(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _parsed_number(number: str, default_region: str | None) -> str:
    """``--number`` read as calls are recorded (E.164), or exit 2 saying why."""
    try:
        return read_number(number, default_region)
    except InvalidNumber as exc:
        _fail(invalid_number_message(exc, "--number"), 2)
    except ValueError as exc:  # a bad region
        _fail(str(exc), 2)


@calls_app.callback(invoke_without_command=True)
def calls(
    ctx: typer.Context,
    number: Annotated[
        str | None, _option("--number", help="Only calls from or to this number.")
    ] = None,
    limit: Annotated[int, _option("--limit", min=1, help="How many calls.")] = 50,
    as_json: Annotated[bool, _option("--json", help="Print JSON instead of a table.")] = False,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Show recent calls, newest first (``calls show ID``: one call whole)."""
    if ctx.invoked_subcommand is not None:
        return
    wanted = None if number is None else _parsed_number(number, default_region)
    records = _run(db, lambda d: service.list_calls(d, number=wanted, limit=limit))
    if as_json:
        typer.echo(json.dumps([record.to_json() for record in records], indent=2))
        return
    headers = ["ID", "RECEIVED (UTC)", "FROM", "TO", "AGENT", "DIR", "STATUS", "REASON", "CODE"]
    headers += ["DURATION", "CODEC", "MOS", "JITTER", "LOSS"]
    _echo_table(records, "no calls", headers, _call_row, db)


@calls_app.command("show", cls=Command)
def calls_show(
    call_id: Annotated[str, typer.Argument(metavar="ID", help="The call's id (calls: ID).")],
    as_json: Annotated[bool, _option("--json", help="Print JSON instead of text.")] = False,
    db: DbOption = None,
) -> None:
    """One call whole: its record, quality, timeline, transcript and metadata."""
    detail = _run(db, lambda d: service.get_call(d, call_id))
    if as_json:
        typer.echo(json.dumps(detail.to_json(), indent=2))
        return
    typer.echo(_detail_text(detail))


def _detail_text(detail: CallDetail) -> str:
    """The call as ``field: value`` lines, then its timeline, transcript and metadata;
    control characters shown as escapes, as in every table (sipbridge.logs)."""
    data = detail.to_json()
    sections = {"timeline", "transcript", "metadata", "quality", "recording"}
    fields = [(name, value) for name, value in data.items() if name not in sections]
    recording = detail.record.recording
    if recording is None:
        fields.append(("recording", None))
    else:
        fields.append(
            (
                "recording",
                f"{recording.path} ({recording.duration_s:.1f} s, {recording.bytes} bytes, "
                f"{recording.channels} channels: left caller, right agent, "
                f"{recording.sample_rate} Hz"
                + (f", {recording.dropped_ms} ms dropped" if recording.dropped_ms else "")
                + f"; GET /api/calls/{detail.record.id}/recording)",
            )
        )
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {_value(value)}" for name, value in fields]
    lines.append("")
    lines.append("timeline:")
    lines.extend(f"  {point['at']}  {point['event']}" for point in data["timeline"])
    lines.append("transcript:" if data["transcript"] else "transcript: none")
    for line in data["transcript"]:
        final = "" if line["final"] else " (partial)"
        lines.append(f"  {line['at']}  {line['role']}{final}: {line['text']}")
    lines.append("metadata:" if data["metadata"] else "metadata: none")
    lines.extend(
        f"  {item['at']}  {json.dumps(item['data'], sort_keys=True)}" for item in data["metadata"]
    )
    other = [e for e in detail.events if e.kind not in ("transcript", "metadata")]
    if other:
        lines.append("events:")
        lines.extend(
            f"  {_when(e.at)}  {e.kind}  {json.dumps(e.data, sort_keys=True)}" for e in other
        )
    # Rows written before the store cleaned its text may still hold control characters.
    return "\n".join(escape_controls(line) for line in lines)


def _value(value: object) -> str:
    return "-" if value is None else str(value)
