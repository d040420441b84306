"""Fuzz the SIP parser and the whole user agent core with atheris.

    python fuzz/fuzz_sip.py -max_total_time=60 fuzz/corpus/sip

An input is one or more UDP datagrams separated by ``SEPARATOR`` (a line ``=====``). Each
datagram goes through:

* ``parse_message``: raises only SipParseError; what parses serializes again;
* the whole input as a TCP/TLS stream through ``StreamFramer``, read in three different
  sizes: the same messages whatever the read size, and only FramingError raised;
* one ``UserAgent`` fed every datagram of the input in turn, with a small call layer
  that acts on its events like the runtime does (ring and answer or reject each call from
  its SDP, answer re-INVITEs, read INFO DTMF, hang up or transfer some calls), then runs
  every timer and one far in the future (an input with an ``X-Sipbridge-Source`` header
  has its source as a trusted proxy). Nothing may raise; everything sent must be a SIP
  message that parses, responses go back to the source, requests to a usable address.
"""

from __future__ import annotations

import contextlib
import itertools
import sys

from _common import instrumented, run, split

with instrumented(__name__ == "__main__"):
    from sipbridge.media.dtmf import DtmfError, parse_dtmf_info
    from sipbridge.numbers import caller_number, dialed_number
    from sipbridge.sdp.crypto import answer_crypto
    from sipbridge.sdp.negotiate import NoCommonCodec, build_answer, negotiate
    from sipbridge.sdp.session import SdpError, parse_sdp
    from sipbridge.sip.calls import (
        AckTimeout,
        CallConfirmed,
        CallState,
        InboundCall,
        IncomingCall,
        InfoReceived,
        NotifyReceived,
        ReInviteReceived,
        RequestRejected,
    )
    from sipbridge.sip.errors import SipParseError
    from sipbridge.sip.framing import FramingError, StreamFramer
    from sipbridge.sip.message import Request, parse_message
    from sipbridge.sip.proxy import TrustedProxies
    from sipbridge.sip.ua import UserAgent

SEPARATOR = b"\n=====\n"
MAX_DATAGRAMS = 8
LOCAL = ("127.0.0.1", 5060)
SOURCE = ("127.0.0.1", 5070)
CODECS = ["pcmu", "pcma", "g722", "opus"]


def check_parser(data: bytes) -> bool:
    """Whether ``data`` parses."""
    try:
        message = parse_message(data)
    except SipParseError:
        return False
    # The typed view and serialization of anything that parsed must work.
    message.vias, message.from_, message.to, message.call_id, message.cseq  # noqa: B018
    message.contacts, message.max_forwards  # noqa: B018
    wire = message.serialize()
    assert isinstance(wire, bytes)
    if isinstance(message, Request):
        str(message.uri)
    return True


def _answer_sdp(body: bytes, session_id: int) -> bytes | None:
    """Our SDP answer to ``body``, None when it must be rejected (488)."""
    try:
        offer = parse_sdp(body)
        chosen = negotiate(offer, CODECS)
    except (SdpError, NoCommonCodec):
        return None
    crypto = answer_crypto(chosen.srtp) if chosen.srtp is not None else None
    return build_answer(offer, chosen, LOCAL[0], 40000, session_id, 0, crypto).serialize()


def _numbers(request: Request) -> None:
    # What the runtime writes into call records (runtime/server.py, runtime/call.py).
    caller_number(request.from_.uri.user)
    dialed_number(request.uri.user, request.to.uri.user)


def _answer(ua: UserAgent, call: InboundCall, now: float) -> None:
    if call.state is not CallState.OFFERED or call.transaction.final_sent:
        return  # cancelled meanwhile
    sdp = _answer_sdp(call.invite.body, len(ua._dialogs) + 1)
    if sdp is None:
        ua.reject(call, 488, now)
    else:
        ua.answer(call, sdp, now)


def _call_layer(ua: UserAgent, now: float, pending: list[InboundCall]) -> None:
    """React to the UA's events the way the runtime does (bounded: events may cascade).

    A call whose Call-ID has a length divisible by 3 rings until the next datagram has
    been handled (so a CANCEL can meet it), the others are answered at once.
    """
    for _ in range(16):
        events = ua.events()
        if not events:
            return
        for event in events:
            if isinstance(event, IncomingCall):
                call = event.call
                _numbers(call.invite)
                ua.ring(call, now)
                if len(call.invite.call_id) % 3 == 0:
                    pending.append(call)
                else:
                    _answer(ua, call, now)
            elif isinstance(event, CallConfirmed):
                # Let the input decide what happens next: nothing, a transfer, a hangup.
                choice = len(event.call.invite.call_id) % 3
                if choice == 1:
                    ua.refer(event.call, "sip:+15551234567@127.0.0.1", now, {"X-Ticket": "1"})
                elif choice == 2:
                    ua.hangup(event.call, now)
            elif isinstance(event, AckTimeout):
                ua.hangup(event.call, now)
            elif isinstance(event, ReInviteReceived):
                if not event.request.body:
                    ua.answer_reinvite(event.call, event.call.local_sdp, now)
                else:
                    sdp = _answer_sdp(event.request.body, 1)
                    if sdp is None:
                        ua.reject_reinvite(event.call, 488, now)
                    else:
                        ua.answer_reinvite(event.call, sdp, now)
            elif isinstance(event, InfoReceived):
                content_type = event.request.headers.get("Content-Type") or ""
                with contextlib.suppress(DtmfError):
                    parse_dtmf_info(content_type, event.request.body)
            elif isinstance(event, NotifyReceived):
                event.sipfrag_status, event.terminated  # noqa: B018
            elif isinstance(event, RequestRejected):
                request = event.request
                if request is not None and request.method == "INVITE" and event.status:
                    _numbers(request)


