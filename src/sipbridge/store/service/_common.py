"""What the service modules share: the errors, :data:`UNSET`, the validators used by more
than one kind of object, and the by-name queries of agents, trunks and API keys."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from typing import Final, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from sipbridge.numbers import InvalidField, InvalidNumber, normalize_e164, normalize_region
from sipbridge.store.db import Database
from sipbridge.store.models import Agent, ApiKey, Trunk

__all__ = ["UNSET", "AlreadyExists", "InvalidField", "NotFound", "Unset"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The objects known by a unique ``name``; ``kind`` (e.g. "agent") names one in messages.
_Named = TypeVar("_Named", Agent, Trunk, ApiKey)
_Record = TypeVar("_Record")


class AlreadyExists(Exception):
    """The agent, number, trunk or API key being added is already there."""


class NotFound(Exception):
    """The agent, number, trunk, API key or call named does not exist."""


class Unset(enum.Enum):
    """Type of :data:`UNSET`, the "leave unchanged" default of the ``update_*`` functions."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


# ---------------------------------------------------------------------- validation


def _validate_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidField(
            "name",
            f"invalid {kind} name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
        )
    return name


def _iterable(value: object, field_name: str) -> Iterable[object]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidField(field_name, f"expected a list, not {value!r}")
    return value


def _validate_secret(value: object, field_name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidField(field_name, "must be a non-empty string (null to clear it)")
    if len(value) > max_length:
        raise InvalidField(field_name, f"longer than {max_length} characters")
    if _CONTROL.search(value):
        raise InvalidField(field_name, "must not contain control characters")
    return value


def _validate_bool(value: object, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(field_name, f"expected true or false, not {value!r}")
    return value


def _number(text: object, default_region: str | None) -> str:
    if not isinstance(text, str):
        raise InvalidNumber(repr(text))
    return normalize_e164(text, normalize_region(default_region))


# ------------------------------------------------------------------ named objects


async def _add_named(db: Database, row: _Named, kind: str) -> None:
    """Insert ``row``; AlreadyExists when its name is taken."""
    model, name = type(row), row.name
    try:
        async with db.sessionmaker() as session, session.begin():
            existing = await session.scalar(select(model.id).where(model.name == name))
            if existing is not None:
                raise AlreadyExists(f"{kind} {name!r} already exists")
            session.add(row)
    except IntegrityError as exc:  # lost a race with a concurrent insert
        raise AlreadyExists(f"{kind} {name!r} already exists") from exc


async def _find_named(session: AsyncSession, model: type[_Named], name: str, kind: str) -> _Named:
    """The row called ``name``; NotFound when there is none."""
    row = await session.scalar(select(model).where(model.name == name))
    if row is None:
        raise NotFound(f"{kind} {name!r} not found")
    return row


async def _get_named(
    db: Database,
    model: type[_Named],
    name: str,
    kind: str,
    to_record: Callable[[_Named], _Record],
) -> _Record:
    """The record of the row called ``name``; NotFound when there is none."""
    async with db.sessionmaker() as session:
        return to_record(await _find_named(session, model, name, kind))


async def _list_named(
    db: Database, model: type[_Named], to_record: Callable[[_Named], _Record]
) -> list[_Record]:
    """The records of all rows, by name."""
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(model).order_by(model.name))
        return [to_record(row) for row in rows]


async def _delete_named(db: Database, model: type[_Named], name: str, kind: str) -> None:
    """Delete the row called ``name``; NotFound when there is none."""
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(model).where(model.name == name))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"{kind} {name!r} not found")


async def _agent_id(session: AsyncSession, name: str) -> int:
    """The id of the agent called ``name``; NotFound when there is none."""
    agent_id = await session.scalar(select(Agent.id).where(Agent.name == name))
    if agent_id is None:
        raise NotFound(f"agent {name!r} not found")
    return agent_id
