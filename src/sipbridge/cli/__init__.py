"""The ``sipbridge`` command line.

Environment variables: the server settings of ``serve`` can also be given as
``SIPBRIDGE_<OPTION>`` (``--sip-port`` is ``SIPBRIDGE_SIP_PORT`` ...), and so can ``--db``
(``SIPBRIDGE_DB``) and ``--default-region`` (``SIPBRIDGE_DEFAULT_REGION``), which every
command shares on purpose. The options of one object or one invocation (trunk, agent,
number, ban and API key fields, ``calls --number/--limit/--json``) are read from the
command line only: a server setting exported for ``serve`` (``SIPBRIDGE_MAX_CALLS``,
``SIPBRIDGE_SRTP``) never becomes a trunk's field. The two secrets have variables named
for them, to keep them off the command line: ``SIPBRIDGE_TRUNK_PASSWORD`` and
``SIPBRIDGE_AGENT_TOKEN``. ``serve``'s settings (and so ``doctor``'s and ``config show``'s)
can also come from a TOML file (``--config``, ``SIPBRIDGE_CONFIG``, a default path), below
the variables and above the defaults: ``config_file``, docs/configuration.md.

``sipbridge trace`` (per-call SIP traces) is in ``traces``.

Without ``--db`` the database is a SQLite file at a fixed place, whatever the working
directory (``sipbridge.config.default_db_path``); commands name the database they used
in errors and empty results.

Exit codes: 0 success, 1 the operation failed (unknown agent, duplicate, database
error), 2 bad input (usage error, invalid number, URL or port range).

One module per command group (``serve_command``, ``agents``, ``numbers``, ``trunks``,
``apikeys``, ``bans``, ``calls_command``, ``db``, ``doctor_command``, ``config_command``,
``call_command`` for ``call`` and ``demo``);
shared options and helpers are in ``_common``, the configuration file in ``config_file``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from sipbridge.cli._common import Command
from sipbridge.cli.agents import agent_app
from sipbridge.cli.apikeys import apikey_app
from sipbridge.cli.bans import ban_app
from sipbridge.cli.call_command import call, demo
from sipbridge.cli.calls_command import calls_app
from sipbridge.cli.config_command import config_app
from sipbridge.cli.db import db_app
from sipbridge.cli.dial_command import dial
from sipbridge.cli.doctor_command import doctor
from sipbridge.cli.numbers import number_app
from sipbridge.cli.serve_command import serve
from sipbridge.cli.traces import trace_app
from sipbridge.cli.trunks import trunk_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="sipbridge",
    rich_markup_mode=None,
    help="Self-hosted SIP server that bridges phone calls to AI voice agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(agent_app, name="agent")
app.add_typer(number_app, name="number")
app.add_typer(trunk_app, name="trunk")
app.add_typer(apikey_app, name="apikey")
app.add_typer(ban_app, name="ban")
app.add_typer(trace_app, name="trace")
app.add_typer(db_app, name="db")
app.command(cls=Command)(serve)
app.command(cls=Command)(doctor)
app.command(cls=Command)(demo)
app.command(cls=Command)(call)
app.command(cls=Command)(dial)
app.add_typer(calls_app, name="calls")
app.add_typer(config_app, name="config")


def _version_callback(value: bool) -> None:
    if value:
        try:
            version = metadata.version("sipbridge")
        except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
            version = "unknown"
        typer.echo(f"sipbridge {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Self-hosted SIP server that bridges phone calls to AI voice agents."""


def main() -> None:
    """Console script entry point."""
    app(prog_name="sipbridge")
