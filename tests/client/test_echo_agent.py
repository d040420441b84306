"""The built-in echo agent, spoken to over a real WebSocket."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import connect

from sipbridge.client.echo_agent import EchoAgent


async def test_echoes_audio_and_records_start_dtmf_and_stop() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    async with EchoAgent(on_event=lambda kind, detail: seen.append((kind, detail))) as agent:
        assert agent.url.startswith("ws://127.0.0.1:")
        async with connect(agent.url) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "c1", "from": "a", "to": "b"}))
            frame = bytes(range(256)) * 1 + b"\x00" * 64
            await ws.send(frame)
            assert await ws.recv() == frame
            await ws.send(json.dumps({"type": "dtmf", "digit": "5", "duration_ms": 100}))
            await ws.send(json.dumps({"type": "dtmf", "digit": "#", "duration_ms": 100}))
            await ws.send("not json")
            await ws.send(json.dumps({"type": "stop", "reason": "caller_hangup"}))
        (call,) = agent.calls
    assert call.frames == 1 and call.digits == "5#"
    assert call.start is not None and call.start["call_id"] == "c1"
    assert call.stop == {"type": "stop", "reason": "caller_hangup"}
    assert [kind for kind, _ in seen] == ["connected", "start", "dtmf", "dtmf", "stop"]
