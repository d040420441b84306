"""Shared pieces of the command line: option declarations, the environment variable
naming rule, database access with error-to-exit-code mapping, and table printing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from sipbridge.store import service
from sipbridge.store.db import Database

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_DB = "sqlite:///sipbridge.db"


def _env(option: str) -> str:
    return "SIPBRIDGE_" + option.upper().replace("-", "_")


def _option(*param_decls: str, help: str, **kwargs: Any) -> Any:
    """``typer.Option`` whose environment variable is named after its first declaration:
    ``"--sip-port"`` reads ``SIPBRIDGE_SIP_PORT``, ``"--voice/--no-voice"`` ``SIPBRIDGE_VOICE``."""
    option = param_decls[0].split("/")[0].removeprefix("--")
    return typer.Option(*param_decls, envvar=_env(option), help=help, **kwargs)


DbOption = Annotated[str, _option("--db", help="Database URL (sqlite:///file.db, ...).")]


RegionOption = Annotated[
    str | None,
    _option(
        "--default-region",
        "--region",
        help="ISO 3166 region for numbers written without +country code (e.g. US).",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(db_url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database, bring it to the latest schema, run ``action``, close."""

    async def go() -> T:
        database = Database(db_url)
        try:
            await database.upgrade()
            return await action(database)
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (service.NotFound, service.AlreadyExists) as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # InvalidNumber, bad URL, bad database URL
        _fail(str(exc), 2)
    except CommandError as exc:
        _fail(f"database migration failed: {exc}", 1)
    except SQLAlchemyError as exc:
        _fail(f"database error: {exc}", 1)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines)


def _echo_table(
    records: Sequence[R], empty: str, headers: Sequence[str], row: Callable[[R], list[str]]
) -> None:
    """Print ``records`` as a table, one ``row`` each, or ``empty`` when there are none."""
    if not records:
        typer.echo(empty)
        return
    typer.echo(_table(headers, [row(record) for record in records]))


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
