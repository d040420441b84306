"""``sipbridge ban ...``: banned source addresses and networks.

The server bans sources by itself (docs/security.md); these commands list the bans and let
an operator add and lift them. A running server picks a change up within seconds.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import Command, DbOption, _echo_table, _option, _run
from sipbridge.store import service
from sipbridge.store.records import BanRecord

ban_app = typer.Typer(
    rich_markup_mode=None, help="List, add and lift bans of SIP sources.", no_args_is_help=True
)


def _ban_row(ban: BanRecord) -> list[str]:
    return [
        ban.address,
        ban.reason,
        ban.created_at.isoformat(timespec="seconds"),
        "never" if ban.expires_at is None else ban.expires_at.isoformat(timespec="seconds"),
        ban.note or "-",
    ]


@ban_app.command("list", cls=Command)
def ban_list(
    include_expired: Annotated[bool, _option("--all", help="Also bans that have ended.")] = False,
    db: DbOption = None,
) -> None:
    """List the bans in force, newest first."""
    bans = _run(db, lambda d: service.list_bans(d, include_expired=include_expired))
    _echo_table(bans, "no bans", ["ADDRESS", "REASON", "SINCE", "UNTIL", "NOTE"], _ban_row, db)


@ban_app.command("add", cls=Command)
def ban_add(
    address: Annotated[
        str,
        typer.Argument(
            metavar="ADDRESS", help="IP address or network (CIDR), e.g. 203.0.113.0/24."
        ),
    ],
    duration: Annotated[
        int | None,
        _option("--duration", help="Seconds the ban lasts (default: until removed)."),
    ] = None,
    note: Annotated[str | None, _option("--note", help="Why, for the record.")] = None,
    db: DbOption = None,
) -> None:
    """Ban an address or a network: its SIP traffic is dropped unanswered."""
    record = _run(db, lambda d: service.add_ban(d, address, duration=duration, note=note))
    until = (
        "until removed"
        if record.expires_at is None
        else f"until {record.expires_at.isoformat(timespec='seconds')}"
    )
    typer.echo(f"banned {record.address} {until}")


@ban_app.command("remove", cls=Command)
def ban_remove(
    address: Annotated[
        str, typer.Argument(metavar="ADDRESS", help="The address or network, as banned.")
    ],
    db: DbOption = None,
) -> None:
    """Lift a ban."""
    removed = _run(db, lambda d: service.remove_ban(d, address))
    typer.echo(f"removed ban on {removed}")
