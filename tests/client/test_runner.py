"""``sipbridge call``'s client on real sockets: against the server (UDP, TCP, TLS) with a
WebSocket echo agent, and against SIPp's UAS, a foreign SIP stack."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from sipbridge.client.report import ExitCode
from sipbridge.client.runner import CallOptions, CallResult, CallRunner, parse_server
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.framing import Transport
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.runtime.test_call import NUMBER, records, route_to
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory
from tests.support.sipp import SIPP, free_udp_port

# The client and the server share this test's loop: a busy CI machine must not make the
# server refuse the call as overloaded.
RELAXED = {"overload_lag_ms": 500.0, "overload_cpu": 1.0}


async def place(server: SipBridgeServer | tuple[str, int], **overrides: object) -> CallResult:
    host, port = server.sip_address if isinstance(server, SipBridgeServer) else server
    values: dict[str, object] = {"number": NUMBER, "host": host, "port": port, "duration": 1.5}
    values.update(overrides)
    lines: list[str] = []
    result = await CallRunner(CallOptions(**values), lines.append).run()  # type: ignore[arg-type]
    assert result.steps == lines
    return result


async def test_call_connects_echo_round_trip_mos_and_dtmf_reaches_the_agent(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await make_bridge(**RELAXED)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        record = tmp_path / "call.wav"
        result = await place(
            bridge, dtmf="12#", dtmf_at=0.3, record=record, from_user="+15005550006"
        )
        (call,) = agent.calls
    assert result.code is ExitCode.OK, result.steps
    steps = "\n".join(result.steps)
    for step in (
        "-> INVITE",
        "<- 100 Trying",
        "<- 180 Ringing",
        "<- 200 OK: answered",
        "<- agent audio",
        "-> DTMF 12# sent as RFC 4733",
        "-> BYE",
        "<- 200 to our BYE",
    ):
        assert step in steps
    audio = result.audio
    assert audio is not None and audio.packets_received > 50 and audio.loss_percent == 0.0
    assert audio.echo is not None and 0 <= audio.echo.delay_ms < 500  # loopback, one agent
    assert audio.mos is not None and audio.mos > 4.0
    assert audio.first_audio_ms is not None and audio.dtmf_sent == "12#"
    digits = "".join(t["digit"] for t in call.texts if t.get("type") == "dtmf")
    assert digits == "12#"
    assert record.stat().st_size > 44 + 4 * 8000
    (stored,) = await records(bridge)
    assert stored.status is CallStatus.ANSWERED and stored.sip_call_id == result.call_id
    assert stored.from_number == "+15005550006" and stored.hangup_by == "caller"


async def test_unknown_number_404_explained(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(**RELAXED)
    result = await place(bridge, number="+12025550199")
    assert result.code is ExitCode.NOT_ROUTED and result.code == 4
    assert result.explanation is not None
    assert result.explanation.fix == "sipbridge number add +12025550199 --agent NAME"
    assert result.ended is not None and result.ended.status == 404


async def test_digest_trunk_refuses_without_credentials_and_takes_them(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(**RELAXED)
    await service.add_trunk(bridge.db, "acme", username="acme", password="s3cret pass")
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        refused = await place(bridge)
        ok = await place(bridge, username="acme", password="s3cret pass")
    assert refused.code is ExitCode.REFUSED and refused.explanation is not None
    assert "wants digest credentials" in refused.explanation.message
    assert '"sipbridge.test"' in refused.explanation.message
    assert ok.code is ExitCode.OK, ok.steps
    assert any('challenge (realm "sipbridge.test"' in s for s in ok.steps)


async def test_agent_down_503_with_its_reason(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(agent_connect_timeout=0.5, **RELAXED)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{closed.getsockname()[1]}/agent"
    await route_to(bridge, url)
    result = await place(bridge)
    assert result.code is ExitCode.FAILED and result.explanation is not None
    assert "503 Service Unavailable (agent_unreachable)" in result.explanation.message
    assert "sipbridge doctor" in result.explanation.fix


async def test_tcp_and_tls(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    tls_port = free_udp_port()
    bridge = await make_bridge(tls_port=tls_port, tls_cert=str(cert), tls_key=str(key), **RELAXED)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        tcp = await place(bridge, transport=Transport.TCP, duration=1.0)
        tls = await place(
            ("127.0.0.1", tls_port), transport=Transport.TLS, ca_bundle=ca, duration=1.0
        )
        untrusted = await place(("127.0.0.1", tls_port), transport=Transport.TLS, duration=1.0)
    assert tcp.code is ExitCode.OK, tcp.steps
    assert "over TCP" in tcp.steps[0]
    assert tls.code is ExitCode.OK, tls.steps
    assert untrusted.code is ExitCode.ERROR and untrusted.explanation is not None
    assert "--ca-bundle" in untrusted.explanation.message


async def test_nothing_listening_is_told_at_once() -> None:
    port = free_udp_port()
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await place(("127.0.0.1", port))
    assert result.code is ExitCode.NO_RESPONSE and result.explanation is not None
    assert "nothing listens" in result.explanation.message
    assert loop.time() - started < 5
    refused = await place(("127.0.0.1", port), transport=Transport.TCP)
    assert refused.code is ExitCode.ERROR and refused.explanation is not None
    assert "connection refused" in refused.explanation.message


@pytest.mark.sipp
@pytest.mark.requires("sipp")
async def test_against_sipp_uas(tmp_path: Path) -> None:
    """SIPp's built-in UAS answers (180, 200 with SDP), takes our ACK and our BYE; it sends
    no audio, so the call is answered without agent audio: exit 7."""
    assert SIPP is not None
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        SIPP,
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "20s",
        "-trace_err",
        "-error_file",
        str(tmp_path / "errors.log"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        result = None
        for _ in range(50):  # until SIPp listens
            result = await place(("127.0.0.1", port), number="service", duration=1.0)
            if result.code is not ExitCode.NO_RESPONSE:
                break
            await asyncio.sleep(0.1)
        assert result is not None
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    steps = "\n".join(result.steps)
    assert "<- 180 Ringing" in steps and "<- 200 OK: answered" in steps, steps
    assert "<- 200 to our BYE: call ended" in steps
    assert result.code is ExitCode.NO_AUDIO and result.audio is not None
    assert result.audio.packets_sent > 20
    assert proc.returncode == 0, err.decode(errors="replace")  # SIPp: every call succeeded


@pytest.mark.parametrize(
    ("text", "transport", "expected"),
    [
        ("example.com", Transport.UDP, ("example.com", 5060)),
        ("example.com", Transport.TLS, ("example.com", 5061)),
        ("10.0.0.1:5080", Transport.UDP, ("10.0.0.1", 5080)),
        ("[::1]:5070", Transport.TCP, ("::1", 5070)),
        ("::1", Transport.UDP, ("::1", 5060)),
    ],
)
def test_parse_server(text: str, transport: Transport, expected: tuple[str, int]) -> None:
    assert parse_server(text, transport) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:99999", "host:x", "[::1", ":5060"])
def test_parse_server_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text, Transport.UDP)
