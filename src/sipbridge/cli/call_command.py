"""``sipbridge call`` (a test call to a deployment, with a quality report) and
``sipbridge demo`` (the whole path on this machine with nothing set up).

``call``'s exit codes are :class:`sipbridge.client.report.ExitCode`: 0 connected and agent
audio came back, 1 local error, 2 bad input, 3 no answer from the server, 4 number not
routed, 5 refused (authentication, access), 6 other failure response, 7 answered without
agent audio, 130 interrupted before the answer. ``demo`` exits 0 when every step worked,
6 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from sipbridge.cli._common import _fail, _option
from sipbridge.client.audio import WavError, local_rate, read_wav
from sipbridge.client.report import ExitCode, audio_lines
from sipbridge.client.runner import CallOptions, CallResult, CallRunner, parse_server
from sipbridge.logs import escape_controls
from sipbridge.numbers import InvalidNumber, normalize_e164
from sipbridge.sip.framing import Transport

__all__ = ["call", "demo"]

CODECS = ("pcmu", "pcma", "g722", "opus")
_DTMF_RE = re.compile(r"[0-9*#A-Da-d]{1,32}")
_FORMATTING = re.compile(r"[\s().-]")


def _number(text: str, option: str) -> str:
    """A number to put in a SIP URI: E.164 when it starts with +, else digits as given
    (trunks often dial without the +); spaces, dots, dashes and brackets dropped."""
    if text.startswith("+"):
        try:
            return normalize_e164(text)
        except InvalidNumber as exc:
            _fail(f"{option}: {exc.detail}", 2)
    digits = _FORMATTING.sub("", text)
    if not digits.isdigit() or not 2 <= len(digits) <= 20:
        _fail(f"{option}: {text!r} is not a phone number (e.g. +12025550101)", 2)
    return digits


def _print_result(result: CallResult) -> None:
    if result.audio is not None:
        typer.echo("quality report")
        for line in audio_lines(result.audio):
            typer.echo(f"  {line}")
    if result.code is ExitCode.OK:
        typer.echo("OK: the call connected and agent audio came back (exit 0)")
        return
    explanation = result.explanation
    message = explanation.message if explanation is not None else "the call failed"
    typer.echo(escape_controls(f"FAILED: {message} (exit {int(result.code)})"))
    if explanation is not None and explanation.fix:
        typer.echo(escape_controls(f"  fix: {explanation.fix}"))


def _json(result: CallResult) -> dict[str, Any]:
    return {
        "exit_code": int(result.code),
        "call_id": result.call_id,
        "answered_ms": None if result.answered_ms is None else round(result.answered_ms, 1),
        "status": result.ended.status if result.ended is not None else None,
        "end": result.ended.why.value if result.ended is not None else None,
        "reason": result.ended.reason if result.ended is not None else None,
        "failure": None if result.explanation is None else result.explanation.message,
        "fix": None if result.explanation is None else result.explanation.fix or None,
        "audio": None if result.audio is None else asdict(result.audio),
        "steps": result.steps,
    }


async def _run(options: CallOptions, quiet: bool) -> CallResult:
    runner = CallRunner(
        options, (lambda line: None) if quiet else (lambda line: typer.echo(escape_controls(line)))
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, runner.interrupt)
    try:
        return await runner.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def call(
    number: Annotated[
        str, typer.Argument(metavar="NUMBER", help="The number to call, e.g. +12025550101.")
    ],
    server: Annotated[
        str,
        _option(
            "--server",
            help="The sipbridge server: HOST[:PORT] or [IPv6]:PORT (port 5060, 5061 for TLS).",
            metavar="HOST[:PORT]",
        ),
    ],
    transport: Annotated[
        str, _option("--transport", help="SIP transport: udp, tcp or tls.", metavar="udp|tcp|tls")
    ] = "udp",
    codec: Annotated[
        str,
        _option("--codec", help="The codec to offer: pcmu, pcma, g722 or opus.", metavar="NAME"),
    ] = "pcmu",
    play: Annotated[
        Path | None,
        _option(
            "--play", help="A WAV file to send (default: a built-in test signal).", metavar="WAV"
        ),
    ] = None,
    record: Annotated[
        Path | None,
        _option(
            "--record",
            help="Write a two-channel WAV: what we sent (left), what came back (right).",
            metavar="WAV",
        ),
    ] = None,
    duration: Annotated[
        float, _option("--duration", help="Seconds to stay on the call once answered.", metavar="S")
    ] = 5.0,
    dtmf: Annotated[
        str,
        _option("--dtmf", help="Keys to send as RFC 4733 events 1 s after the answer, e.g. 12#."),
    ] = "",
    from_: Annotated[
        str | None, _option("--from", help="The caller's number (E.164) in From.", metavar="E164")
    ] = None,
    username: Annotated[
        str | None, _option("--username", help="Digest user name, when the server asks.")
    ] = None,
    password: Annotated[
        str | None,
        _option(
            "--password",
            help="Digest password (or SIPBRIDGE_CALL_PASSWORD).",
            envvar="SIPBRIDGE_CALL_PASSWORD",
        ),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        _option(
            "--ca-bundle", help="PEM CA certificates to check a TLS server with.", metavar="PEM"
        ),
    ] = None,
    insecure: Annotated[
        bool, _option("--insecure", help="TLS without checking the server's certificate.")
    ] = False,
    as_json: Annotated[bool, _option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Place a test call through a sipbridge server: each step as it happens, then a
    quality report (packets, loss, jitter, first agent audio, round trip, MOS). Exit 0
    only when the call connected and agent audio came back; see docs/operations.md."""
    try:
        chosen = Transport[transport.strip().upper()]
    except KeyError:
        _fail(f"--transport: {transport!r} is not udp, tcp or tls", 2)
    codec = codec.strip().lower()
    if codec not in CODECS:
        _fail(f"--codec: {codec!r} is not one of {', '.join(CODECS)}", 2)
    if codec == "opus":
        from sipbridge.codecs.opus import opus_available

        if not opus_available():
            _fail("--codec opus: libopus is not installed (apt-get install libopus0)", 2)
    try:
        host, port = parse_server(server, chosen)
    except ValueError as exc:
        _fail(f"--server: {exc}", 2)
    if not 0.5 <= duration <= 3600:
        _fail(f"--duration: {duration:g} is outside 0.5-3600 seconds", 2)
    if dtmf and not _DTMF_RE.fullmatch(dtmf):
        _fail(f"--dtmf: {dtmf!r}: only 0-9, *, # and A-D (up to 32 keys)", 2)
    if (username is None) != (password is None):
        _fail("--username and --password go together", 2)
    if ca_bundle is not None and not ca_bundle.is_file():
        _fail(f"--ca-bundle: {ca_bundle} is not a file", 2)
    if record is not None and not record.parent.is_dir():
        _fail(f"--record: the folder {record.parent} does not exist", 2)
    signal_pcm = None
    if play is not None:
        try:
            signal_pcm = read_wav(play, local_rate(codec))
        except WavError as exc:
            _fail(f"--play: {exc}", 2)
    options = CallOptions(
        number=_number(number, "NUMBER"),
        host=host,
        port=port,
        transport=chosen,
        codec=codec,
        signal=signal_pcm,
        record=record,
        duration=duration,
        dtmf=dtmf.upper(),
        from_user=_number(from_, "--from") if from_ is not None else "sipbridge",
        username=username,
        password=password,
        ca_bundle=ca_bundle,
        insecure=insecure,
    )
    result: CallResult = _run_loop(_run(options, as_json))
    if as_json:
        typer.echo(json.dumps(_json(result), indent=2))
    else:
        _print_result(result)
        if record is not None and result.audio is not None:
            typer.echo(f"recording: {record}")
    raise typer.Exit(int(result.code))


def demo(
    codec: Annotated[
        str, _option("--codec", help="The codec of the demo call.", metavar="NAME")
    ] = "pcmu",
    duration: Annotated[
        float, _option("--duration", help="Seconds the demo call lasts.", metavar="S")
    ] = 3.0,
    verbose: Annotated[bool, _option("--verbose", help="Show the server's own log too.")] = False,
) -> None:
    """Try the whole path on this machine: a server on free 127.0.0.1 ports with a
    temporary database, a built-in echo agent and a test number, one real SIP call to it
    (ringing, answer, audio both ways with round trip and MOS, DTMF, hang-up), the call
    record read back, then everything stopped. Exit 0 only when all of it worked."""
    from sipbridge.client.demo import run_demo

    codec = codec.strip().lower()
    if codec not in CODECS:
        _fail(f"--codec: {codec!r} is not one of {', '.join(CODECS)}", 2)
    if not 1 <= duration <= 60:
        _fail(f"--duration: {duration:g} is outside 1-60 seconds", 2)

    def say(line: str) -> None:
        typer.echo(escape_controls(line))

    code = _run_loop(run_demo(say, codec=codec, duration=duration, verbose=verbose))
    raise typer.Exit(int(code))
