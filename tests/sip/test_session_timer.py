"""RFC 4028 session timers and RFC 3311 UPDATE in the UAS core, with a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from sipbridge.sip.calls import (
    CallConfirmed,
    InboundCall,
    IncomingCall,
    RefreshAnswered,
    ReInviteReceived,
    RequestAnswered,
    RequestRejected,
    SessionExpired,
    UpdateReceived,
)
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.sip.session_timer import (
    SessionExpires,
    SessionTimer,
    negotiate_refresh,
    timer_from_response,
)
from sipbridge.sip.transaction import TIMER_B
from sipbridge.sip.ua import UserAgent, glare_backoff

PEER = ("127.0.0.1", 5070)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def make_ua(**kwargs: object) -> UserAgent:
    counter = itertools.count(1)
    return UserAgent(
        "127.0.0.1",
        5060,
        new_token=lambda: f"t{next(counter)}",
        random=lambda: 0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def request(
    method: str,
    *,
    cseq: int = 1,
    to_tag: str | None = None,
    branch: str = "z9hG4bK-1",
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    to = "<sip:+12025550101@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:+12025550101@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "From: Alice <sip:alice@127.0.0.1:5070>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        "Max-Forwards: 70\r\n"
        + extra
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sent(ua: UserAgent) -> list[Request | Response]:
    return [parse_message(data) for data, _ in ua.datagrams_to_send()]


def responses(ua: UserAgent) -> list[Response]:
    return [m for m in sent(ua) if isinstance(m, Response)]


def answered_call(ua: UserAgent, extra: str = "", now: float = 0.0) -> InboundCall:
    """An INVITE with ``extra`` headers, answered 200 and ACKed at ``now``."""
    ua.receive_datagram(request("INVITE", extra=extra, body=SDP), PEER, now)
    [event] = ua.events()
    assert isinstance(event, IncomingCall)
    call = event.call
    ua.answer(call, SDP, now)
    ua.receive_datagram(request("ACK", to_tag=call.local_tag, branch="z9hG4bK-ack"), PEER, now)
    assert [type(e) for e in ua.events()] == [CallConfirmed]
    ua.datagrams_to_send()
    return call


def ok_for(req: Request, extra: Sequence[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """The peer's 200 to a request we sent."""
    lines = [
        "SIP/2.0 200 OK",
        *(f"Via: {v}" for v in req.headers.get_all("Via")),
        f"From: {req.headers.get('From')}",
        f"To: {req.headers.get('To')}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.cseq.seq} {req.method}",
        *(f"{n}: {v}" for n, v in extra),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_for(req: Request, status: int) -> bytes:
    return ok_for(req).replace(b"200 OK", f"{status} Whatever".encode(), 1)


def run_until(ua: UserAgent, until: float) -> float:
    """Fire every timer due up to ``until``; the time of the last one fired."""
    now = 0.0
    while (deadline := ua.get_timer()) is not None and deadline <= until:
        now = deadline
        ua.handle_timer(now)
    return now


class TestNegotiation:
    def test_parse_session_expires(self) -> None:
        assert SessionExpires.parse("1800;refresher=UAC") == SessionExpires(1800, "uac")
        assert SessionExpires.parse(" 90 ") == SessionExpires(90, None)
        assert SessionExpires.parse("soon") is None

    def test_caller_with_timer_and_no_preference_refreshes(self) -> None:
        headers = Headers([("Supported", "100rel, timer"), ("Session-Expires", "600")])
        answer = negotiate_refresh(headers, 0.0, session_expires_default=1800, our_min_se=90)
        assert answer.status == 200
        assert answer.headers == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]
        assert answer.timer is not None and not answer.timer.we_refresh

    def test_caller_without_timer_leaves_it_to_us(self) -> None:
        answer = negotiate_refresh(Headers(), 0.0, session_expires_default=1800, our_min_se=90)
        assert answer.headers == [("Session-Expires", "1800;refresher=uas")]
        assert answer.timer is not None and answer.timer.we_refresh

    def test_caller_asks_us_to_refresh(self) -> None:
        headers = Headers([("Supported", "timer"), ("x", "300;refresher=uas")])
        answer = negotiate_refresh(headers, 0.0, session_expires_default=1800, our_min_se=90)
        assert answer.headers[0] == ("Session-Expires", "300;refresher=uas")

    def test_too_small_is_422_with_our_min_se(self) -> None:
        headers = Headers([("Supported", "timer"), ("Session-Expires", "60")])
        answer = negotiate_refresh(headers, 0.0, session_expires_default=1800, our_min_se=90)
        assert (answer.status, answer.headers) == (422, [("Min-SE", "90")])

    def test_too_small_without_timer_support_is_raised(self) -> None:
        # A proxy put it there: the caller cannot retry, so the interval goes up.
        headers = Headers([("Session-Expires", "60")])
        answer = negotiate_refresh(headers, 0.0, session_expires_default=1800, our_min_se=90)
        assert answer.headers == [("Session-Expires", "90;refresher=uas")]

    def test_request_min_se_raises_our_default(self) -> None:
        headers = Headers([("Supported", "timer"), ("Min-SE", "3600")])
        answer = negotiate_refresh(headers, 0.0, session_expires_default=1800, our_min_se=90)
        assert answer.headers[0] == ("Session-Expires", "3600;refresher=uac")

    def test_deadlines(self) -> None:
        ours = SessionTimer(1800, True, 100.0)
        assert (ours.refresh_at, ours.expire_at) == (1000.0, 1900.0)
        theirs = SessionTimer(90, False, 100.0)
        assert theirs.refresh_at is None
        assert theirs.expire_at == 100.0 + 90 - 32  # max(32, 90/3) = 32
        long = SessionTimer(1800, False, 0.0)
        assert long.expire_at == 1800 - 600
        # below 64 s (a lowered --min-se) the rule would leave no time for a refresh
        short = SessionTimer(4, False, 0.0)
        assert short.expire_at == 3.0

    def test_response_decides_the_refresher(self) -> None:
        timer = SessionTimer(120, True, 0.0)
        after = timer_from_response(Headers([("Session-Expires", "200;refresher=uas")]), timer, 5)
        assert (after.interval, after.we_refresh, after.refreshed_at) == (200, False, 5)
        same = timer_from_response(Headers(), timer, 5)
        assert (same.interval, same.we_refresh) == (120, True)

    def test_glare_backoff(self) -> None:
        assert glare_backoff(False, 0.0) == 0.0
        assert glare_backoff(False, 0.999) == 2.0
        assert glare_backoff(True, 0.0) == 2.1
        assert glare_backoff(True, 0.5) == 3.05


