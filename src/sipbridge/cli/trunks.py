"""``sipbridge trunk ...``: SIP trunks (providers)."""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Annotated, Any

import typer

from sipbridge.cli._common import (
    Command,
    DbOption,
    RegionOption,
    _echo_table,
    _option,
    _run,
)
from sipbridge.store import service
from sipbridge.store.records import InstanceState, RegistrationRecord, TrunkRecord

MessageRateOption = Annotated[
    int | None,
    _option(
        "--max-message-rate",
        metavar="N",
        help="SIP messages per second the trunk's networks may send (default 1000; 0: no limit).",
    ),
]

AllowOption = Annotated[
    list[str] | None,
    _option(
        "--allow",
        metavar="CIDR",
        help="Source address or CIDR allowed to send calls (repeatable).",
    ),
]
HostOption = Annotated[str | None, _option("--host", help="Where outbound calls and REGISTER go.")]
UsernameOption = Annotated[str | None, _option("--username", help="Digest user name.")]
MaxCallsOption = Annotated[
    int | None, _option("--max-calls", metavar="N", help="Concurrent call limit (at least 1).")
]
CodecOption = Annotated[
    list[str] | None,
    _option(
        "--codec",
        help="Allowed codec, in order of preference: pcmu, pcma, g722, opus (repeatable).",
    ),
]
NumberOption = Annotated[
    list[str] | None,
    _option(
        "--number",
        help="A number this trunk may call (repeatable; default: any number with an agent).",
    ),
]
_SRTP_HELP = "SRTP (SDES): off, optional (when offered) or required."

trunk_app = typer.Typer(
    rich_markup_mode=None, help="Manage SIP trunks (providers).", no_args_is_help=True
)


@trunk_app.command("add", cls=Command)
def trunk_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Trunk name, e.g. telnyx.")],
    allow: AllowOption = None,
    host: HostOption = None,
    username: UsernameOption = None,
    password: Annotated[
        str | None,
        _option(
            "--password",
            envvar="SIPBRIDGE_TRUNK_PASSWORD",
            help="Digest password (or the SIPBRIDGE_TRUNK_PASSWORD variable, kept off the "
            "command line).",
        ),
    ] = None,
    register: Annotated[bool, _option("--register", help="Register with the host.")] = False,
    max_calls: MaxCallsOption = None,
    codec: CodecOption = None,
    number: NumberOption = None,
    srtp: Annotated[str, _option("--srtp", metavar="MODE", help=_SRTP_HELP)] = "optional",
    max_message_rate: MessageRateOption = None,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Add a SIP trunk (provider)."""
    record = _run(
        db,
        lambda d: service.add_trunk(
            d,
            name,
            allowed_cidrs=allow or (),
            host=host,
            username=username,
            password=password,
            register=register,
            max_calls=max_calls,
            codecs=codec or (),
            allowed_numbers=number or (),
            srtp=srtp,
            max_message_rate=max_message_rate,
            default_region=default_region,
        ),
    )
    typer.echo(f"added trunk {record.name}")


@trunk_app.command("update", cls=Command)
def trunk_update(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Trunk name.")],
    allow: AllowOption = None,
    host: HostOption = None,
    username: UsernameOption = None,
    password: Annotated[
        str | None,
        _option(
            "--password",
            help="Digest password; - reads it from standard input (kept off the command line).",
        ),
    ] = None,
    register: Annotated[
        bool | None,
        _option("--register/--no-register", help="Register with the host, or stop."),
    ] = None,
    max_calls: MaxCallsOption = None,
    codec: CodecOption = None,
    number: NumberOption = None,
    srtp: Annotated[str | None, _option("--srtp", metavar="MODE", help=_SRTP_HELP)] = None,
    max_message_rate: MessageRateOption = None,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Change a trunk's settings (options left out stay as they are; a repeatable option
    given replaces its whole list)."""
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "allowed_cidrs": allow,
            "host": host,
            "username": username,
            "password": password,
            "register": register,
            "max_calls": max_calls,
            "codecs": codec,
            "allowed_numbers": number,
            "srtp": srtp,
            "max_message_rate": max_message_rate,
        }.items()
        if value is not None
    }
    if password == "-":
        changes["password"] = sys.stdin.readline().rstrip("\r\n")
    if not changes:
        raise typer.BadParameter(
            "nothing to change: give at least one of --allow, --host, --username, --password, "
            "--register/--no-register, --max-calls, --codec, --number, --srtp, "
            "--max-message-rate"
        )
    record = _run(
        db,
        lambda d: service.update_trunk(d, name, default_region=default_region, **changes),
    )
    typer.echo(f"updated trunk {record.name}")


