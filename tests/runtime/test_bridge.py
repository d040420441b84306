"""Transfers that fall back to bridging, against real peers on 127.0.0.1: SIPp as the
caller (refusing REFER with 603 or 501, or accepting it and NOTIFYing a failure) and SIPp
as the trunk's far end answering the target's leg in PCMU and echoing its RTP (the caller
talks PCMA: the relay transcodes both ways). The caller's audio reaches the target and
comes back, the agent gets its stop, each leg has its record.

Warm transfers too (``"mode": "warm"``): the agent hears the target (its own audio,
echoed) and not the caller while it consults, then completes (the caller joined to the
target), cancels (the target gets BYE, the agent hears the caller again), or hears that
the target was busy."""

from __future__ import annotations

import array
import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from sipbridge.api.schemas import CallDetailOut
from sipbridge.runtime.bridge import BridgeUnavailable, leg_destination
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.registration import parse_registrar
from sipbridge.store import service
from sipbridge.store.records import CallDetail
from tests.runtime.test_call import NUMBER, SERVICE
from tests.support.agents import AgentCall, ScriptedAgent, wait_for_text
from tests.support.settings import BridgeFactory
from tests.support.sipp import play_pcap_scenario, refer_scenario, run_sipp, start_uas, uas_done

pytestmark = pytest.mark.requires("sipp")

TARGET = "tel:+1202555-0199"  # visual separators: dialled as +12025550199

_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""


def _send(text: str) -> str:
    return f"  <send>\n    <![CDATA[\n{text}\n    ]]>\n  </send>\n"


_PCMU_ANSWER = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""


def target_scenario(*, hang_up_ms: int | None = None, ring_ms: int = 0) -> str:
    """The target behind the trunk: rings ``ring_ms``, answers in PCMU (its RTP echoed by
    ``-rtp_echo``), then waits for our BYE, or sends its own after ``hang_up_ms``."""
    ending = '  <recv request="BYE"/>\n' + _send(
        f"      SIP/2.0 200 OK{_HEAD}\n      Content-Length: 0\n"
    )
    if hang_up_ms is not None:
        ending = (
            f'  <pause milliseconds="{hang_up_ms}"/>\n'
            + _send(
                """      BYE [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:target@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$from]
      [last_Call-ID:]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
"""
            )
            + '  <recv response="200"/>\n'
        )
    receive = '  <recv request="INVITE"/>\n'
    if hang_up_ms is not None:  # the BYE goes to our Contact, To our From
        receive = (
            '  <recv request="INVITE"><action>'
            '<ereg regexp="From: ([^\\r\\n]*)" search_in="msg" check_it="true"'
            ' assign_to="a,from"/>'
            '<ereg regexp="Contact: .(sip:[^>]*)" search_in="msg" check_it="true"'
            ' assign_to="b,contact"/></action></recv>\n'
            '  <Reference variables="a,b"/>\n'
        )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="target">\n'
        + receive
        + _send(f"      SIP/2.0 100 Trying{_HEAD}\n      Content-Length: 0\n")
        + (
            _send(f"      SIP/2.0 180 Ringing{_HEAD}\n      Content-Length: 0\n")
            + f'  <pause milliseconds="{ring_ms}"/>\n'
            if ring_ms
            else ""
        )
        + _send(
            f"      SIP/2.0 200 OK{_HEAD}\n      Contact: <sip:target@[local_ip]:[local_port]>\n"
            f"{_PCMU_ANSWER}"
        )
        + '  <recv request="ACK" crlf="true"/>\n'
        + ending
        + "</scenario>\n"
    )


async def transfer_script(ws: ServerConnection, call: AgentCall) -> None:
    """The agent: a moment after start (the 200 is out), asks for the transfer."""
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"type": "transfer", "target": TARGET, "headers": {"X-Queue": "7"}}))


async def setup(bridge: SipBridgeServer, agent_url: str, target_port: int) -> None:
    await service.add_agent(bridge.db, "bot", agent_url, transfer_allow=["+1202555*"])
    await service.add_number(bridge.db, NUMBER, "bot")
    await service.add_trunk(
        bridge.db,
        "carrier",
        host=f"127.0.0.1:{target_port}",
        allowed_cidrs=["127.0.0.1/32"],
    )
    await bridge.reload_trunks()


