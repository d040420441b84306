"""Call records and their event logs: writing them, and reading them back a page at a
time."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, String, literal, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from sipbridge.numbers import InvalidField, InvalidNumber, caller_location, normalize_e164
from sipbridge.store.db import Database
from sipbridge.store.models import Call, CallEventRow, UTCDateTime
from sipbridge.store.records import (
    OPEN_STATUSES,
    QUALITY_FIELDS,
    CallDetail,
    CallEvent,
    CallRecord,
    CallStatus,
    RecordingInfo,
    as_utc,
)
from sipbridge.store.service._common import NotFound
from sipbridge.wiretext import clean

__all__ = [
    "INTERRUPTED_REASON",
    "CallFilter",
    "call_row_values",
    "clear_recordings",
    "close_interrupted",
    "close_open_calls",
    "get_call",
    "iter_calls",
    "list_calls",
    "list_calls_page",
    "probe_call_write",
    "save_call",
    "save_call_events",
    "write_call",
]

MAX_PAGE: Final = 1000
# The reason of a call closed as ``interrupted`` by its instance's next start.
INTERRUPTED_REASON: Final = "instance_restarted"
_OPEN_VALUES: Final = tuple(status.value for status in OPEN_STATUSES)


# The length of every text column of ``calls``: a value is cut to fit (PostgreSQL refuses
# a longer one; a record must never be lost for a 300-character Call-ID).
_TEXT_LENGTHS: Final = {
    column.key: column.type.length
    for column in Call.__table__.columns
    if isinstance(column.type, String) and column.type.length is not None
}


def _storable(values: dict[str, Any]) -> dict[str, Any]:
    """Every text value made storable on each backend: printable (NUL, controls and
    bytes that were not UTF-8 percent-escaped, wiretext.py) and cut to its column."""
    for key, value in values.items():
        if isinstance(value, str):
            limit = _TEXT_LENGTHS.get(key)
            text = clean(value)
            values[key] = text if limit is None or len(text) <= limit else text[:limit]
    return values


def call_row_values(record: CallRecord) -> dict[str, Any]:
    """The ``calls`` row for ``record`` (without ``id``), with the columns computed at write
    time: caller country/region (when the record has none), UTC day and hour, duration and
    time to first audio. Text is made storable on every backend (:func:`_storable`)."""
    country, region = record.caller_country, record.caller_region
    if country is None:
        country, region = caller_location(record.from_number)
    received = as_utc(record.received_at)
    values = {
        "sip_call_id": record.sip_call_id,
        "from_number": record.from_number,
        "to_number": record.to_number,
        "agent_name": record.agent,
        "received_at": received,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "duration_s": record.duration_s,
        "status": CallStatus(record.status).value,
        "reason": record.reason,
        "sip_code": record.sip_code,
        "codec": record.codec,
        "hangup_by": record.hangup_by,
        "source": record.source,
        "trunk": record.trunk,
        "direction": record.direction,
        "srtp": record.srtp,
        "caller_country": country,
        "caller_region": region,
        "first_audio_at": record.first_audio_at,
        "received_day": received.date(),
        "received_hour": received.hour,
        "first_audio_ms": record.time_to_first_audio_ms,
        **{name: getattr(record, name) for name in QUALITY_FIELDS},
        "owner": record.owner,
        "updated_at": record.updated_at,
    }
    values = _storable(values)
    # After _storable: the path is the server's own, never cut or escaped.
    values["recording"] = None if record.recording is None else record.recording.to_json()
    return values


def _call_record(call: Call) -> CallRecord:
    return CallRecord(
        id=call.id,
        sip_call_id=call.sip_call_id,
        from_number=call.from_number,
        to_number=call.to_number,
        agent=call.agent_name,
        received_at=call.received_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        status=CallStatus(call.status),
        reason=call.reason,
        sip_code=call.sip_code,
        codec=call.codec,
        hangup_by=call.hangup_by,
        source=call.source,
        trunk=call.trunk,
        direction=call.direction,
        srtp=call.srtp,
        caller_country=call.caller_country,
        caller_region=call.caller_region,
        first_audio_at=call.first_audio_at,
        **{name: getattr(call, name) for name in QUALITY_FIELDS},
        owner=call.owner,
        updated_at=call.updated_at,
        recording=RecordingInfo.from_json(call.recording),
    )


async def save_call(db: Database, record: CallRecord) -> None:
    """Insert the call, or update the row with the same id.

    The caller's country and region are looked up from ``from_number`` when the record
    has no ``caller_country``; ``record`` itself is not changed.
    """
    values = call_row_values(record)
    async with db.sessionmaker() as session, session.begin():
        call = await session.get(Call, record.id)
        if call is None:
            session.add(Call(id=record.id, **values))
        else:
            for key, value in values.items():
                setattr(call, key, value)


async def write_call(db: Database, record: CallRecord, events: Sequence[CallEvent] = ()) -> bool:
    """Upsert the call's row (the call id is the primary key) and, with the write that
    closes it, its events, in one transaction. Idempotent, for the record spool: writing
    the same record twice leaves one row and one copy of its events (a row already closed
    keeps the events it has), and an open record never reopens a closed row (returns
    False: nothing written).
    """
    values = call_row_values(record)
    closing = not CallStatus(record.status).is_open
    rows = _event_rows(record.id, events)
    async with db.sessionmaker() as session, session.begin():
        call = await session.get(Call, record.id)
        if call is None:
            session.add(Call(id=record.id, **values))
        elif not CallStatus(call.status).is_open:
            if not closing:
                return False  # a late snapshot of a call already closed
            if call.status != CallStatus.INTERRUPTED.value:
                rows = []  # this closing write was made before: its events are there
            for key, value in values.items():
                setattr(call, key, value)
        else:
            for key, value in values.items():
                setattr(call, key, value)
        if closing and rows:
            session.add_all(CallEventRow(**row) for row in rows)
    return True


async def probe_call_write(db: Database) -> None:
    """A write to ``calls`` that changes nothing (an UPDATE matching no row): raises
    when the database refuses writes (SQLite locked, PostgreSQL read-only or down)."""
    async with db.sessionmaker() as session, session.begin():
        await session.execute(update(Call).where(Call.id == "").values(status=Call.status))


async def close_interrupted(db: Database, owner: str) -> list[str]:
    """Close the calls ``owner`` left open (its process ended without closing them) as
    ``interrupted``, ended at their last update; other owners' rows are not touched.
    Returns the ids closed."""
    async with db.sessionmaker() as session, session.begin():
        return await close_open_calls(session, owner, INTERRUPTED_REASON)


async def close_open_calls(session: AsyncSession, owner: str, reason: str) -> list[str]:
    """In ``session``'s transaction: close ``owner``'s open calls as ``interrupted`` with
    ``reason``, each ended at its last update (rows locked until the commit on
    PostgreSQL). Returns the ids closed."""
    calls = list(
        await session.scalars(
            select(Call)
            .where(Call.owner == owner, Call.status.in_(_OPEN_VALUES))
            .order_by(Call.id)
            .with_for_update()
        )
    )
    for call in calls:
        ended = call.updated_at or call.answered_at or call.received_at
        call.status = CallStatus.INTERRUPTED.value
        call.reason = reason
        call.hangup_by = "server"
        call.ended_at = ended
        if call.answered_at is not None:
            call.duration_s = max(0.0, (as_utc(ended) - as_utc(call.answered_at)).total_seconds())
    return [call.id for call in calls]


async def clear_recordings(db: Database, before: datetime) -> int:
    """Retention: forget the recording of every call that ended before ``before`` (its
    file is deleted by the server's sweep). Returns how many records changed."""
    cutoff = as_utc(before)
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(
            update(Call)
            .where(
                Call.recording.is_not(None),
                # ended_at >= received_at: the received_at index narrows the scan.
                Call.received_at < cutoff,
                Call.ended_at < cutoff,
            )
            .values(recording=None)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _event_rows(call_id: str, events: Sequence[CallEvent]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for event in events:
        if event.call_id != call_id:
            raise InvalidField("call_id", f"event for call {event.call_id!r}, not {call_id!r}")
        if not isinstance(event.kind, str) or not 1 <= len(event.kind) <= 32:
            raise InvalidField("kind", f"{event.kind!r} must be a string of 1-32 characters")
        if not isinstance(event.data, dict):
            raise InvalidField("data", "must be a JSON object")
        try:
            json.dumps(event.data)
        except (TypeError, ValueError) as exc:
            raise InvalidField("data", f"not JSON serializable: {exc}") from None
        data = _clean_json(event.data)
        rows.append({"call_id": call_id, "at": event.at, "kind": clean(event.kind), "data": data})
    return rows


async def save_call_events(db: Database, call_id: str, events: Sequence[CallEvent]) -> None:
    """Append ``events`` to a call's log (the call record may not be written yet)."""
    rows = _event_rows(call_id, events)
    if not rows:
        return
    async with db.sessionmaker() as session, session.begin():
        session.add_all(CallEventRow(**row) for row in rows)


def _clean_json(value: Any) -> Any:
    """An agent's JSON (transcripts, metadata) with every string made printable
    (wiretext.py), keys included: it is shown by the API, the CLI and dashboards."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    return value


async def get_call(db: Database, call_id: str) -> CallDetail:
    """One call with its events in order; NotFound when there is no such call."""
    async with db.sessionmaker() as session:
        call = await session.get(Call, call_id)
        if call is None:
            raise NotFound(f"call {call_id!r} not found")
        rows = await session.scalars(
            select(CallEventRow)
            .where(CallEventRow.call_id == call_id)
            .order_by(CallEventRow.at, CallEventRow.id)
        )
        events = [CallEvent(call_id=r.call_id, at=r.at, kind=r.kind, data=r.data) for r in rows]
    return CallDetail(record=_call_record(call), events=events)


@dataclass
class CallFilter:
    """Which calls to list. ``number`` matches the caller or the callee; ``since`` is
    inclusive, ``until`` exclusive."""

    number: str | None = None
    agent: str | None = None
    status: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _number_or_raw(number: str) -> str:
    try:
        return normalize_e164(number)
    except InvalidNumber:
        return number.strip()


def _either_number(number: str) -> ColumnElement[bool]:
    """Calls from or to ``number`` (normalized when it parses)."""
    wanted = _number_or_raw(number)
    return or_(Call.from_number == wanted, Call.to_number == wanted)


def _range(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(Call.received_at >= as_utc(since))
    if until is not None:
        conditions.append(Call.received_at < as_utc(until))
    if since is not None and until is not None and as_utc(since) >= as_utc(until):
        raise InvalidField("until", "must be later than since")
    return conditions


def _filter_conditions(flt: CallFilter) -> list[ColumnElement[bool]]:
    conditions = _range(flt.since, flt.until)
    if flt.number is not None:
        conditions.append(_either_number(flt.number))
    if flt.agent is not None:
        conditions.append(Call.agent_name == flt.agent)
    if flt.status is not None:
        try:
            status = CallStatus(flt.status)
        except ValueError:
            raise InvalidField(
                "status",
                f"{flt.status!r} is not one of {', '.join(s.value for s in CallStatus)}",
            ) from None
        conditions.append(Call.status == status.value)
    if flt.reason is not None:
        conditions.append(Call.reason == flt.reason)
    return conditions


MAX_CURSOR_ID = 36  # the calls.id column


def _encode_cursor(call: Call) -> str:
    raw = json.dumps([as_utc(call.received_at).isoformat(), call.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    bad = InvalidField("cursor", "not a cursor returned by a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        received, call_id = json.loads(raw)
        if not isinstance(received, str) or not isinstance(call_id, str):
            raise bad
        # A forged cursor must not reach the database with an id it cannot compare (NUL,
        # lone surrogates) or a date that overflows when moved to UTC.
        if not 0 < len(call_id) <= MAX_CURSOR_ID or not call_id.isprintable():
            raise bad
        return as_utc(datetime.fromisoformat(received)), call_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, OverflowError):
        raise bad from None


async def list_calls_page(
    db: Database, filter: CallFilter, limit: int = 50, cursor: str | None = None
) -> tuple[list[CallRecord], str | None]:
    """One page of calls, newest first (received_at, then id, descending).

    Returns the calls and the cursor of the next page (None on the last page). Keyset
    pagination: a page costs the same however deep it is.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidField("limit", f"must be between 1 and {MAX_PAGE}, not {limit!r}")
    conditions = _filter_conditions(filter)
    if cursor is not None:
        received, call_id = _decode_cursor(cursor)
        conditions.append(
            tuple_(Call.received_at, Call.id)
            < tuple_(literal(received, UTCDateTime()), literal(call_id, String()))
        )
    query = (
        select(Call)
        .where(*conditions)
        .order_by(Call.received_at.desc(), Call.id.desc())
        .limit(limit + 1)
    )
    async with db.sessionmaker() as session:
        calls = list(await session.scalars(query))
    next_cursor = _encode_cursor(calls[limit - 1]) if len(calls) > limit else None
    return [_call_record(call) for call in calls[:limit]], next_cursor


async def iter_calls(
    db: Database, filter: CallFilter, page_size: int = 500
) -> AsyncIterator[CallRecord]:
    """Every call matching ``filter``, newest first, read a page at a time (CSV export)."""
    cursor: str | None = None
    while True:
        page, cursor = await list_calls_page(db, filter, limit=page_size, cursor=cursor)
        for record in page:
            yield record
        if cursor is None:
            return


async def list_calls(db: Database, number: str | None = None, limit: int = 50) -> list[CallRecord]:
    """Most recent calls first; ``number`` (normalized when it parses) matches from or to."""
    if limit < 1:
        raise InvalidField("limit", f"must be at least 1, not {limit}")
    query = select(Call).order_by(Call.received_at.desc(), Call.id.desc()).limit(limit)
    if number is not None:
        query = query.where(_either_number(number))
    async with db.sessionmaker() as session:
        calls = await session.scalars(query)
        return [_call_record(call) for call in calls]
