"""Outbound calls (sip/outbound.py) through the UA core, with a fake clock and bytes."""

from __future__ import annotations

import itertools

import pytest

from sipbridge.sip.auth import digest_response, parse_authorization
from sipbridge.sip.calls import (
    ByeCompleted,
    ByeReceived,
    CallState,
    InboundCall,
    OutboundAnswered,
    OutboundChallenged,
    OutboundEnded,
    OutboundProgress,
)
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.message import Request, Response, make_response, parse_message
from sipbridge.sip.outbound import (
    CANCEL_WAIT,
    DialRequest,
    OutboundOutcome,
    OutboundState,
    extra_headers,
    header_problem,
    outcome_of,
)
from sipbridge.sip.transaction import TIMER_B, TIMER_F, TIMER_M
from sipbridge.sip.ua import UserAgent

TRUNK = ("127.0.0.1", 5070)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
ANSWER = SDP.replace(b"o=- 1 1", b"o=- 9 9")


def make_ua() -> UserAgent:
    counter = itertools.count(1)
    return UserAgent("127.0.0.1", 5060, new_token=lambda: f"t{next(counter)}")


def dial_request(**changes: object) -> DialRequest:
    fields: dict[str, object] = {
        "call_id": "out-1",
        "target": "sip:+12025550101@127.0.0.1:5070",
        "from_uri": "sip:+12025550100@127.0.0.1",
        "destination": TRUNK,
        "contact": "sip:127.0.0.1:5060",
        "via_host": "127.0.0.1",
        "via_port": 5060,
        "sdp": SDP,
        "ring_timeout": 30.0,
        "username": "acct",
        "password": "secret",
        "trunk": "carrier",
        "session_expires": 1800,
    }
    fields.update(changes)
    return DialRequest(**fields)  # type: ignore[arg-type]


def sent(ua: UserAgent) -> list[tuple[Request | Response, tuple[str, int]]]:
    return [(parse_message(data), address) for data, address in ua.datagrams_to_send()]


def requests(ua: UserAgent, method: str) -> list[Request]:
    return [m for m, _ in sent(ua) if isinstance(m, Request) and m.method == method]


def reply(
    ua: UserAgent,
    request: Request,
    status: int,
    now: float,
    *,
    tag: str | None = "callee",
    body: bytes = b"",
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    response = make_response(request, status, to_tag=tag if status > 100 else None)
    if 200 <= status < 300:
        response.headers.add("Contact", "<sip:callee@127.0.0.1:5070>")
        response.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")
    for name, value in extra:
        response.headers.add(name, value)
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    assert ua.receive_datagram(response.serialize(), TRUNK, now)


def start(ua: UserAgent, now: float = 0.0, **changes: object) -> Request:
    ua.dial(dial_request(**changes), "call-a", now)
    [invite] = requests(ua, "INVITE")
    return invite


def test_invite_carries_offer_identity_and_timer_headers() -> None:
    ua = make_ua()
    invite = start(ua, headers=(("X-Campaign", "spring"),), from_display='Support "A"')
    assert str(invite.uri) == "sip:+12025550101@127.0.0.1:5070"
    assert invite.body == SDP
    assert invite.from_.tag and invite.to.tag is None
    assert invite.headers.get("From").startswith('"Support \\"A\\"" <sip:+12025550100@')
    assert invite.headers.get("Session-Expires") == "1800"
    assert invite.headers.get("Supported") == "timer"
    assert invite.headers.get("X-Campaign") == "spring"
    assert invite.headers.get("Content-Type") == "application/sdp"
    assert invite.vias[0].branch.startswith("z9hG4bK")


def test_answered_call_is_acked_and_becomes_a_dialog() -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 100, 0.1)
    reply(ua, invite, 180, 0.2)
    reply(ua, invite, 200, 1.0, body=ANSWER)
    [ack] = requests(ua, "ACK")
    assert ack.cseq.seq == invite.cseq.seq and ack.to.tag == "callee"
    assert ack.vias[0].branch != invite.vias[0].branch  # §13.2.2.4: its own transaction
    assert str(ack.uri) == "sip:callee@127.0.0.1:5070"  # the 2xx's Contact
    events = ua.events()
    assert [type(e) for e in events] == [OutboundProgress, OutboundProgress, OutboundAnswered]
    trying, ringing, answered = events
    assert isinstance(trying, OutboundProgress) and isinstance(ringing, OutboundProgress)
    assert (trying.status, trying.reason, ringing.status, ringing.reason) == (
        100,
        "Trying",
        180,
        "Ringing",
    )
    assert isinstance(answered, OutboundAnswered)
    assert answered.answer == ANSWER
    call = answered.call
    assert call.outbound and call.id == "call-a" and call.trunk == "carrier"
    assert call.state is CallState.CONFIRMED and call.peer_allows_update
    assert call.timer is not None and call.timer.we_refresh  # no Session-Expires: ours
    # A retransmitted 2xx gets the same ACK again (RFC 3261 §13.2.2.4).
    reply(ua, invite, 200, 1.5, body=ANSWER)
    assert [a.vias[0].branch for a in requests(ua, "ACK")] == [ack.vias[0].branch]
    assert ua.events() == []
    # The far end's BYE ends it like an inbound call's.
    bye_bytes = (
        f"BYE sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye\r\n"
        f"From: <sip:+12025550101@127.0.0.1>;tag=callee\r\n"
        f"To: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert ua.receive_datagram(bye_bytes, TRUNK, 2.0)
    [(ok, _)] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200
    assert [type(e) for e in ua.events()] == [ByeReceived]
    # Timer M later the attempt is forgotten.
    ua.handle_timer(1.0 + TIMER_M)
    assert ua.get_timer() is None or ua.get_timer() > 1.0 + TIMER_M


def test_our_hangup_sends_bye_in_the_dialog() -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 200, 1.0, body=ANSWER, extra=(("Session-Expires", "600;refresher=uas"),))
    requests(ua, "ACK")
    answered = ua.events()[-1]
    assert isinstance(answered, OutboundAnswered)
    assert answered.call.timer is not None and not answered.call.timer.we_refresh
    ua.hangup(answered.call, 2.0)
    [bye] = requests(ua, "BYE")
    assert bye.from_.tag == invite.from_.tag and bye.to.tag == "callee"
    assert bye.cseq.seq == invite.cseq.seq + 1
    assert str(bye.uri) == "sip:callee@127.0.0.1:5070"


