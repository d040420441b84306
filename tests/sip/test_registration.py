"""The REGISTER client (RFC 3261 §10) with a fake clock and a registrar in the test."""

from __future__ import annotations

import itertools

import pytest

from sipbridge.sip.auth import (
    AuthResult,
    DigestAuthenticator,
    authorization,
    parse_authorization,
    parse_challenge,
    pick_challenge,
)
from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.message import Request, Response, make_response, parse_message
from sipbridge.sip.registration import (
    BACKOFF_LONG,
    BACKOFF_SHORT,
    DEFAULT_EXPIRES,
    RegistrationConfig,
    Registrations,
    RegistrationState,
    backoff,
    parse_registrar,
)
from sipbridge.sip.transaction import TIMER_F
from sipbridge.sip.ua import UserAgent

REALM = "sip.carrier.example"
PASSWORD = "hunter2"


def config(
    host: str = "192.0.2.10", password: str | None = PASSWORD, **kwargs: object
) -> RegistrationConfig:
    return RegistrationConfig(
        trunk="carrier",
        registrar=parse_registrar(host),
        username="acct",
        password=password,
        contact_host="198.51.100.7",
        contact_port=5060,
        **kwargs,  # type: ignore[arg-type]
    )


class Registrar:
    """Drives a Registrations with a fake clock and reads what it sends."""

    def __init__(self, *configs: RegistrationConfig, rand: float = 0.5) -> None:
        counter = itertools.count(1)
        self.regs = Registrations(new_token=lambda: f"t{next(counter)}", rand=lambda: rand)
        self.now = 100.0
        self.auth = DigestAuthenticator(REALM, b"k" * 32, algorithms=("SHA-256", "MD5"))
        self.regs.configure(configs or [config()], self.now)

    def sent(self) -> list[tuple[Request, object]]:
        out = []
        for data, address in self.regs.datagrams_to_send():
            message = parse_message(data)
            assert isinstance(message, Request)
            out.append((message, address))
        return out

    def one(self) -> Request:
        sent = self.sent()
        assert len(sent) == 1, sent
        return sent[0][0]

    def answer(self, request: Request, status: int, headers: list[tuple[str, str]] = ()) -> bool:  # type: ignore[assignment]
        response = make_response(request, status, to_tag="reg1" if status > 100 else None)
        for name, value in headers:
            response.headers.add(name, value)
        # Through the wire format, as the UA would see it.
        parsed = parse_message(response.serialize())
        assert isinstance(parsed, Response)
        return self.regs.receive_response(parsed, self.now)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadline = self.regs.get_timer()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.regs.handle_timer(self.now)
        self.now = end

    def status(self):  # type: ignore[no-untyped-def]
        status = self.regs.status("carrier")
        assert status is not None
        return status

    def ok(self, request: Request, expires: int | None = None, contact: bool = True) -> None:
        headers = []
        if contact:
            value = request.headers.get("Contact") or ""
            headers.append(("Contact", value + (f";expires={expires}" if expires else "")))
        assert self.answer(request, 200, headers)


def test_register_at_start_and_the_request() -> None:
    reg = Registrar()
    request, address = reg.sent()[0]
    assert address == ("192.0.2.10", 5060)
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:192.0.2.10"
    assert request.from_.uri.user == "acct" and request.to.uri.user == "acct"
    assert request.from_.tag and request.to.tag is None
    assert request.headers.get("Expires") == str(DEFAULT_EXPIRES)
    assert str(request.contacts[0].uri) == "sip:acct@198.51.100.7:5060"
    assert request.vias[0].transport == "UDP" and request.vias[0].branch.startswith("z9hG4bK")
    assert "Authorization" not in request.headers
    assert reg.status().state is RegistrationState.REGISTERING
    reg.ok(request, expires=1800)
    status = reg.status()
    assert status.state is RegistrationState.REGISTERED
    assert status.registered_until == pytest.approx(reg.now + 1800)
    assert status.next_attempt == pytest.approx(reg.now + 900)  # half the granted expiry
    assert status.last_status == 200
    events = reg.regs.events()
    assert [(e.outcome, e.status, e.expires) for e in events] == [("ok", 200, 1800)]


