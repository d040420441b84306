"""SIP traces: every SIP message of the calls to or from one number, or of one trunk's
calls, written to the log (runtime/trace.py) until the trace's expiry.

An operator switches a trace on and off through the CLI (``sipbridge trace``) and the API
(``/api/traces``); every instance sharing the database reads the traces in force again
every few seconds, so a trace reaches whichever instance takes the call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from sipbridge.numbers import InvalidField
from sipbridge.store.db import Database
from sipbridge.store.models import SipTrace
from sipbridge.store.records import TraceRecord, utcnow
from sipbridge.store.service._common import NotFound, _number, _validate_name

__all__ = [
    "DEFAULT_TRACE_SECONDS",
    "MAX_TRACE_SECONDS",
    "TRACE_KINDS",
    "add_trace",
    "list_traces",
    "purge_expired_traces",
    "remove_trace",
    "trace_target",
]

TRACE_KINDS = ("number", "trunk")
# A trace writes every message of every matching call: it ends by itself.
DEFAULT_TRACE_SECONDS = 3600
MAX_TRACE_SECONDS = 7 * 86400


def trace_target(
    number: str | None, trunk: str | None, default_region: str | None = None
) -> tuple[str, str]:
    """``(kind, value)`` of a trace of ``number`` (normalized to E.164) or ``trunk`` (a
    trunk name, which need not exist yet); InvalidField unless exactly one is given."""
    if (number is None) == (trunk is None):
        raise InvalidField("number", "give either a number or a trunk to trace")
    if number is not None:
        return "number", _number(number, default_region)
    return "trunk", _validate_name(trunk, "trunk")


def _record(row: SipTrace) -> TraceRecord:
    return TraceRecord(
        kind=row.kind, value=row.value, created_at=row.created_at, expires_at=row.expires_at
    )


async def add_trace(
    db: Database,
    *,
    number: str | None = None,
    trunk: str | None = None,
    duration: float = DEFAULT_TRACE_SECONDS,
    default_region: str | None = None,
    now: datetime | None = None,
) -> TraceRecord:
    """Trace the calls to or from ``number``, or the calls of ``trunk``, for ``duration``
    seconds from now; tracing it again sets the new end. InvalidField for bad values."""
    kind, value = trace_target(number, trunk, default_region)
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not 0 < duration <= MAX_TRACE_SECONDS
    ):
        raise InvalidField(
            "duration",
            f"must be a number of seconds above 0, at most {MAX_TRACE_SECONDS}, not {duration!r}",
        )
    created = now or utcnow()
    expires = created + timedelta(seconds=duration)

    async def upsert() -> SipTrace:
        async with db.sessionmaker() as session, session.begin():
            query = select(SipTrace).where(SipTrace.kind == kind, SipTrace.value == value)
            row = (await session.execute(query)).scalar_one_or_none()
            if row is None:
                row = SipTrace(kind=kind, value=value, created_at=created)
                session.add(row)
            row.created_at = created
            row.expires_at = expires
        return row

    try:
        row = await upsert()
    except IntegrityError:  # switched on at the same moment elsewhere: update that one
        row = await upsert()
    return _record(row)


async def list_traces(
    db: Database, *, include_expired: bool = False, now: datetime | None = None
) -> list[TraceRecord]:
    """The traces, newest first; only those in force unless ``include_expired``."""
    query = select(SipTrace).order_by(SipTrace.created_at.desc(), SipTrace.id.desc())
    if not include_expired:
        query = query.where(SipTrace.expires_at > (now or utcnow()))
    async with db.sessionmaker() as session:
        rows = (await session.execute(query)).scalars().all()
    return [_record(row) for row in rows]


async def remove_trace(
    db: Database,
    *,
    number: str | None = None,
    trunk: str | None = None,
    default_region: str | None = None,
) -> tuple[str, str]:
    """Switch the trace of ``number`` or ``trunk`` off; its ``(kind, value)``. NotFound
    when there is no such trace (ended ones count: they are only purged later)."""
    kind, value = trace_target(number, trunk, default_region)
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(SipTrace).where(SipTrace.kind == kind, SipTrace.value == value)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no trace of {kind} {value}")
    return kind, value


async def purge_expired_traces(db: Database, now: datetime | None = None) -> int:
    """Delete the traces that have ended; the number deleted."""
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(SipTrace).where(SipTrace.expires_at <= (now or utcnow()))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
