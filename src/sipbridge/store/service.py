"""The service layer shared by the CLI and the REST API.

Every function takes a :class:`~sipbridge.store.db.Database`, opens its own session and
returns plain records from :mod:`sipbridge.store.records`. Bad input raises
:class:`InvalidField` (a ValueError whose message starts with the field's name), unknown
names :class:`NotFound`, taken names :class:`AlreadyExists`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import (
    ColumnElement,
    String,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from sipbridge.numbers import (
    InvalidField,
    InvalidNumber,
    caller_location,
    normalize_e164,
    normalize_region,
)
from sipbridge.store.db import Database
from sipbridge.store.models import (
    Agent,
    ApiKey,
    Call,
    CallEventRow,
    PhoneNumber,
    Trunk,
    UTCDateTime,
)
from sipbridge.store.records import (
    QUALITY_FIELDS,
    AgentRecord,
    ApiKeyRecord,
    CallDetail,
    CallEvent,
    CallRecord,
    CallStatus,
    NumberRecord,
    TrunkRecord,
    as_utc,
    utcnow,
)

__all__ = [
    "AGENT_PROTOCOLS",
    "SAMPLE_RATES",
    "TRUNK_CODECS",
    "UNSET",
    "AlreadyExists",
    "CallFilter",
    "CallStats",
    "InvalidField",
    "NotFound",
    "NumberRoute",
    "Unset",
    "add_agent",
    "add_number",
    "add_trunk",
    "call_row_values",
    "call_stats",
    "create_api_key",
    "get_agent",
    "get_call",
    "get_number",
    "get_trunk",
    "iter_calls",
    "list_agents",
    "list_api_keys",
    "list_calls",
    "list_calls_page",
    "list_numbers",
    "list_trunks",
    "lookup_number",
    "remove_agent",
    "remove_number",
    "remove_trunk",
    "revoke_api_key",
    "save_call",
    "save_call_events",
    "update_agent",
    "update_number",
    "update_trunk",
    "verify_api_key",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_CA_BUNDLE_PATH: Final = 1024
AGENT_PROTOCOLS: Final = ("native", "twilio")
SAMPLE_RATES: Final = (8000, 16000)
TRUNK_CODECS: Final = ("pcmu", "pcma", "g722", "opus")
MAX_AGENT_URLS: Final = 10
MAX_PAGE: Final = 1000
_API_KEY_PREFIX = "sb_"
_LAST_USED_GRANULARITY = timedelta(minutes=1)


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


@dataclass
class NumberRoute:
    """Result of :func:`lookup_number`: the number and its agent (None when removed)."""

    number: str
    agent: AgentRecord | None


# ---------------------------------------------------------------------- validation


def _validate_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidField(
            "name",
            f"invalid {kind} name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
        )
    return name


def _validate_agent_url(url: object) -> str:
    if not isinstance(url, str):
        raise InvalidField("urls", f"invalid agent URL {url!r}: not a string")
    url = url.strip()
    if len(url) > 2048:
        raise InvalidField("urls", "invalid agent URL: longer than 2048 characters")
    if _CONTROL.search(url) or " " in url:
        raise InvalidField("urls", f"invalid agent URL {url!r}: contains spaces or control codes")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ws", "wss"):
        raise InvalidField("urls", f"invalid agent URL {url!r}: it must start with ws:// or wss://")
    try:
        hostname = parts.hostname
        _ = parts.port
    except ValueError:
        raise InvalidField("urls", f"invalid agent URL {url!r}: bad port") from None
    if not hostname:
        raise InvalidField("urls", f"invalid agent URL {url!r}: it has no host")
    return url


def _validate_urls(urls: object) -> list[str]:
    items: list[object] = [urls] if isinstance(urls, str) else list(_iterable(urls, "urls"))
    if not items:
        raise InvalidField("urls", "at least one ws:// or wss:// URL is needed")
    result: list[str] = []
    for item in items:
        url = _validate_agent_url(item)
        if url not in result:
            result.append(url)
    if len(result) > MAX_AGENT_URLS:
        raise InvalidField("urls", f"at most {MAX_AGENT_URLS} URLs")
    return result


def _iterable(value: object, field_name: str) -> Iterable[object]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidField(field_name, f"expected a list, not {value!r}")
    return value


def _validate_protocol(protocol: object) -> str:
    if protocol not in AGENT_PROTOCOLS:
        raise InvalidField("protocol", f"{protocol!r} is not one of {', '.join(AGENT_PROTOCOLS)}")
    return str(protocol)


def _validate_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        raise InvalidField(
            "sample_rate", f"{sample_rate!r} is not one of {', '.join(map(str, SAMPLE_RATES))}"
        )
    assert isinstance(sample_rate, int)
    return sample_rate


def _validate_secret(value: object, field_name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidField(field_name, "must be a non-empty string (null to clear it)")
    if len(value) > max_length:
        raise InvalidField(field_name, f"longer than {max_length} characters")
    if _CONTROL.search(value):
        raise InvalidField(field_name, "must not contain control characters")
    return value


def _validate_ca_bundle(path: object) -> str:
    """The absolute path of a readable PEM file holding at least one certificate.

    The path is made absolute against the current directory but symlinks are kept, so a
    bundle replaced through a symlink (certbot and the like) is picked up by later calls.
    The file is read again on each connection; only its state now is checked. Blocking
    (file system and certificate parsing): callers run it in a thread.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidField("ca_bundle", "must be the path of a PEM CA bundle (null to clear it)")
    if _CONTROL.search(path):
        raise InvalidField("ca_bundle", "must not contain control characters")
    absolute = os.path.abspath(path)
    if len(absolute) > MAX_CA_BUNDLE_PATH:
        raise InvalidField("ca_bundle", f"path longer than {MAX_CA_BUNDLE_PATH} characters")
    if not os.path.isfile(absolute):
        what = "is not a file" if os.path.exists(absolute) else "does not exist"
        raise InvalidField("ca_bundle", f"{absolute} {what}")
    try:
        with open(absolute, "rb"):
            pass
    except OSError as exc:
        raise InvalidField("ca_bundle", f"{absolute} cannot be read: {exc.strerror}") from None
    try:
        context = ssl.create_default_context(cafile=absolute)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise InvalidField(
            "ca_bundle",
            f"{absolute} is not a PEM CA bundle: no certificate could be loaded "
            f"({_ssl_reason(exc)})",
        ) from None
    if not context.cert_store_stats().get("x509"):
        raise InvalidField("ca_bundle", f"{absolute} holds no PEM certificate")
    return absolute


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc) or type(exc).__name__