def _trunk_row(t: TrunkRecord) -> list[str]:
    return [
        t.name,
        ",".join(t.allowed_cidrs) or "-",
        t.host or "-",
        t.username or "-",
        "yes" if t.password is not None else "no",
        "yes" if t.register else "no",
        "-" if t.max_calls is None else str(t.max_calls),
        ",".join(t.codecs) or "-",
        ",".join(t.allowed_numbers) or "any",
        t.srtp,
        "default" if t.max_message_rate is None else str(t.max_message_rate or "none"),
    ]


def _registration_text(registration: dict[str, Any] | None) -> str:
    """One cell: ``registered until <time>``, ``failing 403 Forbidden, retry <time>``..."""
    if not registration:
        return "-"

    def when(value: object) -> str:
        return str(value).replace("T", " ").removesuffix("+00:00") if value else "-"

    state = str(registration.get("state"))
    if state == "registered":
        return f"registered until {when(registration.get('registered_until'))}"
    if state == "failing":
        status = registration.get("last_status")
        reason = registration.get("last_reason") or ""
        head = f"failing {status if status is not None else ''} {reason}".split()
        return f"{' '.join(head)}, retry {when(registration.get('next_attempt'))}"
    return state


def _stored_registration_text(rows: list[RegistrationRecord]) -> str:
    """Each instance's last known registration, as it wrote it to the store:
    ``sip-a: registered until <time>``; an instance that stopped or was lost says so."""
    if not rows:
        return "-"
    cells = []
    for row in rows:
        text = f"{row.instance}: {_registration_text(row.to_json())}"
        if row.instance_state in (InstanceState.STOPPED, InstanceState.LOST):
            text += f" (instance {row.instance_state.value})"
        cells.append(text)
    return "; ".join(cells)


def _server_registrations(server: str, api_key: str | None) -> dict[str, Any]:
    """Each trunk's ``registration`` from a running server's API (``GET /api/trunks``):
    registration is the server's runtime state, not in the database."""
    url = server.rstrip("/") + "/api/trunks"
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            trunks = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read the trunks from {url}: {exc}") from None
    return {t["name"]: t.get("registration") for t in trunks if isinstance(t, dict)}


@trunk_app.command("list", cls=Command)
def trunk_list(
    server: Annotated[
        str | None,
        _option(
            "--server",
            metavar="URL",
            envvar="SIPBRIDGE_SERVER",
            help="A running server's HTTP address (e.g. http://127.0.0.1:8080): the "
            "registration column shows that server's live state instead of each instance's "
            "last state written to the database.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        _option(
            "--api-key",
            envvar="SIPBRIDGE_API_KEY",
            help="An API key for --server (or the SIPBRIDGE_API_KEY variable).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """List trunks (passwords are never shown) and their registration: each instance's
    last known state from the database, or with --server that server's live state."""
    trunks = _run(db, service.list_trunks)
    headers = ["NAME", "ALLOW", "HOST", "USERNAME", "PASSWORD", "REGISTER", "MAX CALLS"]
    headers += ["CODECS", "NUMBERS", "SRTP", "RATE", "REGISTRATION"]
    if server is not None:
        live = _server_registrations(server, api_key)

        def row(t: TrunkRecord) -> list[str]:
            return [*_trunk_row(t), _registration_text(live.get(t.name))]

    else:
        stored: dict[str, list[RegistrationRecord]] = {}
        for record in _run(db, service.list_registrations) if trunks else []:
            stored.setdefault(record.trunk, []).append(record)

        def row(t: TrunkRecord) -> list[str]:
            return [*_trunk_row(t), _stored_registration_text(stored.get(t.name, []))]

    _echo_table(trunks, "no trunks", headers, row, db)


@trunk_app.command("remove", cls=Command)
def trunk_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Trunk name.")],
    db: DbOption = None,
) -> None:
    """Remove a trunk."""
    _run(db, lambda d: service.remove_trunk(d, name))
    typer.echo(f"removed trunk {name}")
