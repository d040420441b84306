"""The UAS core with byte fixtures and a fake clock."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from sipbridge.sip.access import AccessPolicy, TrunkAccess
from sipbridge.sip.auth import DigestAuthenticator, digest_response
from sipbridge.sip.calls import (
    AckTimeout,
    ByeCompleted,
    ByeReceived,
    CallCancelled,
    CallConfirmed,
    CallState,
    InboundCall,
    IncomingCall,
    InfoReceived,
    NotifyReceived,
    ReferCompleted,
    ReInviteReceived,
    RequestAnswered,
    RequestRejected,
    sipfrag_status,
)
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.guard import GuardLimits, SourceGuard
from sipbridge.sip.message import Headers, Request, Response, parse_message
from sipbridge.sip.proxy import TrustedProxies
from sipbridge.sip.transaction import TIMER_F, TIMER_L
from sipbridge.sip.ua import IN_DIALOG_EXEMPTIONS, UserAgent, _timer_deadline

PEER = ("127.0.0.1", 5070)


def torture_dir() -> Path:
    override = os.environ.get("SIPBRIDGE_TESTDATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


def make_ua() -> UserAgent:
    counter = itertools.count(1)
    return UserAgent("127.0.0.1", 5060, new_token=lambda: f"t{next(counter)}")


def invite(
    branch: str = "z9hG4bK-1",
    call_id: str = "call-1",
    extra: str = "",
    body: bytes = b"v=0\r\n",
    method: str = "INVITE",
    cseq: int = 1,
    to_tag: str = "",
) -> bytes:
    head = (
        f"{method} sip:+12025550101@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.9:5070;branch={branch};rport\r\n"
        "From: Alice <sip:alice@127.0.0.1:5070>;tag=a1\r\n"
        f"To: <sip:+12025550101@127.0.0.1>{to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        "Record-Route: <sip:proxy.example.com;lr>\r\n"
        "Max-Forwards: 70\r\n"
        + extra
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def in_dialog(
    method: str, cseq: int, local_tag: str, branch: str, call_id: str = "call-1"
) -> bytes:
    return (
        f"{method} sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "From: Alice <sip:alice@127.0.0.1:5070>;tag=a1\r\n"
        f"To: <sip:+12025550101@127.0.0.1>;tag={local_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class EchoedError:
    """An error response that repeats the broken header it answers: only its status line."""

    def __init__(self, data: bytes) -> None:
        self.status = int(data.split(b" ", 2)[1])
        self.headers = Headers()
        for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
            name, _, value = line.decode("utf-8", "replace").partition(":")
            self.headers.add(name.strip(), value.strip())


def sent(ua: UserAgent) -> list[tuple[Request | Response, tuple[str, int]]]:
    out: list[tuple[Request | Response, tuple[str, int]]] = []
    for data, addr in ua.datagrams_to_send():
        try:
            out.append((parse_message(data), addr))
        except SipParseError:
            out.append((EchoedError(data), addr))  # type: ignore[arg-type]
    return out


def statuses(ua: UserAgent) -> list[int]:
    return [m.status for m, _ in sent(ua) if isinstance(m, (Response, EchoedError))]


def new_call(ua: UserAgent, now: float = 0.0, **kwargs: object) -> IncomingCall:
    ua.receive_datagram(invite(**kwargs), PEER, now)  # type: ignore[arg-type]
    events = ua.events()
    assert len(events) == 1 and isinstance(events[0], IncomingCall), events
    return events[0]


class TestInvite:
    def test_100_at_once_with_received_and_rport(self) -> None:
        ua = make_ua()
        event = new_call(ua)
        [(response, addr)] = sent(ua)
        assert isinstance(response, Response) and response.status == 100
        assert addr == PEER  # the source address, not the Via's 10.0.0.9
        via = response.vias[0]
        assert via.params["received"] == "127.0.0.1"
        assert via.params["rport"] == "5070"
        assert response.to.tag is None
        assert event.call.state is CallState.OFFERED

    def test_retransmitted_invite_makes_one_call(self) -> None:
        ua = make_ua()
        new_call(ua)
        ua.datagrams_to_send()
        ua.receive_datagram(invite(), PEER, 0.5)
        assert ua.events() == []
        assert statuses(ua) == [100]  # repeated from the transaction

    def test_late_retransmission_after_answer_makes_no_call(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.datagrams_to_send()
        ua.receive_datagram(invite(), PEER, 0.2)
        assert ua.events() == []
        assert statuses(ua) == []  # absorbed in Accepted (RFC 6026)

    def test_merged_request_gets_482(self) -> None:
        ua = make_ua()
        new_call(ua)
        ua.datagrams_to_send()
        ua.receive_datagram(invite(branch="z9hG4bK-other"), PEER, 0.1)
        assert statuses(ua) == [482]

    def test_ring_answer_ack_bye_from_caller(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.datagrams_to_send()
        ua.ring(call, 0.1)
        ua.answer(call, b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n", 0.2)
        out = sent(ua)
        ringing, ok = out[0][0], out[1][0]
        assert isinstance(ringing, Response) and ringing.status == 180
        assert isinstance(ok, Response) and ok.status == 200
        assert ringing.to.tag == ok.to.tag == call.local_tag
        assert ok.headers.get("Contact") == "<sip:127.0.0.1:5060>"
        assert ok.headers.get_all("Record-Route") == ["<sip:proxy.example.com;lr>"]
        assert ok.body.startswith(b"v=0")
        assert ok.headers.get("Content-Type") == "application/sdp"
        # 2xx retransmitted until ACK
        ua.handle_timer(0.7)
        assert statuses(ua) == [200]
        ack = in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack")
        ua.receive_datagram(ack, PEER, 0.8)
        assert [type(e) for e in ua.events()] == [CallConfirmed]
        assert call.state is CallState.CONFIRMED
        ua.handle_timer(5.0)
        assert statuses(ua) == []  # no more 2xx after the ACK
        ua.receive_datagram(in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye"), PEER, 6.0)
        assert [type(e) for e in ua.events()] == [ByeReceived]
        assert statuses(ua) == [200]
        # the BYE retransmitted: answered from the transaction, no second event
        ua.receive_datagram(in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye"), PEER, 6.5)
        assert ua.events() == []
        assert statuses(ua) == [200]
        assert call.state is CallState.ENDED

    def test_no_ack_means_ack_timeout(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        now = 0.0
        events: list[object] = []
        while (deadline := ua.get_timer()) is not None and deadline <= TIMER_L + 1:
            now = deadline
            ua.handle_timer(now)
            events += ua.events()
        assert [type(e) for e in events] == [AckTimeout]

    def test_hangup_sends_bye_along_route_set(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.events()
        ua.datagrams_to_send()
        ua.hangup(call, 1.0)
        [(bye, addr)] = sent(ua)
        assert isinstance(bye, Request) and bye.method == "BYE"
        assert addr == ("proxy.example.com", 5060)  # first Record-Route (loose routing)
        assert str(bye.uri) == "sip:alice@127.0.0.1:5070"
        assert bye.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
        assert bye.from_.tag == call.local_tag
        assert bye.to.tag == "a1"
        assert bye.cseq.method == "BYE"
        assert bye.call_id == "call-1"
        # retransmitted (Timer E), then the 200 completes it
        ua.handle_timer(1.5)
        assert len(sent(ua)) == 1
        ok = (
            "SIP/2.0 200 OK\r\n"
            f"Via: {bye.headers.get('Via')}\r\n"
            f"From: {bye.headers.get('From')}\r\nTo: {bye.headers.get('To')}\r\n"
            f"Call-ID: call-1\r\nCSeq: {bye.cseq.seq} BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        ua.receive_datagram(ok, PEER, 1.6)
        [done] = ua.events()
        assert isinstance(done, ByeCompleted) and done.status == 200
        assert call.state is CallState.ENDED

    def test_bye_without_answer_times_out(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.events()
        ua.hangup(call, 1.0)
        events: list[object] = []
        while (deadline := ua.get_timer()) is not None and deadline <= 1.0 + TIMER_F + 1:
            ua.handle_timer(deadline)
            events += ua.events()
        byes = [e for e in events if isinstance(e, ByeCompleted)]
        assert len(byes) == 1 and byes[0].status is None

    def test_cancel_before_answer(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.datagrams_to_send()
        cancel = invite(method="CANCEL", body=b"")
        ua.receive_datagram(cancel, PEER, 0.5)
        assert [type(e) for e in ua.events()] == [CallCancelled]
        assert statuses(ua) == [200, 487]
        assert call.final_status == 487
        # ACK for the 487 belongs to the INVITE transaction: absorbed quietly
        ack = invite(method="ACK", body=b"", to_tag=f";tag={call.local_tag}")
        ua.receive_datagram(ack, PEER, 0.6)
        assert ua.events() == []
        assert statuses(ua) == []
        # answering afterwards is refused
        with pytest.raises(RuntimeError):
            ua.answer(call, b"v=0\r\n", 0.7)

    def test_cancel_unknown_gets_481(self) -> None:
        ua = make_ua()
        ua.receive_datagram(invite(method="CANCEL", body=b""), PEER, 0.0)
        assert statuses(ua) == [481]

    def test_reject_carries_headers(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.datagrams_to_send()
        ua.reject(call, 480, 0.1, headers=[("Reason", 'SIP ;cause=480 ;text="x"')])
        [(response, _)] = sent(ua)
        assert isinstance(response, Response) and response.status == 480
        assert response.headers.get("Reason") == 'SIP ;cause=480 ;text="x"'
        assert response.to.tag == call.local_tag

    def test_reinvite_answered_by_the_call_layer(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\nanswer\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.events()
        ua.datagrams_to_send()
        reinvite = invite(branch="z9hG4bK-re", cseq=2, to_tag=f";tag={call.local_tag}")
        ua.receive_datagram(reinvite, PEER, 1.0)
        [event] = ua.events()
        assert isinstance(event, ReInviteReceived) and event.request.cseq.seq == 2
        assert statuses(ua) == [100]
        # a second re-INVITE while the first is pending: 500 with Retry-After (§14.2)
        other = invite(branch="z9hG4bK-re3", cseq=3, to_tag=f";tag={call.local_tag}")
        ua.receive_datagram(other, PEER, 1.01)
        [(busy, _)] = sent(ua)
        assert busy.status == 500 and busy.headers.get("Retry-After") == "1"
        ua.answer_reinvite(call, b"v=0\r\nanswer2\r\n", 1.02)
        [(ok, _)] = sent(ua)
        assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.seq == 2
        assert ok.body == b"v=0\r\nanswer2\r\n" and ok.to.tag == call.local_tag
        assert call.local_sdp == b"v=0\r\nanswer2\r\n"
        ua.handle_timer(1.6)  # not ACKed yet: the 200 is retransmitted (and the 500)
        assert sorted(statuses(ua)) == [200, 500]
        ua.receive_datagram(in_dialog("ACK", 2, call.local_tag, "z9hG4bK-ack2"), PEER, 1.7)
        ua.handle_timer(3.0)
        ua.handle_timer(10.0)
        assert 200 not in statuses(ua)
        assert call.state is CallState.CONFIRMED

    def test_reinvite_rejected_keeps_the_call(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.events()
        ua.datagrams_to_send()
        reinvite = invite(branch="z9hG4bK-re", cseq=2, to_tag=f";tag={call.local_tag}")
        ua.receive_datagram(reinvite, PEER, 1.0)
        ua.events()
        ua.reject_reinvite(call, 488, 1.1)
        assert statuses(ua) == [100, 488]
        assert call.state is CallState.CONFIRMED

    def test_info_in_dialog_is_answered_and_reported(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.events()
        ua.datagrams_to_send()
        info = in_dialog("INFO", 2, call.local_tag, "z9hG4bK-info")
        ua.receive_datagram(info, PEER, 1.0)
        [event] = ua.events()
        assert isinstance(event, InfoReceived) and event.call is call
        assert statuses(ua) == [200]
        ua.receive_datagram(in_dialog("INFO", 3, "nope", "z9hG4bK-i2"), PEER, 1.1)
        assert statuses(ua) == [481]


class TestTransfer:
    def _confirmed(self) -> tuple[UserAgent, InboundCall]:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.events()
        ua.datagrams_to_send()
        return ua, call

    def test_refer_then_notify_progress(self) -> None:
        ua, call = self._confirmed()
        assert ua.refer(call, "tel:+15551230000", 1.0, {"X-Reason": "sales"})
        [(refer, addr)] = sent(ua)
        assert isinstance(refer, Request) and refer.method == "REFER"
        assert addr == ("proxy.example.com", 5060)
        assert refer.headers.get("Refer-To") == "<tel:+15551230000>"
        assert refer.headers.get("X-Reason") == "sales"
        assert refer.headers.get("Contact") == "<sip:127.0.0.1:5060>"
        assert refer.from_.tag == call.local_tag and refer.to.tag == "a1"
        accepted = (
            "SIP/2.0 202 Accepted\r\n"
            f"Via: {refer.headers.get('Via')}\r\n"
            f"From: {refer.headers.get('From')}\r\nTo: {refer.headers.get('To')}\r\n"
            f"Call-ID: call-1\r\nCSeq: {refer.cseq.seq} REFER\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        ua.receive_datagram(accepted, PEER, 1.1)
        [done] = ua.events()
        assert isinstance(done, ReferCompleted) and done.status == 202
        body = b"SIP/2.0 200 OK\r\n"
        notify = in_dialog("NOTIFY", 2, call.local_tag, "z9hG4bK-n1").replace(
            b"Content-Length: 0\r\n\r\n",
            b"Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n"
            b"Content-Type: message/sipfrag\r\nContent-Length: 16\r\n\r\n" + body,
        )
        ua.receive_datagram(notify, PEER, 1.5)
        [event] = ua.events()
        assert isinstance(event, NotifyReceived)
        assert event.sipfrag_status == 200 and event.terminated
        assert statuses(ua) == [200]

    def test_refer_needs_an_answered_call(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        assert not ua.refer(call, "sip:x@example.com", 0.1)

    def test_refer_timeout_reported(self) -> None:
        ua, call = self._confirmed()
        ua.refer(call, "sip:x@example.com", 1.0)
        events: list[object] = []
        while (deadline := ua.get_timer()) is not None and deadline < 60:
            ua.handle_timer(deadline)
            events += ua.events()
        assert [type(e) for e in events if isinstance(e, ReferCompleted)] == [ReferCompleted]
        assert events[-1].status is None  # type: ignore[attr-defined]
        assert call.state is CallState.CONFIRMED  # the call itself goes on


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"SIP/2.0 100 Trying\r\n", 100),
        (b"SIP/2.0 603 Declined", 603),
        (b"INVITE sip:x SIP/2.0\r\n", None),
        (b"", None),
        (b"SIP/2.0 999 Nope\r\n", None),
    ],
)
def test_sipfrag_status(body: bytes, status: int | None) -> None:
    assert sipfrag_status(body) == status


class TestOutOfDialog:
    def test_options_200_with_allow(self) -> None:
        ua = make_ua()
        ua.receive_datagram(invite(method="OPTIONS", body=b""), PEER, 0.0)
        [(response, addr)] = sent(ua)
        assert isinstance(response, Response) and response.status == 200
        assert "INVITE" in response.headers.get_all("Allow")
        assert addr == PEER
        for name in ("Server", "User-Agent"):
            assert response.headers.get(name) is None

    def test_options_503_while_busy_says_why_and_when_to_retry(self) -> None:
        """A proxy's OPTIONS probe (RFC 3261 §11.2) gets the answer a new INVITE would:
        503 with Retry-After (§21.5.4) and the cause in a Reason header (RFC 3326)."""
        ua = make_ua()
        ua.set_busy("draining", 30)
        ua.receive_datagram(invite(method="OPTIONS", body=b"", branch="z9hG4bK-o1"), PEER, 0.0)
        [(response, _)] = sent(ua)
        assert isinstance(response, Response) and response.status == 503
        assert response.headers.get("Retry-After") == "30"
        assert response.headers.get("Reason") == 'SIP ;cause=503 ;text="draining"'
        assert response.headers.get("Allow") is None
        ua.set_busy("unhealthy")
        ua.receive_datagram(invite(method="OPTIONS", body=b"", branch="z9hG4bK-o2"), PEER, 0.1)
        [(response, _)] = sent(ua)
        assert isinstance(response, Response) and response.status == 503
        assert response.headers.get("Retry-After") == "5"
        assert response.headers.get("Reason") == 'SIP ;cause=503 ;text="unhealthy"'
        ua.set_busy(None)
        assert not ua.busy
        ua.receive_datagram(invite(method="OPTIONS", body=b"", branch="z9hG4bK-o3"), PEER, 0.2)
        assert statuses(ua) == [200]

    def test_options_in_a_dialog_stays_200_while_busy(self) -> None:
        """A busy instance still serves its calls: only probes outside a dialog get 503."""
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.datagrams_to_send()
        ua.set_busy("draining", 30)
        ua.events()
        ua.receive_datagram(in_dialog("OPTIONS", 2, call.local_tag, "z9hG4bK-io"), PEER, 0.2)
        assert statuses(ua) == [200]
        [answered] = ua.events()  # answered by the core: nothing for the call layer to do
        assert isinstance(answered, RequestAnswered) and answered.call is call
        assert (answered.request.method, answered.status) == ("OPTIONS", 200)

    def test_unknown_method_501_with_allow(self) -> None:
        ua = make_ua()
        ua.receive_datagram(invite(method="SUBSCRIBE", body=b""), PEER, 0.0)
        [(response, _)] = sent(ua)
        assert isinstance(response, Response) and response.status == 501
        allow = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "NOTIFY", "UPDATE", "PRACK"]
        assert response.headers.get_all("Allow") == allow
        assert isinstance(ua.events()[0], RequestRejected)

    def test_bye_for_unknown_dialog_481(self) -> None:
        ua = make_ua()
        ua.receive_datagram(in_dialog("BYE", 5, "nope", "z9hG4bK-x"), PEER, 0.0)
        assert statuses(ua) == [481]

    def test_stray_ack_dropped(self) -> None:
        ua = make_ua()
        ua.receive_datagram(in_dialog("ACK", 5, "nope", "z9hG4bK-x"), PEER, 0.0)
        assert sent(ua) == []

    def test_keepalive_ignored(self) -> None:
        ua = make_ua()
        ua.receive_datagram(b"\r\n\r\n", PEER, 0.0)
        assert sent(ua) == [] and ua.events() == []

    def test_garbage_dropped_and_server_goes_on(self) -> None:
        ua = make_ua()
        ua.receive_datagram(b"\x00\xff garbage", PEER, 0.0)
        assert sent(ua) == []
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status is None
        new_call(ua)

    def test_transactions_are_forgotten(self) -> None:
        ua = make_ua()
        ua.receive_datagram(invite(method="OPTIONS", body=b""), PEER, 0.0)
        assert ua.active_transactions == 1
        ua.handle_timer(100.0)
        assert ua.active_transactions == 0


# RFC 4475 / RFC 5118 through the whole UA core: what goes back, and never a crash.
EXPECTED: dict[str, int | None] = {
    # valid, handled normally: OPTIONS → 200, INVITE → a call, others per method
    "wsinv": 481,  # carries a To tag: an in-dialog request for a dialog we do not have
    "intmeth": 501,
    "esc01": 0,
    "escnull": 501,  # REGISTER: not a registrar
    "esc02": 501,
    "lwsdisp": 200,
    "longreq": 0,
    "dblreq": 501,  # REGISTER: not a registrar
    "semiuri": 200,
    "transports": 200,
    "mpart01": 501,  # MESSAGE
    "unreason": None,  # a response: dropped
    "noreason": None,
    # invalid → 400
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "mismatch01": 400,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
    "badvers": 505,
    "scalarlg": None,
    "bigcode": None,
    # application layer
    "unkscm": 416,
    "novelsc": 416,
    "bext01": 420,
    "invut": 415,
    "sdp01": 415,
    "zeromf": 200,
    "regaut01": 501,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_through_ua(name: str) -> None:
    path = torture_dir() / "rfc4475" / f"{name}.dat"
    data = path.read_bytes()
    ua = make_ua()
    ua.receive_datagram(data, PEER, 0.0)
    out = sent(ua)
    events = ua.events()
    for _, addr in out:
        assert addr == PEER  # never anywhere we did not hear from
    expected = EXPECTED[name]
    method = data.split(b" ", 1)[0].decode("latin-1")
    if expected == 0:
        assert method == "INVITE"
        assert any(isinstance(e, IncomingCall) for e in events), (name, out)
    elif expected is None:
        assert out == []
    else:
        got = [m.status for m, _ in out if isinstance(m, (Response, EchoedError))]
        assert got and got[-1] == expected, (name, got)
        assert not any(isinstance(e, IncomingCall) for e in events)
        if expected == 501:
            assert "INVITE" in out[-1][0].headers.get_all("Allow")
        if expected == 420:
            assert out[-1][0].headers.get("Unsupported")
        if expected == 415:
            assert out[-1][0].headers.get("Accept") == "application/sdp"
    # the UA still serves the next request normally
    ua.receive_datagram(invite(method="OPTIONS", body=b"", call_id="after"), PEER, 1.0)
    assert statuses(ua) == [200]


@pytest.mark.parametrize(
    "path", sorted((torture_dir() / "rfc4475").glob("*.dat")), ids=lambda p: p.stem
)
def test_every_torture_message_keeps_ua_serving(path: Path) -> None:
    ua = make_ua()
    ua.receive_datagram(path.read_bytes(), PEER, 0.0)
    for _, addr in sent(ua):
        assert addr == PEER
    ua.receive_datagram(invite(method="OPTIONS", body=b"", call_id="after"), PEER, 1.0)
    assert statuses(ua) == [200]


# ---------------------------------------------------------------- access policy


STRANGER = ("192.0.2.66", 5060)
CARRIER = ("203.0.113.5", 5060)


def guarded_ua(*trunks: TrunkAccess, refuse_status: int | None = None) -> UserAgent:
    ua = make_ua()
    ua.access = AccessPolicy(DigestAuthenticator("r", b"k" * 32), refuse_status=refuse_status)
    ua.access.set_trunks(trunks)
    return ua


class TestAccess:
    def test_without_policy_everyone_is_served(self) -> None:
        ua = make_ua()
        ua.receive_datagram(invite(), STRANGER, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall]

    @pytest.mark.parametrize(
        "data",
        [
            invite(),
            invite(method="OPTIONS", body=b""),
            invite(method="BYE", body=b""),
            invite(method="REGISTER", body=b""),
            invite(method="CANCEL", body=b""),
            in_dialog("BYE", 2, "nosuchtag", "z9hG4bK-b"),
            invite(extra="Require: precondition\r\n"),
            b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-x\r\n\r\n",
        ],
    )
    def test_strangers_get_nothing(self, data: bytes) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        ua.receive_datagram(data, STRANGER, 0.0)
        assert ua.datagrams_to_send() == []
        [event] = ua.events()
        assert isinstance(event, RequestRejected)
        assert event.status is None and event.access and event.reason == "unknown_source"
        assert ua.active_transactions == 0

    def test_strangers_get_403_when_configured(self) -> None:
        ua = guarded_ua(refuse_status=403)
        ua.receive_datagram(invite(), STRANGER, 0.0)
        assert statuses(ua) == [403]
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status == 403 and event.access
        # a retransmission is answered from the transaction, not judged again
        ua.receive_datagram(invite(), STRANGER, 0.5)
        assert statuses(ua) == [403] and ua.events() == []

    def test_trunk_source_is_served_and_named(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        ua.receive_datagram(invite(), CARRIER, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall) and event.call.trunk == "carrier"
        ua.receive_datagram(invite(method="OPTIONS", body=b"", branch="z9hG4bK-o"), CARRIER, 0)
        assert statuses(ua) == [100, 200]
        # a broken request from a known source still gets its 400
        ua.receive_datagram(
            b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-x\r\n\r\n",
            CARRIER,
            0.0,
        )
        assert statuses(ua) == [400]

    def test_refusal_after_admission_names_the_trunk(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        ua.receive_datagram(invite(extra="Require: precondition\r\n"), CARRIER, 0.0)
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status == 420
        assert not event.access and event.trunk == "carrier"

    def test_no_trunks_means_loopback_only(self) -> None:
        ua = guarded_ua()
        ua.receive_datagram(invite(), PEER, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall) and event.call.trunk is None
        ua.receive_datagram(invite(branch="z9hG4bK-2", call_id="c2"), STRANGER, 0.0)
        assert [e.reason for e in ua.events()] == ["unknown_source"]  # type: ignore[attr-defined]

    def test_digest_challenge_ack_and_authenticated_retry(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("acme", [], "acme", "pw"))
        ua.receive_datagram(invite(), STRANGER, 0.0)
        [(challenge, addr)] = sent(ua)
        assert isinstance(challenge, Response) and challenge.status == 401 and addr == STRANGER
        values = challenge.headers.get_lines("WWW-Authenticate")
        assert len(values) == 2 and "algorithm=SHA-256" in values[0]
        assert challenge.to.tag  # a final response carries a To tag
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status == 401
        assert event.reason == "auth_required" and event.access
        # the ACK for the 401 is absorbed by its transaction
        ack = invite(method="ACK", body=b"", to_tag=f";tag={challenge.to.tag}")
        ua.receive_datagram(ack, STRANGER, 0.1)
        assert sent(ua) == [] and ua.events() == []
        nonce = values[0].split('nonce="')[1].split('"')[0]
        uri = "sip:+12025550101@127.0.0.1"
        response = digest_response(
            algorithm="SHA-256",
            username="acme",
            realm="r",
            password="pw",
            method="INVITE",
            uri=uri,
            nonce=nonce,
            nc="00000001",
            cnonce="x",
        )
        authorization = (
            f'Authorization: Digest username="acme", realm="r", nonce="{nonce}", '
            f'uri="{uri}", response="{response}", algorithm=SHA-256, qop=auth, '
            'nc=00000001, cnonce="x"\r\n'
        )
        retry = invite(branch="z9hG4bK-2", cseq=2, extra=authorization)
        ua.receive_datagram(retry, STRANGER, 0.2)
        [event] = ua.events()
        assert isinstance(event, IncomingCall) and event.call.trunk == "acme"
        # in-dialog requests and CANCEL of the admitted call need no credentials
        ua.receive_datagram(
            invite(method="CANCEL", body=b"", branch="z9hG4bK-2", cseq=2), STRANGER, 0.3
        )
        assert [type(e) for e in ua.events()] == [CallCancelled]

    def test_in_dialog_requests_pass_without_credentials(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        ua.receive_datagram(invite(), CARRIER, 0.0)
        [event] = ua.events()
        call = event.call  # type: ignore[attr-defined]
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.datagrams_to_send()
        # the caller's BYE arriving from another address of the provider still ends it
        ua.receive_datagram(in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye"), STRANGER, 1.0)
        assert [type(e) for e in ua.events()] == [ByeReceived]
        assert statuses(ua) == [200]


class TestAdmitted:
    """``receive_datagram`` says whether a message was admitted: what keeps a stream from
    an unknown source open (runtime/transports.py)."""

    def test_refused_dropped_and_broken_requests_are_not_admitted(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        assert not ua.receive_datagram(invite(), STRANGER, 0.0)  # unknown source
        assert not ua.receive_datagram(invite(method="OPTIONS", body=b""), STRANGER, 0.0)
        assert not ua.receive_datagram(b"garbage\r\n\r\n", STRANGER, 0.0)
        assert not ua.receive_datagram(b"\r\n\r\n", CARRIER, 0.0)  # a keep-alive
        ua.guard = SourceGuard(GuardLimits(scanner_user_agents=("friendly-scanner",)))
        scanner = invite(branch="z9hG4bK-s", extra="User-Agent: friendly-scanner\r\n")
        assert not ua.receive_datagram(scanner, CARRIER, 0.0)
        # a known source's request refused by validation is not admitted either
        assert not ua.receive_datagram(invite(extra="Require: precondition\r\n"), CARRIER, 0.0)
        # a stray response (no transaction of ours) is dropped
        assert not ua.receive_datagram(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-zz\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n"
            b"Content-Length: 0\r\n\r\n",
            CARRIER,
            0.0,
        )

    def test_challenge_retransmission_and_ack_are_not_admitted(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("acme", [], "acme", "pw"))
        assert not ua.receive_datagram(invite(), STRANGER, 0.0)  # 401
        [(challenge, _addr)] = sent(ua)
        assert isinstance(challenge, Response) and challenge.status == 401
        # its retransmission is answered from the transaction, and not admitted
        assert not ua.receive_datagram(invite(), STRANGER, 0.1)
        ack = invite(method="ACK", body=b"", to_tag=f";tag={challenge.to.tag}")
        assert not ua.receive_datagram(ack, STRANGER, 0.2)

    def test_admitted_requests(self) -> None:
        ua = guarded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        assert ua.receive_datagram(invite(method="OPTIONS", body=b""), CARRIER, 0.0)
        assert ua.receive_datagram(invite(branch="z9hG4bK-i", call_id="c2"), CARRIER, 0.0)
        [incoming] = ua.events()
        assert isinstance(incoming, IncomingCall)
        call = incoming.call
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.datagrams_to_send()
        ack = in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack", call_id="c2")
        assert ua.receive_datagram(ack, STRANGER, 0.2)  # an admitted call's ACK
        bye = in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye", call_id="c2")
        assert ua.receive_datagram(bye, STRANGER, 0.3)


@pytest.mark.parametrize(
    "contact",
    [
        '"Caller" <ip:caller@[2001:db8::9:1]>',
        "<tel:+15551230000>",
        "*",
        "<sip:a@example.com>, <sip:b@example.com>",
    ],
)
def test_invite_whose_contact_we_cannot_send_to_gets_400(contact: str) -> None:
    ua = make_ua()
    data = invite().replace(b"Contact: <sip:alice@127.0.0.1:5070>", f"Contact: {contact}".encode())
    ua.receive_datagram(data, PEER, 0.0)
    assert statuses(ua) == [400]
    assert not any(isinstance(e, IncomingCall) for e in ua.events())


def test_invite_without_contact_gets_400() -> None:
    ua = make_ua()
    data = invite().replace(b"Contact: <sip:alice@127.0.0.1:5070>\r\n", b"")
    ua.receive_datagram(data, PEER, 0.0)
    assert statuses(ua) == [400]


class TestStreamTransports:
    """A call over TCP/TLS: answers and our requests on its connection, Via and Contact
    per transport (RFC 3261 §18.2.2, §19.1.1; RFC 5630), sips: only over TLS."""

    def test_tcp_call_answers_and_bye_on_the_connection(self) -> None:
        ua = make_ua()
        source = StreamAddress("127.0.0.1", 40001, Transport.TCP)
        ua.receive_datagram(invite(), source, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall) and event.call.transport is Transport.TCP
        ua.answer(event.call, b"v=0\r\n", 0.0)
        out = sent(ua)
        assert all(isinstance(addr, StreamAddress) and addr is source for _, addr in out)
        ok = out[-1][0]
        assert isinstance(ok, Response) and ok.status == 200
        assert ok.headers.get("Contact") == "<sip:127.0.0.1:5060;transport=tcp>"
        ack = in_dialog("ACK", 1, event.call.local_tag, "z9hG4bK-ack")
        ua.receive_datagram(ack, source, 0.5)
        ua.events()
        ua.hangup(event.call, 1.0)
        [(bye, addr)] = sent(ua)
        assert isinstance(bye, Request) and bye.method == "BYE"
        assert bye.vias[0].transport == "TCP" and bye.vias[0].port == 5060
        # The call's connection, and where to connect when it is gone: the next hop.
        assert isinstance(addr, StreamAddress) and addr == ("127.0.0.1", 40001)
        assert addr.transport is Transport.TCP and addr.target == ("proxy.example.com", 5060)

    def test_tls_call_contact_is_sips_on_the_tls_port(self) -> None:
        ua = make_ua()
        ua.tls_port = 5161
        source = StreamAddress("127.0.0.1", 40002, Transport.TLS)
        ua.receive_datagram(invite().replace(b"INVITE sip:", b"INVITE sips:", 1), source, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        ua.answer(event.call, b"v=0\r\n", 0.0)
        ok = sent(ua)[-1][0]
        assert ok.headers.get("Contact") == "<sips:127.0.0.1:5161>"
        assert ua.refer(event.call, "sip:+12025550199@127.0.0.1", 1.0)
        [(refer, addr)] = sent(ua)
        assert isinstance(refer, Request) and refer.vias[0].transport == "TLS"
        assert refer.vias[0].port == 5161 and refer.headers.get("Contact") == ok.headers.get(
            "Contact"
        )
        assert isinstance(addr, StreamAddress) and addr.transport is Transport.TLS

    @pytest.mark.parametrize(
        ("change", "contact"),
        [
            # sip:...;transport=tls dialling (many trunks, baresip): the dialog stays sip:
            ((b"", b""), "<sip:127.0.0.1:5161;transport=tls>"),
            # RFC 3261 §12.1.1: a SIPS top Record-Route makes the dialog SIPS...
            (
                (b"<sip:proxy.example.com;lr>", b"<sips:proxy.example.com;lr>"),
                "<sips:127.0.0.1:5161>",
            ),
        ],
        ids=["sip-uri", "sips-record-route"],
    )
    def test_tls_contact_follows_the_dialogs_scheme(
        self, change: tuple[bytes, bytes], contact: str
    ) -> None:
        ua = make_ua()
        ua.tls_port = 5161
        source = StreamAddress("127.0.0.1", 40004, Transport.TLS)
        ua.receive_datagram(invite().replace(*change), source, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        ua.answer(event.call, b"v=0\r\n", 0.0)
        assert sent(ua)[-1][0].headers.get("Contact") == contact

    def test_tls_contact_is_sips_for_a_sips_contact_without_record_route(self) -> None:
        ua = make_ua()
        ua.tls_port = 5161
        data = invite().replace(b"Record-Route: <sip:proxy.example.com;lr>\r\n", b"")
        data = data.replace(b"Contact: <sip:alice@", b"Contact: <sips:alice@")
        ua.receive_datagram(data, StreamAddress("127.0.0.1", 40005, Transport.TLS), 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        ua.answer(event.call, b"v=0\r\n", 0.0)
        assert sent(ua)[-1][0].headers.get("Contact") == "<sips:127.0.0.1:5161>"

    @pytest.mark.parametrize(
        "source", [PEER, StreamAddress("127.0.0.1", 40003, Transport.TCP)], ids=["udp", "tcp"]
    )
    def test_sips_request_uri_without_tls_gets_416(self, source: tuple[str, int]) -> None:
        ua = make_ua()
        ua.receive_datagram(invite().replace(b"INVITE sip:", b"INVITE sips:", 1), source, 0.0)
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status == 416
        assert event.reason == "sips_without_tls"
        assert statuses(ua) == [416]

    def test_udp_call_is_unchanged(self) -> None:
        ua = make_ua()
        event = new_call(ua)
        assert event.call.transport is Transport.UDP
        ua.answer(event.call, b"v=0\r\n", 0.0)
        ok = sent(ua)[-1]
        assert ok[0].headers.get("Contact") == "<sip:127.0.0.1:5060>"
        assert not isinstance(ok[1], StreamAddress)


def shielded_ua(*trunks: TrunkAccess, **limits: object) -> UserAgent:
    """A UA with an access policy and a SourceGuard trusting the trunks' networks."""
    ua = guarded_ua(*trunks)
    assert ua.access is not None
    values: dict[str, object] = {"scanner_user_agents": ("friendly-scanner", "sipvicious")}
    values.update(limits)
    ua.guard = SourceGuard(GuardLimits(**values), trusted=ua.access.knows)  # type: ignore[arg-type]
    return ua