class TestInitialInvite:
    def test_2xx_carries_the_timer(self) -> None:
        ua = make_ua()
        ua.receive_datagram(
            request("INVITE", body=SDP, extra="Supported: timer\r\nSession-Expires: 600\r\n"),
            PEER,
            0.0,
        )
        [event] = ua.events()
        assert isinstance(event, IncomingCall)
        ua.answer(event.call, SDP, 0.0)
        ok = responses(ua)[-1]
        assert ok.status == 200
        assert ok.headers.get("Session-Expires") == "600;refresher=uac"
        assert ok.headers.get("Require") == "timer"
        assert "timer" in ok.headers.get_all("Supported")
        assert "UPDATE" in ok.headers.get_all("Allow")

    def test_require_timer_is_not_420(self) -> None:
        ua = make_ua()
        extra = "Require: timer\r\nSupported: timer\r\nSession-Expires: 120\r\n"
        ua.receive_datagram(request("INVITE", body=SDP, extra=extra), PEER, 0.0)
        assert [type(e) for e in ua.events()] == [IncomingCall]

    def test_short_interval_gets_422(self) -> None:
        ua = make_ua()
        extra = "Supported: timer\r\nSession-Expires: 30\r\n"
        ua.receive_datagram(request("INVITE", body=SDP, extra=extra), PEER, 0.0)
        [event] = ua.events()
        assert isinstance(event, RequestRejected) and event.status == 422
        assert event.reason == "session_interval_too_small"
        [trying_or_422] = responses(ua)
        assert trying_or_422.status == 422
        assert trying_or_422.headers.get("Min-SE") == "90"

    def test_timers_off(self) -> None:
        ua = make_ua(session_expires=None)
        call = answered_call(ua, "Supported: timer\r\n")
        assert call.timer is None
        assert ua.get_timer() is not None  # only transaction timers
        run_until(ua, 10_000)
        assert ua.events() == []


