"""The service layer shared by the CLI and (later) the REST API.

Every function takes a :class:`~sipbridge.store.db.Database`, opens its own session and
returns plain records from :mod:`sipbridge.store.records`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from sipbridge.numbers import InvalidNumber, normalize_e164
from sipbridge.store.db import Database
from sipbridge.store.models import Agent, Call, PhoneNumber
from sipbridge.store.records import AgentRecord, CallRecord, CallStatus, NumberRecord, utcnow

__all__ = [
    "AlreadyExists",
    "NotFound",
    "NumberRoute",
    "add_agent",
    "add_number",
    "get_agent",
    "list_agents",
    "list_calls",
    "list_numbers",
    "lookup_number",
    "remove_agent",
    "remove_number",
    "save_call",
]

_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class AlreadyExists(Exception):
    """The agent or number being added is already there."""


class NotFound(Exception):
    """The agent or number named does not exist."""


@dataclass
class NumberRoute:
    """Result of :func:`lookup_number`: the number and its agent (None when removed)."""

    number: str
    agent: AgentRecord | None


def _agent_record(agent: Agent) -> AgentRecord:
    return AgentRecord(
        name=agent.name,
        url=agent.url,
        voice_enabled=agent.voice_enabled,
        created_at=agent.created_at,
    )


def _validate_agent_name(name: str) -> str:
    if not _AGENT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid agent name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def _validate_agent_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ws", "wss"):
        raise ValueError(f"invalid agent URL {url!r}: it must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"invalid agent URL {url!r}: it has no host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"invalid agent URL {url!r}: bad port") from None
    return url


# --------------------------------------------------------------------------- agents


async def add_agent(db: Database, name: str, url: str, voice_enabled: bool = True) -> AgentRecord:
    """Create an agent. ValueError for a bad name or URL, AlreadyExists for a taken name."""
    name = _validate_agent_name(name)
    url = _validate_agent_url(url)
    try:
        async with db.sessionmaker() as session, session.begin():
            existing = await session.scalar(select(Agent.id).where(Agent.name == name))
            if existing is not None:
                raise AlreadyExists(f"agent {name!r} already exists")
            agent = Agent(name=name, url=url, voice_enabled=voice_enabled, created_at=utcnow())
            session.add(agent)
    except IntegrityError as exc:  # lost a race with a concurrent insert
        raise AlreadyExists(f"agent {name!r} already exists") from exc
    return _agent_record(agent)


async def list_agents(db: Database) -> list[AgentRecord]:
    """All agents, by name."""
    async with db.sessionmaker() as session:
        agents = await session.scalars(select(Agent).order_by(Agent.name))
        return [_agent_record(agent) for agent in agents]


async def get_agent(db: Database, name: str) -> AgentRecord:
    """The agent called ``name``; NotFound when there is none."""
    async with db.sessionmaker() as session:
        agent = await session.scalar(select(Agent).where(Agent.name == name))
        if agent is None:
            raise NotFound(f"agent {name!r} not found")
        return _agent_record(agent)


async def remove_agent(db: Database, name: str) -> int:
    """Delete an agent; returns how many numbers are left without an agent."""
    async with db.sessionmaker() as session, session.begin():
        agent_id = await session.scalar(select(Agent.id).where(Agent.name == name))
        if agent_id is None:
            raise NotFound(f"agent {name!r} not found")
        orphaned = await session.scalar(
            select(func.count()).select_from(PhoneNumber).where(PhoneNumber.agent_id == agent_id)
        )
        # The foreign key says ON DELETE SET NULL; doing it explicitly too keeps this
        # correct on a SQLite connection that has foreign keys switched off.
        await session.execute(
            update(PhoneNumber).where(PhoneNumber.agent_id == agent_id).values(agent_id=None)
        )
        await session.execute(delete(Agent).where(Agent.id == agent_id))
    return int(orphaned or 0)


# -------------------------------------------------------------------------- numbers


async def add_number(db: Database, number_text: str, agent_name: str) -> NumberRecord:
    """Route ``number_text`` (normalized to E.164) to an existing agent.

    InvalidNumber for a bad number, NotFound for an unknown agent, AlreadyExists when the
    number is already routed.
    """
    number = normalize_e164(number_text)
    try:
        async with db.sessionmaker() as session, session.begin():
            agent_id = await session.scalar(select(Agent.id).where(Agent.name == agent_name))
            if agent_id is None:
                raise NotFound(f"agent {agent_name!r} not found")
            current = await session.scalar(
                select(PhoneNumber.id).where(PhoneNumber.number == number)
            )
            if current is not None:
                raise AlreadyExists(f"number {number} already exists")
            session.add(PhoneNumber(number=number, agent_id=agent_id))
    except IntegrityError as exc:
        raise AlreadyExists(f"number {number} already exists") from exc
    return NumberRecord(number=number, agent=agent_name)


async def list_numbers(db: Database) -> list[NumberRecord]:
    """All numbers with their agent's name (None when the agent was removed)."""
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(PhoneNumber.number, Agent.name)
            .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
            .order_by(PhoneNumber.number)
        )
        return [NumberRecord(number=number, agent=agent) for number, agent in rows]