async def both_records(bridge: SipBridgeServer) -> tuple[CallDetail, CallDetail]:
    """The caller's call and the target's leg, once both are over."""
    deadline = asyncio.get_running_loop().time() + 10
    while bridge.calls or bridge.pending_tasks or len(await service.list_calls(bridge.db)) < 2:
        assert asyncio.get_running_loop().time() < deadline, bridge.calls
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the last writes
    calls = await service.list_calls(bridge.db)
    [caller] = [c for c in calls if c.direction == "inbound"]
    [leg] = [c for c in calls if c.direction == "outbound"]
    return await service.get_call(bridge.db, caller.id), await service.get_call(bridge.db, leg.id)


def transfer_steps(detail: CallDetail) -> list[tuple[Any, ...]]:
    return [
        (e.data["status"], e.data.get("method"), e.data.get("sip_code"))
        for e in detail.events
        if e.kind == "transfer"
    ]


async def _bridged_call(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    caller_scenario: str,
    *,
    target_hangs_up: bool = False,
) -> tuple[CallDetail, CallDetail, AgentCall]:
    (tmp_path / "target").mkdir()
    (tmp_path / "caller").mkdir()
    target, port = await start_uas(
        tmp_path / "target",
        target_scenario(hang_up_ms=1500 if target_hangs_up else None),
        extra=("-rtp_echo",),
    )
    bridge = await make_bridge()
    async with ScriptedAgent(transfer_script) as agent:
        await setup(bridge, agent.url, port)
        result = await run_sipp(
            bridge.sip_address, tmp_path / "caller", service=SERVICE, scenario=caller_scenario
        )
        assert result.returncode == 0, result.errors[-3000:] or result.stderr[-2000:]
        assert await uas_done(target, tmp_path / "target") == 0
        caller, leg = await both_records(bridge)
        [session] = agent.calls
        await asyncio.wait_for(session.closed.wait(), 5)
    return caller, leg, session


def check_bridged(caller: CallDetail, leg: CallDetail, session: AgentCall) -> None:
    assert session.stop == {"type": "stop", "reason": "transferred"}
    assert [t for t in session.texts if t.get("type") == "transfer_result"] in (
        [],
        [{"type": "transfer_result", "status": "accepted", "sip_code": 202}],
    )
    record = caller.record
    assert (record.status.value, record.reason) == ("answered", "transferred")
    assert record.codec == "pcma"
    # The target's leg: an outbound call of its own, linked both ways.
    assert leg.record.direction == "outbound" and leg.record.status.value == "answered"
    assert leg.record.to_number == "+12025550199" and leg.record.codec == "pcmu"
    assert leg.record.agent == "bot" and leg.record.trunk == "carrier"
    [link] = [e.data for e in leg.events if e.kind == "transfer_leg"]
    assert link["call"] == record.id
    assert link["target"].startswith("sip:+12025550199@127.0.0.1:")
    steps = [e.data for e in caller.events if e.kind == "transfer"]
    assert {s.get("leg") for s in steps if s["status"] in ("dialing", "bridged")} == {leg.record.id}
    shown = CallDetailOut.model_validate(caller.to_json())  # as GET /api/calls/{id} shows it
    assert [t.method for t in shown.transfers][-1] == "bridge"
    timeline = [point["event"] for point in caller.timeline()]
    assert "transfer_bridged" in timeline and timeline[-1] == "ended"
    # Media both ways, transcoded: the caller's A-law reached the target (PCMU, echoed)
    # and the target's audio came back to the caller.
    [relay] = [e.data for e in leg.events if e.kind == "relay"]
    assert relay["to_target_frames"] > 40, relay
    assert relay["to_caller_frames"] > 40, relay
    assert record.packets_in is not None and record.packets_in > 40
    assert leg.record.packets_in is not None and leg.record.packets_in > 40
    assert leg.record.packets_out is not None and leg.record.packets_out > 40


