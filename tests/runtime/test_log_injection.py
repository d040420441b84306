"""What callers and agents choose cannot forge log lines or reach the operator's terminal:
a real call with a hostile From user and a hostile agent, the server's own logging set-up,
and ``sipbridge calls`` on the records it wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from urllib.parse import quote

from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection

from sipbridge.cli import app
from sipbridge.logs import setup_logging
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.wiretext import clean
from tests.runtime.test_agent_link import add_agent
from tests.runtime.test_call import UdpClient, answer_bye, records
from tests.support.agents import AgentCall, ScriptedAgent

FORGED = "x\r\n2026-12-06 21:00:00,000 WARNING sipbridge.bans event=source_banned source=1.2.3.4"
CLEAR = "\x1b[2J"
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


async def test_hostile_caller_and_agent_cannot_forge_log_lines_or_clear_the_terminal(
    bridge: SipBridgeServer,
) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(json.dumps({"type": f"evil{CLEAR}\r\n{FORGED}"}))
        await ws.send(json.dumps({"type": "hangup", "after_playout": False}))

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    output = io.StringIO()
    setup_logging("debug", output)  # what `sipbridge serve` installs
    try:
        async with ScriptedAgent(script) as agent:
            await add_agent(bridge, [agent.url])
            client = UdpClient(bridge.sip_address)
            try:
                user = quote(FORGED + CLEAR, safe="")
                invite = client.invite("z9hG4bK-inj", "inj-1", 4040).replace(
                    b"sip:+15005550006@", f"sip:{user}@".encode()
                )
                client.send(invite)
                ok = await client.final()
                assert ok.status == 200 and ok.to.tag
                client.send(client.in_dialog("ACK", 1, "inj-1", ok.to.tag))
                await answer_bye(client)
            finally:
                client.close()
            [record] = await records(bridge)
            await asyncio.sleep(0.1)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    # stored printable (wiretext.py): the raw bytes stay readable as %XX escapes
    assert record.from_number == clean(FORGED + CLEAR)
    assert record.from_number.startswith("x%0D%0A2026-12-06") and record.from_number.isprintable()

    text = output.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines and all(RECORD_START.match(line) for line in lines), lines
    assert not [line for line in lines if line.startswith("2026-12-06 21:00:00,000")]
    received = [line for line in lines if "event=received" in line]
    assert received and "from=x%0D%0A2026-12-06 21:00:00,000 WARNING" in received[0]
    assert "%1B[2J" in received[0]
    unknown = [line for line in lines if "event=agent_unknown_message" in line]
    assert unknown and "type=evil\\x1b[2J\\r\\nx\\r\\n2026" in unknown[0]

    result = await asyncio.to_thread(CliRunner().invoke, app, ["calls", "--db", bridge.settings.db])
    assert result.exit_code == 0, result.output
    assert UNSAFE.search(result.stdout) is None, repr(result.stdout)
    assert "x%0D%0A2026-12-06" in result.stdout and "%1B[2J" in result.stdout
    assert len(result.stdout.splitlines()) == 2  # the header and the one call