def bad_credentials(n: int) -> str:
    return (
        'Authorization: Digest username="acme", realm="r", nonce="forged-nonce", '
        f'uri="sip:+12025550101@127.0.0.1", response="{n:032x}", algorithm=MD5\r\n'
    )


class TestGuard:
    def test_scanner_user_agent_is_dropped_and_banned(self) -> None:
        ua = shielded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        assert ua.guard is not None
        ua.receive_datagram(
            invite(method="OPTIONS", body=b"", extra="User-Agent: friendly-scanner\r\n"),
            STRANGER,
            0.0,
        )
        assert ua.datagrams_to_send() == []
        [event] = ua.events()
        assert isinstance(event, RequestRejected)
        assert (event.status, event.reason, event.access) == (None, "scanner", True)
        assert [b.reason for b in ua.guard.take_new_bans()] == ["scanner"]
        assert ua.guard.is_banned(STRANGER[0], 1.0)

    def test_scanner_user_agent_from_a_trunk_network_is_dropped_not_banned(self) -> None:
        ua = shielded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]))
        assert ua.guard is not None
        ua.receive_datagram(invite(extra="User-Agent: sipvicious\r\n"), CARRIER, 0.0)
        assert ua.datagrams_to_send() == []
        assert [e.reason for e in ua.events()] == ["scanner"]  # type: ignore[attr-defined]
        assert ua.guard.take_new_bans() == []
        # An ordinary User-Agent from the same trunk is served.
        ua.receive_datagram(invite(extra="User-Agent: Carrier SBC\r\n"), CARRIER, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall]

    def test_failed_authentication_bans_at_the_limit(self) -> None:
        ua = shielded_ua(TrunkAccess.from_cidrs("acme", [], "acme", "pw"), auth_failures=3)
        assert ua.guard is not None
        for attempt in range(3):
            ua.receive_datagram(
                invite(
                    branch=f"z9hG4bK-{attempt}",
                    call_id=f"c{attempt}",
                    extra=bad_credentials(attempt),
                ),
                STRANGER,
                float(attempt),
            )
            assert statuses(ua) == [401]  # each guess is challenged again...
            assert [e.reason for e in ua.events()] == ["auth_failed"]  # type: ignore[attr-defined]
        # ... and the third failure within a minute bans the source.
        assert [b.reason for b in ua.guard.take_new_bans()] == ["auth_failures"]

    def test_credentials_for_no_trunk_count_as_failures(self) -> None:
        ua = shielded_ua(TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"]), auth_failures=2)
        assert ua.guard is not None
        for attempt in range(2):
            ua.receive_datagram(
                invite(
                    method="REGISTER",
                    body=b"",
                    branch=f"z9hG4bK-r{attempt}",
                    extra=bad_credentials(attempt),
                ),
                STRANGER,
                0.0,
            )
        assert ua.datagrams_to_send() == []
        assert [b.reason for b in ua.guard.take_new_bans()] == ["auth_failures"]

    def test_open_invites_per_source_are_limited(self) -> None:
        ua = shielded_ua(
            TrunkAccess.from_cidrs("acme", [], "acme", "pw"), transactions_per_source=2
        )
        ua.access = None  # admit everyone: only the guard's limit is under test
        for n in range(2):
            ua.receive_datagram(invite(branch=f"z9hG4bK-{n}", call_id=f"c{n}"), STRANGER, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall, IncomingCall]
        ua.datagrams_to_send()
        ua.receive_datagram(invite(branch="z9hG4bK-3", call_id="c3"), STRANGER, 0.0)
        assert statuses(ua) == [503]
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.reason == "source_busy"
        # Another source is not affected.
        ua.receive_datagram(invite(branch="z9hG4bK-4", call_id="c4"), PEER, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall]


class TestTimerHeap:
    """The UA keeps every transaction's deadline in a heap; it must always agree with the
    deadlines the transactions themselves hold, whatever happened in between."""

    @staticmethod
    def brute_force(ua: UserAgent) -> float | None:
        deadlines = [tx.deadline for tx in ua._server_tx.values()]
        deadlines += [ctx.transaction.deadline for ctx in ua._client_tx.values()]
        # Session timers (RFC 4028) of the calls up.
        deadlines += [_timer_deadline(call) for call in ua._dialogs.values()]
        live = [d for d in deadlines if d is not None]
        return min(live) if live else None

    def test_heap_agrees_with_every_transaction_through_a_random_life(self) -> None:
        import random

        rng = random.Random(5)
        ua = make_ua()
        calls: list[IncomingCall] = []
        now = 0.0
        for step in range(300):  # quadratic with the brute force: 300 steps cover it
            now += rng.choice((0.0, 0.01, 0.1, 0.5, 2.0))
            action = rng.random()
            if action < 0.3:
                calls.append(new_call(ua, now, branch=f"z9hG4bK-{step}", call_id=f"c{step}"))
            elif action < 0.45 and calls:
                call = calls.pop(rng.randrange(len(calls)))
                if call.call.final_status is None:
                    if rng.random() < 0.5:
                        ua.answer(call.call, b"v=0\r\n", now)
                    else:
                        ua.reject(call.call, 486, now)
            elif action < 0.55:
                ua.receive_datagram(
                    invite(
                        branch=f"z9hG4bK-o{step}", call_id=f"o{step}", method="OPTIONS", body=b""
                    ),
                    PEER,
                    now,
                )
            elif action < 0.65:
                ua.receive_datagram(
                    invite(
                        branch=f"z9hG4bK-o{step}", call_id=f"o{step}", method="OPTIONS", body=b""
                    ),
                    PEER,
                    now,
                )  # retransmitted: answered from its transaction
            deadline = ua.get_timer()
            assert deadline == self.brute_force(ua), step
            if deadline is not None and deadline <= now:
                ua.handle_timer(now)
                assert ua.get_timer() == self.brute_force(ua), step
                assert ua.get_timer() is None or ua.get_timer() > now  # type: ignore[operator]
            ua.events()
            ua.datagrams_to_send()
        # run every timer out: the heap empties exactly when the transactions do
        while (deadline := ua.get_timer()) is not None:
            ua.handle_timer(deadline)
            assert ua.get_timer() == self.brute_force(ua)
            ua.events()
        assert not ua._server_tx or all(tx.deadline is None for tx in ua._server_tx.values())


def test_a_dual_stack_ua_gives_ipv6_callers_its_ipv6_host() -> None:
    """On a dual-stack socket an IPv6 caller must get an IPv6 Via/Contact (its ACK and
    BYE go there); IPv4 callers, plain or IPv4-mapped, keep the IPv4 host."""
    for source, host in [
        (("2001:db8::9", 5070), "[2001:db8::1]"),
        (("::ffff:127.0.0.1", 5070), "127.0.0.1"),
        (PEER, "127.0.0.1"),
    ]:
        ua = make_ua()
        ua.local_host_v6 = "2001:db8::1"
        ua.receive_datagram(invite(), source, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        ua.datagrams_to_send()
        ua.answer(event.call, b"v=0\r\n", 0.1)
        [(ok, _)] = sent(ua)
        assert ok.headers.get("Contact") == f"<sip:{host}:5060>"
        ua.receive_datagram(in_dialog("ACK", 1, event.call.local_tag, "z9hG4bK-a"), source, 0.2)
        ua.hangup(event.call, 0.3)
        [(bye, _)] = sent(ua)
        assert isinstance(bye, Request) and bye.vias[0].host == host.strip("[]")


def test_a_malformed_invite_is_answered_and_reported_as_an_invite() -> None:
    """An INVITE whose Call-ID does not parse: 400, and the event names the method (from
    the raw CSeq) and carries the header fields, so the call attempt gets its record."""
    ua = make_ua()
    data = invite().replace(b"Call-ID: call-1", b"Call-ID: bad\xff id")
    ua.receive_datagram(data, PEER, 0.0)
    assert statuses(ua) == [400]
    [event] = ua.events()
    assert isinstance(event, RequestRejected)
    assert event.method == "INVITE" and event.status == 400 and event.request is None
    assert event.headers is not None and event.headers.get_lines("From")
    ua.receive_datagram(
        invite(method="OPTIONS").replace(b"Call-ID: call-1", b"Call-ID: a b"), PEER, 0.1
    )
    [other] = ua.events()
    assert isinstance(other, RequestRejected) and other.method == "OPTIONS"


class TestInDialogExemption:
    """``UserAgent.in_dialog``: the live calls whose ACK, BYE, CANCEL and responses pass
    the guard's rate limit (sip/guard.py)."""

    def test_only_a_live_call_from_its_own_source_bounded_per_call(self) -> None:
        ua = make_ua()
        new_call(ua)
        assert ua.in_dialog(PEER[0], "call-1")
        assert not ua.in_dialog("127.0.0.9", "call-1")  # another address: forged
        assert not ua.in_dialog(PEER[0], "call-2")  # a Call-ID we do not hold
        taken = 1 + sum(ua.in_dialog(PEER[0], "call-1") for _ in range(IN_DIALOG_EXEMPTIONS * 2))
        assert taken == IN_DIALOG_EXEMPTIONS

    def test_forgotten_once_the_call_and_its_invite_transaction_are_over(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.receive_datagram(in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye"), PEER, 1.0)
        ua.events()
        assert ua.in_dialog(PEER[0], "call-1")  # its INVITE transaction still runs (Timer L)
        ua.handle_timer(TIMER_L + 1)
        assert not ua.in_dialog(PEER[0], "call-1")
        assert ua._by_call_id == {}

    def test_our_bye_keeps_the_call_live_until_its_response(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.1)
        ua.handle_timer(TIMER_L + 1)  # the INVITE transaction is over
        ua.events()
        ua.datagrams_to_send()
        ua.hangup(call, TIMER_L + 2)
        assert ua.in_dialog(PEER[0], "call-1")  # the 200 to our BYE must get through
        [(bye, _)] = [(m, a) for m, a in sent(ua) if isinstance(m, Request)]
        ok = (
            "SIP/2.0 200 OK\r\n"
            f"Via: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\n"
            f"To: {bye.headers.get('To')}\r\nCall-ID: call-1\r\nCSeq: {bye.cseq.seq} BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        ua.receive_datagram(ok.encode(), PEER, TIMER_L + 2.1)
        assert [type(e) for e in ua.events()] == [ByeCompleted]
        assert not ua.in_dialog(PEER[0], "call-1")


class TestByeAroundTheAck:
    """RFC 3261 §13.3.1.4, §15 and RFC 6026: the 2xx and the BYE around a missing ACK."""

    def _run_timers(self, ua: UserAgent, until: float) -> list[object]:
        events: list[object] = []
        while (deadline := ua.get_timer()) is not None and deadline <= until:
            ua.handle_timer(deadline)
            events += ua.events()
        return events

    def test_a_bye_before_the_ack_stops_the_2xx_retransmissions(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.handle_timer(0.5)  # one retransmission of the 200
        ua.datagrams_to_send()
        ua.receive_datagram(in_dialog("BYE", 2, call.local_tag, "z9hG4bK-bye"), PEER, 1.0)
        assert [type(e) for e in ua.events()] == [ByeReceived]
        assert [(m.status, m.cseq.method) for m, _ in sent(ua)] == [(200, "BYE")]  # type: ignore[union-attr]
        # No 200 to the INVITE ever again, and no ACK timeout for a call already ended.
        events = self._run_timers(ua, TIMER_L + 1)
        assert [m for m, _ in sent(ua) if m.cseq.method == "INVITE"] == []  # type: ignore[union-attr]
        assert events == []
        assert ua.get_timer() is None  # the transaction is over (Timer L)

    def test_our_hangup_before_the_ack_waits_for_it(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.datagrams_to_send()
        ua.hangup(call, 0.2)
        assert [m for m, _ in sent(ua) if isinstance(m, Request)] == []  # no BYE yet
        ua.handle_timer(0.5)
        assert statuses(ua) == [200]  # the 200 keeps going until its ACK
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.7)
        assert [type(e) for e in ua.events()] == [CallConfirmed]
        [(bye, _)] = sent(ua)
        assert isinstance(bye, Request) and bye.method == "BYE"
        assert call.state is CallState.ENDING

    def test_our_hangup_without_any_ack_sends_the_bye_at_the_ack_timeout(self) -> None:
        ua = make_ua()
        call = new_call(ua).call
        ua.answer(call, b"v=0\r\n", 0.0)
        ua.hangup(call, 0.2)
        ua.datagrams_to_send()
        events: list[object] = []
        byes: list[float] = []
        now = 0.0
        while (deadline := ua.get_timer()) is not None and deadline <= TIMER_L + 1:
            now = deadline
            ua.handle_timer(now)
            events += ua.events()
            byes += [now for m, _ in sent(ua) if isinstance(m, Request) and m.method == "BYE"]
        assert events == []  # the call layer already ended it
        assert byes and byes[0] >= TIMER_L  # only once the 2xx gave up (§13.3.1.4)


class TestDelayedOffer:
    def test_offerless_invite_is_an_incoming_call_and_the_ack_carries_the_answer(self) -> None:
        ua = make_ua()
        call = new_call(ua, body=b"").call  # RFC 3261 §13.2.1: no 488 in the core
        ua.answer(call, b"v=0\r\noffer\r\n", 0.1)
        ack = in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack").replace(
            b"Content-Length: 0\r\n\r\n",
            b"Content-Type: application/sdp\r\nContent-Length: 11\r\n\r\nv=0\r\nanswer",
        )
        ua.receive_datagram(ack, PEER, 0.2)
        [event] = ua.events()
        assert isinstance(event, CallConfirmed)
        assert event.request is not None and event.request.body == b"v=0\r\nanswer"


PROXY = ("10.0.0.5", 5060)  # a trusted proxy in front (sip/proxy.py)
TRUNK_VIA_PROXY = ("203.0.113.5", 5062)  # a trunk's real address behind it
OTHER_STRANGER = ("192.0.2.77", 5060)


def source_header(address: tuple[str, int], transport: str = "udp") -> str:
    return f"X-Sipbridge-Source: {address[0]}:{address[1]};transport={transport}\r\n"


def proxied_ua(*trunks: TrunkAccess, refuse_status: int | None = None) -> UserAgent:
    """An access policy with ``trunks``, a guard trusting their networks, and PROXY as a
    trusted proxy."""
    ua = shielded_ua(*trunks)
    assert ua.access is not None and ua.guard is not None
    ua.access.refuse_status = refuse_status
    ua.proxies = TrustedProxies.parse([PROXY[0]])
    access = ua.access
    ua.guard.trusted = lambda host: access.knows(host) or ua.proxies.trusts(host)
    return ua


class TestTrustedProxy:
    """Requests relayed by a trusted proxy are judged by the source its X-Sipbridge-Source
    names; answers still go to the proxy."""

    carrier = TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"])

    def test_an_allowlisted_source_behind_the_proxy_is_admitted(self) -> None:
        ua = proxied_ua(self.carrier)
        assert ua.receive_datagram(invite(extra=source_header(TRUNK_VIA_PROXY)), PROXY, 0.0)
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        call = event.call
        assert call.trunk == "carrier"
        assert call.origin == TRUNK_VIA_PROXY and call.relayed_from == TRUNK_VIA_PROXY
        assert call.source == PROXY
        [(trying, addr)] = sent(ua)
        assert isinstance(trying, Response) and trying.status == 100
        assert addr == PROXY  # along the Via, to the proxy
        assert trying.vias[0].params["received"] == PROXY[0]

    def test_a_stranger_behind_the_proxy_is_refused(self) -> None:
        ua = proxied_ua(self.carrier)
        for n, method in enumerate(("INVITE", "OPTIONS", "REGISTER")):
            data = invite(
                method=method,
                branch=f"z9hG4bK-s{n}",
                body=b"v=0\r\n" if method == "INVITE" else b"",
                extra=source_header(STRANGER),
            )
            assert not ua.receive_datagram(data, PROXY, 0.0)
            [event] = ua.events()
            assert isinstance(event, RequestRejected)
            assert (event.status, event.reason, event.access) == (None, "unknown_source", True)
            assert event.origin == STRANGER and event.source == PROXY
        assert ua.datagrams_to_send() == []
        # Garbage through the proxy from a stranger gets nothing either.
        broken = b"INVITE sip:x@y SIP/2.0\r\n" + source_header(STRANGER).encode() + b"\r\n"
        ua.receive_datagram(broken, PROXY, 0.0)
        assert ua.datagrams_to_send() == []
        assert [e.origin for e in ua.events()] == [STRANGER]  # type: ignore[attr-defined]

    def test_a_stranger_behind_the_proxy_gets_403_when_configured(self) -> None:
        ua = proxied_ua(self.carrier, refuse_status=403)
        ua.receive_datagram(invite(extra=source_header(STRANGER)), PROXY, 0.0)
        [(forbidden, addr)] = sent(ua)
        assert isinstance(forbidden, Response) and forbidden.status == 403 and addr == PROXY

    def test_the_header_from_anyone_else_is_ignored(self) -> None:
        ua = proxied_ua(self.carrier)
        # A stranger claiming to be the trunk is still the stranger...
        assert not ua.receive_datagram(invite(extra=source_header(CARRIER)), STRANGER, 0.0)
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.reason == "unknown_source"
        assert event.origin == STRANGER and event.relayed_from is None
        # ... and the trunk claiming to be a stranger is still the trunk.
        data = invite(branch="z9hG4bK-2", call_id="c2", extra=source_header(STRANGER))
        assert ua.receive_datagram(data, CARRIER, 0.0)
        [incoming] = ua.events()
        assert isinstance(incoming, IncomingCall) and incoming.call.origin == CARRIER

    @pytest.mark.parametrize(
        ("header", "detail"),
        [
            ("X-Sipbridge-Source: 203.0.113.5\r\n", "not ip:port[;transport=udp|tcp|tls]"),
            ("X-Sipbridge-Source: 203.0.113.5:99999\r\n", "port outside 1-65535"),
            (
                "X-Sipbridge-Source: 203.0.113.5:5060\r\nX-Sipbridge-Source: 192.0.2.1:5060\r\n",
                "more than one header",
            ),
            ("", "missing"),  # a new call through the proxy must say whose it is
        ],
    )
    def test_a_malformed_header_from_the_proxy_gets_400(self, header: str, detail: str) -> None:
        ua = proxied_ua(self.carrier)
        assert not ua.receive_datagram(invite(extra=header), PROXY, 0.0)
        [(response, addr)] = sent(ua)
        assert isinstance(response, Response) and addr == PROXY
        assert (response.status, response.reason) == (400, f"Bad X-Sipbridge-Source ({detail})")
        [event] = ua.events()
        assert isinstance(event, RequestRejected)
        assert (event.method, event.status, event.reason) == ("INVITE", 400, "bad_source_header")
        assert event.detail == detail and not event.access  # recorded as a refused INVITE
        assert event.request is not None
        # Its retransmission is answered from the transaction.
        ua.receive_datagram(invite(extra=header), PROXY, 0.5)
        assert statuses(ua) == [400] and ua.events() == []

    def test_the_proxys_own_options_probe_is_answered(self) -> None:
        ua = proxied_ua(self.carrier)
        assert ua.receive_datagram(invite(method="OPTIONS", body=b""), PROXY, 0.0)
        [(pong, addr)] = sent(ua)
        assert isinstance(pong, Response) and pong.status == 200 and addr == PROXY
        ua.busy = True  # overloaded: the proxy routes elsewhere
        ua.receive_datagram(invite(method="OPTIONS", body=b"", branch="z9hG4bK-2"), PROXY, 0.0)
        assert statuses(ua) == [503]
        # Garbage from the proxy itself is answered as a known source's.
        ua.receive_datagram(
            b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-x\r\n\r\n",
            PROXY,
            0.0,
        )
        assert statuses(ua) == [400]

    @pytest.mark.parametrize("with_header", [True, False])
    def test_in_dialog_requests_from_the_proxy_follow_their_call(self, with_header: bool) -> None:
        ua = proxied_ua(self.carrier)
        ua.receive_datagram(invite(extra=source_header(TRUNK_VIA_PROXY)), PROXY, 0.0)
        [event] = ua.events()
        call = event.call  # type: ignore[attr-defined]
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.datagrams_to_send()
        header = source_header(TRUNK_VIA_PROXY).encode() if with_header else b""

        def relayed(data: bytes) -> bytes:
            return data.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + header)

        assert ua.receive_datagram(
            relayed(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack")), PROXY, 0.2
        )
        assert [type(e) for e in ua.events()] == [CallConfirmed]
        reinvite = in_dialog("INVITE", 2, call.local_tag, "z9hG4bK-re")
        assert ua.receive_datagram(relayed(reinvite), PROXY, 0.3)
        assert [type(e) for e in ua.events()] == [ReInviteReceived]
        ua.reject_reinvite(call, 488, 0.3)
        assert [addr for _, addr in ua.datagrams_to_send()] == [PROXY, PROXY]  # 100, 488
        ua.receive_datagram(relayed(in_dialog("BYE", 3, call.local_tag, "z9hG4bK-bye")), PROXY, 1)
        assert [type(e) for e in ua.events()] == [ByeReceived]
        [(ok, addr)] = sent(ua)
        assert isinstance(ok, Response) and ok.status == 200 and addr == PROXY

    def test_our_bye_goes_to_the_proxy_along_the_route_set(self) -> None:
        ua = proxied_ua(self.carrier)
        data = invite(extra=source_header(TRUNK_VIA_PROXY)).replace(
            b"<sip:proxy.example.com;lr>", b"<sip:10.0.0.5:5060;lr>"
        )
        ua.receive_datagram(data, PROXY, 0.0)
        [event] = ua.events()
        call = event.call  # type: ignore[attr-defined]
        ua.answer(call, b"v=0\r\n", 0.1)
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PROXY, 0.2)
        ua.datagrams_to_send()
        ua.hangup(call, 1.0)
        [(bye, addr)] = sent(ua)
        assert isinstance(bye, Request) and bye.method == "BYE" and addr == PROXY

    def test_offences_and_bans_land_on_the_real_source_not_the_proxy(self) -> None:
        ua = proxied_ua(TrunkAccess.from_cidrs("acme", [], "acme", "pw"))
        guard = ua.guard
        assert guard is not None and guard.limits.auth_failures == 5
        for attempt in range(5):
            ua.receive_datagram(
                invite(
                    branch=f"z9hG4bK-{attempt}",
                    call_id=f"c{attempt}",
                    extra=bad_credentials(attempt) + source_header(STRANGER),
                ),
                PROXY,
                float(attempt),
            )
        assert [(b.address, b.reason) for b in guard.take_new_bans()] == [
            (STRANGER[0], "auth_failures")
        ]
        # A scanner through the proxy is banned by its own address too.
        scan = invite(
            method="OPTIONS",
            body=b"",
            branch="z9hG4bK-scan",
            extra="User-Agent: friendly-scanner\r\n" + source_header(OTHER_STRANGER),
        )
        ua.receive_datagram(scan, PROXY, 6.0)
        assert [(b.address, b.reason) for b in guard.take_new_bans()] == [
            (OTHER_STRANGER[0], "scanner")
        ]
        assert not guard.is_banned(PROXY[0], 7.0)
        # The proxy's own scanner-looking request bans nobody.
        own = invite(
            method="OPTIONS", body=b"", branch="z9hG4bK-own", extra="User-Agent: sipvicious\r\n"
        )
        ua.receive_datagram(own, PROXY, 7.0)
        assert guard.take_new_bans() == [] and not guard.is_banned(PROXY[0], 8.0)

    def test_open_invites_are_counted_per_real_source(self) -> None:
        ua = proxied_ua()
        assert ua.guard is not None
        ua.access = None  # admit everyone: only the guard's limit is under test
        ua.guard.limits = GuardLimits(transactions_per_source=2)
        for n in range(3):
            data = invite(branch=f"z9hG4bK-{n}", call_id=f"c{n}", extra=source_header(STRANGER))
            ua.receive_datagram(data, PROXY, 0.0)
        events = ua.events()
        assert [type(e) for e in events] == [IncomingCall, IncomingCall, RequestRejected]
        assert events[2].reason == "source_busy"  # type: ignore[union-attr]
        # Another source through the same proxy is not affected.
        data = invite(branch="z9hG4bK-9", call_id="c9", extra=source_header(OTHER_STRANGER))
        ua.receive_datagram(data, PROXY, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall]
        # The rate-limit exemption of in-dialog messages follows the real source.
        assert ua.in_dialog(STRANGER[0], "c0") and not ua.in_dialog(PROXY[0], "c0")


def prack(local_tag: str, rack: str, cseq: int = 2, branch: str = "z9hG4bK-pr") -> bytes:
    return in_dialog("PRACK", cseq, local_tag, branch).replace(
        b"Content-Length: 0", f"RAck: {rack}\r\nContent-Length: 0".encode()
    )


class TestReliableProvisional:
    """RFC 3262: a caller that requires 100rel gets its 180 reliably and PRACKs it."""

    def ringing(self, ua: UserAgent, now: float = 0.1) -> tuple[InboundCall, Response]:
        call = new_call(ua, extra="Require: 100rel\r\nSupported: 100rel\r\n").call
        ua.datagrams_to_send()
        ua.ring(call, now)
        [(ringing, _)] = sent(ua)
        assert isinstance(ringing, Response) and ringing.status == 180
        return call, ringing

    def test_a_required_100rel_is_supported_not_420(self) -> None:
        ua = make_ua()
        call, ringing = self.ringing(ua)
        assert ringing.headers.get("Require") == "100rel"
        rseq = ringing.headers.get("RSeq")
        assert rseq is not None and 1 <= int(rseq) < 2**31
        assert ringing.to.tag == call.local_tag and ringing.headers.get("Contact")
        options = invite(method="OPTIONS", branch="z9hG4bK-opt", call_id="o1", body=b"")
        ua.receive_datagram(options, PEER, 0.2)
        [ok] = [m for m, _ in sent(ua) if isinstance(m, Response) and m.status == 200]
        assert "100rel" in ok.headers.get_all("Supported")
        assert "PRACK" in ok.headers.get_all("Allow")

    def test_retransmitted_until_prack_then_200_and_no_more(self) -> None:
        ua = make_ua()
        call, ringing = self.ringing(ua, 0.0)
        rseq = ringing.headers.get("RSeq")
        assert ua.get_timer() == pytest.approx(0.5)
        ua.handle_timer(0.5)
        [(again, _)] = sent(ua)
        assert isinstance(again, Response) and again.status == 180
        assert again.headers.get("RSeq") == rseq  # the same response, not a new one
        assert ua.get_timer() == pytest.approx(1.5)  # T1 doubling
        ua.receive_datagram(prack(call.local_tag, f"{rseq} 1 INVITE"), PEER, 1.0)
        assert statuses(ua) == [200]
        assert not ua.events()  # nothing for the call layer
        ua.handle_timer(1.5)
        assert sent(ua) == []  # acknowledged: no more 180
        ua.answer(call, b"v=0\r\n", 2.0)
        assert statuses(ua) == [200]

    def test_a_prack_for_another_response_is_481(self) -> None:
        ua = make_ua()
        call, ringing = self.ringing(ua)
        rseq = int(ringing.headers.get("RSeq") or 0)
        ua.receive_datagram(prack(call.local_tag, f"{rseq + 1} 1 INVITE"), PEER, 0.2)
        assert statuses(ua) == [481]
        ua.receive_datagram(prack("nobody", f"{rseq} 1 INVITE", branch="z9hG4bK-p2"), PEER, 0.3)
        assert statuses(ua) == [481]
        ua.handle_timer(0.6)
        assert statuses(ua) == [180]  # still unacknowledged

    def test_the_answer_stops_retransmissions_and_a_crossing_prack_gets_200(self) -> None:
        ua = make_ua()
        call, ringing = self.ringing(ua, 0.0)
        ua.answer(call, b"v=0\r\n", 0.2)
        assert statuses(ua) == [200]
        ua.handle_timer(0.5)
        assert statuses(ua) == []  # the 2xx retransmission is not due yet; no 180
        rseq = ringing.headers.get("RSeq")
        ua.receive_datagram(prack(call.local_tag, f"{rseq} 1 INVITE"), PEER, 0.3)
        assert statuses(ua) == [200]
        ua.receive_datagram(in_dialog("ACK", 1, call.local_tag, "z9hG4bK-ack"), PEER, 0.4)
        assert [type(e) for e in ua.events()] == [CallConfirmed]
        # The PRACK's CSeq (2) is the dialog's: a BYE must come after it.
        ua.receive_datagram(in_dialog("BYE", 3, call.local_tag, "z9hG4bK-bye"), PEER, 1.0)
        assert [type(e) for e in ua.events()] == [ByeReceived]

    def test_without_require_the_180_is_unreliable(self) -> None:
        ua = make_ua()
        call = new_call(ua, extra="Supported: 100rel\r\n").call
        ua.datagrams_to_send()
        ua.ring(call, 0.0)
        [(ringing, _)] = sent(ua)
        assert isinstance(ringing, Response) and ringing.headers.get("RSeq") is None
        assert ua.get_timer() is None or ua.get_timer() > 1.0
        ua.handle_timer(0.5)
        assert sent(ua) == []

    def test_a_rejected_call_stops_retransmissions(self) -> None:
        ua = make_ua()
        call, _ringing = self.ringing(ua, 0.0)
        ua.reject(call, 503, 0.1)
        assert statuses(ua) == [503]
        ua.handle_timer(0.5)
        assert 180 not in statuses(ua)
