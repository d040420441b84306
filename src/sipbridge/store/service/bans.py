"""Bans: source addresses and networks whose SIP traffic the server drops.

The running server bans sources by itself (flood, failed authentication, unknown numbers,
scanners: see :mod:`sipbridge.sip.guard`) and stores each ban here; an operator adds and lifts
bans through the CLI and the API. Every instance sharing the database reads the active bans
again every few seconds, so a ban made anywhere holds everywhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from sipbridge.numbers import InvalidField
from sipbridge.sip.guard import BanReason, normalize_ban_address
from sipbridge.store.db import Database
from sipbridge.store.models import Ban
from sipbridge.store.records import BanRecord, utcnow
from sipbridge.store.service._common import _CONTROL, NotFound

__all__ = [
    "BAN_REASONS",
    "add_ban",
    "list_bans",
    "purge_expired_bans",
    "remove_ban",
    "validate_ban_address",
]

BAN_REASONS = tuple(reason.value for reason in BanReason)
# The longest ban with an end (ten years); longer means "no end" (duration None).
MAX_BAN_SECONDS = 10 * 365 * 86400


def validate_ban_address(address: object) -> str:
    """``address`` as stored (canonical address or network); InvalidField otherwise."""
    if not isinstance(address, str) or not address.strip() or len(address) > 64:
        raise InvalidField("address", f"{address!r} is not an IP address or network")
    try:
        return normalize_ban_address(address)
    except ValueError:
        raise InvalidField(
            "address", f"{address!r} is not an IP address or network (e.g. 203.0.113.0/24)"
        ) from None


def _record(ban: Ban) -> BanRecord:
    return BanRecord(
        address=ban.address,
        reason=ban.reason,
        note=ban.note,
        created_at=ban.created_at,
        expires_at=ban.expires_at,
    )


async def add_ban(
    db: Database,
    address: str,
    *,
    reason: str = BanReason.MANUAL,
    duration: float | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> BanRecord:
    """Ban ``address`` (an IP address or a network) for ``duration`` seconds (None: until
    lifted). Banning an address already banned replaces that ban. InvalidField for bad
    values."""
    key = validate_ban_address(address)
    if reason not in BAN_REASONS:
        raise InvalidField("reason", f"{reason!r} is not one of {', '.join(BAN_REASONS)}")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not 0 < duration <= MAX_BAN_SECONDS
    ):
        raise InvalidField(
            "duration",
            f"must be a number of seconds above 0, at most {MAX_BAN_SECONDS}, not {duration!r}",
        )
    if note is not None and (not isinstance(note, str) or len(note) > 255 or _CONTROL.search(note)):
        raise InvalidField("note", "must be at most 255 printable characters")
    created = now or utcnow()
    expires = None if duration is None else created + timedelta(seconds=duration)

    async def upsert() -> Ban:
        async with db.sessionmaker() as session, session.begin():
            query = select(Ban).where(Ban.address == key)
            row = (await session.execute(query)).scalar_one_or_none()
            if row is None:
                row = Ban(address=key, created_at=created)
                session.add(row)
            row.reason = str(reason)
            row.note = note
            row.created_at = created
            row.expires_at = expires
        return row

    try:
        row = await upsert()
    except IntegrityError:
        # Another instance banned the same address at the same moment: update theirs.
        row = await upsert()
    return _record(row)


async def list_bans(
    db: Database, *, include_expired: bool = False, now: datetime | None = None
) -> list[BanRecord]:
    """The bans, newest first; only those still in force unless ``include_expired``."""
    query = select(Ban).order_by(Ban.created_at.desc(), Ban.id.desc())
    if not include_expired:
        query = query.where(or_(Ban.expires_at.is_(None), Ban.expires_at > (now or utcnow())))
    async with db.sessionmaker() as session:
        rows = (await session.execute(query)).scalars().all()
    return [_record(row) for row in rows]


async def remove_ban(db: Database, address: str) -> str:
    """Lift the ban on ``address`` (as it was banned: an address or a network); returns the
    address as stored. NotFound when there is no such ban."""
    key = validate_ban_address(address)
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(Ban).where(Ban.address == key))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no ban on {key}")
    return key


async def purge_expired_bans(db: Database, now: datetime | None = None) -> int:
    """Delete bans that have ended; the number deleted."""
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(Ban).where(Ban.expires_at.is_not(None), Ban.expires_at <= (now or utcnow()))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
