"""Shared pieces of the command line: option declarations (and which of them read
environment variables), the default database, database access with error-to-exit-code
mapping, and table printing."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperCommand

from sipbridge.config import default_db_path
from sipbridge.logs import escape_controls
from sipbridge.numbers import InvalidNumber
from sipbridge.store import service
from sipbridge.store.backup import BackupError, DatabaseStateError
from sipbridge.store.db import Database, display_url

T = TypeVar("T")
R = TypeVar("R")

DB_HELP = (
    "Database URL: sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB "
    "(default: $XDG_DATA_HOME/sipbridge/sipbridge.db, /var/lib/sipbridge/sipbridge.db as "
    "root, else ~/.local/share/sipbridge/sipbridge.db)."
)


class Command(TyperCommand):
    """Every command's class: its usage line names a required argument the usual way,
    ``sipbridge agent add [OPTIONS] NAME``, where typer writes ``{NAME}``; optional ones
    stay ``[NAME]``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_REQUIRED_ARGUMENT.sub(r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


_REQUIRED_ARGUMENT = re.compile(r"^\{([^{}]+)\}")


def _env(option: str) -> str:
    return "SIPBRIDGE_" + option.upper().replace("-", "_")


def _metavar(param_decls: Sequence[str], kwargs: dict[str, Any]) -> str:
    """The value's name in ``--help``: given, else the option's last word (``--sip-port
    PORT``), instead of typer's ``<int range>``."""
    metavar: str = kwargs.pop("metavar", None) or param_decls[0].rsplit("-", 1)[-1].upper()
    return metavar


def _option(*param_decls: str, help: str, envvar: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` of one object or one invocation (a trunk's ``--max-calls``,
    ``--json``): read from the command line only, never from the environment, so a
    variable exported for ``serve`` cannot become a trunk's or an agent's field.
    ``envvar`` names a variable for a secret that should stay off the command line."""
    metavar = _metavar(param_decls, kwargs)
    return typer.Option(*param_decls, envvar=envvar, help=help, metavar=metavar, **kwargs)


def _setting(*param_decls: str, help: str, envvar: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` of a server setting, also read from the environment variable
    named after its first declaration: ``"--sip-port"`` reads ``SIPBRIDGE_SIP_PORT``,
    ``"--tcp/--no-tcp"`` ``SIPBRIDGE_TCP``; ``envvar`` for a repeatable option, whose
    variable holds a list (``--trusted-proxy``: ``SIPBRIDGE_TRUSTED_PROXIES``)."""
    option = param_decls[0].split("/")[0].removeprefix("--")
    metavar = _metavar(param_decls, kwargs)
    return typer.Option(
        *param_decls, envvar=envvar or _env(option), help=help, metavar=metavar, **kwargs
    )


DbOption = Annotated[str | None, _setting("--db", help=DB_HELP, metavar="URL")]


RegionOption = Annotated[
    str | None,
    _setting(
        "--default-region",
        "--region",
        help="ISO 3166 region for numbers written without +country code (e.g. US).",
        metavar="REGION",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {escape_controls(message)}", err=True)
    raise typer.Exit(code)


def invalid_number_message(exc: InvalidNumber, option: str | None = None) -> str:
    """The error for a number that does not read, naming ``--default-region`` when a
    region would have helped."""
    field = option or exc.field
    if exc.hint_region:
        return (
            f"{field}: {exc.text!r} is not a valid phone number (write it with its +country "
            "code, e.g. +12025550101, or give --default-region, e.g. US, for a national number)"
        )
    return f"{field}: {exc.detail}"


def database_url(db: str | None) -> str:
    """The database ``--db`` names, else the default SQLite file, whose folder is
    created (an explicit path's folder never is)."""
    if db is not None:
        return db
    path = default_db_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create the folder of the default database {path}: {exc.strerror}", 1)
    return f"sqlite:///{path}"


def in_database(db: str | None) -> str:
    """`` (database URL)``, to end a message with, the password masked."""
    return f" (database {display_url(database_url(db))})"


_DBAPI_CLASS = re.compile(r"^(\([\w.]+\) )?<class '[\w.]+'>: ")


def _database_error(exc: SQLAlchemyError) -> str:
    """The first line of what the database said, without SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return _DBAPI_CLASS.sub("", text)


def _os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than ``Connect call failed ('127.0.0.1', 1)``."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _run(db: str | None, action: Callable[[Database], Awaitable[T]], *, upgrade: bool = True) -> T:
    """Open the database, bring it to the latest schema (unless ``upgrade`` is false), run
    ``action``, close.

    Every failure ends the command with one ``error:`` line naming the database."""
    url = database_url(db)
    where = in_database(db)

    async def go() -> T:
        database = Database(url)
        try:
            if upgrade:
                await database.upgrade()
            return await action(database)
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (service.NotFound, service.AlreadyExists) as exc:
        _fail(str(exc), 1)
    except BackupError as exc:  # the database named when it is the problem, not the file
        _fail(f"{exc}{where if isinstance(exc, DatabaseStateError) else ''}", 1)
    except InvalidNumber as exc:
        _fail(invalid_number_message(exc), 2)
    except ValueError as exc:  # InvalidNumber, bad URL, bad database URL
        _fail(str(exc), 2)
    except CommandError as exc:
        _fail(f"database migration failed: {exc}{where}", 1)
    except SQLAlchemyError as exc:
        _fail(f"database error: {_database_error(exc)}{where}", 1)
    except OSError as exc:  # connection refused, unknown host, unreadable file
        reason = _os_reason(exc)
        _fail(
            f"cannot reach the database{where}: {reason} "
            "(is the server running and the URL right? see --db)",
            1,
        )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; control characters in cells (a caller's From user, an agent's
    name...) are shown as escapes, never sent to the terminal (sipbridge.logs)."""
    rows = [[escape_controls(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines)


def _echo_table(
    records: Sequence[R],
    empty: str,
    headers: Sequence[str],
    row: Callable[[R], list[str]],
    db: str | None,
) -> None:
    """Print ``records`` as a table, one ``row`` each, or ``empty`` and the database
    asked when there are none."""
    if not records:
        typer.echo(empty + in_database(db))
        return
    typer.echo(_table(headers, [row(record) for record in records]))


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
