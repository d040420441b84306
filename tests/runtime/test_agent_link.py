"""The agent side of live calls: marks and clear (barge-in), hangup, transfer by REFER,
transcripts, DTMF to the caller, failover, reconnection and the Twilio Media Streams mode."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import RtpPacket
from sipbridge.runtime.agent_client import EndpointHealth
from sipbridge.runtime.agent_link import PRE_START_SECONDS, AgentLink
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Request, parse_message
from sipbridge.store import service
from sipbridge.store.records import AgentRecord, utcnow
from tests.runtime.test_call import NUMBER, UdpClient, answer_bye, records, response_to
from tests.support.agents import AgentCall, ScriptedAgent, wait_for_text

ULAW_SILENCE = b"\xff" * 160
TONE = b"\x00\x10" * 8000  # one second of PCM16 at 8 kHz, not silence


@dataclass
class RtpListener(asyncio.DatagramProtocol):
    packets: list[tuple[RtpPacket, float]] = field(default_factory=list)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append((RtpPacket.parse(data), asyncio.get_running_loop().time()))


@dataclass
class LiveCall:
    client: UdpClient
    rtp: RtpListener
    rtp_port: int
    to_tag: str
    call_id: str
    rtp_transport: asyncio.DatagramTransport

    def send_rtp(self, server: SipBridgeServer, packet: bytes) -> None:
        """Caller RTP from the caller's own media socket (symmetric RTP keeps it there)."""
        call = next(iter(server.calls.values()))
        assert call.rtp_port is not None
        self.rtp_transport.sendto(packet, ("127.0.0.1", call.rtp_port))


@asynccontextmanager
async def live_call(
    server: SipBridgeServer, call_id: str, *, dtmf: bool = False
) -> AsyncIterator[LiveCall]:
    """INVITE → 200 → ACK from a raw UDP client with an RTP listener as its media."""
    loop = asyncio.get_running_loop()
    transport, rtp = await loop.create_datagram_endpoint(RtpListener, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    client = UdpClient(server.sip_address)
    try:
        client.send(client.invite(f"z9hG4bK-{call_id}", call_id, port, dtmf=dtmf))
        ok = await client.final()
        assert ok.status == 200 and ok.to.tag, ok
        client.send(client.in_dialog("ACK", 1, call_id, ok.to.tag))
        yield LiveCall(client, rtp, port, ok.to.tag, call_id, transport)
    finally:
        client.close()
        transport.close()


async def add_agent(server: SipBridgeServer, urls: list[str], **kwargs: object) -> None:
    await service.add_agent(server.db, "bot", urls, **kwargs)  # type: ignore[arg-type]
    await service.add_number(server.db, NUMBER, "bot")


async def caller_hangs_up(call: LiveCall) -> None:
    call.client.send(call.client.in_dialog("BYE", 2, call.call_id, call.to_tag))
    assert (await call.client.final()).status == 200


async def test_clear_stops_agent_audio_within_a_frame_and_clears_marks(
    bridge: SipBridgeServer,
) -> None:
    loop = asyncio.get_running_loop()
    moments: dict[str, float] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(json.dumps({"type": "mark", "name": "before"}))  # nothing queued yet
        await ws.send(TONE * 3)  # three seconds, faster than real time (like TTS)
        await ws.send(json.dumps({"type": "mark", "name": "after-speech"}))
        await asyncio.sleep(0.4)
        moments["clear"] = loop.time()
        await ws.send(json.dumps({"type": "clear"}))
        await wait_for_text(call, lambda t: t.get("name") == "after-speech")
        await ws.send(json.dumps({"type": "mark", "name": "empty"}))
        await wait_for_text(call, lambda t: t.get("name") == "empty")

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "clear-1") as call:
            await wait_for_text(agent.calls[0], lambda t: t.get("name") == "empty")
            await asyncio.sleep(0.1)
            await caller_hangs_up(call)
    marks = {t["name"]: t["status"] for t in agent.calls[0].texts if t.get("type") == "mark"}
    assert marks == {"before": "played", "after-speech": "cleared", "empty": "played"}
    tone = get_codec("pcmu").encoder().encode(TONE[:320])
    spoken = [at for packet, at in call.rtp.packets if packet.payload == tone]
    assert spoken and spoken[0] < moments["clear"]
    # Barge-in: no agent audio goes out more than one 20 ms frame after the clear arrived.
    late = [at for at in spoken if at > moments["clear"] + 0.025]
    assert late == []
    after = [p for p, at in call.rtp.packets if at > moments["clear"] + 0.03]
    assert after and all(p.payload == ULAW_SILENCE for p in after)


