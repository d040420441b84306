"""The test caller's SIP state machine on a fake clock: bytes in, bytes out."""

from __future__ import annotations

import itertools

import pytest

from sipbridge.client.signaling import (
    Answered,
    AuthRetry,
    CallConfig,
    CallState,
    ClientCall,
    Ended,
    EndReason,
    Provisional,
    RequestReceived,
)
from sipbridge.sip.auth import AuthResult, DigestAuthenticator, find_credentials
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.message import Request, Response, make_response, parse_message

SERVER = ("127.0.0.1", 5060)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
)


def config(**overrides: object) -> CallConfig:
    values: dict[str, object] = {
        "number": "+12025550101",
        "server_host": "127.0.0.1",
        "server_port": 5060,
        "server": SERVER,
        "transport": Transport.UDP,
        "local_host": "127.0.0.1",
        "local_port": 6000,
        "sdp": SDP,
    }
    values.update(overrides)
    return CallConfig(**values)  # type: ignore[arg-type]


def new_call(**overrides: object) -> ClientCall:
    counter = itertools.count()
    return ClientCall(config(**overrides), new_token=lambda: f"t{next(counter)}")


def sent(call: ClientCall) -> list[Request | Response]:
    out = []
    for data, destination in call.datagrams_to_send():
        assert destination == SERVER
        out.append(parse_message(data))
    return out


def requests(call: ClientCall) -> list[Request]:
    return [m for m in sent(call) if isinstance(m, Request)]


def respond(request: Request, status: int, *, tag: str | None = "srv", **headers: str) -> bytes:
    response = make_response(request, status, to_tag=tag if status > 100 else None)
    if 200 <= status < 300:
        response.headers.add("Contact", "<sip:127.0.0.1:5060>")
    for name, value in headers.items():
        response.headers.add(name.replace("_", "-"), value)
    body = SDP if status == 200 and request.method == "INVITE" else b""
    if body:
        response.headers.add("Content-Type", "application/sdp")
    response.headers.add("Content-Length", str(len(body)))
    response.body = body
    return response.serialize()


def answered(call: ClientCall) -> Request:
    call.start(0.0)
    (invite,) = requests(call)
    call.receive(respond(invite, 200), 0.1)
    (ack,) = requests(call)
    assert ack.method == "ACK"
    return invite


def test_invite_ringing_answer_ack_then_bye() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    assert invite.method == "INVITE" and str(invite.uri) == "sip:+12025550101@127.0.0.1:5060"
    assert invite.body == SDP and invite.headers.get("Content-Type") == "application/sdp"
    assert invite.from_.tag and invite.to.tag is None and invite.cseq.method == "INVITE"
    assert invite.vias[0].branch.startswith("z9hG4bK")  # type: ignore[union-attr]
    assert "sip:sipbridge@127.0.0.1:6000" in (invite.headers.get("Contact") or "")
    call.receive(respond(invite, 100), 0.01)
    call.receive(respond(invite, 180), 0.02)
    assert [type(e) for e in call.events()] == [Provisional, Provisional]
    assert call.state is CallState.RINGING
    call.receive(respond(invite, 200), 0.05)
    (ack,) = requests(call)
    # RFC 3261 §13.2.2.4: the ACK of a 2xx is a new transaction to the Contact, To tag kept.
    assert ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq
    assert ack.vias[0].branch != invite.vias[0].branch and ack.to.tag == "srv"
    assert str(ack.uri) == "sip:127.0.0.1:5060"
    (event,) = call.events()
    assert isinstance(event, Answered) and event.sdp == SDP
    # A retransmitted 2xx gets the same ACK again.
    call.receive(respond(invite, 200), 0.6)
    assert [m.method for m in requests(call)] == ["ACK"]  # type: ignore[union-attr]
    call.hangup(3.0)
    (bye,) = requests(call)
    assert bye.method == "BYE" and bye.cseq.seq == invite.cseq.seq + 1 and bye.to.tag == "srv"
    assert not call.done
    call.receive(respond(bye, 200), 3.01)
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.HANGUP and ended.bye_status == 200
    assert call.done