def _validate_bool(value: object, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(field_name, f"expected true or false, not {value!r}")
    return value


def _validate_cidrs(cidrs: object) -> list[str]:
    result: list[str] = []
    for item in _iterable(cidrs, "allowed_cidrs"):
        if not isinstance(item, str):
            raise InvalidField("allowed_cidrs", f"{item!r} is not an address or network")
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise InvalidField(
                "allowed_cidrs",
                f"{item!r} is not an IP address or network (e.g. 203.0.113.0/24)",
            ) from None
        text = str(network)
        if text not in result:
            result.append(text)
    return result


def _validate_host(host: object) -> str:
    if not isinstance(host, str) or not host.strip():
        raise InvalidField("host", f"{host!r} is not a host name or address")
    host = host.strip()
    bad = InvalidField("host", f"{host!r} is not a host, host:port or [IPv6]:port")
    if len(host) > 255 or _CONTROL.search(host) or any(c in host for c in " /@?#"):
        raise bad
    parts = urlsplit("//" + host)
    try:
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        raise bad from None
    if not hostname or (port is not None and not 1 <= port <= 65535):
        raise bad
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        if host.startswith("[") or not _HOSTNAME.fullmatch(hostname):
            raise bad from None
    return host


def _validate_max_calls(max_calls: object) -> int:
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise InvalidField("max_calls", f"must be a whole number of at least 1, not {max_calls!r}")
    return max_calls


def _validate_codecs(codecs: object) -> list[str]:
    result: list[str] = []
    for item in _iterable(codecs, "codecs"):
        name = item.strip().lower() if isinstance(item, str) else item
        if name not in TRUNK_CODECS:
            raise InvalidField("codecs", f"{item!r} is not one of {', '.join(TRUNK_CODECS)}")
        assert isinstance(name, str)
        if name not in result:
            result.append(name)
    return result


def _number(text: object, default_region: str | None) -> str:
    if not isinstance(text, str):
        raise InvalidNumber(repr(text))
    return normalize_e164(text, normalize_region(default_region))


# --------------------------------------------------------------------------- agents


def _agent_record(agent: Agent) -> AgentRecord:
    return AgentRecord(
        name=agent.name,
        urls=list(agent.urls),
        voice_enabled=agent.voice_enabled,
        created_at=agent.created_at,
        protocol=agent.protocol,
        token=agent.token,
        sample_rate=agent.sample_rate,
        updated_at=agent.updated_at,
        ca_bundle=agent.ca_bundle,
    )


async def add_agent(
    db: Database,
    name: str,
    urls: list[str] | str,
    voice_enabled: bool = True,
    *,
    protocol: str = "native",
    token: str | None = None,
    sample_rate: int = 8000,
    ca_bundle: str | None = None,
) -> AgentRecord:
    """Create an agent reached at ``urls`` (tried in order; one URL may be given as a str).

    ``ca_bundle`` is the path of a PEM file of CA certificates that verify the agent's
    ``wss://`` certificate in place of the system trust store; it is stored as an absolute
    path. It is accepted even when every URL is ``ws://`` (it is then unused), so URLs and
    bundle can be changed in either order.

    InvalidField for a bad name, URL, protocol, token, sample rate or CA bundle (missing,
    unreadable or without a PEM certificate); AlreadyExists for a taken name.
    """
    name = _validate_name(name, "agent")
    url_list = _validate_urls(urls)
    voice_enabled = _validate_bool(voice_enabled, "voice_enabled")
    protocol = _validate_protocol(protocol)
    if token is not None:
        token = _validate_secret(token, "token", 1024)
    sample_rate = _validate_sample_rate(sample_rate)
    if ca_bundle is not None:
        ca_bundle = await asyncio.to_thread(_validate_ca_bundle, ca_bundle)
    try:
        async with db.sessionmaker() as session, session.begin():
            existing = await session.scalar(select(Agent.id).where(Agent.name == name))
            if existing is not None:
                raise AlreadyExists(f"agent {name!r} already exists")
            agent = Agent(
                name=name,
                urls=url_list,
                voice_enabled=voice_enabled,
                created_at=utcnow(),
                protocol=protocol,
                token=token,
                sample_rate=sample_rate,
                ca_bundle=ca_bundle,
            )
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


async def update_agent(
    db: Database,
    name: str,
    *,
    urls: list[str] | str | None = None,
    voice_enabled: bool | None = None,
    protocol: str | None = None,
    token: str | Unset | None = UNSET,
    sample_rate: int | None = None,
    ca_bundle: str | Unset | None = UNSET,
) -> AgentRecord:
    """Change some of an agent's settings (None / UNSET: unchanged; ``token=None`` and
    ``ca_bundle=None`` clear them). A CA bundle is checked as in :func:`add_agent`.

    NotFound for an unknown agent, InvalidField for a bad value.
    """
    values: dict[str, Any] = {}
    if urls is not None:
        values["urls"] = _validate_urls(urls)
    if voice_enabled is not None:
        values["voice_enabled"] = _validate_bool(voice_enabled, "voice_enabled")
    if protocol is not None:
        values["protocol"] = _validate_protocol(protocol)
    if not isinstance(token, Unset):
        values["token"] = None if token is None else _validate_secret(token, "token", 1024)
    if sample_rate is not None:
        values["sample_rate"] = _validate_sample_rate(sample_rate)
    if not isinstance(ca_bundle, Unset):
        values["ca_bundle"] = (
            None if ca_bundle is None else await asyncio.to_thread(_validate_ca_bundle, ca_bundle)
        )
    async with db.sessionmaker() as session, session.begin():
        agent = await session.scalar(select(Agent).where(Agent.name == name))
        if agent is None:
            raise NotFound(f"agent {name!r} not found")
        if values:
            for key, value in values.items():
                setattr(agent, key, value)
            agent.updated_at = utcnow()
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


async def add_number(
    db: Database, number_text: str, agent_name: str, default_region: str | None = None
) -> NumberRecord:
    """Route ``number_text`` (normalized to E.164; national formats read in
    ``default_region``) to an existing agent.

    InvalidNumber for a bad number, InvalidField for a bad region, NotFound for an unknown
    agent, AlreadyExists when the number is already routed.
    """
    number = _number(number_text, default_region)
    created_at = utcnow()
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
            session.add(PhoneNumber(number=number, agent_id=agent_id, created_at=created_at))
    except IntegrityError as exc:
        raise AlreadyExists(f"number {number} already exists") from exc
    return NumberRecord(number=number, agent=agent_name, created_at=created_at)


async def list_numbers(db: Database, agent: str | None = None) -> list[NumberRecord]:
    """All numbers (or those of ``agent``) with their agent's name (None when removed)."""
    query = (
        select(PhoneNumber.number, Agent.name, PhoneNumber.created_at)
        .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
        .order_by(PhoneNumber.number)
    )
    if agent is not None:
        query = query.where(Agent.name == agent)
    async with db.sessionmaker() as session:
        rows = await session.execute(query)
        return [NumberRecord(number=n, agent=a, created_at=c) for n, a, c in rows]


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
        row = (
            await session.execute(
                select(PhoneNumber.number, Agent.name, PhoneNumber.created_at)
                .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
                .where(PhoneNumber.number == number)
            )
        ).first()
    if row is None:
        raise missing
    return NumberRecord(number=row[0], agent=row[1], created_at=row[2])


async def update_number(
    db: Database, number_text: str, agent_name: str | None, default_region: str | None = None
) -> NumberRecord:
    """Give a number to another agent (None: no agent, the number then answers 480).

    NotFound for an unknown number or agent.
    """
    number, missing = await _stored_number(number_text, default_region)
    async with db.sessionmaker() as session, session.begin():
        row = await session.scalar(select(PhoneNumber).where(PhoneNumber.number == number))
        if row is None:
            raise missing
        agent_id: int | None = None
        if agent_name is not None:
            agent_id = await session.scalar(select(Agent.id).where(Agent.name == agent_name))
            if agent_id is None:
                raise NotFound(f"agent {agent_name!r} not found")
        row.agent_id = agent_id
        created_at = row.created_at
    return NumberRecord(number=number, agent=agent_name, created_at=created_at)


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
                select(PhoneNumber.number, Agent)
                .outerjoin(Agent, PhoneNumber.agent_id == Agent.id)
                .where(PhoneNumber.number == e164)
            )
        ).first()
    if row is None:
        return None
    number, agent = row
    return NumberRoute(number=number, agent=None if agent is None else _agent_record(agent))