async def test_mark_echoed_when_its_audio_has_played(bridge: SipBridgeServer) -> None:
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        sent["at"] = loop.time()
        await ws.send(TONE[:4000])  # 250 ms
        await ws.send(json.dumps({"type": "mark", "name": "u1"}))
        echo = await wait_for_text(call, lambda t: t.get("type") == "mark")
        sent["echo"] = loop.time()
        assert echo == {"type": "mark", "name": "u1", "status": "played"}

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "mark-1") as call:
            await wait_for_text(agent.calls[0], lambda t: t.get("type") == "mark")
            await caller_hangs_up(call)
    assert 0.22 <= sent["echo"] - sent["at"] <= 0.40


async def test_hangup_without_playout_is_immediate(bridge: SipBridgeServer) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(TONE * 2)
        await ws.send(json.dumps({"type": "hangup", "after_playout": False}))

    loop = asyncio.get_running_loop()
    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "hang-1") as call:
            started = loop.time()
            await answer_bye(call.client)
            elapsed = loop.time() - started
    assert elapsed < 0.5  # not after the two seconds of queued audio
    [record] = await records(bridge)
    assert (record.reason, record.hangup_by) == ("agent_hangup", "agent")


async def test_transfer_by_refer_ends_our_leg(bridge: SipBridgeServer) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(
            json.dumps(
                {"type": "transfer", "target": "tel:+15551230000", "headers": {"X-Queue": "7"}}
            )
        )
        await wait_for_text(call, lambda t: t.get("type") == "transfer_result")

    loop = asyncio.get_running_loop()
    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url], transfer_allow=["+1555*"])
        async with live_call(bridge, "xfer-1") as call:
            data = await asyncio.wait_for(loop.sock_recv(call.client.sock, 65535), 5)
            refer = parse_message(data)
            assert isinstance(refer, Request) and refer.method == "REFER"
            assert refer.headers.get("Refer-To") == "<tel:+15551230000>"
            assert refer.headers.get("X-Queue") == "7"
            call.client.send(response_to(refer, "202 Accepted"))
            result = await wait_for_text(
                agent.calls[0], lambda t: t.get("type") == "transfer_result"
            )
            assert result == {"type": "transfer_result", "status": "accepted", "sip_code": 202}
            frag = b"SIP/2.0 200 OK\r\n"
            notify = call.client.in_dialog("NOTIFY", 2, "xfer-1", call.to_tag).replace(
                b"Content-Length: 0\r\n\r\n",
                b"Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n"
                b"Content-Type: message/sipfrag\r\nContent-Length: %d\r\n\r\n" % len(frag) + frag,
            )
            call.client.send(notify)
            bye = await answer_bye(call.client)
            assert bye.method == "BYE"
    [record] = await records(bridge)
    assert record.reason == "transferred"


async def test_transcripts_metadata_and_dtmf_are_kept_in_order(
    bridge: SipBridgeServer,
) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(json.dumps({"type": "transcript", "role": "caller", "text": "hi"}))
        await ws.send(json.dumps({"type": "metadata", "data": {"intent": "billing"}}))
        await ws.send(
            json.dumps({"type": "transcript", "role": "agent", "text": "hello", "final": True})
        )
        await ws.send(json.dumps({"type": "send_dtmf", "digits": "5#", "duration_ms": 100}))

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "log-1", dtmf=True) as call:
            await asyncio.sleep(1.0)
            await caller_hangs_up(call)
    [record] = await records(bridge)
    detail = await service.get_call(bridge.db, record.id)
    data = detail.to_json()
    assert [(t["role"], t["text"]) for t in data["transcript"]] == [
        ("caller", "hi"),
        ("agent", "hello"),
    ]
    assert data["metadata"][0]["data"] == {"intent": "billing"}
    events = [p for p, _ in call.rtp.packets if p.payload_type == 101]
    digits = {p.payload[0] for p in events}
    assert digits == {5, 11}
    assert sum(1 for p in events if p.marker) == 2


async def test_failover_to_the_next_url_and_all_down_is_503(
    bridge: SipBridgeServer,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}/"

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await ws.send(json.dumps({"type": "hangup"}))

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [dead, agent.url])
        async with live_call(bridge, "fo-1") as call:
            await answer_bye(call.client)
        assert agent.calls[0].start is not None
    await service.update_agent(bridge.db, "bot", urls=[dead])
    client = UdpClient(bridge.sip_address)
    try:
        client.send(client.invite("z9hG4bK-fo2", "fo-2", 4030))
        response = await client.final()
    finally:
        client.close()
    assert response.status == 503
    found = await records(bridge, 2)
    failed = next(r for r in found if r.sip_call_id == "fo-2")
    assert failed.reason == "agent_unreachable"


async def test_dropped_agent_reconnects_with_resumed_start(
    bridge: SipBridgeServer,
) -> None:
    async def script(ws: ServerConnection, call: AgentCall) -> None:
        assert call.start is not None
        if not call.start.get("resumed"):
            ws.transport.abort()  # the connection drops without a close frame
            return
        await ws.send(json.dumps({"type": "hangup"}))

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url], token="t0k")
        async with live_call(bridge, "rc-1") as call:
            await answer_bye(call.client)
    assert len(agent.calls) == 2
    first, second = agent.calls
    assert first.start is not None and first.start["resumed"] is False
    assert second.start is not None and second.start["resumed"] is True
    assert second.start["call_id"] == first.start["call_id"]
    assert all(h.get("authorization") == "Bearer t0k" for h in agent.headers)
    [record] = await records(bridge)
    assert record.reason == "agent_hangup"