def test_digest_challenge_is_answered_with_a_new_invite() -> None:
    ua = make_ua()
    invite = start(ua)
    challenge = 'Digest realm="carrier", nonce="n1", qop="auth", algorithm=MD5'
    reply(ua, invite, 407, 0.1, tag="proxy", extra=(("Proxy-Authenticate", challenge),))
    messages = sent(ua)
    acks = [m for m, _ in messages if isinstance(m, Request) and m.method == "ACK"]
    invites = [m for m, _ in messages if isinstance(m, Request) and m.method == "INVITE"]
    assert len(acks) == 1 and acks[0].vias[0].branch == invite.vias[0].branch  # §17.1.1.3
    [again] = invites
    assert again.call_id == invite.call_id and again.from_.tag == invite.from_.tag
    assert again.cseq.seq == invite.cseq.seq + 1
    assert again.vias[0].branch != invite.vias[0].branch
    creds = parse_authorization(again.headers.get("Proxy-Authorization") or "")
    assert creds is not None and creds.username == "acct"
    expected = digest_response(
        algorithm="MD5",
        username="acct",
        realm="carrier",
        password="secret",
        method="INVITE",
        uri=str(invite.uri),
        nonce="n1",
        nc=creds.nc,
        cnonce=creds.cnonce,
        qop="auth",
    )
    assert creds.response == expected
    # A retransmission of the 407 is ACKed again by the first transaction.
    reply(ua, invite, 407, 0.2, tag="proxy", extra=(("Proxy-Authenticate", challenge),))
    assert len(requests(ua, "ACK")) == 1
    # The same realm challenging again (not stale): our credentials were refused.
    reply(ua, again, 407, 0.3, tag="proxy", extra=(("Proxy-Authenticate", challenge),))
    assert requests(ua, "INVITE") == []
    # One challenge answered (its event), then the end with the refusing response.
    challenged, ended = ua.events()
    assert isinstance(challenged, OutboundChallenged) and challenged.status == 407
    assert challenged.challenge.realm == "carrier"
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.status, ended.reason) == (
        OutboundOutcome.FAILED,
        407,
        "auth_failed",
    )
    assert ended.response is not None and ended.response.cseq.seq == again.cseq.seq
    assert ended.attempt.challenged is not None and ended.attempt.challenged.nonce == "n1"


