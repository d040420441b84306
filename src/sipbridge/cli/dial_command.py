"""``sipbridge dial TO``: place an outbound call through the running server's API.

Only ``serve`` holds the SIP stack, so the command posts to its REST API
(``POST /api/calls``) at ``--server`` (``SIPBRIDGE_SERVER``, default
``http://127.0.0.1:8080``) with an API key (``--api-key`` or ``SIPBRIDGE_API_KEY``,
from ``sipbridge apikey create``), prints the call's id and, unless ``--no-wait``, polls
``GET /api/calls/{id}`` until the outcome: exit 0 when answered, 1 otherwise.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from sipbridge.cli._common import _fail, _option

DEFAULT_SERVER = "http://127.0.0.1:8080"


def _call_api(url: str, api_key: str | None, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body else "GET")
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail")
        except (ValueError, AttributeError):
            detail = exc.reason
        if isinstance(detail, list):  # a 422: [{"loc": [...], "msg": ...}]
            detail = "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in detail)
        _fail(f"{url}: {exc.code} {detail}", 2 if exc.code in (404, 409, 422) else 1)
    except (OSError, ValueError) as exc:
        _fail(f"cannot reach the server at {url}: {exc} (is `sipbridge serve` running?)", 1)


def dial(
    to: Annotated[
        str, typer.Argument(metavar="TO", help="The callee's number (E.164 or national).")
    ],
    from_: Annotated[str, _option("--from", help="Our caller ID (a number).")],
    agent: Annotated[str, _option("--agent", help="The agent the callee is bridged to.")],
    trunk: Annotated[str, _option("--trunk", help="The trunk to dial through (its host).")],
    ring_timeout: Annotated[
        float, _option("--ring-timeout", min=1, max=300, help="Seconds of ringing.")
    ] = 30.0,
    header: Annotated[
        list[str] | None, _option("--header", help="An extra INVITE header, NAME=VALUE.")
    ] = None,
    server: Annotated[
        str,
        _option("--server", metavar="URL", envvar="SIPBRIDGE_SERVER", help="The API's URL."),
    ] = DEFAULT_SERVER,
    api_key: Annotated[
        str | None,
        _option("--api-key", envvar="SIPBRIDGE_API_KEY", help="An API key (apikey create)."),
    ] = None,
    wait: Annotated[
        bool, _option("--wait/--no-wait", help="Wait for the outcome and print it.")
    ] = True,
) -> None:
    """Place an outbound call through a trunk, bridged to an agent once answered."""
    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            _fail(f"--header {item!r}: expected NAME=VALUE", 2)
        headers[name.strip()] = value
    base = server.rstrip("/")
    body = {
        "to": to,
        "from": from_,
        "agent": agent,
        "trunk": trunk,
        "headers": headers,
        "ring_timeout": ring_timeout,
    }
    created = _call_api(base + "/api/calls", api_key, body)
    call_id = created["id"]
    typer.echo(call_id)
    if not wait:
        return
    deadline = time.monotonic() + ring_timeout + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            call = _call_api(f"{base}/api/calls/{call_id}", api_key)
        except typer.Exit:
            continue  # not written yet
        if call["status"] not in ("ringing",):
            code = "-" if call["sip_code"] is None else call["sip_code"]
            typer.echo(f"{call['status']} {call['reason'] or '-'} {code}")
            raise typer.Exit(0 if call["status"] in ("answered", "active") else 1)
    _fail(f"call {call_id}: no outcome yet (see `sipbridge calls show {call_id}`)", 1)
