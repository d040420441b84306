"""``sipbridge db ...``: database maintenance."""

from __future__ import annotations

import typer

from sipbridge.cli._common import DbOption, _run

db_app = typer.Typer(rich_markup_mode=None, help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create or migrate the database schema to the latest version."""
    revision = _run(db, lambda d: d.current_revision())
    typer.echo(f"database is at revision {revision}")