def test_challenge_without_credentials_fails() -> None:
    ua = make_ua()
    invite = start(ua, username=None, password=None)
    reply(ua, invite, 401, 0.1, extra=(("WWW-Authenticate", 'Digest realm="r", nonce="n"'),))
    [ended] = ua.events()  # no OutboundChallenged: nothing was answered
    assert isinstance(ended, OutboundEnded) and ended.reason == "auth_failed"
    # Whose credentials were wanted, and the response itself, for the explanation.
    assert ended.attempt.challenged is not None and ended.attempt.challenged.realm == "r"
    assert ended.response is not None and ended.response.status == 401


def test_rejection_carries_the_final_response_and_no_supported_when_empty() -> None:
    ua = make_ua()
    invite = start(ua, supported="")
    assert invite.headers.get("Supported") is None  # RFC 3261 §20.37: nothing to list
    response = make_response(invite, 503, to_tag="callee")
    response.headers.add("Retry-After", "10")
    response.headers.add("Reason", 'SIP ;cause=503 ;text="overload"')
    ua.receive_datagram(response.serialize(), TRUNK, 0.1)
    [ended] = ua.events()
    assert isinstance(ended, OutboundEnded) and ended.status == 503
    assert ended.response is not None and ended.response.reason == "Service Unavailable"
    assert ended.response.headers.get("Retry-After") == "10"
    assert ended.attempt.challenged is None


@pytest.mark.parametrize(
    ("status", "outcome", "reason"),
    [
        (486, OutboundOutcome.BUSY, "busy"),
        (600, OutboundOutcome.BUSY, "busy"),
        (404, OutboundOutcome.REJECTED, "rejected"),
        (480, OutboundOutcome.NO_ANSWER, "no_answer"),
        (503, OutboundOutcome.REJECTED, "rejected"),
    ],
)
def test_final_errors(status: int, outcome: OutboundOutcome, reason: str) -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 180, 0.1)
    reply(ua, invite, status, 2.0)
    [ack] = requests(ua, "ACK")
    assert ack.vias[0].branch == invite.vias[0].branch
    events = ua.events()
    assert isinstance(events[-1], OutboundEnded)
    assert (events[-1].outcome, events[-1].status, events[-1].reason) == (outcome, status, reason)
    assert outcome_of(status) is outcome


def test_early_media_is_kept_for_a_2xx_without_sdp() -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 183, 0.1, body=ANSWER)
    [progress] = ua.events()
    assert isinstance(progress, OutboundProgress) and progress.early_media
    assert progress.status == 183
    reply(ua, invite, 200, 3.0)
    [answered] = ua.events()
    assert isinstance(answered, OutboundAnswered) and answered.answer == ANSWER


def test_ring_timeout_cancels_then_487_is_no_answer() -> None:
    ua = make_ua()
    invite = start(ua, ring_timeout=60.0)
    reply(ua, invite, 180, 0.5)
    ua.events()
    # Timer B does not end a ringing call (RFC 3261 §17.1.1.2): only the ring timeout.
    assert TIMER_B < 59.9
    ua.handle_timer(59.9)
    assert requests(ua, "CANCEL") == [] and ua.events() == []
    assert ua.get_timer() == pytest.approx(60.0)
    ua.handle_timer(60.0)
    [cancel] = requests(ua, "CANCEL")
    assert cancel.vias[0].branch == invite.vias[0].branch  # §9.1
    assert cancel.cseq.seq == invite.cseq.seq and cancel.cseq.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri) and cancel.to.tag is None
    reply(ua, cancel, 200, 60.1)
    reply(ua, invite, 487, 60.2)
    [ended] = ua.events()
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.status, ended.reason) == (
        OutboundOutcome.NO_ANSWER,
        487,
        "no_answer",
    )


