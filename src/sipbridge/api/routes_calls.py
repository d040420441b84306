"""``/api/calls``: call records, newest first, with filters, cursor pagination and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path as Path_
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db
from sipbridge.api.errors import (
    BAD_BODY,
    JSON_ERROR,
    error_responses,
    field_error,
    service_errors,
)
from sipbridge.api.schemas import (
    CallCreate,
    CallCreated,
    CallDetailOut,
    CallEnding,
    CallOut,
    CallPage,
    check_text,
    check_utc_datetime,
)
from sipbridge.runtime.outbound import DialParams, DialRefused
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus
from sipbridge.store.service import CallFilter, NotFound

__all__ = ["CSV_COLUMNS", "call_filter", "csv_cell", "csv_stream", "router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
Text = Annotated[str, AfterValidator(check_text)]
UtcDateTime = Annotated[datetime, AfterValidator(check_utc_datetime)]

CSV_COLUMNS: tuple[str, ...] = tuple(CallOut.model_fields)
_CSV_BATCH = 500
# A cell a spreadsheet would run as a formula; numbers like +12025550101 or -1.5 are safe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def call_filter(
    number: Annotated[
        Text | None,
        Query(max_length=64, description="Caller or callee (E.164 is normalized)"),
    ] = None,
    agent: Annotated[Text | None, Query(max_length=100)] = None,
    status: Annotated[CallStatus | None, Query()] = None,
    reason: Annotated[Text | None, Query(max_length=255, examples=["agent_unreachable"])] = None,
    since: Annotated[
        UtcDateTime | None,
        Query(description="Received at or after (ISO 8601; no offset means UTC)"),
    ] = None,
    until: Annotated[UtcDateTime | None, Query(description="Received before (ISO 8601)")] = None,
) -> CallFilter:
    """The filters shared by the list and the CSV export."""
    if since is not None and until is not None and until <= since:
        raise field_error("query", "until", "must be later than since")
    return CallFilter(
        number=number, agent=agent, status=status, reason=reason, since=since, until=until
    )


Filter = Annotated[CallFilter, Depends(call_filter)]


@router.get(
    "/calls",
    response_model=CallPage,
    tags=["calls"],
)
async def list_calls(
    db: Db,
    filters: Filter,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
    cursor: Annotated[
        Text | None,
        Query(max_length=512, description="next_cursor from the previous page"),
    ] = None,
) -> dict[str, Any]:
    """Call records, newest first, one page at a time."""
    with service_errors("query"):
        records, next_cursor = await service.list_calls_page(
            db, filters, limit=limit, cursor=cursor
        )
    return {"items": [record.to_json() for record in records], "next_cursor": next_cursor}


def csv_cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv_rows(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def csv_stream(
    first: CallRecord | None, rest: AsyncIterator[CallRecord]
) -> AsyncIterator[str]:
    yield _csv_rows([list(CSV_COLUMNS)])
    if first is None:
        return
    batch = [_csv_row(first)]
    async for record in rest:
        batch.append(_csv_row(record))
        if len(batch) >= _CSV_BATCH:
            yield _csv_rows(batch)
            batch = []
    yield _csv_rows(batch)


def _csv_row(record: CallRecord) -> list[str]:
    data = record.to_json()
    data["recording"] = record.recording.path if record.recording is not None else None
    return [csv_cell(data.get(column)) for column in CSV_COLUMNS]


class CsvResponse(StreamingResponse):
    media_type = "text/csv"


@router.get(
    "/calls.csv",
    response_class=CsvResponse,
    tags=["calls"],
    responses={
        200: {
            "description": "One header row, then one row per call, newest first",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        401: {"description": "Missing or invalid API key", "content": JSON_ERROR},
    },
)
async def export_calls_csv(db: Db, filters: Filter) -> CsvResponse:
    """All calls matching the filters as CSV (streamed; same filters as ``/api/calls``)."""
    records = service.iter_calls(db, filters)
    with service_errors("query"):  # bad input shows on the first page, before streaming
        first = await anext(records, None)
    return CsvResponse(
        csv_stream(first, records),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="calls.csv"'},
    )


@router.post(
    "/calls",
    response_model=CallCreated,
    status_code=202,
    tags=["calls"],
    responses={
        **error_responses(
            e404="No such trunk or agent",
            e409="The agent takes no calls (not voice-enabled)",
            e503="The server takes no new calls now (draining, --max-calls, overload, "
            "unhealthy, the trunk at its max_calls), with Retry-After; or no SIP server "
            "runs this API",
        ),
        **BAD_BODY,
    },
)
async def create_call(body: CallCreate, request: Request) -> dict[str, Any]:
    """Place an outbound call through a trunk; answered, it is bridged to the agent.

    The call's id comes back at once (202); its record is ``ringing`` until the outcome:
    ``answered`` (then ``active`` while up), ``busy``, ``no_answer``, ``rejected`` (with
    ``sip_code``) or ``failed`` (``reason`` says why). Poll ``GET /api/calls/{id}``.
    A bad number, header or trunk that cannot dial is a 422 naming the field."""
    dial = request.app.state.dial
    if dial is None:
        raise HTTPException(503, "no SIP server runs this API: calls cannot be placed")
    params = DialParams(
        to=body.to,
        from_=body.from_,
        agent=body.agent,
        trunk=body.trunk,
        headers=dict(body.headers),
        ring_timeout=body.ring_timeout,
    )
    try:
        call_id = await dial(params)
    except DialRefused as exc:
        if exc.status == 422:
            where = exc.detail.split(":", 1)[0] if exc.reason == "invalid_number" else None
            field = where if where in ("to", "from") else _REFUSAL_FIELDS.get(exc.reason)
            raise field_error("body", field, f"{exc.reason}: {exc.detail}") from None
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        raise HTTPException(exc.status, f"{exc.reason}: {exc.detail}", headers) from None
    return {"id": call_id, "status": "ringing"}


@router.post(
    "/calls/{call_id}/hangup",
    response_model=CallEnding,
    status_code=202,
    tags=["calls"],
    responses=error_responses(
        e404="No call with that id is in progress on this instance",
        e409="The call is an inbound call not answered yet, or already ending",
        e503="No SIP server runs this API",
    ),
)
async def hang_up_call(
    call_id: Annotated[Text, Path(description="The call's id")], request: Request
) -> dict[str, Any]:
    """End a call in progress on this instance: an answered call with our BYE, an
    outbound call still ringing with CANCEL. Its record ends with reason
    ``operator_hangup`` (hung up by ``operator``; a cancelled outbound call is
    ``cancelled``). An inbound call still ringing is not refused from here."""
    live = request.app.state.live
    if live is None:
        raise HTTPException(503, "no SIP server runs this API: no call is in progress here")
    ended = live.hang_up(call_id)
    if ended is None:
        raise NotFound(f"call {call_id!r} is not in progress on this instance")
    if not ended:
        raise HTTPException(409, f"call {call_id!r} is not answered yet, or already ending")
    return {"id": call_id, "status": "ending"}


# The body field a 422 refusal is about.
_REFUSAL_FIELDS = {
    "bad_ring_timeout": "ring_timeout",
    "bad_header": "headers",
    "trunk_without_host": "trunk",
    "bad_trunk_host": "trunk",
    "tcp_disabled": "trunk",
    "tls_not_configured": "trunk",
    "no_common_codec": "trunk",
}


@router.get(
    "/calls/{call_id}",
    response_model=CallDetailOut,
    tags=["calls"],
    responses=error_responses(e404="No call with that id"),
)
async def get_call(
    call_id: Annotated[Text, Path(description="The call's id")], db: Db
) -> dict[str, Any]:
    """One call with its timeline, transcript, metadata and quality figures."""
    return (await service.get_call(db, call_id)).to_json()


class WavResponse(FileResponse):
    media_type = "audio/wav"


@router.get(
    "/calls/{call_id}/recording",
    response_class=WavResponse,
    tags=["calls"],
    responses={
        200: {
            "description": "The call's recording: a two-channel WAV file (left the "
            "caller, right the agent, PCM16 at the agent's rate), streamed",
            "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
        },
        # JSON although the 200 is audio/wav (as for the CSV export).
        401: {"description": "Missing or invalid API key", "content": JSON_ERROR},
        404: {
            "description": "No call with that id, the call was not recorded, or its file "
            "is gone (deleted by the retention period, or kept by another instance)",
            "content": JSON_ERROR,
        },
    },
)
async def get_call_recording(
    call_id: Annotated[Text, Path(description="The call's id")], db: Db, request: Request
) -> WavResponse:
    """Download a call's recording (streamed from the file; ``Range`` requests work)."""
    path = await recording_file(db, call_id, request.app.state.recordings_dir)
    return WavResponse(path, media_type="audio/wav", filename=f"{path.stem}.wav")


async def recording_file(db: Database, call_id: str, allowed: Path_ | None) -> Path_:
    """The file of ``call_id``'s recording, served by the API and the dashboard's player;
    NotFound when there is no such call, it was not recorded, or the file is not here."""
    detail = await service.get_call(db, call_id)
    recording = detail.record.recording
    if recording is None:
        raise NotFound(f"call {call_id!r} has no recording")
    path = Path_(recording.path)
    if allowed is not None and not await asyncio.to_thread(_inside, path, allowed):
        # A path from the store outside the recordings folder (a restored backup from
        # another host, an edited row) is never served.
        raise NotFound(f"the recording of call {call_id!r} is not in this server's folder")
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(
            f"the recording of call {call_id!r} is not on this server (deleted, or kept "
            "by the instance that handled the call)"
        )
    return path


def _inside(path: Path_, folder: Path_) -> bool:
    """``path`` is in ``folder`` once symlinks and ``..`` are resolved."""
    return path.resolve().is_relative_to(folder.resolve())
