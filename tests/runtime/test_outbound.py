"""Outbound calls against a real far end: SIPp as the trunk (a UAS on 127.0.0.1) answering
with G.711 and RTP (after early media), challenging with 401, busy with 486, never answering;
POST /api/calls, the agent's start (direction outbound) and the records."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.codecs import get_codec
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.runtime.test_call_media import align
from tests.runtime.test_call_srtp import baresip_config, read_wav, speech_file
from tests.support.agents import EchoAgent
from tests.support.cluster import answers_options
from tests.support.ports import free_port, free_ports
from tests.support.settings import BridgeFactory
from tests.support.sipp import challenged_bye, free_udp_port, start_uas, uas_done

pytestmark = pytest.mark.requires("sipp")

PASSWORD = "hunter2"
CALLEE = "+12025550123"
OURS = "+12025550100"

_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""

_ANSWER_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
"""


def _send(text: str) -> str:
    return f"  <send>\n    <![CDATA[\n{text}\n    ]]>\n  </send>\n"


def _scenario(name: str, body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n{body}'
        "</scenario>\n"
    )


# 100, 183 with early media, 200 with PCMA; plays a second of A-law, then hangs up.
ANSWER = _scenario(
    "answer",
    '  <recv request="INVITE"/>\n'
    + _send(f"      SIP/2.0 100 Trying{_HEAD}\n      Content-Length: 0\n")
    + _send(f"      SIP/2.0 183 Session Progress{_HEAD}\n{_ANSWER_SDP}")
    + '  <pause milliseconds="200"/>\n'
    + _send(
        f"      SIP/2.0 200 OK{_HEAD}\n      Contact: <sip:callee@[local_ip]:[local_port]>\n"
        f"{_ANSWER_SDP}"
    )
    + '  <recv request="ACK" rtd="true" crlf="true"/>\n'
    + '  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>\n'
    + '  <pause milliseconds="1500"/>\n'
    + _send(
        """      BYE [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$from]
      [last_Call-ID:]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
"""
    )
    + '  <recv response="200"/>\n',
)
# The BYE's To is our From, taken from the INVITE.
ANSWER = ANSWER.replace(
    '<recv request="INVITE"/>',
    '<recv request="INVITE"><action><ereg regexp="From: ([^\\r\\n]*)" search_in="msg" '
    'check_it="true" assign_to="all,from"/><ereg regexp="Contact: .(sip:[^>]*)" '
    'search_in="msg" check_it="true" assign_to="all2,contact"/></action></recv>',
    1,
).replace("\n  <nop><action>", '\n  <Reference variables="all,all2"/>\n  <nop><action>', 1)

# 401, then the INVITE with valid credentials (SIPp checks them) is answered 486.
CHALLENGE_BUSY = _scenario(
    "challenge then busy",
    '  <recv request="INVITE"/>\n'
    + _send(
        f"      SIP/2.0 401 Unauthorized{_HEAD}\n"
        '      WWW-Authenticate: Digest realm="sipp.test", nonce="[pid]n", qop="auth"\n'
        "      Content-Length: 0\n"
    )
    + '  <recv request="ACK"/>\n'
    + '  <recv request="INVITE"><action><verifyauth assign_to="valid" username="acct" '
    f'password="{PASSWORD}"/></action></recv>\n'
    + '  <nop test="valid" next="good"/>\n'
    + _send(f"      SIP/2.0 403 Forbidden{_HEAD}\n      Content-Length: 0\n")
    + '  <recv request="ACK" next="end"/>\n'
    + '  <label id="good"/>\n'
    + _send(f"      SIP/2.0 486 Busy Here{_HEAD}\n      Content-Length: 0\n")
    + '  <recv request="ACK"/>\n'
    + '  <label id="end"/>\n',
)

