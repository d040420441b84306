"""``sipbridge number ...``: phone numbers and the agents that answer them."""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import Command, DbOption, RegionOption, _echo_table, _fail, _option, _run
from sipbridge.store import service
from sipbridge.store.records import NumberRecord

RecordOption = Annotated[
    bool | None,
    _option(
        "--record/--no-record",
        help="Record this number's calls, or not, whatever its agent says (without it: "
        "as its agent's --record says).",
    ),
]

number_app = typer.Typer(
    rich_markup_mode=None, help="Manage phone numbers and their agents.", no_args_is_help=True
)


@number_app.command("add", cls=Command)
def number_add(
    number: Annotated[
        str, typer.Argument(metavar="NUMBER", help="Phone number, e.g. +12025550101.")
    ],
    agent: Annotated[str, _option("--agent", help="Agent that answers it.")],
    record: RecordOption = None,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Route a phone number to an agent."""
    added = _run(db, lambda d: service.add_number(d, number, agent, default_region, record=record))
    typer.echo(f"added number {added.number} -> {added.agent}")


def _record_text(record: bool | None) -> str:
    return "agent's" if record is None else "yes" if record else "no"


def _number_row(n: NumberRecord) -> list[str]:
    return [n.number, n.agent if n.agent is not None else "- (no agent)", _record_text(n.record)]


@number_app.command("list", cls=Command)
def number_list(
    agent: Annotated[str | None, _option("--agent", help="Only this agent's numbers.")] = None,
    db: DbOption = None,
) -> None:
    """List phone numbers."""
    numbers = _run(db, lambda d: service.list_numbers(d, agent=agent))
    _echo_table(numbers, "no numbers", ["NUMBER", "AGENT", "RECORD"], _number_row, db)


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
    record: RecordOption = None,
    record_from_agent: Annotated[
        bool,
        _option(
            "--record-from-agent",
            help="Drop the number's own --record/--no-record: its agent's setting decides.",
        ),
    ] = False,
    default_region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Give a number to another agent (or to none), and/or change whether its calls are
    recorded."""
    if agent is not None and no_agent:
        _fail("give one of --agent NAME or --no-agent, not both", 2)
    if record is not None and record_from_agent:
        _fail("--record/--no-record and --record-from-agent cannot be combined", 2)
    if agent is None and not no_agent and record is None and not record_from_agent:
        _fail("give --agent NAME, --no-agent, --record, --no-record or --record-from-agent", 2)
    new_agent: str | service.Unset | None = (
        None if no_agent else agent if agent is not None else service.UNSET
    )
    new_record: bool | service.Unset | None = (
        None if record_from_agent else record if record is not None else service.UNSET
    )
    updated = _run(
        db,
        lambda d: service.update_number(d, number, new_agent, default_region, record=new_record),
    )
    target = updated.agent if updated.agent is not None else "- (no agent)"
    recording = (
        ""
        if isinstance(new_record, service.Unset)
        else f" (record: {_record_text(updated.record)})"
    )
    typer.echo(f"updated number {updated.number} -> {target}{recording}")