async def test_refer_declined_falls_back_to_a_bridge(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    caller, leg, session = await _bridged_call(
        make_bridge, tmp_path, refer_scenario(refer_status="603 Decline")
    )
    check_bridged(caller, leg, session)
    assert transfer_steps(caller) == [
        ("requested", "refer", None),
        ("failed", "refer", 603),
        ("dialing", "bridge", None),
        ("bridged", "bridge", 200),
        ("ended", "bridge", None),
    ]
    ended = next(e.data for e in caller.events if e.data.get("status") == "ended")
    assert ended["by"] == "caller"
    assert caller.record.hangup_by == "caller"
    assert (leg.record.reason, leg.record.hangup_by) == ("caller_hangup", "caller")


async def test_refer_not_implemented_and_the_target_hangs_up(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    caller, leg, session = await _bridged_call(
        make_bridge,
        tmp_path,
        refer_scenario(refer_status="501 Not Implemented", talk_ms=0, hang_up=False),
        target_hangs_up=True,
    )
    check_bridged(caller, leg, session)
    assert ("failed", "refer", 501) in transfer_steps(caller)
    assert caller.record.hangup_by == "target"
    assert (leg.record.reason, leg.record.hangup_by) == ("callee_hangup", "callee")


async def test_refer_accepted_then_notify_failure_falls_back(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    caller, leg, session = await _bridged_call(
        make_bridge, tmp_path, refer_scenario(refer_status="202 Accepted", notify_failure=True)
    )
    check_bridged(caller, leg, session)
    assert transfer_steps(caller)[:4] == [
        ("requested", "refer", None),
        ("accepted", "refer", 202),
        ("failed", "refer", 486),
        ("dialing", "bridge", None),
    ]


@pytest.mark.parametrize(
    ("target", "host", "uri", "user"),
    [
        (
            "tel:+1-202-555-0199",
            "carrier.example",
            "sip:+12025550199@carrier.example",
            "+12025550199",
        ),
        (
            "sip:sales@pbx.example.com;user=phone?X-A=1",
            "carrier.example:5070",
            "sip:sales@pbx.example.com;user=phone",
            "sales",
        ),
        (
            "sips:desk@pbx.example.com",
            "carrier.example;transport=tls",
            "sips:desk@pbx.example.com",
            "desk",
        ),
    ],
)
def test_leg_destination(target: str, host: str, uri: str, user: str) -> None:
    assert leg_destination(target, parse_registrar(host)) == (uri, user)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("sips:desk@pbx.example.com", "carrier.example"),
        ("tel:", "carrier.example"),
        ("mailto:a@b", "c"),
    ],
)
def test_leg_destination_refused(target: str, host: str) -> None:
    with pytest.raises(BridgeUnavailable) as raised:
        leg_destination(target, parse_registrar(host))
    assert raised.value.reason == "bad_target"


# -- warm transfers -----------------------------------------------------------------------

_PCMA_OFFER = ("8 101", "      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n")

BUSY_TARGET = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="busy target">\n'
    '  <recv request="INVITE"/>\n'
    + _send(f"      SIP/2.0 100 Trying{_HEAD}\n      Content-Length: 0\n")
    + _send(f"      SIP/2.0 486 Busy Here{_HEAD}\n      Content-Length: 0\n")
    + '  <recv request="ACK"/>\n</scenario>\n'
)


def _loud(frames: list[bytes]) -> int:
    """How many of ``frames`` (PCM16) carry sound rather than (near) silence."""
    count = 0
    for frame in frames:
        samples = array.array("h", frame[: len(frame) & ~1])
        if samples and math.sqrt(sum(x * x for x in samples) / len(samples)) > 1000:
            count += 1
    return count


def _tone(rate: int, seconds: float) -> bytes:
    """A 440 Hz tone (the agent's voice for the target; SIPp echoes it back)."""
    samples = array.array(
        "h",
        (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))),
    )
    return samples.tobytes()


def _results(session: AgentCall) -> list[tuple[Any, ...]]:
    return [
        (t["status"], t["sip_code"], t.get("leg"), t.get("reason"))
        for t in session.texts
        if t.get("type") == "transfer_result"
    ]


async def _warm_start(ws: ServerConnection, call: AgentCall) -> None:
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"type": "transfer", "target": TARGET, "mode": "warm"}))
    await wait_for_text(call, lambda t: t.get("status") == "dialing")


async def _consult(ws: ServerConnection, call: AgentCall, seen: dict[str, Any]) -> None:
    """Once the target answers: talk to it (a tone), keep what came back."""
    await wait_for_text(call, lambda t: t.get("status") == "consulting")
    start = len(call.audio)
    assert call.start is not None
    await ws.send(_tone(call.start["media_format"]["sample_rate"], 0.5))
    await asyncio.sleep(0.7)
    seen["consulting"] = call.audio[start:]


