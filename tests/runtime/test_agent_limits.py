"""A misbehaving agent in real calls: per-call caps on what it stores and queues, protocol
errors logged once per kind, the message rate, and another call unaffected by it all."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection

from sipbridge.agent.limits import AgentLimits
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Request, parse_message
from sipbridge.store import service
from tests.conftest import BridgeFactory
from tests.runtime.test_agent_link import LiveCall, add_agent, caller_hangs_up, live_call
from tests.runtime.test_call import answer_bye, records, response_to
from tests.support.agents import AgentCall, ScriptedAgent, wait_for_text

ROOT = Path(__file__).resolve().parents[2]


def assert_audio_flowed(call: LiveCall, since: float, until: float) -> None:
    """The caller got an RTP packet every 20 ms in [since, until]: none missing, and no
    silence long enough to hear (a shared 2-core test machine allows some jitter)."""
    times = [at for packet, at in call.rtp.packets if since <= at <= until]
    expected = (until - since) / 0.02
    assert len(times) >= 0.95 * expected, (len(times), expected)
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.5


def sample(server: SipBridgeServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def call_lines(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if word in r.getMessage()]


@asynccontextmanager
async def flood_agent(mode: str) -> AsyncIterator[tuple[str, asyncio.StreamReader]]:
    """tests/support/flood_agent.py in a process of its own: its URL and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.flood_agent",
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert line.startswith(b"url "), line
        yield line.split()[1].decode(), process.stdout
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def done(output: asyncio.StreamReader, timeout: float = 20) -> list[str]:
    line = await asyncio.wait_for(output.readline(), timeout)
    assert line.startswith(b"done "), line
    return line.decode().split()[1:]


async def test_per_call_caps_keep_the_call_and_another_one_healthy(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The rate limit is lifted here: this test is about the caps alone.
    bridge = await make_bridge(agent_limits=AgentLimits(message_rate=1e9, message_burst=10**9))
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.INFO, logger="sipbridge.call")
    async with flood_agent("caps") as (url, output):
        await add_agent(bridge, [url])
        async with live_call(bridge, "good-caps") as good:
            async with live_call(bridge, "bad-caps", dtmf=True) as bad:
                started = loop.time()
                assert await done(output) == ["bad-caps"]
                assert loop.time() - started < 15
                await caller_hangs_up(bad)
            assert await done(output) == ["good-caps"]
            await caller_hangs_up(good)
    # The other caller heard its agent without a break while the bad agent flooded.
    assert_audio_flowed(good, started, started + 2.5)

    found = await records(bridge, 2)
    bad_record = next(r for r in found if r.sip_call_id == "bad-caps")
    detail = (await service.get_call(bridge.db, bad_record.id)).to_json()
    texts = [t["text"] for t in detail["transcript"]]
    assert len(texts) <= 1000 and sum(len(t.encode()) for t in texts) <= 1 << 20
    assert len(texts) == (1 << 20) // 2048  # the byte cap is reached first
    assert all(len(t) <= 8192 for t in texts)
    metadata = detail["metadata"]
    assert len(metadata) == 100
    assert all("blob" not in m["data"] for m in metadata)
    sizes = [len(json.dumps(m["data"], separators=(",", ":"))) for m in metadata]
    assert sum(sizes) <= 256 * 1024

    dtmf_requests = call_lines(caplog, "event=agent_dtmf ")
    assert 0 < len(dtmf_requests) <= 64 + 40  # what waits plus what played meanwhile
    for kind in ("transcript", "metadata", "dtmf"):
        assert len(call_lines(caplog, f"event=agent_limit_reached kind={kind}")) == 1
    dropped = "sipbridge_agent_messages_dropped_total"
    assert sample(bridge, dropped, kind="transcript") == 5000 - 512
    assert sample(bridge, dropped, kind="metadata") == 120
    assert sample(bridge, dropped, kind="dtmf") == 20000 - len(dtmf_requests)
    [ended_line] = [line for line in call_lines(caplog, "event=ended") if bad_record.id in line]
    assert "dropped=transcript:4488,metadata:120,dtmf:" in ended_line
    assert bad_record.reason == "caller_hangup"
    good_record = next(r for r in found if r.sip_call_id == "good-caps")
    assert good_record.reason == "caller_hangup"


