"""``sipbridge trunk ...``: SIP trunks (providers)."""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import (
    DbOption,
    RegionOption,
    _echo_table,
    _option,
    _run,
)
from sipbridge.store import service
from sipbridge.store.records import TrunkRecord

trunk_app = typer.Typer(
    rich_markup_mode=None, help="Manage SIP trunks (providers).", no_args_is_help=True
)


@trunk_app.command("add")
def trunk_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Trunk name, e.g. telnyx.")],
    allow: Annotated[
        list[str] | None,
        _option(
            "--allow",
            metavar="CIDR",
            help="Source address or CIDR allowed to send calls (repeatable).",
        ),
    ] = None,
    host: Annotated[
        str | None, _option("--host", help="Where outbound calls and REGISTER go.")
    ] = None,
    username: Annotated[str | None, _option("--username", help="Digest user name.")] = None,
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
    max_calls: Annotated[
        int | None, _option("--max-calls", metavar="N", help="Concurrent call limit (at least 1).")
    ] = None,
    codec: Annotated[
        list[str] | None,
        _option(
            "--codec",
            help="Allowed codec, in order of preference: pcmu, pcma, g722, opus (repeatable).",
        ),
    ] = None,
    number: Annotated[
        list[str] | None,
        _option(
            "--number",
            help="A number this trunk may call (repeatable; default: any number with an agent).",
        ),
    ] = None,
    srtp: Annotated[
        str,
        _option(
            "--srtp", metavar="MODE", help="SRTP (SDES): off, optional (when offered) or required."
        ),
    ] = "optional",
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
            default_region=default_region,
        ),
    )
    typer.echo(f"added trunk {record.name}")


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
    ]


@trunk_app.command("list")
def trunk_list(db: DbOption = None) -> None:
    """List trunks (passwords are never shown)."""
    trunks = _run(db, service.list_trunks)
    headers = ["NAME", "ALLOW", "HOST", "USERNAME", "PASSWORD", "REGISTER", "MAX CALLS"]
    _echo_table(trunks, "no trunks", [*headers, "CODECS", "NUMBERS", "SRTP"], _trunk_row, db)


@trunk_app.command("remove")
def trunk_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Trunk name.")],
    db: DbOption = None,
) -> None:
    """Remove a trunk."""
    _run(db, lambda d: service.remove_trunk(d, name))
    typer.echo(f"removed trunk {name}")
