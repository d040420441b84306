"""``sipbridge apikey ...``: REST API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import Command, DbOption, _echo_table, _run, _when
from sipbridge.store import service
from sipbridge.store.records import ApiKeyRecord

apikey_app = typer.Typer(rich_markup_mode=None, help="Manage REST API keys.", no_args_is_help=True)


@apikey_app.command("create", cls=Command)
def apikey_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Key name, e.g. dashboard.")],
    db: DbOption = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    record, secret = _run(db, lambda d: service.create_api_key(d, name))
    typer.echo(secret)
    typer.echo(
        f"created API key {record.name}: copy it now, it cannot be shown again "
        "(use it as 'Authorization: Bearer <key>')",
        err=True,
    )


def _apikey_row(k: ApiKeyRecord) -> list[str]:
    return [k.name, k.prefix + "...", _when(k.created_at), _when(k.last_used_at)]


@apikey_app.command("list", cls=Command)
def apikey_list(db: DbOption = None) -> None:
    """List API keys (name and prefix; the keys themselves are not stored)."""
    keys = _run(db, service.list_api_keys)
    headers = ["NAME", "PREFIX", "CREATED (UTC)", "LAST USED (UTC)"]
    _echo_table(keys, "no API keys", headers, _apikey_row, db)


@apikey_app.command("revoke", cls=Command)
def apikey_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Key name.")],
    db: DbOption = None,
) -> None:
    """Revoke (delete) an API key; it stops working at once."""
    _run(db, lambda d: service.revoke_api_key(d, name))
    typer.echo(f"revoked API key {name}")