def test_200_after_cancel_is_acked_and_ended_with_bye() -> None:
    ua = make_ua()
    invite = start(ua, ring_timeout=5.0)
    reply(ua, invite, 180, 0.5)
    ua.handle_timer(5.0)
    [cancel] = requests(ua, "CANCEL")
    reply(ua, cancel, 200, 5.1)
    reply(ua, invite, 200, 5.1, body=ANSWER)  # the callee answered as we gave up
    messages = [m for m, _ in sent(ua) if isinstance(m, Request)]
    assert [m.method for m in messages] == ["ACK", "BYE"]
    ack, bye = messages
    assert ack.to.tag == bye.to.tag == "callee" and ack.cseq.seq == invite.cseq.seq
    events = ua.events()
    assert [type(e) for e in events] == [OutboundProgress, OutboundEnded]
    ended = events[-1]
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.reason) == (OutboundOutcome.NO_ANSWER, "answered_after_cancel")
    assert ended.response is not None and ended.response.status == 200
    attempt = ended.attempt
    assert attempt.byes_pending and attempt.bye_status is None
    reply(ua, bye, 100, 5.15)  # provisional: still pending
    assert attempt.byes_pending
    reply(ua, bye, 200, 5.2)  # the BYE's transaction completes
    assert not attempt.byes_pending and attempt.bye_status == 200
    reply(ua, invite, 487, 5.3)  # nothing more to say
    assert ua.events() == []


def test_unanswered_bye_of_a_2xx_after_cancel_stops_pending_at_timer_f() -> None:
    ua = make_ua()
    invite = start(ua, ring_timeout=1.0)
    reply(ua, invite, 180, 0.5)
    ua.handle_timer(1.0)
    assert len(requests(ua, "CANCEL")) == 1
    reply(ua, invite, 200, 1.1, body=ANSWER)
    ended = ua.events()[-1]
    assert isinstance(ended, OutboundEnded)
    attempt = ended.attempt
    now = 1.1
    while attempt.byes_pending:
        deadline = ua.get_timer()
        assert deadline is not None
        now = deadline
        ua.handle_timer(now)
    assert now == pytest.approx(1.1 + TIMER_F) and attempt.bye_status is None


def test_no_provisional_cancel_waits_then_timer_b() -> None:
    ua = make_ua()
    start(ua, ring_timeout=5.0)
    ua.handle_timer(5.0)
    # §9.1: no CANCEL before a provisional response.
    assert requests(ua, "CANCEL") == []
    ua.handle_timer(TIMER_B)
    ended = ua.events()[-1]
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.status, ended.reason) == (
        OutboundOutcome.FAILED,
        None,
        "trunk_timeout",
    )


def test_cancel_sent_when_the_first_provisional_arrives() -> None:
    ua = make_ua()
    attempt = ua.dial(dial_request(), "call-a", 0.0)
    [invite] = requests(ua, "INVITE")
    ua.cancel_dial(attempt, 1.0)
    assert attempt.state is OutboundState.CANCELLING
    reply(ua, invite, 100, 1.5)
    assert len(requests(ua, "CANCEL")) == 1
    # No final response 64*T1 after the CANCEL: over (§9.1).
    ua.handle_timer(1.5 + CANCEL_WAIT)
    ended = ua.events()[-1]
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.reason) == (OutboundOutcome.FAILED, "cancelled")


def test_second_fork_2xx_is_acked_and_hung_up() -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 200, 1.0, body=ANSWER, tag="fork-a")
    reply(ua, invite, 200, 1.1, body=ANSWER, tag="fork-b")
    messages = [m for m, _ in sent(ua) if isinstance(m, Request)]
    assert [(m.method, m.to.tag) for m in messages] == [
        ("ACK", "fork-a"),
        ("ACK", "fork-b"),
        ("BYE", "fork-b"),
    ]
    assert [type(e) for e in ua.events()] == [OutboundAnswered]


def test_422_retries_with_the_min_se_asked() -> None:
    ua = make_ua()
    invite = start(ua)
    reply(ua, invite, 422, 0.1, extra=(("Min-SE", "3600"),))
    [again] = requests(ua, "INVITE")
    assert again.headers.get("Session-Expires") == "3600"
    assert ua.events() == []


def test_tcp_requests_go_on_the_connection() -> None:
    ua = make_ua()
    destination = StreamAddress("127.0.0.1", 5070, Transport.TCP, target=("127.0.0.1", 5070))
    ua.dial(dial_request(destination=destination), "call-a", 0.0)
    [(invite, address)] = sent(ua)
    assert isinstance(invite, Request) and invite.vias[0].transport == "TCP"
    assert isinstance(address, StreamAddress)
    # Over TCP: no Timer A retransmission.
    ua.handle_timer(0.5)
    assert sent(ua) == []


