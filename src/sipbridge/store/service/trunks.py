"""SIP trunks: the providers calls come from (and go to)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import delete

from sipbridge.config import SRTP_MODES
from sipbridge.numbers import InvalidField, normalize_region
from sipbridge.store.db import Database
from sipbridge.store.models import Registration, Trunk
from sipbridge.store.records import TrunkRecord, utcnow
from sipbridge.store.service._common import (
    _CONTROL,
    UNSET,
    Unset,
    _add_named,
    _delete_named,
    _find_named,
    _get_named,
    _iterable,
    _list_named,
    _number,
    _validate_bool,
    _validate_name,
    _validate_secret,
)

__all__ = [
    "TRUNK_CODECS",
    "add_trunk",
    "get_trunk",
    "list_trunks",
    "remove_trunk",
    "update_trunk",
]

# The highest per-trunk message rate that can be set (messages per second); 0 is no limit.
MAX_MESSAGE_RATE: Final = 1_000_000

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

TRUNK_CODECS: Final = ("pcmu", "pcma", "g722", "opus")


# ---------------------------------------------------------------------- validation


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


_TRANSPORT_PARAM = re.compile(r";[ \t]*transport[ \t]*=[ \t]*(udp|tcp|tls)[ \t]*", re.IGNORECASE)


def _validate_host(host: object) -> str:
    """``host``, ``host:port`` or ``[v6]:port``, optionally with ``;transport=udp|tcp|tls``
    (how registrations and outbound calls go; default UDP), stored as
    ``host[:port][;transport=tcp]`` (lower case, ``udp`` left out)."""
    if not isinstance(host, str) or not host.strip():
        raise InvalidField("host", f"{host!r} is not a host name or address")
    host = host.strip()
    suffix = ""
    if ";" in host:
        head, semi, tail = host.partition(";")
        m = _TRANSPORT_PARAM.fullmatch(semi + tail)
        if m is None:
            raise InvalidField(
                "host", f"{host!r}: only ;transport=udp, tcp or tls may follow the host"
            )
        host = head.strip()
        if m.group(1).lower() != "udp":
            suffix = f";transport={m.group(1).lower()}"
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
    return host + suffix


def _validate_max_calls(max_calls: object) -> int:
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise InvalidField("max_calls", f"must be a whole number of at least 1, not {max_calls!r}")
    return max_calls


def _validate_max_message_rate(rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= MAX_MESSAGE_RATE:
        raise InvalidField(
            "max_message_rate",
            f"must be a whole number from 0 (no limit) to {MAX_MESSAGE_RATE}, not {rate!r}",
        )
    return rate


def _validate_allowed_numbers(numbers: object, default_region: str | None) -> list[str]:
    default_region = normalize_region(default_region)  # a bad one names default_region
    result: list[str] = []
    for item in _iterable(numbers, "allowed_numbers"):
        try:
            number = _number(item, default_region)
        except InvalidField as exc:
            raise InvalidField("allowed_numbers", str(exc).split(": ", 1)[-1]) from None
        if number not in result:
            result.append(number)
    return result


def _validate_srtp(srtp: object) -> str:
    if not isinstance(srtp, str) or srtp.strip().lower() not in SRTP_MODES:
        raise InvalidField("srtp", f"{srtp!r} is not one of {', '.join(SRTP_MODES)}")
    return srtp.strip().lower()


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
        allowed_numbers=list(trunk.allowed_numbers or []),
        srtp=trunk.srtp or "optional",
        max_message_rate=trunk.max_message_rate,
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
    allowed_numbers: object | Unset = UNSET,
    srtp: object | Unset = UNSET,
    max_message_rate: object | Unset = UNSET,
    default_region: str | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if not isinstance(max_message_rate, Unset):
        values["max_message_rate"] = (
            None if max_message_rate is None else _validate_max_message_rate(max_message_rate)
        )
    if not isinstance(allowed_numbers, Unset):
        values["allowed_numbers"] = _validate_allowed_numbers(allowed_numbers, default_region)
    if not isinstance(srtp, Unset):
        values["srtp"] = _validate_srtp(srtp)
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
    allowed_numbers: Sequence[str] = (),
    srtp: str = "optional",
    max_message_rate: int | None = None,
    default_region: str | None = None,
) -> TrunkRecord:
    """Create a SIP trunk (provider).

    ``allowed_cidrs``: source addresses allowed to send calls; ``host``: where outbound
    calls and registrations go (``host``, ``host:port``, ``[v6]:port``); ``codecs``: names
    from :data:`TRUNK_CODECS` (empty: all supported); ``allowed_numbers``: the numbers
    this trunk may call (E.164, or national with ``default_region``; empty: any);
    ``srtp``: off, optional or required; ``max_message_rate``: SIP messages per second its
    networks may send (None: the default, 1000; 0: no limit). InvalidField for bad
    values, AlreadyExists for a taken name.
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
        allowed_numbers=allowed_numbers,
        srtp=srtp,
        max_message_rate=max_message_rate,
        default_region=default_region,
    )
    _check_trunk(values)
    trunk = Trunk(name=name, created_at=utcnow(), **values)
    await _add_named(db, trunk, "trunk")
    return _trunk_record(trunk)


async def get_trunk(db: Database, name: str) -> TrunkRecord:
    """The trunk called ``name``; NotFound when there is none."""
    return await _get_named(db, Trunk, name, "trunk", _trunk_record)


async def list_trunks(db: Database) -> list[TrunkRecord]:
    """All trunks, by name."""
    return await _list_named(db, Trunk, _trunk_record)


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
    allowed_numbers: Sequence[str] | Unset = UNSET,
    srtp: str | Unset = UNSET,
    max_message_rate: int | Unset | None = UNSET,
    default_region: str | None = None,
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
        allowed_numbers=allowed_numbers,
        srtp=srtp,
        max_message_rate=max_message_rate,
        default_region=default_region,
    )
    async with db.sessionmaker() as session, session.begin():
        trunk = await _find_named(session, Trunk, name, "trunk")
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
    """Delete a trunk, and its stored registrations; NotFound when there is none."""
    await _delete_named(db, Trunk, name, "trunk")
    async with db.sessionmaker() as session, session.begin():
        await session.execute(delete(Registration).where(Registration.trunk == name))