class TestPeerRefreshes:
    def test_missing_refresh_expires_the_session(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n")
        run_until(ua, 57.9)
        assert ua.events() == []
        ua.handle_timer(58.0)  # 90 - max(32, 30)
        [event] = ua.events()
        assert isinstance(event, SessionExpired) and event.reason == "session_expired"
        assert event.call is call
        assert not [m for m in sent(ua) if isinstance(m, Request)]  # the call layer hangs up

    def test_reinvite_refresh_resets_the_timer(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Supported: timer\r\nSession-Expires: 90\r\n")
        refresh = request(
            "INVITE",
            cseq=2,
            to_tag=call.local_tag,
            branch="z9hG4bK-r1",
            extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        )
        ua.receive_datagram(refresh, PEER, 45.0)
        [event] = ua.events()
        assert isinstance(event, ReInviteReceived)
        ua.answer_reinvite(call, SDP, 45.0)
        ok = responses(ua)[-1]
        assert ok.status == 200 and ok.headers.get("Session-Expires") == "90;refresher=uac"
        run_until(ua, 102.9)
        assert [e for e in ua.events() if isinstance(e, SessionExpired)] == []
        ua.handle_timer(103.0)  # 45 + 58
        assert [type(e) for e in ua.events()] == [SessionExpired]

    def test_update_refresh_without_sdp_answered_200(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Supported: timer\r\nSession-Expires: 90\r\n")
        refresh = request(
            "UPDATE",
            cseq=2,
            to_tag=call.local_tag,
            branch="z9hG4bK-u1",
            extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        )
        ua.receive_datagram(refresh, PEER, 50.0)
        # Answered here: the call layer only hears that it was (nothing to do).
        [answered] = ua.events()
        assert isinstance(answered, RequestAnswered) and answered.call is call
        assert (answered.request.method, answered.status) == ("UPDATE", 200)
        [ok] = responses(ua)
        assert ok.status == 200
        assert ok.headers.get("Session-Expires") == "90;refresher=uac"
        assert ok.headers.get("Contact") == "<sip:127.0.0.1:5060>"
        assert call.timer is not None and call.timer.expire_at == 108.0

    def test_refresh_too_short_gets_422_and_keeps_the_timer(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Supported: timer\r\nSession-Expires: 90\r\n")
        refresh = request(
            "UPDATE",
            cseq=2,
            to_tag=call.local_tag,
            branch="z9hG4bK-u1",
            extra="Supported: timer\r\nSession-Expires: 10\r\n",
        )
        ua.receive_datagram(refresh, PEER, 20.0)
        [answer] = responses(ua)
        assert answer.status == 422 and answer.headers.get("Min-SE") == "90"
        assert call.timer is not None and call.timer.expire_at == 58.0


class TestWeRefresh:
    def test_reinvite_at_half_the_interval_and_our_ack(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Session-Expires: 120\r\n")  # no timer support: we refresh
        run_until(ua, 59.9)
        assert [m for m in sent(ua) if isinstance(m, Request)] == []
        ua.handle_timer(60.0)
        [reinvite] = sent(ua)
        assert isinstance(reinvite, Request) and reinvite.method == "INVITE"
        assert reinvite.body == SDP  # our current SDP, same version
        assert reinvite.headers.get("Session-Expires") == "120;refresher=uac"
        assert reinvite.headers.get("Min-SE") == "90"
        assert reinvite.headers.get("Contact") == "<sip:127.0.0.1:5060>"
        assert reinvite.to.tag == "a1" and reinvite.from_.tag == call.local_tag
        ua.receive_datagram(ok_for(reinvite, body=SDP), PEER, 60.2)
        [ack] = sent(ua)
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert ack.cseq.seq == reinvite.cseq.seq
        assert ack.vias[0].branch != reinvite.vias[0].branch  # §13.2.2.4: its own branch
        # a retransmitted 2xx gets the same ACK again
        ua.receive_datagram(ok_for(reinvite, body=SDP), PEER, 60.7)
        [again] = sent(ua)
        assert isinstance(again, Request) and again.vias[0].branch == ack.vias[0].branch
        assert call.timer is not None and call.timer.refresh_at == 120.2
        run_until(ua, 120.1)
        assert [m for m in sent(ua) if isinstance(m, Request)] == []
        ua.handle_timer(120.2)
        [second] = sent(ua)
        assert isinstance(second, Request) and second.cseq.seq == reinvite.cseq.seq + 1

    def test_update_when_the_peer_allows_it(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Allow: INVITE, ACK, BYE, UPDATE\r\nSession-Expires: 100\r\n")
        ua.handle_timer(50.0)
        [update] = sent(ua)
        assert isinstance(update, Request) and update.method == "UPDATE" and not update.body
        ua.receive_datagram(ok_for(update, [("Session-Expires", "100;refresher=uac")]), PEER, 50.1)
        assert sent(ua) == []  # no ACK for UPDATE
        assert call.timer is not None and call.timer.refresh_at == 100.1

    def test_update_not_implemented_falls_back_to_reinvite(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Allow: INVITE, ACK, BYE, UPDATE\r\nSession-Expires: 100\r\n")
        ua.handle_timer(50.0)
        [update] = sent(ua)
        assert isinstance(update, Request)
        ua.receive_datagram(status_for(update, 501), PEER, 50.1)
        ua.handle_timer(50.1)
        [reinvite] = [m for m in sent(ua) if isinstance(m, Request)]
        assert reinvite.method == "INVITE"
        assert not call.peer_allows_update

    def test_491_retries_after_the_backoff(self) -> None:
        ua = make_ua()  # random() = 0.5: 1.0 s for an inbound call (caller owns the Call-ID)
        answered_call(ua, "Session-Expires: 120\r\n")
        ua.handle_timer(60.0)
        [reinvite] = sent(ua)
        assert isinstance(reinvite, Request)
        ua.receive_datagram(status_for(reinvite, 491), PEER, 60.1)
        [ack] = sent(ua)  # the transaction's ACK of a non-2xx, same branch
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert ack.vias[0].branch == reinvite.vias[0].branch
        assert ua.get_timer() == pytest.approx(61.1)
        ua.handle_timer(61.1)
        retry = [m for m in sent(ua) if isinstance(m, Request) and m.method == "INVITE"]
        assert len(retry) == 1 and retry[0].cseq.seq == reinvite.cseq.seq + 1

    def test_glare_peer_reinvite_while_ours_is_out_gets_491(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Session-Expires: 120\r\n")
        ua.handle_timer(60.0)
        sent(ua)
        ua.receive_datagram(
            request("INVITE", cseq=2, to_tag=call.local_tag, branch="z9hG4bK-g", body=SDP),
            PEER,
            60.1,
        )
        assert ua.events() == []
        assert [r.status for r in responses(ua)] == [491]
        offer = request("UPDATE", cseq=3, to_tag=call.local_tag, branch="z9hG4bK-g2", body=SDP)
        ua.receive_datagram(offer, PEER, 60.2)
        assert [r.status for r in responses(ua)] == [491]

    def test_retransmissions_then_timeout_end_the_session(self) -> None:
        ua = make_ua()
        answered_call(ua, "Session-Expires: 120\r\n")
        ua.handle_timer(60.0)
        assert len(sent(ua)) == 1
        times = []
        now = 60.0
        while (deadline := ua.get_timer()) is not None and deadline <= 60.0 + TIMER_B:
            now = deadline
            ua.handle_timer(now)
            if [m for m in sent(ua) if isinstance(m, Request) and m.method == "INVITE"]:
                times.append(round(now - 60.0, 3))
        # Timer A: 0.5, 1, 2, 4, 8, 16 s apart (no T2 cap for INVITE), Timer B at 32 s
        assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        [event] = ua.events()
        assert isinstance(event, SessionExpired) and event.reason == "session_refresh_failed"
        assert now == pytest.approx(60.0 + TIMER_B)

    def test_481_ends_the_session(self) -> None:
        ua = make_ua()
        answered_call(ua, "Session-Expires: 120\r\n")
        ua.handle_timer(60.0)
        [reinvite] = sent(ua)
        assert isinstance(reinvite, Request)
        ua.receive_datagram(status_for(reinvite, 481), PEER, 60.1)
        assert [type(e) for e in ua.events()] == [SessionExpired]

    def test_other_refusal_waits_for_the_end(self) -> None:
        ua = make_ua()
        answered_call(ua, "Session-Expires: 120\r\n")
        ua.handle_timer(60.0)
        [reinvite] = sent(ua)
        assert isinstance(reinvite, Request)
        ua.receive_datagram(status_for(reinvite, 488), PEER, 60.1)
        run_until(ua, 119.9)
        assert [e for e in ua.events() if isinstance(e, SessionExpired)] == []
        assert [m for m in sent(ua) if isinstance(m, Request) and m.method != "ACK"] == []
        ua.handle_timer(120.0)
        assert [type(e) for e in ua.events()] == [SessionExpired]


class TestUpdateOffer:
    def test_update_with_sdp_goes_to_the_call_layer(self) -> None:
        ua = make_ua()
        call = answered_call(ua, "Supported: timer\r\nSession-Expires: 90\r\n")
        offer = request(
            "UPDATE",
            cseq=2,
            to_tag=call.local_tag,
            branch="z9hG4bK-u",
            body=SDP,
            extra="Supported: timer\r\nSession-Expires: 90\r\n",
        )
        ua.receive_datagram(offer, PEER, 10.0)
        [event] = ua.events()
        assert isinstance(event, UpdateReceived) and event.request.body == SDP
        assert responses(ua) == []
        ua.answer_update(call, b"v=0\r\nanswer\r\n", 10.0)
        [ok] = responses(ua)
        assert ok.status == 200 and ok.body == b"v=0\r\nanswer\r\n"
        assert ok.headers.get("Session-Expires") == "90;refresher=uac"
        assert call.timer is not None and call.timer.refreshed_at == 10.0
        # a retransmission is answered from the transaction
        ua.receive_datagram(offer, PEER, 10.5)
        assert ua.events() == [] and [r.status for r in responses(ua)] == [200]

    def test_update_rejected(self) -> None:
        ua = make_ua()
        call = answered_call(ua)
        offer = request("UPDATE", cseq=2, to_tag=call.local_tag, branch="z9hG4bK-u", body=SDP)
        ua.receive_datagram(offer, PEER, 10.0)
        ua.events()
        ua.reject_update(call, 488, 10.0)
        assert [r.status for r in responses(ua)] == [488]

    def test_update_outside_a_dialog_is_481(self) -> None:
        ua = make_ua()
        ua.receive_datagram(request("UPDATE", to_tag="nope"), PEER, 0.0)
        assert [r.status for r in responses(ua)] == [481]


def test_the_answer_in_our_refresh_2xx_goes_to_the_call_layer() -> None:
    ua = make_ua()
    call = answered_call(ua, "Session-Expires: 120\r\n")
    ua.handle_timer(60.0)
    [reinvite] = sent(ua)
    assert isinstance(reinvite, Request)
    ua.receive_datagram(ok_for(reinvite, body=SDP), PEER, 60.2)
    [event] = ua.events()
    assert isinstance(event, RefreshAnswered) and event.call is call and event.body == SDP
    # the retransmitted 2xx is ACKed again but reported once
    ua.receive_datagram(ok_for(reinvite, body=SDP), PEER, 60.7)
    assert ua.events() == []
