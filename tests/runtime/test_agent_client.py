"""The agent WebSocket client against a real websockets server."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sipbridge.agent.protocol import AgentEvent, AgentSession, HangupRequested
from sipbridge.runtime.agent_client import AgentConnection, AgentUnreachable
from tests.support.agents import SilentTcpServer


async def test_unreachable_port_raises_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = AgentConnection(f"ws://127.0.0.1:{port}/", AgentSession("c1"), lambda _: None)
    with pytest.raises(AgentUnreachable, match="cannot connect"):
        await conn.open(2.0)


async def test_hanging_handshake_times_out() -> None:
    async with SilentTcpServer() as silent:
        conn = AgentConnection(silent.url, AgentSession("c1"), lambda _: None)
        with pytest.raises(AgentUnreachable, match=r"within 0\.3 s"):
            await conn.open(0.3)


async def test_audio_text_and_events_both_ways() -> None:
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["extensions"] = ws.request.headers.get("Sec-WebSocket-Extensions")
        seen["user_agent"] = ws.request.headers.get("User-Agent")
        seen["start"] = await ws.recv()
        seen["audio"] = [await ws.recv(), await ws.recv()]
        await ws.send(b"\x01\x00" * 160)
        await ws.send(json.dumps({"type": "hangup"}))
        await ws.close()

    events: list[AgentEvent] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        session = AgentSession("c1")
        conn = AgentConnection(f"ws://127.0.0.1:{port}/", session, events.extend)
        await conn.open(2.0)
        await conn.send_text('{"type":"start"}')
        conn.send_audio(b"\x00" * 320)
        conn.send_audio(b"\x02" * 320)
        reason = await asyncio.wait_for(conn.run(), 5)
        await conn.close()
    assert reason == "agent closed the connection"
    assert seen["extensions"] is None  # permessage-deflate off for audio
    assert seen["user_agent"] is None  # no software name on the wire
    assert seen["start"] == '{"type":"start"}'
    assert seen["audio"] == [b"\x00" * 320, b"\x02" * 320]
    assert events == [HangupRequested()]
    assert session.next_frame() == b"\x01\x00" * 160
    assert not conn.is_open
    conn.send_audio(b"\x00" * 320)  # after close: ignored, no error