# --------------------------------------------------------------------------- trunks


def _trunk_record(trunk: Trunk) -> TrunkRecord:
    return TrunkRecord(
        name=trunk.name,
        allowed_cidrs=list(trunk.allowed_cidrs),
        host=trunk.host,
        username=trunk.username,
        password=trunk.password,
        register=trunk.register,
        max_calls=trunk.max_calls,
        codecs=list(trunk.codecs),
        created_at=trunk.created_at,
    )


def _check_trunk(values: dict[str, Any]) -> None:
    if values["register"] and not values["host"]:
        raise InvalidField("register", "registering needs a host to register with")
    if values["register"] and not values["username"]:
        raise InvalidField("register", "registering needs a username (and password)")


def _trunk_values(
    *,
    allowed_cidrs: object | Unset = UNSET,
    host: object | Unset = UNSET,
    username: object | Unset = UNSET,
    password: object | Unset = UNSET,
    register: object | Unset = UNSET,
    max_calls: object | Unset = UNSET,
    codecs: object | Unset = UNSET,
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if not isinstance(allowed_cidrs, Unset):
        values["allowed_cidrs"] = _validate_cidrs(allowed_cidrs)
    if not isinstance(host, Unset):
        values["host"] = None if host is None else _validate_host(host)
    if not isinstance(username, Unset):
        values["username"] = (
            None if username is None else _validate_secret(username, "username", 255)
        )
    if not isinstance(password, Unset):
        values["password"] = (
            None if password is None else _validate_secret(password, "password", 255)
        )
    if not isinstance(register, Unset):
        values["register"] = _validate_bool(register, "register")
    if not isinstance(max_calls, Unset):
        values["max_calls"] = None if max_calls is None else _validate_max_calls(max_calls)
    if not isinstance(codecs, Unset):
        values["codecs"] = _validate_codecs(codecs)
    return values


async def add_trunk(
    db: Database,
    name: str,
    *,
    allowed_cidrs: Sequence[str] = (),
    host: str | None = None,
    username: str | None = None,
    password: str | None = None,
    register: bool = False,
    max_calls: int | None = None,
    codecs: Sequence[str] = (),
) -> TrunkRecord:
    """Create a SIP trunk (provider).

    ``allowed_cidrs``: source addresses allowed to send calls; ``host``: where outbound
    calls and registrations go (``host``, ``host:port``, ``[v6]:port``); ``codecs``: names
    from :data:`TRUNK_CODECS` (empty: all supported). InvalidField for bad values,
    AlreadyExists for a taken name.
    """
    name = _validate_name(name, "trunk")
    values = _trunk_values(
        allowed_cidrs=allowed_cidrs,
        host=host,
        username=username,
        password=password,
        register=register,
        max_calls=max_calls,
        codecs=codecs,
    )
    _check_trunk(values)
    try:
        async with db.sessionmaker() as session, session.begin():
            existing = await session.scalar(select(Trunk.id).where(Trunk.name == name))
            if existing is not None:
                raise AlreadyExists(f"trunk {name!r} already exists")
            trunk = Trunk(name=name, created_at=utcnow(), **values)
            session.add(trunk)
    except IntegrityError as exc:
        raise AlreadyExists(f"trunk {name!r} already exists") from exc
    return _trunk_record(trunk)


async def get_trunk(db: Database, name: str) -> TrunkRecord:
    """The trunk called ``name``; NotFound when there is none."""
    async with db.sessionmaker() as session:
        trunk = await session.scalar(select(Trunk).where(Trunk.name == name))
        if trunk is None:
            raise NotFound(f"trunk {name!r} not found")
        return _trunk_record(trunk)


async def list_trunks(db: Database) -> list[TrunkRecord]:
    """All trunks, by name."""
    async with db.sessionmaker() as session:
        trunks = await session.scalars(select(Trunk).order_by(Trunk.name))
        return [_trunk_record(trunk) for trunk in trunks]


async def update_trunk(
    db: Database,
    name: str,
    *,
    allowed_cidrs: Sequence[str] | Unset = UNSET,
    host: str | Unset | None = UNSET,
    username: str | Unset | None = UNSET,
    password: str | Unset | None = UNSET,
    register: bool | Unset = UNSET,
    max_calls: int | Unset | None = UNSET,
    codecs: Sequence[str] | Unset = UNSET,
) -> TrunkRecord:
    """Change some of a trunk's settings (UNSET: unchanged; None clears an optional one)."""
    values = _trunk_values(
        allowed_cidrs=allowed_cidrs,
        host=host,
        username=username,
        password=password,
        register=register,
        max_calls=max_calls,
        codecs=codecs,
    )
    async with db.sessionmaker() as session, session.begin():
        trunk = await session.scalar(select(Trunk).where(Trunk.name == name))
        if trunk is None:
            raise NotFound(f"trunk {name!r} not found")
        merged = {
            "register": trunk.register,
            "host": trunk.host,
            "username": trunk.username,
            **values,
        }
        _check_trunk(merged)
        for key, value in values.items():
            setattr(trunk, key, value)
    return _trunk_record(trunk)


async def remove_trunk(db: Database, name: str) -> None:
    """Delete a trunk; NotFound when there is none."""
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(Trunk).where(Trunk.name == name))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"trunk {name!r} not found")


