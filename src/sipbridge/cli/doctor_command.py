"""``sipbridge doctor``: check a deployment before its first call (sipbridge.doctor) and
print each finding with its fix.

It takes every option of ``serve`` (the same declarations, environment variables
included: the command line of ``serve`` with ``doctor`` in its place checks that server),
plus ``--json`` and ``--timeout``. Exit 0 when nothing is a problem (warnings allowed), 1
when a check found a problem, 2 for bad options (as every command).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from typing import Annotated, Any

import typer

from sipbridge.cli._common import _option
from sipbridge.cli.serve_command import listeners, serve, serve_settings
from sipbridge.doctor import AGENT_TIMEOUT, Check, problems, run_checks
from sipbridge.listen import Listener
from sipbridge.logs import escape_controls

__all__ = ["doctor", "format_check"]

_MARKS = {"ok": "ok", "info": "info", "warning": "warning", "problem": "PROBLEM"}
_WIDTH = max(len(mark) for mark in _MARKS.values())


def format_check(check: Check) -> str:
    """One line: the mark, the message, then the fix; controls escaped (a name or a URL
    from the database cannot move the cursor or forge a line)."""
    line = f"{_MARKS[check.status]:<{_WIDTH}}  {check.message}"
    if check.fix:
        line += f" -> fix: {check.fix}"
    return escape_controls(line)


def _doctor(as_json: bool, timeout: float, options: dict[str, Any]) -> None:
    settings = serve_settings(options, tls_files=False)
    tls_cert, tls_key = options["tls_cert"], options["tls_key"]
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    sockets = listeners(settings)
    if tls is not None and settings.tls_cert is None:  # unreadable files: still check the port
        tls_listener = Listener(
            "SIP over TLS", settings.sip_host, settings.tls_port, "--sip-host", "--tls-port"
        )
        sockets.insert(len(sockets) - 1, tls_listener)
    checks = asyncio.run(run_checks(settings, sockets, tls_files=tls, timeout=timeout))
    found = problems(checks)
    if as_json:
        typer.echo(json.dumps([check.to_json() for check in checks], indent=2))
    else:
        for check in checks:
            typer.echo(format_check(check))
        warnings = sum(1 for check in checks if check.status == "warning")
        if found:
            typer.echo(f"{found} problem(s), {warnings} warning(s): fix the problems above")
        else:
            typer.echo(f"no problems, {warnings} warning(s)")
    raise typer.Exit(1 if found else 0)


def doctor(**options: Any) -> None:
    """Check ports, address, database, agents, numbers, trunks, codecs and TLS before the
    first call; print the fix for each problem (exit 1 when one is found). Takes serve's
    options."""
    as_json = options.pop("as_json")
    timeout = options.pop("timeout")
    _doctor(as_json, timeout, options)


def _signature() -> inspect.Signature:
    """``serve``'s parameters (their option declarations and defaults) and doctor's own."""
    hints = typing.get_type_hints(serve, include_extras=True)
    params = [
        p.replace(annotation=hints[p.name]) for p in inspect.signature(serve).parameters.values()
    ]
    own = {
        "as_json": (
            Annotated[bool, _option("--json", help="Print the checks as JSON.")],
            False,
        ),
        "timeout": (
            Annotated[
                float,
                _option(
                    "--timeout",
                    metavar="SECONDS",
                    min=0.1,
                    help="Seconds for each agent URL's connect and handshake.",
                ),
            ],
            AGENT_TIMEOUT,
        ),
    }
    for name, (annotation, default) in own.items():
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return inspect.Signature(params, return_annotation=None)


doctor.__signature__ = _signature()  # type: ignore[attr-defined]
doctor.__annotations__ = {
    p.name: p.annotation
    for p in doctor.__signature__.parameters.values()  # type: ignore[attr-defined]
}