def test_reserved_and_bad_headers_are_refused() -> None:
    assert header_problem("X-Ok", "v") is None
    assert header_problem("Via", "x") == "'Via' is set by sipbridge itself"
    assert header_problem("Bad Name", "x") is not None
    assert header_problem("X-A", "a\r\nVia: evil") is not None
    with pytest.raises(ValueError):
        extra_headers([("Call-ID", "x")])
    with pytest.raises(ValueError):
        dial_request(headers=(("CSeq", "1 INVITE"),))
    ua = make_ua()
    ua.dial(dial_request(), "call-a", 0.0)
    with pytest.raises(ValueError):
        ua.dial(dial_request(), "call-b", 0.0)  # the Call-ID is in use


TCP_TRUNK = StreamAddress("127.0.0.1", 5070, Transport.TCP, target=("127.0.0.1", 5070))


def test_a_connection_that_would_not_open_fails_the_call_at_once() -> None:
    # RFC 3261 §8.1.3.1: a transport error is a 503, now; not Timer B's 32 s later.
    ua = make_ua()
    attempt = ua.dial(dial_request(destination=TCP_TRUNK), "call-a", 0.0)
    ua.connection_failed(Transport.TLS, "127.0.0.1", 5070, "connect failed", 0.1)  # other
    ua.connection_failed(Transport.TCP, "127.0.0.1", 5071, "connect failed", 0.1)  # other
    assert ua.events() == [] and attempt.state is OutboundState.CALLING
    ua.connection_failed(Transport.TCP, "127.0.0.1", 5070, "connect failed: refused", 0.2)
    [ended] = ua.events()
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.status, ended.reason, ended.detail) == (
        OutboundOutcome.FAILED,
        None,
        "trunk_unreachable",
        "connect failed: refused",
    )
    assert attempt.done and ua.get_timer() is None  # forgotten: no timer left
    ua.handle_timer(TIMER_B)
    assert ua.events() == []


def test_a_connection_failure_after_a_response_or_over_udp_changes_nothing() -> None:
    ua = make_ua()
    invite = start(ua, destination=TCP_TRUNK)
    reply(ua, invite, 100, 0.1)  # the connection was up
    [trying] = ua.events()
    assert isinstance(trying, OutboundProgress) and trying.status == 100
    ua.connection_failed(Transport.TCP, "127.0.0.1", 5070, "connect failed", 0.2)
    assert ua.events() == []
    over_udp = make_ua()
    start(over_udp)
    over_udp.connection_failed(Transport.TCP, "127.0.0.1", 5070, "connect failed", 0.2)
    assert over_udp.events() == []


def test_a_connection_failure_of_a_cancelled_call_is_its_cancel() -> None:
    ua = make_ua()
    attempt = ua.dial(dial_request(destination=TCP_TRUNK), "call-a", 0.0)
    ua.cancel_dial(attempt, 0.1)  # before any response: the CANCEL waits (§9.1)
    ua.connection_failed(Transport.TCP, "127.0.0.1", 5070, "connect timeout", 0.2)
    [ended] = ua.events()
    assert isinstance(ended, OutboundEnded)
    assert (ended.outcome, ended.reason) == (OutboundOutcome.FAILED, "cancelled")
    assert requests(ua, "CANCEL") == []


def answered_call(ua: UserAgent, **changes: object) -> tuple[Request, InboundCall]:
    invite = start(ua, **changes)
    reply(ua, invite, 200, 1.0, body=ANSWER)
    answered = ua.events()[-1]
    assert isinstance(answered, OutboundAnswered)
    sent(ua)  # the ACK
    return invite, answered.call


def check_digest(request: Request, header: str, realm: str, nonce: str) -> None:
    creds = parse_authorization(request.headers.get(header) or "")
    assert creds is not None and creds.username == "acct" and creds.realm == realm
    expected = digest_response(
        algorithm="MD5",
        username="acct",
        realm=realm,
        password="secret",
        method=request.method,
        uri=str(request.uri),
        nonce=nonce,
        nc=creds.nc,
        cnonce=creds.cnonce,
        qop="auth",
    )
    assert creds.response == expected