# Rings until our CANCEL: 200 to it, 487 to the INVITE.
NO_ANSWER = _scenario(
    "never answers",
    '  <recv request="INVITE"><action><ereg regexp="CSeq: ([0-9]+)" search_in="msg" '
    'check_it="true" assign_to="all,seq"/></action></recv>\n'
    + _send(f"      SIP/2.0 180 Ringing{_HEAD}\n      Content-Length: 0\n")
    + '  <recv request="CANCEL"/>\n'
    + _send(f"      SIP/2.0 200 OK{_HEAD}\n      Content-Length: 0\n")
    + _send(
        """      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$seq] INVITE
      Content-Length: 0
"""
    )
    + '  <recv request="ACK"/>\n'
    + '  <Reference variables="all"/>\n',
)


async def setup(
    bridge: SipBridgeServer, port: int, agent_url: str, transport: str = "udp"
) -> httpx.AsyncClient:
    await service.add_agent(bridge.db, "echo", agent_url)
    await service.add_trunk(
        bridge.db,
        "carrier",
        host=f"127.0.0.1:{port}" + ("" if transport == "udp" else f";transport={transport}"),
        username="acct",
        password=PASSWORD,
        allowed_cidrs=["127.0.0.1/32"],
    )
    _, key = await service.create_api_key(bridge.db, "ops")
    base = "http://{}:{}".format(*bridge.http_address)
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"})