def test_tcp_and_tls_targets() -> None:
    tcp = parse_registrar("sip.carrier.example:5070;transport=tcp")
    assert tcp.address == StreamAddress("sip.carrier.example", 5070, Transport.TCP)
    assert isinstance(tcp.address, StreamAddress)
    assert tcp.address.target == ("sip.carrier.example", 5070)
    assert tcp.uri() == "sip:sip.carrier.example:5070;transport=tcp"
    tls = parse_registrar("[2001:db8::1];transport=TLS")
    assert tls.address == ("2001:db8::1", 5061) and tls.transport is Transport.TLS
    for bad in ("host;transport=sctp", "host;foo=bar", "user@host", "", "host:99999"):
        with pytest.raises(ValueError):
            parse_registrar(bad)
    reg = Registrar(config("192.0.2.10;transport=tcp"))
    request, address = reg.sent()[0]
    assert isinstance(address, StreamAddress) and address.transport is Transport.TCP
    assert request.vias[0].transport == "TCP"
    assert str(request.contacts[0].uri) == "sip:acct@198.51.100.7:5060;transport=tcp"
    assert str(request.uri) == "sip:192.0.2.10;transport=tcp"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_401_challenge_then_200(algorithm: str) -> None:
    reg = Registrar()
    reg.auth = DigestAuthenticator(REALM, b"k" * 32, algorithms=(algorithm,))
    first = reg.one()
    assert reg.answer(first, 401, reg.auth.challenge(reg.now))
    second = reg.one()
    assert second.call_id == first.call_id
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.vias[0].branch != first.vias[0].branch
    credentials = parse_authorization(second.headers.get("Authorization") or "")
    assert credentials is not None
    assert credentials.algorithm == algorithm and credentials.qop == "auth"
    assert credentials.nc == "00000001" and credentials.cnonce
    assert credentials.uri == str(second.uri)
    result = reg.auth.verify(credentials, method="REGISTER", password=PASSWORD, now=reg.now)
    assert result is AuthResult.OK
    reg.ok(second)
    assert reg.status().state is RegistrationState.REGISTERED


def test_sha256_is_preferred_over_md5() -> None:
    reg = Registrar()
    md5 = DigestAuthenticator(REALM, b"k" * 32, algorithms=("MD5", "SHA-256"))
    reg.answer(reg.one(), 401, md5.challenge(reg.now))  # MD5 offered first
    credentials = parse_authorization(reg.one().headers.get("Authorization") or "")
    assert credentials is not None and credentials.algorithm == "SHA-256"


def test_407_is_answered_with_proxy_authorization() -> None:
    reg = Registrar()
    headers = [("Proxy-Authenticate", v) for _, v in reg.auth.challenge(reg.now)]
    reg.answer(reg.one(), 407, headers)
    request = reg.one()
    assert "Authorization" not in request.headers
    credentials = parse_authorization(request.headers.get("Proxy-Authorization") or "")
    assert credentials is not None
    assert (
        reg.auth.verify(credentials, method="REGISTER", password=PASSWORD, now=reg.now)
        is AuthResult.OK
    )


def test_wrong_password_fails_without_a_loop() -> None:
    reg = Registrar(config(password="wrong"))
    reg.answer(reg.one(), 401, reg.auth.challenge(reg.now))
    request = reg.one()
    credentials = parse_authorization(request.headers.get("Authorization") or "")
    assert credentials is not None
    assert (
        reg.auth.verify(credentials, method="REGISTER", password=PASSWORD, now=reg.now)
        is AuthResult.FAILED
    )
    reg.answer(request, 401, reg.auth.challenge(reg.now))  # a new nonce, not stale
    assert reg.sent() == []
    status = reg.status()
    assert status.state is RegistrationState.FAILING
    assert (status.last_status, status.last_reason) == (401, "auth_failed")
    # A long back-off: credentials refused need an operator.
    assert status.next_attempt is not None
    assert status.next_attempt - reg.now == pytest.approx(BACKOFF_LONG[0])