def test_a_challenged_bye_is_sent_again_with_the_trunks_credentials() -> None:
    # RFC 3261 §22.2: a carrier that challenges our BYE gets it again with credentials.
    ua = make_ua()
    _, call = answered_call(ua)
    ua.hangup(call, 5.0)
    [bye] = requests(ua, "BYE")
    assert bye.headers.get("Proxy-Authorization") is None
    challenge = 'Digest realm="carrier", nonce="b1", qop="auth"'
    reply(ua, bye, 407, 5.1, extra=(("Proxy-Authenticate", challenge),))
    assert ua.events() == []  # not over yet
    [again] = requests(ua, "BYE")
    assert again.cseq.seq == bye.cseq.seq + 1 and again.vias[0].branch != bye.vias[0].branch
    assert (again.call_id, again.to.tag, again.uri) == (bye.call_id, bye.to.tag, bye.uri)
    check_digest(again, "Proxy-Authorization", "carrier", "b1")
    reply(ua, again, 200, 5.2)
    [done] = ua.events()
    assert isinstance(done, ByeCompleted) and done.status == 200


def test_refused_credentials_or_none_end_the_bye_with_the_challenge() -> None:
    challenge = 'Digest realm="carrier", nonce="b1", qop="auth"'
    ua = make_ua()
    _, call = answered_call(ua)
    ua.hangup(call, 5.0)
    [bye] = requests(ua, "BYE")
    reply(ua, bye, 401, 5.1, extra=(("WWW-Authenticate", challenge),))
    [again] = requests(ua, "BYE")
    reply(ua, again, 401, 5.2, extra=(("WWW-Authenticate", challenge),))  # same realm
    assert requests(ua, "BYE") == []
    [done] = ua.events()
    assert isinstance(done, ByeCompleted) and done.status == 401
    # A stale nonce is not a refusal: once more, with the new nonce.
    ua = make_ua()
    _, call = answered_call(ua)
    ua.hangup(call, 5.0)
    [bye] = requests(ua, "BYE")
    reply(ua, bye, 401, 5.1, extra=(("WWW-Authenticate", challenge),))
    [again] = requests(ua, "BYE")
    stale = 'Digest realm="carrier", nonce="b2", qop="auth", stale=true'
    reply(ua, again, 401, 5.2, extra=(("WWW-Authenticate", stale),))
    [third] = requests(ua, "BYE")
    check_digest(third, "Authorization", "carrier", "b2")
    reply(ua, third, 401, 5.3, extra=(("WWW-Authenticate", stale),))  # the limit
    assert requests(ua, "BYE") == []
    assert isinstance(ua.events()[-1], ByeCompleted)
    # A call without credentials has nothing to answer with.
    ua = make_ua()
    _, call = answered_call(ua, username=None, password=None)
    ua.hangup(call, 5.0)
    [bye] = requests(ua, "BYE")
    reply(ua, bye, 407, 5.1, extra=(("Proxy-Authenticate", challenge),))
    assert requests(ua, "BYE") == []
    [done] = ua.events()
    assert isinstance(done, ByeCompleted) and done.status == 407


def test_a_challenged_refresh_is_sent_again_with_its_body() -> None:
    # The session refresh (a re-INVITE with our SDP when the far end has no UPDATE).
    ua = make_ua()
    invite = start(ua, session_expires=90)
    response = make_response(invite, 200, to_tag="callee")
    response.headers.add("Contact", "<sip:callee@127.0.0.1:5070>")
    response.headers.add("Session-Expires", "90;refresher=uac")
    response.headers.add("Content-Type", "application/sdp")
    response.body = ANSWER
    assert ua.receive_datagram(response.serialize(), TRUNK, 1.0)
    ua.events()
    sent(ua)
    refreshes: list[Request] = []
    due: float | None = 0.0
    for _ in range(20):  # Timer M, then the refresh at half the interval (RFC 4028 §10)
        due = ua.get_timer()
        assert due is not None and due < 90
        ua.handle_timer(due)
        refreshes = requests(ua, "INVITE")
        if refreshes:
            break
    assert due is not None
    [refresh] = refreshes
    assert refresh.body == SDP
    challenge = 'Digest realm="carrier", nonce="r1", qop="auth"'
    reply(ua, refresh, 407, due + 0.1, extra=(("Proxy-Authenticate", challenge),))
    messages = [m for m, _ in sent(ua) if isinstance(m, Request)]
    assert [m.method for m in messages] == ["ACK", "INVITE"]  # the 407's ACK, then again
    again = messages[1]
    assert again.body == refresh.body and again.cseq.seq == refresh.cseq.seq + 1
    assert again.headers.get("Session-Expires") == refresh.headers.get("Session-Expires")
    check_digest(again, "Proxy-Authorization", "carrier", "r1")
