"""The live view of a running server's calls and the operator's hang-up (runtime/live.py)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

from sipbridge.runtime.live import LiveCalls
from sipbridge.runtime.server import SipBridgeServer
from tests.runtime.test_agent_link import add_agent, live_call
from tests.runtime.test_call import NUMBER, answer_bye, records
from tests.support.agents import AgentCall, ScriptedAgent


async def test_snapshot_and_operator_hang_up(bridge: SipBridgeServer) -> None:
    live = LiveCalls(bridge)
    assert live.snapshot() == [] and not live.closing
    assert live.owner == bridge.settings.owner_id
    assert live.hang_up("no-such-call") is None

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        return  # stays connected: the operator ends the call

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "live-1") as call:
            [current] = live.snapshot()
            assert (current.from_number, current.to_number, current.agent) == (
                "+15005550006",
                NUMBER,
                "bot",
            )
            assert (current.state, current.codec) == ("active", "pcmu")
            await asyncio.sleep(0.2)
            assert live.snapshot()[0].duration_s >= 0.2
            assert current.to_json()["state"] == "active"
            assert live.hang_up(current.id) is True
            assert live.hang_up(current.id) is False  # already ending
            assert (await answer_bye(call.client)).method == "BYE"
    [record] = await records(bridge)
    assert (record.reason, record.hangup_by) == ("operator_hangup", "operator")
    assert live.snapshot() == []
    await bridge.stop()
    assert live.closing  # the event streams end so the HTTP server can close