def test_bye_without_answer_ends_at_timer_f() -> None:
    call = new_call()
    answered(call)
    call.events()
    call.hangup(1.0)
    requests(call)
    now = 1.0
    while not call.done:
        deadline = call.get_timer()
        assert deadline is not None and deadline > now
        now = deadline
        call.handle_timer(now)
        requests(call)  # BYE retransmissions (Timer E)
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.HANGUP and ended.bye_status is None
    assert now == pytest.approx(1.0 + 32.0)


def test_digest_challenge_answered_once_then_refusal() -> None:
    call = new_call(username="acme", password="s3cret")
    auth = DigestAuthenticator("sipbridge.test", secret=b"k" * 32)
    call.start(0.0)
    (invite,) = requests(call)
    challenge = auth.challenge(0.0)
    call.receive(respond(invite, 401, **dict(challenge)), 0.1)
    ack, retry = requests(call)
    assert ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq  # the transaction's own
    assert retry.method == "INVITE" and retry.cseq.seq == invite.cseq.seq + 1
    assert retry.call_id == invite.call_id and retry.from_.tag == invite.from_.tag
    credentials = find_credentials(retry.headers.get_lines("Authorization"), "sipbridge.test")
    assert credentials is not None
    result = auth.verify(credentials, method="INVITE", password="s3cret", now=0.2)
    assert result is AuthResult.OK
    (event,) = call.events()
    assert isinstance(event, AuthRetry) and event.realm == "sipbridge.test"
    # Challenged again without stale=true: our credentials were refused.
    call.receive(respond(retry, 401, **dict(auth.challenge(0.3))), 0.3)
    requests(call)
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.AUTH_FAILED and ended.status == 401
    assert call.done


def test_challenge_without_credentials_fails_at_once() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    value = 'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"'
    call.receive(respond(invite, 407, Proxy_Authenticate=value), 0.1)
    (ack,) = requests(call)
    assert ack.method == "ACK"
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.AUTH_FAILED and ended.status == 407
    assert call.challenged is not None and call.challenged.realm == "r"


def test_rejection_keeps_reason_and_retry_after() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    reason = 'SIP ;cause=503 ;text="agent_unreachable"'
    call.receive(respond(invite, 503, Reason=reason, Retry_After="10"), 0.1)
    (ack,) = requests(call)
    assert ack.method == "ACK" and ack.to.tag == "srv"
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.REJECTED and ended.status == 503
    assert ended.headers == {"Reason": reason, "Retry-After": "10"}
    # The final response retransmitted: ACKed again, nothing new for the caller.
    call.receive(respond(invite, 503, Reason=reason), 0.2)
    assert [m.method for m in requests(call)] == ["ACK"]  # type: ignore[union-attr]
    assert call.events() == []


def test_hangup_before_any_response_cancels_at_the_first_provisional() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    call.hangup(0.1)
    assert requests(call) == []  # RFC 3261 §9.1: no CANCEL before a provisional response
    call.receive(respond(invite, 100), 0.2)
    (cancel,) = requests(call)
    assert cancel.method == "CANCEL" and cancel.vias[0].branch == invite.vias[0].branch
    assert cancel.cseq.seq == invite.cseq.seq and str(cancel.uri) == str(invite.uri)
    call.receive(respond(cancel, 200), 0.25)
    call.receive(respond(invite, 487), 0.3)
    (ack,) = requests(call)
    assert ack.method == "ACK"
    events = call.events()
    assert isinstance(events[-1], Ended) and events[-1].why is EndReason.CANCELLED


def test_answer_crossing_the_cancel_is_acked_and_hung_up() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    call.receive(respond(invite, 180), 0.1)
    call.hangup(0.2)
    (cancel,) = requests(call)
    assert cancel.method == "CANCEL"
    call.receive(respond(invite, 200), 0.21)
    ack, bye = requests(call)
    assert (ack.method, bye.method) == ("ACK", "BYE")
    call.receive(respond(bye, 200), 0.3)
    ended = call.events()[-1]
    assert isinstance(ended, Ended) and ended.why is EndReason.CANCELLED and ended.bye_status == 200


