"""Instances: the sipbridge processes sharing one database, and the calls of those that died.

Each running instance writes a heartbeat into its row every few seconds
(:func:`instance_heartbeat`; :func:`register_instance` at start, :func:`stop_instance` at a
clean exit). A process killed with ``kill -9``, or a machine that died, stops writing it;
its calls stay ``ringing`` or ``active`` in the store. Its peers look for such instances
at every heartbeat (:func:`close_lost_instances`): an instance not seen for longer than
the timeout is marked ``lost`` and its open calls are closed as ``interrupted`` with the
reason ``instance_lost``, by exactly one peer (a conditional update on the instance's row
decides which, also between several machines).

Every time here is the database's clock (``now()`` on PostgreSQL), read in the
transaction that uses it: the instances' clocks may disagree; the database has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sipbridge.numbers import InvalidField
from sipbridge.store.db import Database
from sipbridge.store.models import Instance
from sipbridge.store.records import InstanceRecord, InstanceState, as_utc
from sipbridge.store.service._common import NotFound
from sipbridge.store.service.calls import close_open_calls
from sipbridge.wiretext import clean

__all__ = [
    "LOST_REASON",
    "Heartbeat",
    "LostInstance",
    "close_lost_instances",
    "database_now",
    "get_instance",
    "instance_heartbeat",
    "list_instances",
    "register_instance",
    "stop_instance",
]

# The reason of a call closed by a peer because its instance was lost.
LOST_REASON: Final = "instance_lost"
_ALIVE: Final = (InstanceState.RUNNING.value, InstanceState.DRAINING.value)


@dataclass(frozen=True)
class Heartbeat:
    """What one heartbeat wrote and found. ``previous_seen_at`` is the row's heartbeat
    before this one (None for a new row); ``was_lost``: a peer had declared this instance
    lost (and closed its open calls) while it was alive but not writing."""

    record: InstanceRecord
    now: datetime
    previous_seen_at: datetime | None
    was_lost: bool


@dataclass(frozen=True)
class LostInstance:
    """An instance just marked lost, and the ids of its calls closed as ``interrupted``."""

    id: str
    seen_at: datetime
    calls: list[str] = field(default_factory=list)


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock, timezone-aware UTC: PostgreSQL's ``now()`` (the start of
    ``session``'s transaction), SQLite's ``'now'`` in milliseconds."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        text = await session.scalar(select(func.strftime("%Y-%m-%d %H:%M:%f", "now")))
        return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)
    value = await session.scalar(select(func.now()))
    assert isinstance(value, datetime)
    return as_utc(value)


def _validate_id(instance_id: object) -> str:
    if (
        not isinstance(instance_id, str)
        or not instance_id.strip()
        or not instance_id.isprintable()
        or len(instance_id) > 255
    ):
        raise InvalidField("id", f"{instance_id!r} is not printable text of 1-255 characters")
    return instance_id.strip()


def _record(row: Instance) -> InstanceRecord:
    return InstanceRecord(
        id=row.id,
        sip_address=row.sip_address,
        state=InstanceState(row.state),
        started_at=row.started_at,
        seen_at=row.seen_at,
        lost_at=row.lost_at,
        lost_by=row.lost_by,
        lost_calls=row.lost_calls,
    )


async def _beat(
    db: Database,
    instance_id: str,
    state: InstanceState,
    sip_address: str | None,
    *,
    starting: bool,
) -> Heartbeat:
    key = _validate_id(instance_id)
    address = None if sip_address is None else clean(sip_address)[:255]
    async with db.sessionmaker() as session, session.begin():
        now = await database_now(session)
        row = await session.get(Instance, key, with_for_update=True)
        previous = None if row is None else row.seen_at
        was_lost = row is not None and row.state == InstanceState.LOST.value
        if row is None:
            row = Instance(id=key, started_at=now)
            session.add(row)
        if starting:
            row.started_at = now
        if address is not None:
            row.sip_address = address
        row.state = state.value
        row.seen_at = now
        row.lost_at = row.lost_by = row.lost_calls = None  # alive after all
        record = _record(row)
    return Heartbeat(record, now, previous, was_lost)


async def register_instance(db: Database, instance_id: str, sip_address: str | None) -> Heartbeat:
    """At start: this instance's row, ``running``, started and seen now (created, or taken
    over from an earlier run of the same instance)."""
    return await _beat(db, instance_id, InstanceState.RUNNING, sip_address, starting=True)


async def instance_heartbeat(
    db: Database, instance_id: str, *, draining: bool = False, sip_address: str | None = None
) -> Heartbeat:
    """Every few seconds: this instance is alive (``running``, or ``draining``), seen now.
    A row removed meanwhile is written again."""
    state = InstanceState.DRAINING if draining else InstanceState.RUNNING
    return await _beat(db, instance_id, state, sip_address, starting=False)


async def stop_instance(db: Database, instance_id: str) -> InstanceRecord:
    """At a clean exit, once every call record is written: ``stopped``, seen now."""
    beat = await _beat(db, instance_id, InstanceState.STOPPED, None, starting=False)
    return beat.record


async def close_lost_instances(
    db: Database, by: str, timeout: float, *, now: datetime | None = None
) -> list[LostInstance]:
    """Mark every other instance that is alive but not seen for more than ``timeout``
    seconds (on the database's clock) as ``lost``, and close its open calls as
    ``interrupted`` (reason ``instance_lost``), recording ``by`` as the peer that did it.

    Safe to run from many peers at once: each instance is claimed by a conditional update
    of its row (still alive, still not seen since the cutoff), which only one transaction
    can win; the calls are closed in that same transaction. ``now`` replaces the database's
    clock (tests only).
    """
    me = _validate_id(by)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidField("timeout", f"must be a positive number of seconds, not {timeout!r}")
    lost: list[LostInstance] = []
    async with db.sessionmaker() as session, session.begin():
        current = now if now is not None else await database_now(session)
        cutoff = current - timedelta(seconds=timeout)
        candidates = list(
            await session.execute(
                select(Instance.id, Instance.seen_at)
                .where(Instance.id != me, Instance.state.in_(_ALIVE), Instance.seen_at < cutoff)
                .order_by(Instance.id)  # one lock order for every peer
            )
        )
        for instance_id, seen_at in candidates:
            # PostgreSQL: a peer claiming the same row waits for our commit, then sees the
            # row no longer alive and matches nothing; a heartbeat that came meanwhile
            # makes it match nothing too.
            claimed = await session.execute(
                update(Instance)
                .where(
                    Instance.id == instance_id,
                    Instance.state.in_(_ALIVE),
                    Instance.seen_at < cutoff,
                )
                .values(state=InstanceState.LOST.value, lost_at=current, lost_by=me)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            calls = await close_open_calls(session, instance_id, LOST_REASON)
            await session.execute(
                update(Instance)
                .where(Instance.id == instance_id)
                .values(lost_calls=len(calls))
                .execution_options(synchronize_session=False)
            )
            lost.append(LostInstance(instance_id, as_utc(seen_at), calls))
    return lost


async def list_instances(db: Database) -> list[InstanceRecord]:
    """Every instance the database has seen, by id."""
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(Instance).order_by(Instance.id))
        return [_record(row) for row in rows]


async def get_instance(db: Database, instance_id: str) -> InstanceRecord:
    """One instance; NotFound when the database has never seen it."""
    async with db.sessionmaker() as session:
        row = await session.get(Instance, instance_id)
        if row is None:
            raise NotFound(f"instance {instance_id!r} not found")
        return _record(row)
