"""Agents: the WebSocket endpoints calls are bridged to."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update

from sipbridge.agent.transfers import MAX_PATTERNS, normalize_pattern
from sipbridge.numbers import InvalidField
from sipbridge.store.db import Database
from sipbridge.store.models import Agent, PhoneNumber
from sipbridge.store.records import AgentRecord, utcnow
from sipbridge.store.service._common import (
    _CONTROL,
    UNSET,
    Unset,
    _add_named,
    _agent_id,
    _find_named,
    _get_named,
    _iterable,
    _list_named,
    _validate_bool,
    _validate_name,
    _validate_secret,
)

log = logging.getLogger("sipbridge.store")

__all__ = [
    "AGENT_PROTOCOLS",
    "SAMPLE_RATES",
    "add_agent",
    "get_agent",
    "list_agents",
    "remove_agent",
    "update_agent",
]

MAX_CA_BUNDLE_PATH: Final = 1024
AGENT_PROTOCOLS: Final = ("native", "twilio")
SAMPLE_RATES: Final = (8000, 16000)
MAX_AGENT_URLS: Final = 10


# ---------------------------------------------------------------------- validation


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


def _validate_ca_bundle(path: object) -> str:
    """The absolute path of a readable PEM file holding at least one certificate.

    The path is made absolute against the current directory but symlinks are kept, so a
    bundle replaced through a symlink (certbot and the like) is picked up by later calls.
    The file is read again on each connection; only its state now is checked. Blocking
    (file system and certificate parsing): callers run it in a thread.

    Every failure to use the file gives the same message, so an API-key holder learns
    nothing about the server's files (whether a path exists, is readable, is a file); the
    reason is logged for the operator.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidField("ca_bundle", "must be the path of a PEM CA bundle (null to clear it)")
    if _CONTROL.search(path):
        raise InvalidField("ca_bundle", "must not contain control characters")
    absolute = os.path.abspath(path)
    if len(absolute) > MAX_CA_BUNDLE_PATH:
        raise InvalidField("ca_bundle", f"path longer than {MAX_CA_BUNDLE_PATH} characters")
    reason = _ca_bundle_problem(absolute)
    if reason is not None:
        log.warning("event=ca_bundle_refused path=%r reason=%s", absolute, reason)
        raise InvalidField(
            "ca_bundle",
            f"{absolute} is not a readable PEM CA bundle (a file holding at least one "
            "certificate that sipbridge can read)",
        )
    return absolute


def _ca_bundle_problem(absolute: str) -> str | None:
    """Why ``absolute`` cannot serve as a CA bundle, or None when it can."""
    if not os.path.isfile(absolute):
        return "not a file" if os.path.exists(absolute) else "does not exist"
    try:
        with open(absolute, "rb"):
            pass
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    try:
        context = ssl.create_default_context(cafile=absolute)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"no certificate could be loaded ({_ssl_reason(exc)})"
    if not context.cert_store_stats().get("x509"):
        return "holds no PEM certificate"
    return None


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc) or type(exc).__name__


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
        transfer_allow=list(agent.transfer_allow or []),
        record=bool(agent.record),
    )


def _validate_transfer_allow(patterns: object) -> list[str]:
    if isinstance(patterns, str) or not isinstance(patterns, list | tuple):
        raise InvalidField("transfer_allow", "must be a list of patterns")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidField("transfer_allow", f"at most {MAX_PATTERNS} patterns")
    normalized: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidField("transfer_allow", "patterns are strings")
        try:
            value = normalize_pattern(pattern)
        except ValueError as exc:
            raise InvalidField("transfer_allow", str(exc)) from None
        if value not in normalized:
            normalized.append(value)
    return normalized


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
    transfer_allow: list[str] | tuple[str, ...] = (),
    record: bool = False,
) -> AgentRecord:
    """Create an agent reached at ``urls`` (tried in order; one URL may be given as a str).

    ``ca_bundle`` is the path of a PEM file of CA certificates that verify the agent's
    ``wss://`` certificate in place of the system trust store; it is stored as an absolute
    path. It is accepted even when every URL is ``ws://`` (it is then unused), so URLs and
    bundle can be changed in either order. ``transfer_allow`` are the patterns of the
    targets its transfers may go to (:mod:`sipbridge.agent.transfers`; none: the default
    policy). ``record``: its calls are recorded (unless their number says otherwise).

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
    allow = _validate_transfer_allow(list(transfer_allow))
    record = _validate_bool(record, "record")
    if ca_bundle is not None:
        ca_bundle = await asyncio.to_thread(_validate_ca_bundle, ca_bundle)
    agent = Agent(
        name=name,
        urls=url_list,
        voice_enabled=voice_enabled,
        created_at=utcnow(),
        protocol=protocol,
        token=token,
        sample_rate=sample_rate,
        ca_bundle=ca_bundle,
        transfer_allow=allow,
        record=record,
    )
    await _add_named(db, agent, "agent")
    return _agent_record(agent)


async def list_agents(db: Database) -> list[AgentRecord]:
    """All agents, by name."""
    return await _list_named(db, Agent, _agent_record)


async def get_agent(db: Database, name: str) -> AgentRecord:
    """The agent called ``name``; NotFound when there is none."""
    return await _get_named(db, Agent, name, "agent", _agent_record)


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
    transfer_allow: list[str] | tuple[str, ...] | None = None,
    record: bool | None = None,
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
    if transfer_allow is not None:
        values["transfer_allow"] = _validate_transfer_allow(list(transfer_allow))
    if record is not None:
        values["record"] = _validate_bool(record, "record")
    if not isinstance(ca_bundle, Unset):
        values["ca_bundle"] = (
            None if ca_bundle is None else await asyncio.to_thread(_validate_ca_bundle, ca_bundle)
        )
    async with db.sessionmaker() as session, session.begin():
        agent = await _find_named(session, Agent, name, "agent")
        if values:
            for key, value in values.items():
                setattr(agent, key, value)
            agent.updated_at = utcnow()
    return _agent_record(agent)


async def remove_agent(db: Database, name: str) -> int:
    """Delete an agent; returns how many numbers are left without an agent."""
    async with db.sessionmaker() as session, session.begin():
        agent_id = await _agent_id(session, name)
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
