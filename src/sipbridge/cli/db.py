"""``sipbridge db ...``: database maintenance: schema upgrades, backups and restores."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from sipbridge.cli._common import Command, DbOption, _fail, _option, _run, database_url, in_database
from sipbridge.logs import escape_controls
from sipbridge.store import backup as backups
from sipbridge.store.db import Database, normalize_url

db_app = typer.Typer(rich_markup_mode=None, help="Database maintenance.", no_args_is_help=True)

QuietOption = Annotated[bool, _option("--quiet", "-q", help="No progress bar and no summary line.")]


@db_app.command("upgrade", cls=Command)
def db_upgrade(db: DbOption = None) -> None:
    """Create or migrate the database schema to the latest version."""
    revision = _run(db, lambda d: d.current_revision())
    typer.echo(f"database is at revision {revision}")


class ProgressBar:
    """Rows done / rows in the table, one line per table, redrawn in place on a terminal
    (at most ten times a second); nothing when ``out`` is not a terminal."""

    WIDTH = 30

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled and out.isatty()
        self.drawn = 0.0

    def __call__(self, table: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        finished = done >= total
        now = time.monotonic()
        if not finished and now - self.drawn < 0.1:
            return
        self.drawn = now
        filled = self.WIDTH if total == 0 else self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.out.write(f"\r{table:<16} [{bar}] {done:,}/{total:,}")
        if finished:
            self.out.write("\n")
        self.out.flush()


def _check_exists(db: str | None) -> None:
    """A SQLite file that is not there is an error, not a new empty database to back up."""
    try:
        url = normalize_url(database_url(db))
    except ValueError as exc:
        _fail(str(exc), 2)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    if url.database.startswith("file:"):  # URI filename: left to SQLite
        return
    if not Path(url.database).expanduser().exists():
        _fail(f"no database at {url.database}{in_database(db)}", 1)


@db_app.command("backup", cls=Command)
def db_backup(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The backup file (replaced if it exists).")
    ],
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Write the configuration and the call records to FILE (gzip'd JSON lines).

    Every table: agents, numbers, trunks, bans, API keys, calls and their events. The file
    restores into SQLite or PostgreSQL alike (`sipbridge db restore`). It holds the secrets
    as stored (trunk passwords, agent tokens) and is created readable by its owner only.
    The database must be at this sipbridge's schema (`sipbridge db upgrade`)."""
    _check_exists(db)
    progress = ProgressBar(sys.stdout, not quiet)

    async def go(database: Database) -> backups.BackupInfo:
        return await backups.backup(database, Path(file), progress=progress)

    info = _run(db, go, upgrade=False)
    shown = escape_controls(file)
    typer.echo(
        f"warning: {shown} holds secrets (trunk passwords, agent tokens): keep it private",
        err=True,
    )
    if not quiet:
        typer.echo(
            f"backed up {info.rows:,} rows of {len(info.tables)} tables (schema revision "
            f"{info.revision}) to {shown}{in_database(db)}"
        )


@db_app.command("restore", cls=Command)
def db_restore(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A file of `sipbridge db backup`.")],
    db: DbOption = None,
    force: Annotated[
        bool,
        _option(
            "--force", help="Replace what the database holds (else a non-empty one is refused)."
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Load a backup into the database, in one transaction (a failure changes nothing).

    The database is created or migrated to the latest schema first. A database holding
    any row is refused unless --force, which empties it in the same transaction. A backup
    from a newer sipbridge is refused."""
    try:
        backups.read_header(Path(file))  # a file that is no backup never touches the database
    except backups.BackupError as exc:
        _fail(str(exc), 1)
    progress = ProgressBar(sys.stdout, not quiet)

    async def go(database: Database) -> backups.BackupInfo:
        return await backups.restore(database, Path(file), force=force, progress=progress)

    info = _run(db, go)
    if not quiet:
        made = info.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        typer.echo(
            f"restored {info.rows:,} rows of {len(info.tables)} tables from "
            f"{escape_controls(file)} (made {made} from {info.dialect}, schema revision "
            f"{info.revision}){in_database(db)}"
        )