async def test_invalid_frame_flood_is_logged_once_and_ends_the_call(
    bridge: SipBridgeServer, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.INFO, logger="sipbridge")
    async with flood_agent("junk") as (url, output):
        await add_agent(bridge, [url])
        async with live_call(bridge, "good-junk") as good:
            started = loop.time()
            async with live_call(bridge, "bad-junk") as bad:
                await answer_bye(bad.client, timeout=8)
                call_id, sent = await done(output)
                assert call_id == "bad-junk" and int(sent) > 2000
            await asyncio.sleep(0.5)
            assert len(bridge.calls) == 1  # the good call goes on
            assert await done(output) == ["good-junk"]
            finished = loop.time()
            await caller_hangs_up(good)
    assert_audio_flowed(good, started, min(finished, started + 2.5))
    found = await records(bridge, 2)
    bad_record = next(r for r in found if r.sip_call_id == "bad-junk")
    assert (bad_record.reason, bad_record.hangup_by) == ("agent_protocol_error", "server")
    good_record = next(r for r in found if r.sip_call_id == "good-junk")
    assert good_record.reason == "caller_hangup"
    assert len(call_lines(caplog, "event=agent_invalid_message")) == 1
    assert len(call_lines(caplog, "event=agent_protocol_error")) == 1
    assert len([r for r in caplog.records if bad_record.id in r.getMessage()]) < 20
    [ended] = [line for line in call_lines(caplog, "event=ended") if bad_record.id in line]
    assert "reason=agent_protocol_error" in ended and "protocol_errors=invalid_json:" in ended
    assert sample(bridge, "sipbridge_agent_protocol_errors_total") >= 2000
    calls = "sipbridge_calls_total"
    assert sample(bridge, calls, status="answered", reason="agent_protocol_error") == 1


FORBIDDEN = [
    ({"target": "tel:+19005551234"}, "premium_rate"),
    ({"target": "tel:+442079460000"}, "other_country"),
    ({"target": "sip:anything@evil.example"}, "sip_target"),
    (
        {
            "target": "tel:+12025550123",
            "headers": {"P-Asserted-Identity": "<sip:+12025550000@x>", "Diversion": "<sip:y>"},
        },
        "identity_header",
    ),
]


async def test_transfer_policy_in_a_live_call(bridge: SipBridgeServer) -> None:
    """Forbidden transfers are refused and recorded, with no REFER on the wire; an allowed
    one goes out as a REFER without identity headers set by the agent."""
    loop = asyncio.get_running_loop()

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        for body, _ in FORBIDDEN:
            await ws.send(json.dumps({"type": "transfer", **body}))
        await ws.send(
            json.dumps(
                {"type": "transfer", "target": "tel:+12025550123", "headers": {"X-Ticket": "8"}}
            )
        )
        await wait_for_text(call, lambda t: t.get("status") == "accepted")

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "policy-1") as call:
            data = await asyncio.wait_for(loop.sock_recv(call.client.sock, 65535), 5)
            refer = parse_message(data)
            # The first request on the wire is the allowed transfer's: none went out before.
            assert isinstance(refer, Request) and refer.method == "REFER"
            assert refer.headers.get("Refer-To") == "<tel:+12025550123>"
            assert refer.headers.get("X-Ticket") == "8"
            for name in ("P-Asserted-Identity", "Diversion", "Privacy", "History-Info"):
                assert refer.headers.get(name) is None
            assert len(refer.headers.get_all("Referred-By")) == 1  # ours only
            call.client.send(response_to(refer, "202 Accepted"))
            await wait_for_text(agent.calls[0], lambda t: t.get("status") == "accepted")
            await caller_hangs_up(call)
    results = [t for t in agent.calls[0].texts if t.get("type") == "transfer_result"]
    assert [(r["status"], r["sip_code"]) for r in results] == [("failed", None)] * 4 + [
        ("accepted", 202)
    ]
    [record] = await records(bridge)
    detail = (await service.get_call(bridge.db, record.id)).to_json()
    transfers = [(t["target"], t["status"], t.get("reason")) for t in detail["transfers"]]
    assert transfers == [
        *((body["target"], "refused", why) for body, why in FORBIDDEN),
        ("tel:+12025550123", "requested", None),
        ("tel:+12025550123", "accepted", None),
    ]
    assert detail["transfers"][-1]["sip_code"] == 202
    steps = [p["event"] for p in detail["timeline"] if p["event"].startswith("transfer_")]
    assert steps == ["transfer_refused"] * 4 + ["transfer_requested", "transfer_accepted"]
