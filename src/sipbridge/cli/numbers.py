"""``sipbridge number ...``: phone numbers and the agents that answer them."""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import Command, DbOption, RegionOption, _echo_table, _fail, _option, _run
from sipbridge.store import service
from sipbridge.store.records import NumberRecord

number_app = typer.Typer(
    rich_markup_mode=None, help="Manage phone numbers and their agents.", no_args_is_help=True
)


@number_app.command("add", cls=Command)
def number_add(
    number: Annotated[
        str, typer.Argument(metavar="NUMBER", help="Phone number, e.g. +12025550101.")
    ],
    agent: Annotated[str, _option("--agent", help="Agent that answers it.")],
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Route a phone number to an agent."""
    record = _run(db, lambda d: service.add_number(d, number, agent, default_region))
    typer.echo(f"added number {record.number} -> {record.agent}")


def _number_row(n: NumberRecord) -> list[str]:
    return [n.number, n.agent if n.agent is not None else "- (no agent)"]


@number_app.command("list", cls=Command)
def number_list(
    agent: Annotated[str | None, _option("--agent", help="Only this agent's numbers.")] = None,
    db: DbOption = None,
) -> None:
    """List phone numbers."""
    numbers = _run(db, lambda d: service.list_numbers(d, agent=agent))
    _echo_table(numbers, "no numbers", ["NUMBER", "AGENT"], _number_row, db)


@number_app.command("remove", cls=Command)
def number_remove(
    number: Annotated[str, typer.Argument(metavar="NUMBER", help="Phone number.")],
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Remove a phone number."""
    removed = _run(db, lambda d: service.remove_number(d, number, default_region))
    typer.echo(f"removed number {removed}")


@number_app.command("update", cls=Command)
def number_update(
    number: Annotated[str, typer.Argument(metavar="NUMBER", help="Phone number.")],
    agent: Annotated[
        str | None, _option("--agent", help="Agent that answers it from now on.")
    ] = None,
    no_agent: Annotated[
        bool, _option("--no-agent", help="Keep the number, answer its calls 480.")
    ] = False,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Give a number to another agent (or to none)."""
    if (agent is None) == (not no_agent):
        _fail("give exactly one of --agent NAME or --no-agent", 2)
    record = _run(db, lambda d: service.update_number(d, number, agent, default_region))
    target = record.agent if record.agent is not None else "- (no agent)"
    typer.echo(f"updated number {record.number} -> {target}")
