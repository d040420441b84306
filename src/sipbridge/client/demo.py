"""``sipbridge demo``: the whole path on this machine, in a few seconds, with nothing set up.

:func:`run_demo` starts a server on free 127.0.0.1 ports with a temporary SQLite database,
the built-in echo agent (:mod:`sipbridge.client.echo_agent`) and a test number routed to
it, places a real SIP call to that number with the ``sipbridge call`` client (RTP both
ways, DTMF as RFC 4733 events), reads the call's record back from the store, then stops
everything and removes the temporary files. Each step is one line for ``say``; the
result is the exit code (0 only when every step worked).
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sipbridge.client.echo_agent import EchoAgent
from sipbridge.client.report import ExitCode, audio_lines
from sipbridge.client.runner import CallOptions, CallRunner
from sipbridge.config import ServeSettings
from sipbridge.store import service
from sipbridge.store.records import CallRecord, CallStatus

__all__ = ["DEMO_DTMF", "DEMO_NUMBER", "run_demo"]

DEMO_NUMBER = "+12025550100"  # a fictional (555-01xx) number, valid E.164
DEMO_DTMF = "1#"
RECORD_WAIT = 5.0  # seconds for the call's final record to reach the store

Say = Callable[[str], None]


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """The server's own log lines (a warning about no trunk, the call events) only with
    ``--verbose``: the demo prints its steps instead."""
    logger = logging.getLogger("sipbridge")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _final_record(server: Any, call_id: str) -> CallRecord | None:
    """The call's record once it is final (the server writes it in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT
    while True:
        for record in await service.list_calls(server.db, limit=5):
            if record.sip_call_id == call_id and record.ended_at is not None:
                return record
        if loop.time() > deadline:
            return None
        await asyncio.sleep(0.05)


async def run_demo(
    say: Say, *, codec: str = "pcmu", duration: float = 3.0, verbose: bool = False
) -> int:
    """Run the demo; returns the exit code (see the module docstring)."""
    from sipbridge.runtime.server import SipBridgeServer  # the whole runtime: lazily

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sipbridge-demo-") as folder, _quiet(verbose):
        db_file = Path(folder) / "demo.db"
        low = random.randrange(40000, 59000, 2)
        settings = ServeSettings(
            sip_host="127.0.0.1",
            sip_port=0,
            tcp=False,
            http_host="127.0.0.1",
            http_port=0,
            rtp_port_min=low,
            rtp_port_max=low + 40,
            db=f"sqlite:///{db_file}",
            spool_path=str(Path(folder) / "spool.jsonl"),
            instance_id="demo",
            # A busy machine (a CI runner, a laptop compiling) must not make the one demo
            # call look like an overload: its figures are in the report anyway.
            overload_lag_ms=250.0,
            overload_cpu=1.0,
            log_level="error" if not verbose else "info",
        )

        def agent_event(kind: str, detail: dict[str, Any]) -> None:
            if kind == "connected":
                say("agent   the server opened the agent's WebSocket (agent connected)")
            elif kind == "start":
                fmt = detail.get("media_format", {})
                say(
                    f"agent   start: call {detail.get('call_id', '?')}, from "
                    f"{detail.get('from')} to {detail.get('to')}, "
                    f"{fmt.get('encoding', 'pcm16')} at {fmt.get('sample_rate', '?')} Hz"
                )
            elif kind == "dtmf":
                say(f"agent   key pressed: {detail.get('digit')}")
            elif kind == "stop":
                say(f"agent   stop: {detail.get('reason')}")

        server = SipBridgeServer(settings)
        async with EchoAgent(on_event=agent_event) as agent:
            say(f"setup   temporary database {db_file}")
            await server.start()
            try:
                await service.add_agent(server.db, "echo", agent.url)
                await service.add_number(server.db, DEMO_NUMBER, "echo")
                host, port = server.sip_address
                say(f"setup   built-in echo agent on {agent.url} (agent 'echo')")
                say(f"setup   number {DEMO_NUMBER} routed to 'echo'")
                say(f"setup   server on sip:{host}:{port} (UDP), RTP {low}-{low + 40}")
                options = CallOptions(
                    number=DEMO_NUMBER,
                    host=host,
                    port=port,
                    codec=codec,
                    duration=duration,
                    dtmf=DEMO_DTMF,
                    user_agent="sipbridge-demo",
                )
                result = await CallRunner(options, lambda line: say(f"call    {line}")).run()
                if result.audio is not None:
                    for line in audio_lines(result.audio):
                        say(f"report  {line}")
                if result.code is not ExitCode.OK:
                    explanation = result.explanation
                    problems.append(explanation.message if explanation else "the call failed")
                elif result.audio is not None:
                    if result.audio.echo is None:
                        problems.append("our signal did not come back from the echo agent")
                    if result.audio.mos is None:
                        problems.append("no MOS: no RTP came back")
                calls = agent.calls
                digits = calls[-1].digits if calls else ""
                if result.code is ExitCode.OK and digits != DEMO_DTMF:
                    problems.append(f"the agent got the keys {digits!r}, not {DEMO_DTMF!r}")
                record = await _final_record(server, result.call_id) if result.call_id else None
                if record is None:
                    problems.append("the call's record did not reach the store")
                else:
                    for line in _record_lines(record):
                        say(f"record  {line}")
                    if result.code is ExitCode.OK and record.status is not CallStatus.ANSWERED:
                        problems.append(f"the record says {record.status.value}, not answered")
            finally:
                await server.stop()
        say("stop    server and echo agent stopped; temporary database removed")
    if problems:
        for problem in problems:
            say(f"FAILED  {problem}")
        return int(ExitCode.FAILED)
    say("OK      the whole path works: SIP, RTP both ways, the agent, DTMF, the call record")
    return int(ExitCode.OK)


def _record_lines(record: CallRecord) -> list[str]:
    seconds = (
        (record.ended_at - record.answered_at).total_seconds()
        if record.ended_at is not None and record.answered_at is not None
        else None
    )
    lines = [
        f"id {record.id}: {record.status.value}"
        + (f" ({record.reason})" if record.reason else "")
        + f", {record.from_number or '?'} -> {record.to_number}, agent {record.agent}",
        f"codec {record.codec}, "
        + (f"{seconds:.1f} s answered, " if seconds is not None else "")
        + f"hung up by {record.hangup_by or '?'}",
        f"server's view: {record.packets_in} packets in, {record.packets_out} out, "
        f"loss {record.loss_percent} %, jitter {record.jitter_ms} ms, MOS {record.mos}",
    ]
    return lines