# ------------------------------------------------------------------------- api keys


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _api_key_record(key: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        name=key.name, prefix=key.prefix, created_at=key.created_at, last_used_at=key.last_used_at
    )


async def create_api_key(db: Database, name: str) -> tuple[ApiKeyRecord, str]:
    """A new API key: its record and the secret, which is shown once and never stored
    (only its SHA-256). AlreadyExists when the name is taken."""
    name = _validate_name(name, "API key")
    secret = _API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=secret[:8], key_hash=_hash_key(secret), created_at=utcnow())
    try:
        async with db.sessionmaker() as session, session.begin():
            existing = await session.scalar(select(ApiKey.id).where(ApiKey.name == name))
            if existing is not None:
                raise AlreadyExists(f"API key {name!r} already exists")
            session.add(key)
    except IntegrityError as exc:
        raise AlreadyExists(f"API key {name!r} already exists") from exc
    return _api_key_record(key), secret


async def verify_api_key(db: Database, presented: str) -> ApiKeyRecord | None:
    """The key whose secret is ``presented``, or None.

    Looked up by the SHA-256 of the presented value (indexed), then compared in constant
    time; ``last_used_at`` is written at most once a minute.
    """
    if not isinstance(presented, str) or not presented or len(presented) > 256:
        return None
    digest = _hash_key(presented)
    async with db.sessionmaker() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_GRANULARITY:
        async with db.sessionmaker() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
            )
        key.last_used_at = now
    return _api_key_record(key)