async def remove_number(db: Database, number_text: str) -> str:
    """Delete a number; returns its E.164 form. NotFound when it is not there."""
    invalid: InvalidNumber | None = None
    try:
        number = normalize_e164(number_text)
    except InvalidNumber as exc:
        # A number stored under older phonenumbers metadata may no longer validate:
        # still let it be removed by its exact stored text.
        number = number_text.strip()
        invalid = exc
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(PhoneNumber).where(PhoneNumber.number == number))
        deleted = result.rowcount  # type: ignore[attr-defined]
    if not deleted:
        if invalid is not None:
            raise invalid
        raise NotFound(f"number {number} not found")
    return number


async def lookup_number(db: Database, e164: str) -> NumberRoute | None:
    """The route for an E.164 number (one indexed query), None when it is not routed."""
    async with db.sessionmaker() as session:
        row = (
            await session.execute(
                select(PhoneNumber.number, Agent)
                .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
                .where(PhoneNumber.number == e164)
            )
        ).first()
    if row is None:
        return None
    number, agent = row
    return NumberRoute(number=number, agent=None if agent is None else _agent_record(agent))


# ---------------------------------------------------------------------------- calls


def _call_row_values(record: CallRecord) -> dict[str, object]:
    return {
        "sip_call_id": record.sip_call_id,
        "from_number": record.from_number,
        "to_number": record.to_number,
        "agent_name": record.agent,
        "received_at": record.received_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "duration_s": record.duration_s,
        "status": CallStatus(record.status).value,
        "reason": record.reason,
        "sip_code": record.sip_code,
        "codec": record.codec,
        "hangup_by": record.hangup_by,
        "source": record.source,
    }


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
    )


async def save_call(db: Database, record: CallRecord) -> None:
    """Insert the call, or update the row with the same id."""
    values = _call_row_values(record)
    async with db.sessionmaker() as session, session.begin():
        call = await session.get(Call, record.id)
        if call is None:
            session.add(Call(id=record.id, **values))
        else:
            for key, value in values.items():
                setattr(call, key, value)


async def list_calls(db: Database, number: str | None = None, limit: int = 50) -> list[CallRecord]:
    """Most recent calls first; ``number`` (normalized when it parses) matches from or to."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    query = select(Call).order_by(Call.received_at.desc(), Call.id.desc()).limit(limit)
    if number is not None:
        try:
            wanted = normalize_e164(number)
        except InvalidNumber:
            wanted = number.strip()
        query = query.where(or_(Call.from_number == wanted, Call.to_number == wanted))
    async with db.sessionmaker() as session:
        calls = await session.scalars(query)
        return [_call_record(call) for call in calls]
