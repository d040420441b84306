"""runtime/refusals.py on a started server: a rejected INVITE leaves its failed call
record, its counts and its log lines; an access refusal leaves none; a relayed one names
its proxy; an instance 503 carries Retry-After and Reason and stores its cause."""

from __future__ import annotations

import logging

import pytest

from sipbridge.runtime.refusals import DRAIN_RETRY_AFTER, TRUNK_BUSY_RETRY_AFTER
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.calls import IncomingCall, RequestRejected
from sipbridge.sip.message import Request, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import NUMBER, UdpClient, records
from tests.support.settings import BridgeFactory

CALLER = ("127.0.0.1", 5099)


def invite(bridge: SipBridgeServer, call_id: str) -> Request:
    request = parse_message(UdpClient(bridge.sip_address).invite("z9hG4bK-r1", call_id, 40000))
    assert isinstance(request, Request)
    return request


def sample(bridge: SipBridgeServer, name: str, labels: dict[str, str]) -> float | None:
    return bridge.metrics.registry.get_sample_value(name, labels)


async def test_a_rejected_invite_gets_a_record_a_count_and_a_log_line(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sipbridge.server")
    bridge = await make_bridge()
    request = invite(bridge, "rej-1")
    bridge.refusals.rejected(RequestRejected(CALLER, "INVITE", 415, "bad media", request))
    (record,) = await records(bridge)
    assert record.sip_call_id == "rej-1" and record.status is CallStatus.FAILED
    assert (record.sip_code, record.reason, record.source) == (415, "bad media", "127.0.0.1:5099")
    assert (record.from_number, record.to_number) == ("+15005550006", NUMBER)
    assert sample(bridge, "sipbridge_sip_requests_rejected_total", {"status": "415"}) == 1
    labels = {"status": "failed", "reason": "bad media"}
    assert sample(bridge, "sipbridge_calls_total", labels) == 1
    assert (
        "event=request_rejected source=127.0.0.1:5099 method=INVITE status=415 "
        "reason=bad_media" in caplog.text
    )
    assert f"call={record.id} event=refused status=415 reason=bad media" in caplog.text

    # The access policy's refusals are what scanners send: counted, logged at DEBUG, no
    # record. A trusted proxy's request is logged with the proxy and the real source.
    caplog.clear()
    scanner = RequestRejected(CALLER, "INVITE", 403, "unknown_source", request, access=True)
    bridge.refusals.rejected(scanner)
    relayed = RequestRejected(
        CALLER, "OPTIONS", None, "bad_source_header", relayed_from=("192.0.2.7", 5060)
    )
    bridge.refusals.rejected(relayed)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.WARNING]
    assert "source=192.0.2.7:5060 method=OPTIONS status=None" in caplog.text
    assert "proxy=127.0.0.1:5099" in caplog.text
    assert sample(bridge, "sipbridge_sip_requests_rejected_total", {"status": "dropped"}) == 1
    assert len(await records(bridge)) == 1


async def test_a_malformed_invite_is_recorded_with_what_could_be_read(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    head = invite(bridge, "bad-1").headers
    bridge.refusals.rejected(RequestRejected(CALLER, "INVITE", 400, "bad header", headers=head))
    (record,) = await records(bridge)
    assert (record.sip_call_id, record.sip_code, record.reason) == (
        "bad-1",
        400,
        "malformed_request",
    )
    assert (record.from_number, record.to_number) == ("+15005550006", NUMBER)


@pytest.mark.parametrize(
    ("reason", "retry_after", "cause"),
    [
        ("unhealthy", TRUNK_BUSY_RETRY_AFTER, "no_agent_reachable"),
        ("draining", DRAIN_RETRY_AFTER, None),
    ],
)
async def test_refuse_busy_answers_503_and_records_the_cause(
    make_bridge: BridgeFactory, reason: str, retry_after: int, cause: str | None
) -> None:
    bridge = await make_bridge()
    client = UdpClient(bridge.sip_address)
    # The UA core's call for the client's INVITE, handed to the core directly (as the
    # server's receive() does) so that the server does not dispatch it itself.
    data = client.invite("z9hG4bK-b1", "busy-1", 40002)
    assert bridge.ua.receive_datagram(data, ("127.0.0.1", client.port), bridge.loop.time())
    (incoming,) = [e for e in bridge.ua.events() if isinstance(e, IncomingCall)]
    bridge.refusals.refuse_busy(incoming.call, reason, retry_after, cause=cause)
    bridge.flush()
    response = await client.final()
    assert response.status == 503
    assert response.headers.get("Retry-After") == str(retry_after)
    assert response.headers.get("Reason") == f'SIP ;cause=503 ;text="{reason}"'
    (record,) = await records(bridge)
    assert (record.id, record.sip_code, record.reason) == (incoming.call.id, 503, reason)
    detail = await service.get_call(bridge.db, record.id)
    refusals = [e.data for e in detail.events if e.kind == "refusal"]
    assert refusals == ([{"cause": cause}] if cause else [])