def test_stale_nonce_is_answered_again() -> None:
    reg = Registrar()
    reg.answer(reg.one(), 401, reg.auth.challenge(reg.now))
    second = reg.one()
    reg.answer(second, 401, reg.auth.challenge(reg.now, stale=True))
    third = reg.one()
    first_nonce = parse_authorization(second.headers.get("Authorization") or "")
    new_nonce = parse_authorization(third.headers.get("Authorization") or "")
    assert first_nonce is not None and new_nonce is not None
    assert new_nonce.nonce != first_nonce.nonce and new_nonce.nc == "00000001"
    reg.ok(third)
    assert reg.status().state is RegistrationState.REGISTERED


def test_challenge_without_qop_gets_the_rfc2069_form() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", opaque="o"')
    assert challenge is not None and challenge.qop == () and challenge.algorithm == "MD5"
    value = authorization(
        challenge, username="u", password="p", method="REGISTER", uri="sip:r", nc=1, cnonce="c"
    )
    assert "qop=" not in value and 'opaque="o"' in value
    # auth-int only, -sess algorithms, other schemes: nothing we can answer.
    assert parse_challenge('Digest realm="r", nonce="n", qop="auth-int"') is None
    assert parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess') is None
    assert parse_challenge('Basic realm="r"') is None
    assert pick_challenge(['Basic realm="r"'], []) is None


def test_refresh_at_half_the_expiry_with_the_same_call_id() -> None:
    reg = Registrar()
    first = reg.one()
    reg.answer(first, 401, reg.auth.challenge(reg.now))
    second = reg.one()
    reg.ok(second, expires=600)
    reg.advance(299)
    assert reg.sent() == []
    reg.advance(1)
    refresh = reg.one()
    assert refresh.call_id == first.call_id
    assert refresh.from_.tag == first.from_.tag
    assert refresh.cseq.seq == second.cseq.seq + 1
    # The last challenge is reused with the next nonce-count: no extra round trip.
    credentials = parse_authorization(refresh.headers.get("Authorization") or "")
    assert credentials is not None and credentials.nc == "00000002"
    assert (
        reg.auth.verify(credentials, method="REGISTER", password=PASSWORD, now=reg.now)
        is AuthResult.OK
    )
    # Still registered while the refresh is out.
    assert reg.status().state is RegistrationState.REGISTERED
    reg.ok(refresh, contact=False)  # no Contact: the requested expiry
    assert reg.status().registered_until == pytest.approx(reg.now + DEFAULT_EXPIRES)


def test_expires_header_when_the_contact_has_none() -> None:
    reg = Registrar()
    request = reg.one()
    reg.answer(
        request, 200, [("Contact", request.headers.get("Contact") or ""), ("Expires", "120")]
    )
    assert reg.status().registered_until == pytest.approx(reg.now + 120)
    assert reg.status().next_attempt == pytest.approx(reg.now + 60)


def test_423_retries_with_min_expires() -> None:
    reg = Registrar(config(expires=60))
    first = reg.one()
    assert first.headers.get("Expires") == "60"
    reg.answer(first, 423, [("Min-Expires", "1800")])
    second = reg.one()
    assert second.headers.get("Expires") == "1800"
    reg.ok(second)
    assert reg.status().registered_until == pytest.approx(reg.now + 1800)
    # The refresh asks for that again.
    reg.advance(900)
    assert reg.one().headers.get("Expires") == "1800"


def test_423_without_a_usable_min_expires_fails() -> None:
    reg = Registrar()
    reg.answer(reg.one(), 423, [("Min-Expires", "999999")])
    assert reg.sent() == []
    assert reg.status().state is RegistrationState.FAILING
    assert reg.status().last_reason == "interval_too_brief"