def test_no_response_retransmits_then_times_out() -> None:
    call = new_call()
    call.start(0.0)
    requests(call)
    times = []
    while call.state is not CallState.ENDED:
        deadline = call.get_timer()
        assert deadline is not None
        call.handle_timer(deadline)
        if requests(call):
            times.append(deadline)
    # RFC 3261 §17.1.1.2: Timer A doubles from T1; Timer B ends it at 64*T1.
    assert times[:4] == [0.5, 1.5, 3.5, 7.5]
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.TIMEOUT and ended.at == 32.0


def test_tcp_has_no_retransmissions_and_names_the_transport() -> None:
    server = StreamAddress(*SERVER, Transport.TCP, target=SERVER)
    call = new_call(transport=Transport.TCP, server=server)
    call.start(0.0)
    (invite,) = requests(call)
    assert invite.vias[0].transport == "TCP"
    assert str(invite.uri).endswith(";transport=tcp")
    assert call.get_timer() == 32.0  # Timer B only


def test_server_bye_and_refresh_are_answered() -> None:
    call = new_call()
    invite = answered(call)
    call.events()
    refresh = (
        f"INVITE sip:sipbridge@127.0.0.1:6000 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKre\r\n"
        f"From: <sip:+12025550101@127.0.0.1>;tag=srv\r\nTo: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    call.receive(refresh, 1.0)
    trying, ok = sent(call)  # RFC 3261 §17.2.1: the INVITE server transaction's 100 first
    assert isinstance(trying, Response) and trying.status == 100
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == SDP
    bye = refresh.replace(b"INVITE sip", b"BYE sip").replace(b"7 INVITE", b"8 BYE")
    call.receive(bye, 2.0)
    (ok,) = sent(call)
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.method == "BYE"
    events = call.events()
    assert isinstance(events[0], RequestReceived) and events[0].method == "INVITE"
    assert isinstance(events[-1], Ended) and events[-1].why is EndReason.REMOTE_HANGUP
    assert call.done
    # The BYE retransmitted: its transaction answers it again, nothing new happens.
    call.receive(bye, 2.05)
    (again,) = sent(call)
    assert isinstance(again, Response) and again.status == 200 and call.events() == []
    stranger = bye.replace(invite.call_id.encode(), b"someone-else").replace(b"Kre", b"Kst")
    call.receive(stranger, 2.1)
    (nope,) = sent(call)
    assert isinstance(nope, Response) and nope.status == 481


def from_server(
    invite: Request,
    method: str,
    seq: int,
    *,
    body: bytes = b"",
    call_id: str = "",
    to_tag: bool = True,
) -> bytes:
    """A request of the server in the call's dialog (its own branch per ``seq``)."""
    to = invite.headers.get("From") if to_tag else f"<{invite.uri}>"
    kind = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:sipbridge@127.0.0.1:6000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{method.lower()}{seq}\r\n"
        f"From: <sip:+12025550101@127.0.0.1>;tag=srv\r\nTo: {to}\r\n"
        f"Call-ID: {call_id or invite.call_id}\r\nCSeq: {seq} {method}\r\n"
        f"Contact: <sip:127.0.0.1:5060>\r\n{kind}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_server_update_options_info_and_unknown_methods_are_answered() -> None:
    call = new_call()
    invite = answered(call)
    call.events()
    call.receive(from_server(invite, "UPDATE", 2), 1.0)  # RFC 4028 refresh, no body
    (ok,) = sent(call)
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == b""
    call.receive(from_server(invite, "UPDATE", 3, body=SDP), 1.1)  # an offer (RFC 3311)
    (ok,) = sent(call)
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == SDP
    assert ok.headers.get("Content-Type") == "application/sdp"
    for seq, method in ((4, "OPTIONS"), (5, "INFO"), (6, "NOTIFY")):
        call.receive(from_server(invite, method, seq), 1.2)
        (ok,) = sent(call)
        assert isinstance(ok, Response) and (ok.status, ok.cseq.method) == (200, method)
    call.receive(from_server(invite, "MESSAGE", 7), 1.3)
    (nope,) = sent(call)
    assert isinstance(nope, Response) and nope.status == 501 and nope.headers.get("Allow")
    call.receive(from_server(invite, "INFO", 1), 1.4)  # RFC 3261 §12.2.2: out of order
    (late,) = sent(call)
    assert isinstance(late, Response) and late.status == 500
    events = call.events()
    assert all(isinstance(e, RequestReceived) for e in events)
    assert [(e.method, e.status) for e in events] == [  # type: ignore[union-attr]
        ("UPDATE", 200),
        ("UPDATE", 200),
        ("OPTIONS", 200),
        ("INFO", 200),
        ("NOTIFY", 200),
        ("MESSAGE", 501),
    ]
    assert call.state is CallState.ANSWERED


def test_a_new_call_to_us_is_refused() -> None:
    call = new_call()
    invite = answered(call)
    call.events()
    call.receive(from_server(invite, "INVITE", 1, body=SDP, call_id="new", to_tag=False), 1.0)
    statuses = [m.status for m in sent(call) if isinstance(m, Response)]
    assert statuses[-1] == 481 and call.events() == []
    assert call.state is CallState.ANSWERED


def test_our_bye_is_sent_again_when_challenged() -> None:
    """The server's trunk challenges our BYE (RFC 3261 §22.2): our credentials again."""
    call = new_call(username="acme", password="s3cret")
    auth = DigestAuthenticator("sipbridge.test", secret=b"k" * 32)
    answered(call)
    call.events()
    call.hangup(1.0)
    (bye,) = requests(call)
    call.receive(respond(bye, 401, **dict(auth.challenge(1.0))), 1.1)
    (again,) = requests(call)
    assert again.method == "BYE" and again.cseq.seq == bye.cseq.seq + 1
    credentials = find_credentials(again.headers.get_lines("Authorization"), "sipbridge.test")
    assert credentials is not None
    result = auth.verify(credentials, method="BYE", password="s3cret", now=1.2)
    assert result is AuthResult.OK
    assert call.events() == [] and not call.done
    call.receive(respond(again, 200), 1.3)
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.HANGUP and ended.bye_status == 200
    assert call.done


def test_cancel_without_a_final_response_times_out() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    call.receive(respond(invite, 180), 0.1)
    call.hangup(10.0)
    (cancel,) = requests(call)
    call.receive(respond(cancel, 200), 10.1)
    call.events()
    while not call.done:
        deadline = call.get_timer()
        assert deadline is not None
        call.handle_timer(deadline)
    # RFC 3261 §9.1: no final response 64*T1 after the CANCEL: the INVITE is over.
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.TIMEOUT
    assert ended.at == pytest.approx(10.0 + 32.0)
    assert call.cancel_sent  # the runner says "after our CANCEL"
    unanswered = new_call()
    unanswered.start(0.0)
    assert not unanswered.cancel_sent


def test_answer_before_any_provisional_after_hangup_is_acked_and_hung_up() -> None:
    call = new_call()
    call.start(0.0)
    (invite,) = requests(call)
    call.hangup(0.1)  # the CANCEL waits for a provisional response that never comes
    call.receive(respond(invite, 200), 0.2)
    ack, bye = requests(call)
    assert (ack.method, bye.method) == ("ACK", "BYE")
    assert call.events() == [] and call.state is CallState.CANCELLING
    call.receive(respond(bye, 481), 0.3)
    (ended,) = call.events()
    assert isinstance(ended, Ended) and ended.why is EndReason.CANCELLED
    assert (ended.status, ended.bye_status) == (200, 481) and call.done


def test_garbage_is_ignored_and_start_twice_refused() -> None:
    call = new_call()
    call.start(0.0)
    requests(call)
    call.receive(b"\r\n\r\n", 0.1)
    call.receive(b"not sip at all", 0.1)
    assert sent(call) == [] and call.events() == []
    with pytest.raises(RuntimeError):
        call.start(0.2)