def _check_sent(ua: UserAgent, received_parsed: bool = True) -> None:
    """What the UA queued: responses to the source, requests to a usable address, and
    all of it parseable SIP, except error responses to a datagram that did not parse
    (RFC 3261 §8.2.6.1: those copy the request's From, To, CSeq and Via as they came)."""
    for wire, (host, port) in ua.datagrams_to_send():
        assert isinstance(wire, bytes)
        assert len(wire) <= 65507, f"datagram of {len(wire)} bytes does not fit UDP"
        if wire.startswith(b"SIP/2.0 "):
            assert (host, port) == SOURCE, f"response sent to {(host, port)}, not the source"
            if not received_parsed and wire[8:9] in b"456":
                continue
        else:
            assert isinstance(host, str) and host, f"request sent to host {host!r}"
            assert host.isascii() and host.isprintable() and " " not in host, host
            assert isinstance(port, int) and 0 < port < 65536, f"request sent to port {port}"
        parse_message(wire)  # SipParseError here is a failure: we sent a broken message


def check_ua(datagrams: list[bytes]) -> None:
    # Deterministic tags and branches (z9hG4bKt1, ...): the same input, the same run.
    tokens = (f"t{n}" for n in itertools.count(1))
    ua = UserAgent(*LOCAL, new_token=lambda: next(tokens))
    if any(b"x-sipbridge-source" in d.lower() for d in datagrams):
        # The source as a trusted proxy (sip/proxy.py): its header is read, and believed.
        ua.proxies = TrustedProxies.parse([SOURCE[0]])
    now = 1000.0
    pending: list[InboundCall] = []
    for datagram in datagrams:
        ringing, pending[:] = pending[:], []
        ua.receive_datagram(datagram, SOURCE, now)
        _call_layer(ua, now, pending)
        for call in ringing:
            _answer(ua, call, now)
        _call_layer(ua, now, pending)
        _check_sent(ua, check_parser(datagram))
        now += 0.25
    for call in pending:
        _answer(ua, call, now)
    pending.clear()
    _call_layer(ua, now, pending)
    _check_sent(ua)
    # Every timer in turn (retransmissions, Timer H, J, K, ...), then far in the future.
    for _ in range(64):
        deadline = ua.get_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        ua.handle_timer(now)
        _call_layer(ua, now, pending)
        _check_sent(ua)
    ua.handle_timer(now + 3600.0)
    _call_layer(ua, now + 3600.0, pending)
    _check_sent(ua)
    ua.handle_timer(now + 7200.0)
    _call_layer(ua, now + 7200.0, pending)
    _check_sent(ua)
    assert ua.active_transactions == 0, f"{ua.active_transactions} transactions never ended"


def check_framing(data: bytes) -> None:
    """The input as a TCP/TLS byte stream (RFC 3261 §18.3), cut into reads three ways:
    the framer raises only FramingError, whether it raises does not depend on the read
    sizes, and without an error every way of cutting yields the same messages and pongs."""
    results: list[tuple[list[bytes], bytes, bool]] = []
    for step in (len(data) or 1, 7, 1):
        framer = StreamFramer()
        messages: list[bytes] = []
        pongs = b""
        failed = False
        for start in range(0, len(data), step):
            try:
                framed, pong = framer.feed(data[start : start + step])
            except FramingError:
                failed = True
                break
            messages.extend(framed)
            pongs += pong
        results.append((messages, pongs, failed))
    whole = results[0]
    for other in results[1:]:
        assert other[2] == whole[2], ("framing error depends on read sizes", whole, other)
        if not whole[2]:  # (a read that fails loses what it framed: compare only successes)
            assert other[:2] == whole[:2], (whole, other)
    for message in results[-1][0]:
        check_parser(message)


def check(data: bytes) -> None:
    check_framing(data)
    check_ua(split(data, SEPARATOR, MAX_DATAGRAMS))


if __name__ == "__main__":
    run(check, "sip")
    sys.exit(0)
