"""The per-call SIP trace on a running server: switched on for a number through the API
during the run, it logs every SIP message of a digest-authenticated SRTP call to that
number (JSON log lines, secrets masked), nothing of a call to another number, and nothing
once switched off again (through the store, as the CLI or another instance does). Also
the JSON log lines of a real call carry its call id; and the tracer and the server's
TraceSync on their own."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sipbridge.logs import COMPONENTS, LOG_FORMAT, EscapingFormatter, setup_logging
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.runtime.trace import SipTracer
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.message import Request, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallStatus, TraceRecord, utcnow
from tests.runtime.test_call import NUMBER, UdpClient, records, route_to
from tests.runtime.test_call_access import STRANGER_IP, Client, hang_up, with_authorization
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory

OTHER = "+12025550177"
KEY = base64.b64encode(bytes(range(30))).decode()  # an SDES master key and salt


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What ``sipbridge serve --log-level warning --log-format json`` writes."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    output = io.StringIO()
    setup_logging("warning", output, log_format="json", levels={"sipbridge.call": logging.INFO})
    try:
        yield output
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for component in COMPONENTS:  # back to inherit
            logging.getLogger(f"sipbridge.{component}").setLevel(logging.NOTSET)


def parsed(output: io.StringIO) -> list[dict[str, Any]]:
    lines = output.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def with_crypto(invite: bytes) -> bytes:
    """The INVITE offering SRTP (RTP/SAVP with an a=crypto key), Content-Length fixed."""
    head, body = invite.split(b"\r\n\r\n", 1)
    body = re.sub(
        rb"RTP/AVP 0\r\n",
        f"RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20\r\n".encode(),
        body,
    )
    head = re.sub(rb"Content-Length: \d+", f"Content-Length: {len(body)}".encode(), head)
    return head + b"\r\n\r\n" + body


async def authenticated_call(bridge: SipBridgeServer, number: str, call_id: str) -> str:
    """A whole call to ``number`` from the digest trunk ``acme``: INVITE, 401, ACK, INVITE
    with credentials, 100/180/200, ACK, BYE, 200. Returns the digest response sent."""
    client = Client(bridge.sip_address, STRANGER_IP)
    try:
        invite = with_crypto(client.invite(f"z9hG4bK-{call_id}", call_id, 4020)).replace(
            NUMBER.encode(), number.encode()
        )
        client.send(invite)
        challenge = await client.final()
        assert challenge.status == 401
        client.ack(invite, challenge)
        retry = with_authorization(
            invite,
            challenge,
            username="acme",
            password="s3cret pass",
            branch=f"z9hG4bK-{call_id}-2",
            uri=f"sip:{number}@127.0.0.1",
        )
        client.send(retry)
        ok = await client.final()
        assert ok.status == 200 and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in ok.body
        await hang_up(client, call_id, ok, cseq=2)
    finally:
        client.close()
    found = re.search(rb'response="([0-9a-f]+)"', retry)
    assert found
    return found.group(1).decode()


def first_line(entry: dict[str, Any]) -> str:
    return str(entry["sip"]).split("\r\n", 1)[0]


async def test_trace_on_a_number_during_a_run(
    make_bridge: BridgeFactory, log_lines: io.StringIO
) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "acme", username="acme", password="s3cret pass")
    await bridge.reload_trunks()
    _key, secret = await service.create_api_key(bridge.db, "ops")
    http = httpx.AsyncClient(
        base_url="http://{}:{}".format(*bridge.http_address),
        headers={"Authorization": f"Bearer {secret}"},
    )
    async with EchoAgent() as agent, http:
        await route_to(bridge, agent.url)
        await service.add_number(bridge.db, OTHER, "echo")
        await authenticated_call(bridge, NUMBER, "before")  # no trace yet

        answer = await http.post("/api/traces", json={"number": NUMBER, "duration": 600})
        assert answer.status_code == 201, answer.text
        assert answer.json()["kind"] == "number" and answer.json()["value"] == NUMBER
        assert bridge.tracer.numbers.keys() == {NUMBER}  # at once: no restart, no wait
        response = await authenticated_call(bridge, NUMBER, "traced")
        await authenticated_call(bridge, OTHER, "other")

        await service.remove_trace(bridge.db, number=NUMBER)  # as `sipbridge trace off` does
        await bridge.refresh()  # what every instance does every few seconds
        assert not bridge.tracer.numbers
        await authenticated_call(bridge, NUMBER, "after")
        calls = await records(bridge, 4)

    entries = parsed(log_lines)
    trace = [e for e in entries if e["logger"] == "sipbridge.sip.trace"]
    logged = [e for e in trace if e.get("event") == "sip_message"]
    assert {e["sip_call_id"] for e in logged} == {"traced"}, [e["message"] for e in logged]
    # A UDP retransmission (our 401 again when the ACK is slow on a loaded machine) is
    # traced too, as the same bytes: count each message once.
    seen: set[tuple[str, str]] = set()
    messages = []
    for entry in logged:
        key = (entry["direction"], entry["sip"])
        if key not in seen:
            seen.add(key)
            messages.append(entry)
    shown = [(e["direction"], first_line(e)) for e in messages]
    sent_to = f"sip:{NUMBER}@127.0.0.1"
    expected = [
        ("in", f"INVITE {sent_to} SIP/2.0"),
        ("out", "SIP/2.0 401 Unauthorized"),
        ("in", f"ACK {sent_to} SIP/2.0"),
        ("in", f"INVITE {sent_to} SIP/2.0"),
        ("out", "SIP/2.0 100 Trying"),
        ("out", "SIP/2.0 180 Ringing"),
        ("out", "SIP/2.0 200 OK"),
        ("in", "ACK sip:127.0.0.1 SIP/2.0"),
        ("in", "BYE sip:127.0.0.1 SIP/2.0"),
        ("out", "SIP/2.0 200 OK"),
    ]
    assert shown == expected, shown
    [traced] = [c for c in calls if c.sip_call_id == "traced"]
    assert traced.status is CallStatus.ANSWERED
    # Before the call existed (the 401 exchange): no call id; from the INVITE it made on.
    assert [e.get("call_id") for e in messages] == [None] * 3 + [traced.id] * 7
    server = "{}:{}".format(*bridge.sip_address)
    for entry in messages:
        assert entry["transport"] == "udp" and entry["trace"] == f"number:{NUMBER}"
        peer, ours = (entry["source"], entry["destination"])
        if entry["direction"] == "out":
            peer, ours = ours, peer
        assert ours == server and peer.startswith(f"{STRANGER_IP}:")
        assert entry["message"].startswith(f"call={entry.get('call_id') or '-'} sip=")
    # Secrets masked: the digest response and nonces, the SRTP keys both ways.
    text = log_lines.getvalue()
    assert response not in text and KEY not in text
    challenge = messages[1]["sip"]
    assert 'nonce="***"' in challenge and "WWW-Authenticate: Digest" in challenge
    invite = messages[3]["sip"]
    assert 'response="***"' in invite and 'nonce="***"' in invite and 'cnonce="***"' in invite
    assert 'username="acme"' in invite  # what is no secret stays readable
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***|2^20" in invite
    ok = messages[6]["sip"]
    assert re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:\*\*\*\r\n", ok), ok
    # The trace was announced when it came and went.
    changes = [e for e in trace if e.get("event") == "traces"]
    assert [c["numbers"] for c in changes] == [[NUMBER], []]


async def test_json_log_lines_of_a_call_carry_its_id(
    bridge: SipBridgeServer, log_lines: io.StringIO
) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-json", "json-1", 4030))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "json-1", ok.to.tag))
            await asyncio.sleep(0.1)
            client.send(client.in_dialog("BYE", 2, "json-1", ok.to.tag))
            assert (await client.final()).status == 200
        finally:
            client.close()
        [record] = await records(bridge)
    entries = parsed(log_lines)  # every line is one JSON object
    ours = [e for e in entries if e["logger"] == "sipbridge.call"]
    assert ours and all(e["call_id"] == record.id for e in ours)
    events = {e["event"]: e for e in ours}
    assert {"received", "ringing", "agent_connected", "answered", "ended"} <= events.keys()
    assert events["received"]["from"] == "+15005550006" and NUMBER in events["received"]["uri"]
    assert events["ringing"]["agent"] == "echo"
    assert events["answered"]["codec"] == "pcmu"
    assert events["ended"]["reason"] == "caller_hangup"
    assert all(e["message"].startswith(f"call={record.id} event={e['event']}") for e in ours)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in entries)
    # --log-level warning: no other logger's INFO lines, nor a trace (none is on).
    assert all(e["level"] != "INFO" for e in entries if e["logger"] != "sipbridge.call")


def test_tracer_costs_nothing_until_a_trace_is_on_and_forgets_ended_calls() -> None:
    tracer = SipTracer(lambda transport: f"{transport.value}:5060")
    assert not tracer.armed
    wall = utcnow()
    tracer.load([TraceRecord("trunk", "acme", wall, wall.replace(year=wall.year + 1))], wall, 0.0)
    assert tracer.armed and tracer.matches([None, "+1555"], "acme", 1.0) == "trunk:acme"
    assert tracer.matches(["+1555"], "other", 1.0) is None
    invite = b"INVITE sip:x SIP/2.0\r\ni: c-1\r\nContent-Length: 0\r\n\r\n"
    source = StreamAddress("192.0.2.1", 5061, Transport.TLS)
    tracer.received(invite, source)
    tracer.sent([(b"SIP/2.0 100 Trying\r\nCall-ID: c-1\r\n\r\n", source)])
    records_seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records_seen.append(record)

    handler = Keep()
    trace_logger = logging.getLogger("sipbridge.sip.trace")
    trace_logger.addHandler(handler)
    trace_logger.setLevel(logging.INFO)
    try:
        tracer.start("c-1", "call-1", "trunk:acme", 1.0)
        tracer.received(b"ACK sip:x SIP/2.0\r\nCall-ID: other\r\n\r\n", source)  # not ours
    finally:
        trace_logger.removeHandler(handler)
        trace_logger.setLevel(logging.NOTSET)
    fields = [r.fields for r in records_seen]  # type: ignore[attr-defined]
    assert [(f["direction"], f["transport"], f["source"]) for f in fields] == [
        ("in", "tls", "192.0.2.1:5061"),
        ("out", "tls", "TLS:5060"),
    ]
    # As text (the default format): one line, the message's line breaks escaped.
    line = EscapingFormatter(LOG_FORMAT).format(records_seen[0])
    assert "\n" not in line and "\r" not in line
    assert line.endswith(
        "INFO sipbridge.sip.trace call=call-1 sip=in transport=tls source=192.0.2.1:5061 "
        "destination=TLS:5060 INVITE sip:x SIP/2.0 | INVITE sip:x SIP/2.0\\r\\ni: c-1\\r\\n"
        "Content-Length: 0\\r\\n\\r\\n"
    )
    tracer.end("c-1", 2.0)
    tracer.expire(10.0, {"call-1"})
    assert "c-1" in tracer.calls  # lingers for retransmissions
    tracer.expire(40.0, set())
    assert "c-1" not in tracer.calls
    tracer.load([], wall, 41.0)
    assert not tracer.armed


async def test_trace_sync_reads_the_traces_and_traces_an_invite_to_a_traced_number(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    traces, tracer = bridge.traces, bridge.tracer
    assert traces.tracer is tracer and not tracer.armed
    await service.add_trace(bridge.db, number=NUMBER, duration=60)
    await traces.reload()
    assert tracer.numbers.keys() == {NUMBER} and tracer.armed
    client = UdpClient(bridge.sip_address)
    traced = parse_message(client.invite("z9hG4bK-t1", "traced-1", 40000))
    other = parse_message(
        client.invite("z9hG4bK-t2", "other-1", 40002).replace(NUMBER.encode(), OTHER.encode())
    )
    assert isinstance(traced, Request) and isinstance(other, Request)
    traces.invite(other, None, "call-2")
    assert "other-1" not in tracer.calls
    traces.invite(traced, None, "call-1")
    assert tracer.calls["traced-1"].call_id == "call-1"
    assert tracer.calls["traced-1"].matched == f"number:{NUMBER}"
    # Our end of a trace line: the SIP address, also for TLS when there is no TLS listener.
    host, port = bridge.sip_address
    assert traces.local(Transport.UDP) == traces.local(Transport.TLS) == f"{host}:{port}"
    await service.remove_trace(bridge.db, number=NUMBER)
    await traces.reload()
    assert not tracer.numbers and "traced-1" in tracer.calls  # its linger goes on