async def _warm_call(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    target_xml: str,
    script: Any,
    *,
    caller_ms: int,
) -> tuple[CallDetail, CallDetail, AgentCall]:
    (tmp_path / "target").mkdir()
    (tmp_path / "caller").mkdir()
    target, port = await start_uas(tmp_path / "target", target_xml, extra=("-rtp_echo",))
    bridge = await make_bridge()
    async with ScriptedAgent(script) as agent:
        await setup(bridge, agent.url, port)
        caller_xml = play_pcap_scenario(_PCMA_OFFER, "pcap/g711a.pcap", caller_ms)
        result = await run_sipp(
            bridge.sip_address, tmp_path / "caller", service=SERVICE, scenario=caller_xml
        )
        assert result.returncode == 0, result.errors[-3000:] or result.stderr[-2000:]
        assert await uas_done(target, tmp_path / "target") == 0
        caller, leg = await both_records(bridge)
        [session] = agent.calls
        await asyncio.wait_for(session.closed.wait(), 5)
    CallDetailOut.model_validate(caller.to_json())  # as GET /api/calls/{id} shows it
    return caller, leg, session


async def test_warm_transfer_consults_then_completes(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await _warm_start(ws, call)
        start = len(call.audio)
        await wait_for_text(call, lambda t: t.get("status") == "consulting")
        seen["ringing"] = call.audio[start:]
        await _consult(ws, call, seen)
        await ws.send(json.dumps({"type": "transfer_complete"}))
        await wait_for_text(call, lambda t: t.get("type") == "stop")

    caller, leg, session = await _warm_call(
        make_bridge, tmp_path, target_scenario(ring_ms=600), script, caller_ms=3500
    )
    # While it rang the caller's audio went nowhere; then the agent heard the target.
    assert len(seen["ringing"]) <= 5, len(seen["ringing"])
    assert _loud(seen["consulting"]) >= 10, len(seen["consulting"])
    assert _results(session) == [
        ("dialing", None, "target", None),
        ("consulting", 200, "target", None),
        ("completed", 200, None, None),
    ]
    assert session.stop == {"type": "stop", "reason": "transferred"}
    record = caller.record
    assert (record.status.value, record.reason, record.hangup_by) == (
        "answered",
        "transferred",
        "caller",
    )
    assert transfer_steps(caller) == [
        ("requested", "warm", None),
        ("dialing", "warm", None),
        ("consulting", "warm", 200),
        ("completed", "warm", 200),
        ("ended", "warm", None),
    ]
    steps = [e.data for e in caller.events if e.kind == "transfer"]
    assert {s.get("leg") for s in steps[1:]} == {leg.record.id}
    timeline = [point["event"] for point in caller.timeline()]
    assert timeline.index("transfer_consulting") < timeline.index("transfer_completed")
    [link] = [e.data for e in leg.events if e.kind == "transfer_leg"]
    assert link["call"] == record.id
    assert (leg.record.status.value, leg.record.reason) == ("answered", "caller_hangup")
    # After the join the caller's A-law reached the target (PCMU) and came back.
    [relay] = [e.data for e in leg.events if e.kind == "relay"]
    assert relay["to_target_frames"] > 40, relay
    assert relay["to_caller_frames"] > 40, relay


async def test_warm_transfer_cancelled_returns_to_the_caller(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await _warm_start(ws, call)
        await _consult(ws, call, seen)
        await ws.send(json.dumps({"type": "transfer_cancel"}))
        await wait_for_text(call, lambda t: t.get("status") == "cancelled")
        await asyncio.sleep(0.2)  # what the target echoed last is through
        start = len(call.audio)
        await asyncio.sleep(0.8)
        seen["after"] = call.audio[start:]
        await wait_for_text(call, lambda t: t.get("type") == "stop")

    caller, leg, session = await _warm_call(
        make_bridge, tmp_path, target_scenario(), script, caller_ms=3000
    )
    assert _loud(seen["consulting"]) >= 10
    # The caller's frames reach the agent again (the target got its BYE: SIPp passed).
    assert len(seen["after"]) >= 30, len(seen["after"])
    assert _results(session) == [
        ("dialing", None, "target", None),
        ("consulting", 200, "target", None),
        ("cancelled", None, "caller", None),
    ]
    assert session.stop == {"type": "stop", "reason": "caller_hangup"}
    assert caller.record.reason == "caller_hangup"
    assert transfer_steps(caller) == [
        ("requested", "warm", None),
        ("dialing", "warm", None),
        ("consulting", "warm", 200),
        ("cancelled", "warm", None),
    ]
    assert (leg.record.reason, leg.record.hangup_by) == ("transfer_cancelled", "server")


async def test_warm_transfer_to_a_busy_target(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await _warm_start(ws, call)
        await wait_for_text(call, lambda t: t.get("status") == "failed")
        start = len(call.audio)
        await asyncio.sleep(0.8)
        seen["after"] = call.audio[start:]
        await wait_for_text(call, lambda t: t.get("type") == "stop")

    caller, leg, session = await _warm_call(
        make_bridge, tmp_path, BUSY_TARGET, script, caller_ms=2500
    )
    assert len(seen["after"]) >= 30  # the caller's frames reach the agent again
    assert _results(session) == [
        ("dialing", None, "target", None),
        ("failed", 486, "caller", "busy"),
    ]
    assert transfer_steps(caller) == [
        ("requested", "warm", None),
        ("dialing", "warm", None),
        ("failed", "warm", 486),
    ]
    assert (leg.record.status.value, leg.record.reason) == ("busy", "busy")
    assert caller.record.reason == "caller_hangup"


async def test_caller_hanging_up_during_the_consultation_ends_the_target_leg(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await _warm_start(ws, call)
        await wait_for_text(call, lambda t: t.get("type") == "stop")

    caller, leg, session = await _warm_call(
        make_bridge, tmp_path, target_scenario(), script, caller_ms=1500
    )
    assert session.stop == {"type": "stop", "reason": "caller_hangup"}
    assert transfer_steps(caller)[-1] == ("cancelled", "warm", None)
    [cancelled] = [e.data for e in caller.events if e.data.get("status") == "cancelled"]
    assert cancelled["by"] == "caller"
    assert (leg.record.reason, leg.record.hangup_by) == ("caller_hangup", "caller")


async def test_twilio_mode_agents_get_a_clear_refusal_of_warm_transfers(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Twilio Media Streams have one stream, the caller's: no consultation leg."""

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await asyncio.sleep(0.3)
        request = {"target": TARGET, "mode": "warm"}
        await ws.send(json.dumps({"event": "transfer", "transfer": request}))
        await wait_for_text(call, lambda t: t.get("event") == "transfer_result")
        await wait_for_text(call, lambda t: t.get("event") == "stop")

    bridge = await make_bridge()
    async with ScriptedAgent(script) as agent:
        await service.add_agent(bridge.db, "bot", agent.url, protocol="twilio")
        await service.add_number(bridge.db, NUMBER, "bot")
        caller_xml = play_pcap_scenario(_PCMA_OFFER, "pcap/g711a.pcap", 1000)
        result = await run_sipp(bridge.sip_address, tmp_path, service=SERVICE, scenario=caller_xml)
        assert result.returncode == 0, result.errors[-3000:] or result.stderr[-2000:]
        [session] = agent.calls
        await asyncio.wait_for(session.closed.wait(), 5)
    [answer] = [t for t in session.texts if t.get("event") == "transfer_result"]
    assert answer["transfer_result"] == {
        "status": "failed",
        "sip_code": None,
        "reason": "warm_unsupported",
    }
    deadline = asyncio.get_running_loop().time() + 5
    while bridge.calls or not await service.list_calls(bridge.db):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    [record] = await service.list_calls(bridge.db)
    detail = await service.get_call(bridge.db, record.id)
    [step] = [e.data for e in detail.events if e.kind == "transfer"]
    assert (step["status"], step["method"], step["reason"]) == (
        "refused",
        "warm",
        "warm_unsupported",
    )


async def test_target_hanging_up_during_the_consultation_returns_to_the_caller(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await _warm_start(ws, call)
        await wait_for_text(call, lambda t: t.get("status") == "ended", timeout=8)
        await asyncio.sleep(0.2)
        start = len(call.audio)
        await asyncio.sleep(0.8)
        seen["after"] = call.audio[start:]
        await wait_for_text(call, lambda t: t.get("type") == "stop")

    caller, leg, session = await _warm_call(
        make_bridge, tmp_path, target_scenario(hang_up_ms=800), script, caller_ms=3000
    )
    assert len(seen["after"]) >= 30, len(seen["after"])
    assert _results(session) == [
        ("dialing", None, "target", None),
        ("consulting", 200, "target", None),
        ("ended", None, "caller", "target_hangup"),
    ]
    assert session.stop == {"type": "stop", "reason": "caller_hangup"}
    assert transfer_steps(caller)[-1] == ("ended", "warm", None)
    [ended] = [e.data for e in caller.events if e.data.get("status") == "ended"]
    assert (ended["by"], ended["reason"]) == ("target", "target_hangup")
    assert caller.record.reason == "caller_hangup"
    assert (leg.record.reason, leg.record.hangup_by) == ("callee_hangup", "callee")