async def list_api_keys(db: Database) -> list[ApiKeyRecord]:
    """All API keys, by name (never their secrets)."""
    async with db.sessionmaker() as session:
        keys = await session.scalars(select(ApiKey).order_by(ApiKey.name))
        return [_api_key_record(key) for key in keys]


async def revoke_api_key(db: Database, name: str) -> None:
    """Delete an API key: it stops working at once. NotFound when there is none."""
    async with db.sessionmaker() as session, session.begin():
        result = await session.execute(delete(ApiKey).where(ApiKey.name == name))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"API key {name!r} not found")


# ---------------------------------------------------------------------------- calls


def call_row_values(record: CallRecord) -> dict[str, Any]:
    """The ``calls`` row for ``record`` (without ``id``), with the columns computed at write
    time: caller country/region (when the record has none), UTC day and hour, duration and
    time to first audio."""
    country, region = record.caller_country, record.caller_region
    if country is None:
        country, region = caller_location(record.from_number)
    received = as_utc(record.received_at)
    return {
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
        "caller_country": country,
        "caller_region": region,
        "first_audio_at": record.first_audio_at,
        "received_day": received.date(),
        "received_hour": received.hour,
        "first_audio_ms": record.time_to_first_audio_ms,
        **{name: getattr(record, name) for name in QUALITY_FIELDS},
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
        trunk=call.trunk,
        caller_country=call.caller_country,
        caller_region=call.caller_region,
        first_audio_at=call.first_audio_at,
        **{name: getattr(call, name) for name in QUALITY_FIELDS},
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


async def save_call_events(db: Database, call_id: str, events: Sequence[CallEvent]) -> None:
    """Append ``events`` to a call's log (the call record may not be written yet)."""
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
        rows.append({"call_id": call_id, "at": event.at, "kind": event.kind, "data": event.data})
    if not rows:
        return
    async with db.sessionmaker() as session, session.begin():
        session.add_all(CallEventRow(**row) for row in rows)


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
        wanted = _number_or_raw(flt.number)
        conditions.append(or_(Call.from_number == wanted, Call.to_number == wanted))
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
        return as_utc(datetime.fromisoformat(received)), call_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
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
        wanted = _number_or_raw(number)
        query = query.where(or_(Call.from_number == wanted, Call.to_number == wanted))
    async with db.sessionmaker() as session:
        calls = await session.scalars(query)
        return [_call_record(call) for call in calls]


# ---------------------------------------------------------------------------- stats


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _average(total: float | None, count: int) -> float | None:
    return None if not count or total is None else round(total / count, 3)


@dataclass
class CallStats:
    """Figures over a time range (see :func:`call_stats`); all times UTC."""

    since: datetime | None
    until: datetime | None
    total: int = 0
    answered: int = 0
    failed: int = 0
    cancelled: int = 0
    average_duration_s: float | None = None
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)
    by_hour_of_day: list[int] = field(default_factory=lambda: [0] * 24)
    by_day_of_week: list[int] = field(default_factory=lambda: [0] * 7)
    by_day: list[dict[str, Any]] = field(default_factory=list)
    callers_by_country: list[dict[str, Any]] = field(default_factory=list)
    callers_by_region: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Answered calls / all calls (0.0 when there are none)."""
        return _ratio(self.answered, self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else as_utc(self.since).isoformat(),
            "until": None if self.until is None else as_utc(self.until).isoformat(),
            "total": self.total,
            "answered": self.answered,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "success_rate": self.success_rate,
            "average_duration_s": self.average_duration_s,
            "failure_reasons": self.failure_reasons,
            "by_hour_of_day": self.by_hour_of_day,
            "by_day_of_week": self.by_day_of_week,
            "by_day": self.by_day,
            "callers_by_country": self.callers_by_country,
            "callers_by_region": self.callers_by_region,
            "agents": self.agents,
        }


@dataclass
class _AgentTotals:
    calls: int = 0
    answered: int = 0
    duration_sum: float = 0.0
    duration_count: int = 0
    audio_sum: float = 0.0
    audio_count: int = 0


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


async def call_stats(
    db: Database, since: datetime | None = None, until: datetime | None = None
) -> CallStats:
    """Statistics over calls received in ``[since, until)`` (None: unbounded).

    Three GROUP BY queries over the range (status/agent/reason, UTC day/hour, caller
    country/region), on columns computed when the call was written, so the SQL is the same
    on SQLite and PostgreSQL; the rest is folded in Python over at most a few thousand
    groups.
    """
    conditions = _range(since, until)
    answered_value = CallStatus.ANSWERED.value
    by_outcome = (
        select(
            Call.agent_name,
            Call.status,
            Call.reason,
            func.count(),
            func.sum(Call.duration_s),
            func.count(Call.duration_s),
            func.sum(Call.first_audio_ms),
            func.count(Call.first_audio_ms),
        )
        .where(*conditions)
        .group_by(Call.agent_name, Call.status, Call.reason)
    )
    by_time = (
        select(Call.received_day, Call.received_hour, func.count())
        .where(*conditions)
        .group_by(Call.received_day, Call.received_hour)
    )
    by_place = (
        select(Call.caller_country, Call.caller_region, func.count())
        .where(*conditions, Call.caller_country.is_not(None))
        .group_by(Call.caller_country, Call.caller_region)
    )
    async with db.sessionmaker() as session:
        outcome_rows = (await session.execute(by_outcome)).all()
        time_rows = (await session.execute(by_time)).all()
        place_rows = (await session.execute(by_place)).all()

    stats = CallStats(since=since, until=until)
    reasons: dict[str, int] = {}
    agents: dict[str, _AgentTotals] = {}
    duration_sum, duration_count = 0.0, 0
    for agent, status, reason, count, d_sum, d_count, a_sum, a_count in outcome_rows:
        count = int(count)
        stats.total += count
        totals = agents.setdefault(agent, _AgentTotals()) if agent is not None else None
        if totals is not None:
            totals.calls += count
        if status == answered_value:
            stats.answered += count
            duration_sum += float(d_sum or 0.0)
            duration_count += int(d_count)
            if totals is not None:
                totals.answered += count
                totals.duration_sum += float(d_sum or 0.0)
                totals.duration_count += int(d_count)
                totals.audio_sum += float(a_sum or 0.0)
                totals.audio_count += int(a_count)
            continue
        if status == CallStatus.CANCELLED.value:
            stats.cancelled += count
        else:
            stats.failed += count
        key = reason or "unknown"
        reasons[key] = reasons.get(key, 0) + count
    stats.average_duration_s = _average(duration_sum, duration_count)
    stats.failure_reasons = [
        {"reason": reason, "count": count}
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    ]
    stats.agents = [
        {
            "agent": name,
            "calls": totals.calls,
            "answered": totals.answered,
            "success_rate": _ratio(totals.answered, totals.calls),
            "average_duration_s": _average(totals.duration_sum, totals.duration_count),
            "average_time_to_first_audio_ms": _average(totals.audio_sum, totals.audio_count),
        }
        for name, totals in sorted(agents.items(), key=lambda item: (-item[1].calls, item[0]))
    ]

    days: dict[date, int] = {}
    for day, hour, count in time_rows:
        if day is None or hour is None:  # rows written without the computed columns
            continue
        the_day = _as_date(day)
        days[the_day] = days.get(the_day, 0) + int(count)
        stats.by_hour_of_day[int(hour)] += int(count)
        stats.by_day_of_week[the_day.weekday()] += int(count)
    if days:
        first, last = min(days), max(days)
        stats.by_day = [
            {
                "date": (first + timedelta(days=i)).isoformat(),
                "count": days.get(first + timedelta(days=i), 0),
            }
            for i in range((last - first).days + 1)
        ]

    countries: dict[str, int] = {}
    regions: list[dict[str, Any]] = []
    for country, region, count in place_rows:
        if country is None:
            continue
        countries[country] = countries.get(country, 0) + int(count)
        if region is not None:
            regions.append({"country": country, "region": region, "count": int(count)})
    stats.callers_by_country = [
        {"country": country, "count": count}
        for country, count in sorted(countries.items(), key=lambda item: (-item[1], item[0]))
    ]
    stats.callers_by_region = sorted(
        regions, key=lambda item: (-item["count"], item["country"], item["region"])
    )
    return stats