async def test_agent_lost_when_reconnect_fails(bridge: SipBridgeServer) -> None:
    holder: dict[str, ScriptedAgent] = {}

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        server = holder["agent"]._server
        assert server is not None
        server.close(close_connections=False)  # no new connections from now on
        ws.transport.abort()

    async with ScriptedAgent(script) as agent:
        holder["agent"] = agent
        await add_agent(bridge, [agent.url])
        async with live_call(bridge, "lost-1") as call:
            await answer_bye(call.client, timeout=10)
    [record] = await records(bridge)
    assert (record.reason, record.hangup_by) == ("agent_lost", "server")


async def test_twilio_media_streams_mode(bridge: SipBridgeServer) -> None:
    reply = bytes(range(256))[:160]  # μ-law bytes the agent sends back

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        await wait_for_text(call, lambda t: t.get("event") == "media")
        sid = call.start["streamSid"] if call.start else ""
        payload = base64.b64encode(reply * 10).decode()  # 200 ms in one message
        await ws.send(
            json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})
        )
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "r1"}}))
        await wait_for_text(call, lambda t: t.get("event") == "mark")

    async with ScriptedAgent(script) as agent:
        await add_agent(bridge, [agent.url], protocol="twilio")
        async with live_call(bridge, "tw-1") as call:
            spoken = bytes((i * 7) & 0xFF for i in range(160))
            for seq in range(10):
                call.send_rtp(bridge, RtpPacket(0, seq, seq * 160, 42, payload=spoken).serialize())
                await asyncio.sleep(0.02)
            await wait_for_text(agent.calls[0], lambda t: t.get("event") == "mark", timeout=5)
            await caller_hangs_up(call)
        twilio = agent.calls[0]
        await asyncio.wait_for(twilio.closed.wait(), 5)
    connected = twilio.texts[0]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = twilio.start
    assert start is not None and start["event"] == "start"
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert start["start"]["customParameters"]["to"] == NUMBER
    media = [t for t in twilio.texts if t.get("event") == "media"]
    got = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert spoken * 10 in got  # μ-law → PCM → μ-law is bit-exact
    assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
    seqs = [int(t["sequenceNumber"]) for t in twilio.texts if "sequenceNumber" in t]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert twilio.texts[-1]["event"] == "stop"
    # μ-law has two zeros (0x7F, 0xFF): compare with the canonical re-encoding.
    pcmu = get_codec("pcmu")
    expected = pcmu.encoder().encode(pcmu.decoder().decode(reply))
    echoes = [p.payload for p, _ in call.rtp.packets if p.payload == expected]
    assert len(echoes) == 10  # the agent's 200 ms went out as ten 20 ms packets


class _Recorder:
    """Stands in for an open AgentConnection: what the link sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.is_open = True
        self.dropped_frames = 0

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    def send_frame(self, frame: str | bytes) -> None:
        self.sent.append(frame)


def _link() -> tuple[AgentLink, _Recorder]:
    agent = AgentRecord("echo", ["ws://127.0.0.1:9/"], True, utcnow())
    link = AgentLink(
        "c1",
        agent,
        EndpointHealth(),
        lambda events: None,
        lambda: None,
        caller="+12025550100",
        dialed="+12025550123",
        sip_call_id="x@y",
        sip_headers={},
        direction="outbound",
    )
    recorder = _Recorder()
    link.connection = recorder  # type: ignore[assignment]
    return link, recorder


async def test_caller_audio_before_start_waits_for_it_then_goes_in_order() -> None:
    # An outbound call: the callee speaks at the answer, the start message follows; the
    # agent must get start first, then every frame (no protocol violation, nothing lost).
    link, recorder = _link()
    frames = [bytes([n]) * 320 for n in range(3)]
    for frame in frames:
        link.send_caller_audio(frame)
    assert recorder.sent == []
    await link.start()
    assert isinstance(recorder.sent[0], str) and json.loads(recorder.sent[0])["type"] == "start"
    assert recorder.sent[1:] == frames  # native protocol: raw PCM frames
    link.send_caller_audio(bytes([9]) * 320)
    assert recorder.sent[-1] == bytes([9]) * 320


async def test_caller_audio_before_start_is_bounded() -> None:
    link, recorder = _link()
    second = 8000 * 2  # bytes of one second at 8 kHz
    for _ in range(PRE_START_SECONDS + 2):
        link.send_caller_audio(bytes(second))
    await link.start()
    assert sum(len(f) for f in recorder.sent[1:]) == PRE_START_SECONDS * second
