"""Phone numbers: which agent answers each E.164 number."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError

from sipbridge.numbers import InvalidNumber
from sipbridge.store.db import Database
from sipbridge.store.models import Agent, PhoneNumber
from sipbridge.store.records import AgentRecord, NumberRecord, utcnow
from sipbridge.store.service._common import (
    UNSET,
    AlreadyExists,
    NotFound,
    Unset,
    _agent_id,
    _number,
    _validate_bool,
)
from sipbridge.store.service.agents import _agent_record

__all__ = [
    "NumberRoute",
    "add_number",
    "get_number",
    "list_numbers",
    "lookup_number",
    "remove_number",
    "update_number",
]


@dataclass
class NumberRoute:
    """Result of :func:`lookup_number`: the number and its agent (None when removed), and
    whether its calls are recorded (the number's own setting, else the agent's)."""

    number: str
    agent: AgentRecord | None
    record: bool = False


def _numbers_query() -> Select[str, str, datetime | None, bool | None]:
    """Numbers with their agent's name (None when removed), creation time and recording
    setting."""
    return select(
        PhoneNumber.number, Agent.name, PhoneNumber.created_at, PhoneNumber.record
    ).outerjoin(Agent, PhoneNumber.agent_id == Agent.id)


def _validate_record(record: object) -> bool | None:
    return None if record is None else _validate_bool(record, "record")


async def add_number(
    db: Database,
    number_text: str,
    agent_name: str,
    default_region: str | None = None,
    *,
    record: bool | None = None,
) -> NumberRecord:
    """Route ``number_text`` (normalized to E.164; national formats read in
    ``default_region``) to an existing agent. ``record``: whether its calls are recorded
    (None: as its agent says).

    InvalidNumber for a bad number, InvalidField for a bad region, NotFound for an unknown
    agent, AlreadyExists when the number is already routed.
    """
    number = _number(number_text, default_region)
    record = _validate_record(record)
    created_at = utcnow()
    try:
        async with db.sessionmaker() as session, session.begin():
            agent_id = await _agent_id(session, agent_name)
            current = await session.scalar(
                select(PhoneNumber.id).where(PhoneNumber.number == number)
            )
            if current is not None:
                raise AlreadyExists(f"number {number} already exists")
            session.add(
                PhoneNumber(number=number, agent_id=agent_id, created_at=created_at, record=record)
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"number {number} already exists") from exc
    return NumberRecord(number=number, agent=agent_name, created_at=created_at, record=record)


async def list_numbers(db: Database, agent: str | None = None) -> list[NumberRecord]:
    """All numbers (or those of ``agent``) with their agent's name (None when removed)."""
    query = _numbers_query().order_by(PhoneNumber.number)
    if agent is not None:
        query = query.where(Agent.name == agent)
    async with db.sessionmaker() as session:
        rows = await session.execute(query)
        return [NumberRecord(number=n, agent=a, created_at=c, record=r) for n, a, c, r in rows]


async def _stored_number(number_text: str, default_region: str | None) -> tuple[str, Exception]:
    """The E.164 form to look for, and the error to raise when it is not stored."""
    try:
        number = _number(number_text, default_region)
    except InvalidNumber as exc:
        # A number stored under older phonenumbers metadata may no longer validate:
        # still let it be found by its exact stored text.
        return str(number_text).strip(), exc
    return number, NotFound(f"number {number} not found")


async def get_number(
    db: Database, number_text: str, default_region: str | None = None
) -> NumberRecord:
    """One number; NotFound when it is not routed, InvalidNumber when it cannot be read."""
    number, missing = await _stored_number(number_text, default_region)
    async with db.sessionmaker() as session:
        row = (await session.execute(_numbers_query().where(PhoneNumber.number == number))).first()
    if row is None:
        raise missing
    return NumberRecord(number=row[0], agent=row[1], created_at=row[2], record=row[3])


async def update_number(
    db: Database,
    number_text: str,
    agent_name: str | Unset | None = UNSET,
    default_region: str | None = None,
    *,
    record: bool | Unset | None = UNSET,
) -> NumberRecord:
    """Give a number to another agent (None: no agent, the number then answers 480),
    and/or change whether its calls are recorded (None: as its agent says); UNSET leaves
    a setting as it is.

    NotFound for an unknown number or agent.
    """
    number, missing = await _stored_number(number_text, default_region)
    if not isinstance(record, Unset):
        record = _validate_record(record)
    async with db.sessionmaker() as session, session.begin():
        row = await session.scalar(select(PhoneNumber).where(PhoneNumber.number == number))
        if row is None:
            raise missing
        if not isinstance(agent_name, Unset):
            agent_id: int | None = None
            if agent_name is not None:
                agent_id = await _agent_id(session, agent_name)
            row.agent_id = agent_id
        if not isinstance(record, Unset):
            row.record = record
    return await get_number(db, number)


async def remove_number(db: Database, number_text: str, default_region: str | None = None) -> str:
    """Delete a number; returns its E.164 form. NotFound when it is not there."""
    number, missing = await _stored_number(number_text, default_region)
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(PhoneNumber).where(PhoneNumber.number == number))
        deleted = result.rowcount  # type: ignore[attr-defined]
    if not deleted:
        raise missing
    return number


async def lookup_number(db: Database, e164: str) -> NumberRoute | None:
    """The route for an E.164 number (one indexed query), None when it is not routed."""
    async with db.sessionmaker() as session:
        row = (
            await session.execute(
                select(PhoneNumber.number, PhoneNumber.record, Agent)
                .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
                .where(PhoneNumber.number == e164)
            )
        ).first()
    if row is None:
        return None
    number, own, agent = row
    found = None if agent is None else _agent_record(agent)
    record = own if own is not None else found is not None and found.record
    return NumberRoute(number=number, agent=found, record=bool(record))
