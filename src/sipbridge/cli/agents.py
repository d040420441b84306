"""``sipbridge agent ...``: AI agents (WebSocket endpoints)."""

from __future__ import annotations

from typing import Annotated

import typer

from sipbridge.cli._common import (
    Command,
    DbOption,
    _echo_table,
    _fail,
    _option,
    _run,
    _when,
)
from sipbridge.store import service
from sipbridge.store.records import AgentRecord

agent_app = typer.Typer(
    rich_markup_mode=None, help="Manage AI agents (WebSocket endpoints).", no_args_is_help=True
)

UrlsOption = Annotated[
    list[str],
    _option(
        "--url", help="ws:// or wss:// URL of the agent; repeat for fallbacks, tried in order."
    ),
]
TokenOption = Annotated[
    str | None,
    _option(
        "--token",
        envvar="SIPBRIDGE_AGENT_TOKEN",
        help="Secret sent to the agent, never displayed (or the SIPBRIDGE_AGENT_TOKEN "
        "variable, kept off the command line).",
    ),
]
ProtocolOption = Annotated[
    str | None, _option("--protocol", help="Agent protocol: native or twilio.")
]
SampleRateOption = Annotated[int | None, _option("--sample-rate", help="8000 or 16000 (Hz).")]
CaBundleOption = Annotated[
    str | None,
    _option(
        "--ca-bundle",
        help="PEM file of CA certificates that verify the agent's wss:// certificate "
        "(instead of the system's); stored as an absolute path.",
    ),
]
TransferAllowOption = Annotated[
    list[str] | None,
    _option(
        "--transfer-allow",
        metavar="PATTERN",
        help="Where the agent may transfer callers; repeat for more: +NUMBER* (tel: "
        "numbers), HOST or USER@HOST (sip: targets), * (anywhere). Without it: numbers "
        "in the called number's country, no premium rate, no sip: targets.",
    ),
]
RECORD_DECLS = ("--record/--no-record",)
RECORD_HELP = (
    "Record its calls as two-channel WAV files (a number's own --record/--no-record wins; "
    "docs/operations.md, Recordings)."
)
VOICE_DECLS = ("--voice/--no-voice",)
VOICE_HELP = "Whether the agent takes calls."


def _replacement(
    value: str | None, clear: bool, option: str, clear_option: str
) -> str | service.Unset | None:
    """What ``agent update`` sets a clearable setting to: ``None`` if cleared, ``value``
    if given, else unchanged (exit 2 if both are given)."""
    if clear and value is not None:
        _fail(f"{option} and {clear_option} cannot be used together", 2)
    if clear:
        return None
    return service.UNSET if value is None else value


@agent_app.command("add", cls=Command)
def agent_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Agent name, e.g. support-bot.")],
    url: UrlsOption,
    voice: Annotated[bool, _option(*VOICE_DECLS, help=VOICE_HELP)] = True,
    token: TokenOption = None,
    protocol: ProtocolOption = None,
    sample_rate: SampleRateOption = None,
    ca_bundle: CaBundleOption = None,
    transfer_allow: TransferAllowOption = None,
    record: Annotated[bool, _option(*RECORD_DECLS, help=RECORD_HELP)] = False,
    db: DbOption = None,
) -> None:
    """Add an agent."""
    added = _run(
        db,
        lambda d: service.add_agent(
            d,
            name,
            url,
            voice_enabled=voice,
            protocol=protocol or "native",
            token=token,
            sample_rate=8000 if sample_rate is None else sample_rate,
            ca_bundle=ca_bundle,
            transfer_allow=transfer_allow or [],
            record=record,
        ),
    )
    typer.echo(f"added agent {added.name} -> {', '.join(added.urls)}")


@agent_app.command("update", cls=Command)
def agent_update(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Agent name.")],
    url: Annotated[
        list[str] | None, _option("--url", help="Replace the URLs (repeat for fallbacks).")
    ] = None,
    voice: Annotated[bool | None, _option(*VOICE_DECLS, help=VOICE_HELP)] = None,
    record: Annotated[bool | None, _option(*RECORD_DECLS, help=RECORD_HELP)] = None,
    token: TokenOption = None,
    clear_token: Annotated[bool, _option("--clear-token", help="Remove the token.")] = False,
    protocol: ProtocolOption = None,
    sample_rate: SampleRateOption = None,
    ca_bundle: CaBundleOption = None,
    clear_ca_bundle: Annotated[
        bool,
        _option(
            "--clear-ca-bundle",
            "--no-ca-bundle",
            help="Remove the CA bundle (verify with the system's CAs again).",
        ),
    ] = False,
    transfer_allow: TransferAllowOption = None,
    clear_transfer_allow: Annotated[
        bool,
        _option(
            "--clear-transfer-allow",
            help="Remove the transfer patterns (back to the default transfer policy).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Change an agent's settings (only the options given; --transfer-allow replaces
    the patterns)."""
    if clear_transfer_allow and transfer_allow:
        _fail("--transfer-allow and --clear-transfer-allow cannot be combined", 2)
    new_allow = [] if clear_transfer_allow else transfer_allow or None
    new_token = _replacement(token, clear_token, "--token", "--clear-token")
    new_ca_bundle = _replacement(ca_bundle, clear_ca_bundle, "--ca-bundle", "--clear-ca-bundle")
    updated = _run(
        db,
        lambda d: service.update_agent(
            d,
            name,
            urls=url or None,
            voice_enabled=voice,
            protocol=protocol,
            token=new_token,
            sample_rate=sample_rate,
            ca_bundle=new_ca_bundle,
            transfer_allow=new_allow,
            record=record,
        ),
    )
    typer.echo(f"updated agent {updated.name} -> {', '.join(updated.urls)}")


def _agent_row(a: AgentRecord) -> list[str]:
    return [
        a.name,
        ",".join(a.urls),
        a.protocol,
        str(a.sample_rate),
        "yes" if a.voice_enabled else "no",
        "yes" if a.token is not None else "no",
        a.ca_bundle or "-",
        ",".join(a.transfer_allow) or "default",
        "yes" if a.record else "no",
        _when(a.created_at),
    ]


@agent_app.command("list", cls=Command)
def agent_list(db: DbOption = None) -> None:
    """List agents (tokens are never shown)."""
    agents = _run(db, service.list_agents)
    headers = [
        "NAME",
        "URLS",
        "PROTOCOL",
        "RATE",
        "VOICE",
        "TOKEN",
        "CA BUNDLE",
        "TRANSFERS",
        "RECORD",
        "CREATED (UTC)",
    ]
    _echo_table(agents, "no agents", headers, _agent_row, db)


@agent_app.command("remove", cls=Command)
def agent_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Agent name.")],
    db: DbOption = None,
) -> None:
    """Remove an agent (its numbers stay, without an agent, and answer 480)."""
    orphaned = _run(db, lambda d: service.remove_agent(d, name))
    typer.echo(f"removed agent {name}")
    if orphaned:
        noun = "number now has" if orphaned == 1 else "numbers now have"
        typer.echo(f"{orphaned} {noun} no agent")