async def dial(http: httpx.AsyncClient, **extra: Any) -> str:
    body = {"to": CALLEE, "from": OURS, "agent": "echo", "trunk": "carrier", **extra}
    response = await http.post("/api/calls", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "ringing"
    return str(response.json()["id"])


async def outcome(http: httpx.AsyncClient, call_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await http.get(f"/api/calls/{call_id}")  # 404 until its first write
        call = response.json()
        if response.status_code == 200 and call["status"] not in ("ringing", "active"):
            return dict(call)
        assert asyncio.get_running_loop().time() < deadline, call
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_answered_call_is_bridged_to_the_agent(
    make_bridge: BridgeFactory, tmp_path: Path, transport: str
) -> None:
    # Over TCP the far end is SIPp with -t t1: the INVITE, ACK and its BYE on one connection.
    far, port = await start_uas(tmp_path, ANSWER, transport=transport)
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        http = await setup(bridge, port, agent.url, transport)
        async with http:
            call_id = await dial(http, headers={"X-Campaign": "spring"}, ring_timeout=10)
            call = await outcome(http, call_id)
        assert await uas_done(far, tmp_path) == 0
        [session] = agent.calls
    assert session.start is not None and session.start["direction"] == "outbound"
    assert session.start["from"] == OURS and session.start["to"] == CALLEE
    assert session.start["sip_headers"] == {"X-Campaign": "spring"}
    assert len(session.audio) > 20  # the callee's A-law reached the agent
    assert call["status"] == "answered" and call["direction"] == "outbound"
    assert call["reason"] == "callee_hangup" and call["hangup_by"] == "callee"
    assert call["codec"] == "pcma" and call["sip_code"] == 200 and call["trunk"] == "carrier"
    assert call["from_number"] == OURS and call["to_number"] == CALLEE
    detail = await service.get_call(bridge.db, call_id)
    progress = [e.data for e in detail.events if e.kind == "progress"]
    assert progress == [{"status": 183, "early_media": True}]  # early media, then the 200


async def test_challenge_answered_then_busy(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    far, port = await start_uas(tmp_path, CHALLENGE_BUSY)
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        async with await setup(bridge, port, agent.url) as http:
            call = await outcome(http, await dial(http))
        # Opened while the INVITE was out, closed unstarted: busy is no call for the agent.
        assert [c.start for c in agent.calls] in ([], [None])
    assert await uas_done(far, tmp_path) == 0  # SIPp verified our digest answer
    assert (call["status"], call["reason"], call["sip_code"]) == ("busy", "busy", 486)
    assert call["answered_at"] is None and call["ended_at"] is not None


async def test_ring_timeout_cancels_dialled_from_the_cli(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    far, port = await start_uas(tmp_path, NO_ANSWER)
    bridge = await make_bridge()
    async with EchoAgent() as agent, await setup(bridge, port, agent.url) as http:
        key = http.headers["Authorization"].removeprefix("Bearer ")
        server = "http://{}:{}".format(*bridge.http_address)
        args = ["dial", CALLEE, "--from", OURS, "--agent", "echo", "--trunk", "carrier"]
        args += ["--ring-timeout", "1", "--server", server]
        started = asyncio.get_running_loop().time()
        result = await asyncio.to_thread(
            CliRunner().invoke, app, args, env={"SIPBRIDGE_API_KEY": key}
        )
        assert asyncio.get_running_loop().time() - started < 8
        call_id, outcome_line = result.stdout.split()[0], result.stdout.splitlines()[1]
        call = await outcome(http, call_id)
    assert result.exit_code == 1, result.output
    assert outcome_line == "no_answer no_answer 487"
    assert await uas_done(far, tmp_path) == 0
    assert (call["status"], call["reason"], call["sip_code"]) == ("no_answer", "no_answer", 487)
    assert call["direction"] == "outbound"
    # The agent's WebSocket opened while it rang; unanswered, it was closed with neither a
    # start nor a stop (there was no call for the agent).
    assert [c.start for c in agent.calls] == [None]
    assert not [t for c in agent.calls for t in c.texts if t.get("type") == "stop"]


async def test_an_unreachable_agent_cancels_the_call_while_it_rings(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """The agent's WebSocket is opened while the callee's phone rings: when no endpoint
    answers, the INVITE is cancelled at once, so nobody answers into silence."""
    far, port = await start_uas(tmp_path, NO_ANSWER)
    bridge = await make_bridge(agent_connect_timeout=1.0)
    async with await setup(bridge, port, "ws://127.0.0.1:9/agent") as http:
        started = asyncio.get_running_loop().time()
        call = await outcome(http, await dial(http, ring_timeout=20))
        assert asyncio.get_running_loop().time() - started < 6  # not the 20 s ring timeout
    assert await uas_done(far, tmp_path) == 0  # SIPp got our CANCEL
    assert (call["status"], call["reason"]) == ("failed", "agent_unreachable")
    assert call["answered_at"] is None


async def test_refusals(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(max_calls=1)
    async with EchoAgent() as agent, await setup(bridge, 9, agent.url) as http:
        body = {"to": CALLEE, "from": OURS, "agent": "echo", "trunk": "carrier"}
        missing = await http.post("/api/calls", json={**body, "trunk": "nope"})
        assert missing.status_code == 404 and "unknown_trunk" in missing.json()["detail"]
        bad = await http.post("/api/calls", json={**body, "to": "12"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "to"]
        header = await http.post("/api/calls", json={**body, "headers": {"Via": "x"}})
        assert header.status_code == 422
        bridge.start_drain(30)
        draining = await http.post("/api/calls", json=body)
        assert draining.status_code == 503 and draining.headers["Retry-After"]
        assert "draining" in draining.json()["detail"]


async def test_an_operator_cancels_a_ringing_call_through_the_api(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """POST /api/calls/{id}/hangup on a ringing outbound call sends CANCEL at once; the
    record says cancelled by the operator. An id not in progress here is 404."""
    far, port = await start_uas(tmp_path, NO_ANSWER)
    bridge = await make_bridge()
    async with EchoAgent() as agent, await setup(bridge, port, agent.url) as http:
        call_id = await dial(http, ring_timeout=20)
        loop = asyncio.get_running_loop()
        while not bridge.calls or next(iter(bridge.calls.values())).attempt is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # ringing (SIPp answered 180)
        started = loop.time()
        ending = await http.post(f"/api/calls/{call_id}/hangup")
        assert ending.status_code == 202 and ending.json() == {"id": call_id, "status": "ending"}
        call = await outcome(http, call_id)
        assert loop.time() - started < 5
        missing = await http.post("/api/calls/nope/hangup")
        assert missing.status_code == 404
    assert await uas_done(far, tmp_path) == 0  # SIPp got our CANCEL and sent 487
    assert (call["status"], call["reason"], call["hangup_by"]) == (
        "cancelled",
        "operator_hangup",
        "operator",
    )


async def test_a_trunk_that_refuses_the_tcp_connection_fails_the_call_at_once(
    make_bridge: BridgeFactory,
) -> None:
    # RFC 3261 §8.1.3.1: the transport error is the outcome now, not Timer B's 32 s later.
    bridge = await make_bridge()
    async with EchoAgent() as agent, await setup(bridge, free_port(), agent.url, "tcp") as http:
        started = asyncio.get_running_loop().time()
        call_id = await dial(http)
        call = await outcome(http, call_id, timeout=5.0)
        took = asyncio.get_running_loop().time() - started
    assert (call["status"], call["reason"], call["sip_code"]) == (
        "failed",
        "trunk_unreachable",
        None,
    )
    assert took < 5.0
    detail = await service.get_call(bridge.db, call_id)
    [failure] = [e.data for e in detail.events if e.kind == "failure"]
    assert failure == {
        "reason": "trunk_unreachable",
        "detail": "connect failed: Connection refused",
    }


async def test_a_trunk_whose_tls_certificate_does_not_verify_fails_the_call_at_once(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    # A TLS listener whose certificate's CA we do not trust (no --tls-ca).
    _, cert, key = make_ca_and_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    accepted: list[bool] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    listener = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    # Our own TLS listener (the Contact's port) with the same certificate.
    bridge = await make_bridge(tls_cert=cert, tls_key=key, tls_port=0)
    try:
        async with EchoAgent() as agent, await setup(bridge, port, agent.url, "tls") as http:
            call_id = await dial(http)
            call = await outcome(http, call_id, timeout=5.0)
    finally:
        listener.close()
    assert (call["status"], call["reason"]) == ("failed", "trunk_unreachable")
    detail = await service.get_call(bridge.db, call_id)
    [failure] = [e.data for e in detail.events if e.kind == "failure"]
    assert "certificate verify failed" in failure["detail"], failure


@pytest.mark.requires("baresip")
@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_srtp_required_trunk_dials_out_with_sdes_keys_to_baresip(
    make_bridge: BridgeFactory, tmp_path: Path, transport: str
) -> None:
    # baresip answers at once, requires SRTP (RTP/SAVP) and speaks PCMU; it plays 1.5 s of
    # speech, then silence, and hangs up at the end of its file. Our offer carries both
    # suites (RFC 4568 §7.1.1); it picks one, and each side sends with its own key. Over
    # TLS (baresip listens on its port + 1) the keys travel encrypted, as they should.
    source = tmp_path / "in.wav"
    speech = speech_file(source)
    folder = tmp_path / "baresip"
    sip_port = free_udp_port()
    baresip_config(folder, sip_port, free_ports(10), source)
    settings: dict[str, Any] = {}
    host = f"127.0.0.1:{sip_port}"
    if transport == "tls":
        ca, cert, key = make_ca_and_cert(tmp_path)
        both = tmp_path / "baresip.pem"
        both.write_text(cert.read_text() + key.read_text())
        with (folder / "config").open("a") as config:
            config.write(f"sip_certificate {both}\nsip_cafile {ca}\n")
        settings = {"tls_port": 0, "tls_cert": str(cert), "tls_key": str(key), "tls_ca": str(ca)}
        host = f"127.0.0.1:{sip_port + 1};transport=tls"
    (folder / "accounts").write_text(
        # The user is the number we dial: baresip answers 404 to any other.
        f"<sip:{CALLEE}@127.0.0.1>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMU;answermode=auto\n"
    )
    callee = await asyncio.create_subprocess_exec(
        "baresip",
        "-f",
        str(folder),
        "-t",
        "20",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    bridge = await make_bridge(**settings)
    try:
        await answers_options(sip_port, 10.0, any_final=True)
        async with EchoAgent() as agent:
            http = await setup(bridge, sip_port, agent.url)
            await service.update_trunk(bridge.db, "carrier", host=host, srtp="required")
            async with http:
                call_id = await dial(http, ring_timeout=10)
                call = await outcome(http, call_id, timeout=20.0)
            [session] = agent.calls
    finally:
        with contextlib.suppress(ProcessLookupError):
            callee.terminate()
        output, _ = await asyncio.wait_for(callee.communicate(), 15)
    log = output.decode(errors="replace")
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log[-3000:]
    assert call["status"] == "answered" and call["codec"] == "pcmu", call
    assert call["srtp"] == "AES_CM_128_HMAC_SHA1_80" and call["reason"] == "callee_hangup"
    if transport == "tls":  # through baresip's TLS listener, the only one on that port
        assert call["source"] == f"127.0.0.1:{sip_port + 1}"
    # The callee's speech reached the agent (we decrypted it) from its first packet,
    # sent with the 200 (held until the answer was applied, media/session.py hold) ...
    pcmu = get_codec("pcmu")
    encoder, decoder = pcmu.encoder(), pcmu.decoder()
    frames = [speech[i : i + 160].tobytes() for i in range(0, len(speech) - 159, 160)]
    reference = np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames), "<i2")
    heard = np.frombuffer(b"".join(session.audio), "<i2")
    score, _lag = align(reference, heard)
    assert score > 0.99, score
    # ... and its echo reached the callee (baresip decrypted ours): its dump of what it
    # decoded holds the speech.
    [dump] = (folder / "snd").glob("dump-*-dec.wav")
    score, _lag = align(reference, read_wav(dump).astype(np.float64))
    assert score > 0.95, score


# Answers our SRTP offer with plain RTP (RTP/AVP), then expects our BYE.
PLAIN_ANSWER = _scenario(
    "plain answer",
    '  <recv request="INVITE"/>\n'
    + _send(
        f"      SIP/2.0 200 OK{_HEAD}\n      Contact: <sip:callee@[local_ip]:[local_port]>\n"
        f"{_ANSWER_SDP}"
    )
    + '  <recv request="ACK"/>\n'
    + '  <recv request="BYE"/>\n'
    + _send(
        "      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
        "      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n"
    ),
)


async def test_a_plain_answer_to_an_srtp_offer_is_hung_up(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    # RFC 4568 §7.1.3: the answer to our RTP/SAVP offer must be SRTP with one of our
    # tags; a callee answering plain RTP gets no media in clear from us, only BYE.
    far, port = await start_uas(tmp_path, PLAIN_ANSWER)
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        http = await setup(bridge, port, agent.url)
        await service.update_trunk(bridge.db, "carrier", srtp="required")
        async with http:
            call_id = await dial(http)
            call = await outcome(http, call_id)
        assert [c.start for c in agent.calls] in ([], [None])  # no start for the agent
    assert await uas_done(far, tmp_path) == 0  # SIPp got our BYE
    assert (call["status"], call["reason"], call["srtp"]) == ("failed", "bad_sdp_answer", None)
    assert call["packets_out"] == 0


# Answers, then challenges our BYE (401) and checks the digest of the BYE that follows.
CHALLENGED_BYE = _scenario(
    "challenges our BYE",
    '  <recv request="INVITE"/>\n'
    + _send(
        f"      SIP/2.0 200 OK{_HEAD}\n      Contact: <sip:callee@[local_ip]:[local_port]>\n"
        f"{_ANSWER_SDP}"
    )
    + '  <recv request="ACK"/>\n'
    + challenged_bye("acct", PASSWORD),
)


async def test_a_carrier_that_challenges_our_bye_gets_it_with_credentials(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    # RFC 3261 §22.2 for requests in the dialog: the trunk's username and password.
    far, port = await start_uas(tmp_path, CHALLENGED_BYE)
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        async with await setup(bridge, port, agent.url) as http:
            call_id = await dial(http)
            deadline = asyncio.get_running_loop().time() + 10
            while (await http.get(f"/api/calls/{call_id}")).json().get("status") != "active":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            assert (await http.post(f"/api/calls/{call_id}/hangup")).status_code == 202
            call = await outcome(http, call_id)
        assert await uas_done(far, tmp_path) == 0  # SIPp verified our digest
    assert (call["status"], call["hangup_by"]) == ("answered", "operator")