def test_timer_f_timeout_then_backoff() -> None:
    reg = Registrar()
    reg.one()
    reg.advance(TIMER_F - 1)
    retransmissions = reg.sent()
    assert len(retransmissions) >= 5  # Timer E over UDP
    reg.advance(1)
    reg.sent()  # the last Timer E retransmission
    status = reg.status()
    assert status.state is RegistrationState.FAILING
    assert (status.last_status, status.last_reason) == (None, "timeout")
    events = reg.regs.events()
    assert events[-1].outcome == "failed" and events[-1].retry_in == pytest.approx(30)
    reg.advance(29.9)
    assert reg.sent() == []
    reg.advance(0.2)
    retry = reg.one()
    assert reg.status().state is RegistrationState.REGISTERING
    reg.ok(retry)
    assert reg.status().failures == 0


def test_connection_failure_fails_at_once() -> None:
    # RFC 3261 §8.1.3.1: a transport error (here a TLS certificate that does not verify)
    # fails the REGISTER at once, with the runtime's reason, and it is retried later.
    reg = Registrar(config("registrar.example:5071;transport=tls"))
    reg.one()
    reason = "tls certificate verify failed: self-signed certificate"
    reg.regs.connection_failed(Transport.TLS, "registrar.example", 5061, "other port", reg.now)
    reg.regs.connection_failed(Transport.TCP, "registrar.example", 5071, "other kind", reg.now)
    assert reg.status().state is RegistrationState.REGISTERING  # not its connection
    reg.regs.connection_failed(Transport.TLS, "registrar.example", 5071, reason, reg.now)
    status = reg.status()
    assert status.state is RegistrationState.FAILING
    assert (status.last_status, status.last_reason) == (None, reason)
    assert status.next_attempt == pytest.approx(reg.now + 30)
    (event,) = reg.regs.events()
    assert (event.outcome, event.reason) == ("failed", reason)
    # Nothing is out any more: a second report changes nothing.
    reg.regs.connection_failed(Transport.TLS, "registrar.example", 5071, reason, reg.now)
    assert reg.status().failures == 1 and reg.regs.events() == []
    reg.advance(30)
    assert reg.one().method == "REGISTER"


def test_backoff_doubles_with_jitter_bounds() -> None:
    for failures in range(1, 12):
        middle = backoff(failures, 503, 0.5)
        assert middle == min(BACKOFF_SHORT[1], BACKOFF_SHORT[0] * 2 ** (failures - 1))
        assert backoff(failures, 503, 0.0) == pytest.approx(middle * 0.8)
        assert backoff(failures, 503, 0.999999) == pytest.approx(middle * 1.2, rel=1e-5)
    assert backoff(1, None, 0.5) == 30
    assert backoff(1, 403, 0.5) == 300 and backoff(10, 404, 0.5) == 3600
    assert backoff(1, 480, 0.5) == 60
    assert backoff(1, 503, 0.5, retry_after=120) == 120


def test_failures_back_off_with_retry_after_and_jitter() -> None:
    low = Registrar(rand=0.0)
    low.answer(low.one(), 503, [("Retry-After", "100")])
    assert low.status().next_attempt == pytest.approx(low.now + 80)
    high = Registrar(rand=0.999)
    high.answer(high.one(), 500)
    delay = high.status().next_attempt - high.now  # type: ignore[operator]
    assert 30 * 1.19 < delay < 30 * 1.2


def test_403_is_failing_with_a_long_backoff() -> None:
    reg = Registrar()
    reg.answer(reg.one(), 403)
    status = reg.status()
    assert status.state is RegistrationState.FAILING
    assert (status.last_status, status.last_reason) == (403, "Forbidden")
    assert status.next_attempt - reg.now == pytest.approx(300)  # type: ignore[operator]
    assert reg.regs.events()[-1].outcome == "failed"


def test_unregister_at_shutdown() -> None:
    reg = Registrar()
    reg.answer(reg.one(), 401, reg.auth.challenge(reg.now))
    registered = reg.one()
    reg.ok(registered)
    reg.regs.unregister_all(reg.now)
    bye = reg.one()
    assert bye.headers.get("Expires") == "0"
    assert bye.contacts[0].params.get("expires") == "0"
    assert bye.call_id == registered.call_id and bye.cseq.seq == registered.cseq.seq + 1
    assert "Authorization" in bye.headers  # no extra round trip
    assert not reg.regs.idle
    assert reg.status().state is RegistrationState.UNREGISTERING
    reg.answer(bye, 200)
    assert reg.regs.idle
    assert reg.status().state is RegistrationState.UNREGISTERED
    assert reg.status().registered_until is None
    assert reg.regs.events()[-1].outcome == "unregistered"


def test_unregister_answers_a_challenge_once() -> None:
    reg = Registrar()
    reg.ok(reg.one())
    reg.regs.unregister_all(reg.now)
    bye = reg.one()
    reg.answer(bye, 401, reg.auth.challenge(reg.now))
    again = reg.one()
    assert again.headers.get("Expires") == "0" and "Authorization" in again.headers
    reg.answer(again, 200)
    assert reg.regs.idle


def test_unregister_without_a_binding_sends_nothing() -> None:
    reg = Registrar()
    reg.answer(reg.one(), 403)
    reg.regs.unregister_all(reg.now)
    assert reg.sent() == [] and reg.regs.idle


def test_unregister_times_out() -> None:
    reg = Registrar()
    reg.ok(reg.one())
    reg.regs.unregister_all(reg.now)
    reg.one()
    reg.advance(TIMER_F + 1)
    assert reg.regs.idle
    assert reg.status().last_reason == "timeout"


def test_configure_removes_and_changes() -> None:
    reg = Registrar()
    reg.ok(reg.one())
    reg.regs.configure([], reg.now)  # trunk removed: its binding goes
    bye = reg.one()
    assert bye.headers.get("Expires") == "0"
    assert reg.regs.status("carrier") is None and not reg.regs.idle
    assert reg.answer(bye, 200)
    assert reg.regs.idle
    reg.regs.configure([config()], reg.now)
    first = reg.one()
    reg.regs.configure([config()], reg.now)  # unchanged: nothing new
    assert reg.sent() == []
    reg.ok(first)
    reg.regs.configure([config(password="new")], reg.now)  # changed: out, then in again
    sent = [r.headers.get("Expires") for r, _ in reg.sent()]
    assert sorted(sent) == ["0", str(DEFAULT_EXPIRES)]


def test_unknown_responses_are_not_ours() -> None:
    reg = Registrar()
    request = reg.one()
    other = make_response(request, 200)
    other.headers.set("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKother")
    assert not reg.regs.receive_response(parse_message(other.serialize()), reg.now)  # type: ignore[arg-type]
    # A provisional response keeps the transaction; a retransmitted final is dropped.
    assert reg.answer(request, 100)
    reg.ok(request)
    assert not reg.answer(request, 200)


def test_the_ua_hands_register_responses_and_timers_over() -> None:
    regs = Registrations(new_token=lambda: "x", rand=lambda: 0.5)
    ua = UserAgent("198.51.100.7", 5060, registrations=regs)
    regs.configure([config()], 0.0)
    ((data, address),) = ua.datagrams_to_send()
    request = parse_message(data)
    assert isinstance(request, Request) and address == ("192.0.2.10", 5060)
    assert ua.get_timer() == pytest.approx(0.5)  # Timer E
    ua.handle_timer(0.5)
    assert len(ua.datagrams_to_send()) == 1  # retransmitted
    response = make_response(request, 200)
    response.headers.add("Contact", request.headers.get("Contact") or "")
    assert ua.receive_datagram(response.serialize(), ("192.0.2.10", 5060), 1.0)
    status = regs.status("carrier")
    assert status is not None and status.state is RegistrationState.REGISTERED
    assert ua.get_timer() == pytest.approx(1.0 + DEFAULT_EXPIRES / 2)


def test_a_tiny_grant_does_not_make_a_register_loop() -> None:
    reg = Registrar()
    reg.ok(reg.one(), expires=1)
    assert reg.status().next_attempt == pytest.approx(reg.now + 1.0)  # not 0.5 s
