import random

import pytest

from sipbridge.sip.errors import SipParseError
from sipbridge.sip.message import (
    REASON_PHRASES,
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    Uri,
    Via,
    build_error_response,
    canonical_header_name,
    default_reason,
    make_response,
    parse_message,
)

INVITE = (
    b"INVITE sip:+15551234567@sip.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKnashds8, SIP/2.0/TCP [2001:db8::9]:5070"
    b";branch=z9hG4bK2\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:+15551234567@sip.example.com>\r\n"
    b'From: "Alice \\"A\\" Smith" <sip:alice@example.org>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.org\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@203.0.113.5:5060;transport=udp>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)

OPTIONS = (
    b"OPTIONS sip:bridge.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKopt\r\n"
    b"From: <sip:monitor@example.net>;tag=77\r\n"
    b"To: <sip:bridge.example.com>\r\n"
    b"Call-ID: opt-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbye;received=192.0.2.9;rport=5061\r\n"
    b"From: <sip:bridge@example.com>;tag=abc\r\n"
    b"To: <sip:alice@example.org>;tag=xyz\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def _parse_error(data: bytes, max_size: int = 65535) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_size)
    return info.value


# ----------------------------------------------------------------------------- parsing


def test_parse_request_fields() -> None:
    request = _request(INVITE)
    assert request.method == "INVITE"
    assert request.uri == Uri(
        "sip", "+15551234567", None, "sip.example.com", None, {"user": "phone"}
    )
    assert [(v.transport, v.host, v.port, v.branch) for v in request.vias] == [
        ("UDP", "203.0.113.5", 5060, "z9hG4bK776asdhds"),
        ("UDP", "198.51.100.7", None, "z9hG4bKnashds8"),
        ("TCP", "2001:db8::9", 5070, "z9hG4bK2"),
    ]
    assert "rport" in request.vias[0].params
    assert request.vias[0].rport is None
    assert request.from_.display == 'Alice "A" Smith'
    assert request.from_.tag == "1928301774"
    assert request.to.tag is None
    assert request.to.uri.user == "+15551234567"
    assert request.call_id == "a84b4c76e66710@pc33.example.org"
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.max_forwards == 70
    assert [c.uri.params for c in request.contacts] == [{"transport": "udp"}]
    assert request.body == b"v=0\r\n"
    assert request.headers.get("content-type") == "application/sdp"


def test_parse_response_fields() -> None:
    response = _response(RESPONSE)
    assert (response.status, response.reason) == (180, "Ringing")
    via = response.vias[0]
    assert (via.received, via.rport) == ("192.0.2.9", "5061")
    assert response.cseq == CSeq(2, "BYE")
    assert response.to.tag == "xyz"
    assert response.max_forwards is None
    assert response.contacts == []
    assert response.body == b""


def test_response_without_reason_phrase() -> None:
    response = _response(_replace(RESPONSE, b"180 Ringing", b"100"))
    assert (response.status, response.reason) == (100, "")


@pytest.mark.parametrize("status", [b"099", b"700", b"1000", b"2x0"])
def test_status_code_out_of_range(status: bytes) -> None:
    exc = _parse_error(_replace(RESPONSE, b"180", status))
    assert exc.status_hint == 400
    assert exc.is_request is False


def test_compact_forms_are_expanded() -> None:
    data = (
        b"INVITE sip:b@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\n"
        b"t: <sip:b@example.com>\r\n"
        b"i: compact@1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:a@192.0.2.1>\r\n"
        b"c: application/sdp\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"e: gzip\r\n"
        b"o: dialog\r\n"
        b"r: <sip:c@example.com>\r\n"
        b"b: <sip:d@example.com>\r\n"
        b"u: talk\r\n"
        b"x: 1800\r\n"
        b"l: 2\r\n"
        b"\r\n"
        b"hi"
    )
    request = _request(data)
    assert [name for name, _ in request.headers.items()] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Refer-To",
        "Referred-By",
        "Allow-Events",
        "Session-Expires",
        "Content-Length",
    ]
    assert request.call_id == "compact@1"
    assert request.body == b"hi"
    out = request.serialize()
    assert b"\r\nCall-ID: compact@1\r\n" in out
    assert b"\r\nContent-Length: 2\r\n\r\nhi" in out
    assert b"\r\ni:" not in out


def test_folded_header_lines_are_joined() -> None:
    data = _replace(
        INVITE,
        b"CSeq: 314159 INVITE\r\n",
        b"CSeq: 314159\r\n\t INVITE\r\nSubject: first\r\n  second\r\n   third\r\n",
    )
    data = _replace(data, b"To: <sip", b"To:\r\n <sip")
    request = _request(data)
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.headers.get("Subject") == "first second third"
    assert request.to.uri.host == "sip.example.com"
    assert b"Subject: first second third\r\n" in request.serialize()


def test_lf_only_line_ends_are_tolerated() -> None:
    data = _replace(INVITE, b"Content-Length: 5", b"Content-Length: 4")
    request = _request(data.replace(b"\r\n", b"\n"))
    assert request.call_id == "a84b4c76e66710@pc33.example.org"
    assert request.body == b"v=0\n"


def test_leading_crlf_is_ignored() -> None:
    # RFC 3261 §7.5
    assert _request(b"\r\n\r\n" + OPTIONS).method == "OPTIONS"


def test_header_names_are_case_insensitive_and_canonical() -> None:
    data = _replace(OPTIONS, b"Call-ID: opt-1", b"cALL-iD  : opt-1")
    data = _replace(data, b"CSeq:", b"cseq:")
    request = _request(data)
    assert request.call_id == "opt-1"
    assert ("Call-ID", "opt-1") in request.headers.items()
    assert ("CSeq", "1 OPTIONS") in request.headers.items()


def test_multiple_values_in_one_line() -> None:
    data = _replace(
        OPTIONS,
        b"Content-Length",
        b'Contact: "Bell, Alexander" <sip:a,b@example.com;x=1>;q=0.5, <sip:b@example.com>\r\n'
        b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        b"Route: <sip:p3.example.com;lr>\r\n"
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
        b"Content-Length",
    )
    request = _request(data)
    assert [c.display for c in request.contacts] == ["Bell, Alexander", None]
    assert request.contacts[0].uri.user == "a,b"
    assert request.contacts[0].uri.params == {"x": "1"}
    assert request.contacts[0].params == {"q": "0.5"}
    routes = [NameAddr.parse(v).uri.host for v in request.headers.get_all("Route")]
    assert routes == ["p1.example.com", "p2.example.com", "p3.example.com"]
    assert request.headers.get("Route") == "<sip:p1.example.com;lr>"
    assert request.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert len(request.headers.get_lines("Route")) == 2


def test_contact_star_is_accepted() -> None:
    request = _request(_replace(OPTIONS, b"Content-Length", b"Contact: *\r\nContent-Length"))
    assert request.contacts == []


def test_missing_max_forwards_is_tolerated() -> None:
    assert _request(OPTIONS).max_forwards is None


# ----------------------------------------------------------------------------- body framing


def test_bytes_beyond_content_length_are_ignored() -> None:
    assert _request(INVITE + b"garbage").body == b"v=0\r\n"


def test_without_content_length_the_rest_is_the_body() -> None:
    data = _replace(INVITE, b"Content-Length: 5\r\n", b"") + b"more"
    assert _request(data).body == b"v=0\r\nmore"


def test_content_length_larger_than_data() -> None:
    exc = _parse_error(_replace(INVITE, b"Content-Length: 5", b"Content-Length: 6"))
    assert exc.status_hint == 400
    assert "Content-Length" in exc.reason
    assert exc.headers is not None
    assert exc.is_request is True


@pytest.mark.parametrize("value", [b"-1", b"five", b"12345678901", b"1 2", b""])
def test_malformed_content_length(value: bytes) -> None:
    exc = _parse_error(_replace(INVITE, b"Content-Length: 5", b"Content-Length: " + value))
    assert exc.status_hint == 400


def test_duplicate_content_length() -> None:
    exc = _parse_error(_replace(INVITE, b"Content-Length: 5", b"Content-Length: 5\r\nl: 5"))
    assert "more than once" in exc.reason


def test_non_ascii_digits_are_not_numbers() -> None:
    exc = _parse_error(_replace(OPTIONS, b"Content-Length: 0", "l: \u0660".encode()))
    assert exc.status_hint == 400


# ----------------------------------------------------------------------------- errors


def test_empty_message() -> None:
    for data in (b"", b"\r\n\r\n"):
        exc = _parse_error(data)
        assert exc.headers is None
        assert exc.is_request is None


def test_message_too_large() -> None:
    exc = _parse_error(INVITE, max_size=len(INVITE) - 1)
    assert exc.status_hint == 513
    assert exc.is_request is True
    assert exc.headers is not None
    assert exc.headers.get("Call-ID") == "a84b4c76e66710@pc33.example.org"
    assert isinstance(parse_message(INVITE, max_size=len(INVITE)), Request)


def test_unsupported_version_in_request() -> None:
    exc = _parse_error(_replace(OPTIONS, b"SIP/2.0\r\n", b"SIP/3.0\r\n"))
    assert exc.status_hint == 505
    assert exc.is_request is True
    assert exc.headers is not None
    response = build_error_response(exc.headers, exc.status_hint)
    assert response is not None
    assert response.reason == "Version Not Supported"


def test_unsupported_version_in_response() -> None:
    exc = _parse_error(_replace(RESPONSE, b"SIP/2.0 180", b"SIP/3.0 180"))
    assert exc.status_hint == 505
    assert exc.is_request is False


def test_sip_version_literal_is_case_insensitive() -> None:
    assert _request(_replace(OPTIONS, b"SIP/2.0\r\n", b"sip/2.0\r\n")).method == "OPTIONS"


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(name: bytes) -> None:
    lines = [line for line in OPTIONS.split(b"\r\n") if not line.startswith(name + b":")]
    exc = _parse_error(b"\r\n".join(lines))
    assert exc.status_hint == 400
    assert f"missing {name.decode()}" in exc.reason
    assert exc.is_request is True
    assert exc.headers is not None
    assert name.decode() not in exc.headers
    response = build_error_response(exc.headers, 400)
    if name == b"Via":
        assert response is None  # nowhere to send it, nothing to match it on
    else:
        assert response is not None and response.status == 400
        assert name.decode() not in response.headers


@pytest.mark.parametrize("name", [b"From", b"To", b"Call-ID", b"CSeq", b"Max-Forwards"])
def test_duplicate_single_header(name: bytes) -> None:
    line = next(line for line in INVITE.split(b"\r\n") if line.startswith(name + b":"))
    exc = _parse_error(_replace(INVITE, line, line + b"\r\n" + line))
    assert "appears 2 times" in exc.reason


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Via: SIP/2.0/UDP 203.0.113.5:5060", b"Via: SIP/2.0/UDP"),
        (b"Via: SIP/2.0/UDP 203.0.113.5:5060", b"Via: SIP/1.0/UDP 203.0.113.5:5060"),
        (b"Via: SIP/2.0/UDP 203.0.113.5:5060", b"Via: SIP/2.0/UDP 203.0.113.5:99999"),
        (b'From: "Alice', b"From: Alice"),
        (b"To: <sip:+1", b"To: < sip:+1"),
        (b"Call-ID: a84b4c76e66710@pc33.example.org", b"Call-ID: a b"),
        (b"CSeq: 314159 INVITE", b"CSeq: INVITE"),
        (b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"),
        (b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256"),
        (b"Max-Forwards: 70", b"Max-Forwards: seventy"),
        (b"Contact: <sip:alice@203.0.113.5:5060;transport=udp>", b"Contact: <sip:alice@>"),
    ],
)
def test_malformed_mandatory_header(old: bytes, new: bytes) -> None:
    exc = _parse_error(_replace(INVITE, old, new))
    assert exc.status_hint == 400
    assert exc.is_request is True
    assert exc.headers is not None
    assert exc.headers.get("Call-ID") is not None


def test_cseq_number_at_32_bit_limit() -> None:
    data = _replace(INVITE, b"CSeq: 314159 INVITE", b"CSeq: 4294967295 INVITE")
    assert _request(data).cseq.seq == 4294967295


@pytest.mark.parametrize(
    ("start_line", "is_request"),
    [
        (b"INVITE <sip:u@example.com> SIP/2.0", True),
        (b"INVITE sip:u@example.com; lr SIP/2.0", True),
        (b"INVITE sip:u@example.com SIP/2.0 extra", None),
        (b"IN\x01VITE sip:u@example.com SIP/2.0", True),
        (b"INVITE sip:u@example.com", None),
        (b"hello", None),
        (b"SIP/2.0 OK", False),
    ],
)
def test_malformed_start_line(start_line: bytes, is_request: bool | None) -> None:
    data = start_line + INVITE[INVITE.index(b"\r\n") :]
    exc = _parse_error(data)
    assert exc.status_hint == 400
    assert exc.is_request is is_request
    assert exc.headers is not None
    assert len(exc.headers.get_all("Via")) == 3


def test_malformed_header_lines_keep_the_others() -> None:
    data = _replace(OPTIONS, b"Content-Length", b"no colon here\r\n: empty name\r\nContent-Length")
    exc = _parse_error(data)
    assert "malformed header line" in exc.reason
    assert exc.headers is not None
    assert exc.headers.get("Call-ID") == "opt-1"
    response = build_error_response(exc.headers, 400)
    assert response is not None
    assert response.call_id == "opt-1"


def test_continuation_without_header() -> None:
    exc = _parse_error(_replace(OPTIONS, b"\r\nVia:", b"\r\n folded\r\nVia:"))
    assert "continuation" in exc.reason


def test_bare_cr_in_header_line() -> None:
    exc = _parse_error(_replace(OPTIONS, b"Call-ID: opt-1", b"Call-ID: opt\r-1"))
    assert "bare CR" in exc.reason


def test_missing_blank_line() -> None:
    exc = _parse_error(OPTIONS[:-2])
    assert "blank line" in exc.reason
    assert exc.headers is not None
    assert exc.headers.get("CSeq") == "1 OPTIONS"


def test_every_truncated_prefix_raises_parse_error_only() -> None:
    # The full INVITE needs every byte (Content-Length covers the body to the end),
    # so every proper prefix must be refused, and only ever with SipParseError.
    for size in range(len(INVITE)):
        with pytest.raises(SipParseError):
            parse_message(INVITE[:size])
    assert isinstance(parse_message(INVITE), Request)


def test_mutated_messages_raise_parse_error_only() -> None:
    rng = random.Random(3261)
    alphabet = b'\r\n \t:;,<>"\\@[]%=?&/0123456789aZ\x00\xff'
    parsed = 0
    for _ in range(3000):
        data = bytearray(rng.choice((INVITE, OPTIONS, RESPONSE)))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[pos] = rng.choice(alphabet)
            elif choice < 0.7:
                data[pos:pos] = bytes([rng.choice(alphabet)])
            else:
                del data[pos : pos + rng.randint(1, 4)]
        try:
            message = parse_message(bytes(data))
        except SipParseError as exc:
            if exc.headers is not None:
                build_error_response(exc.headers, exc.status_hint, to_tag="t")
            continue
        parsed += 1
        again = parse_message(message.serialize())
        assert again.serialize() == message.serialize()
    assert parsed > 100  # the mutations must not all be fatal, or this tests nothing


# ----------------------------------------------------------------------------- serializing


def test_round_trip() -> None:
    for data in (INVITE, OPTIONS, RESPONSE):
        first = parse_message(data)
        out = first.serialize()
        assert out == data  # already canonical
        assert parse_message(out) == first


def test_serialize_canonicalizes() -> None:
    data = (
        b"BYE sip:alice@192.0.2.4 SIP/2.0\r\n"
        b"v:SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK9\r\n"
        b"f: <sip:b@example.com>;tag=1\r\n"
        b"t: <sip:alice@example.org>;tag=2\r\n"
        b"i: c1\r\n"
        b"cseq: 3 BYE\r\n"
        b"l: 99\r\n"
        b"\r\n" + b"x" * 99
    )
    request = _request(data)
    request.body = b"abc"
    assert request.serialize() == (
        b"BYE sip:alice@192.0.2.4 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK9\r\n"
        b"From: <sip:b@example.com>;tag=1\r\n"
        b"To: <sip:alice@example.org>;tag=2\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 3 BYE\r\n"
        b"Content-Length: 3\r\n"
        b"\r\n"
        b"abc"
    )


def test_serialize_writes_one_content_length_from_the_body() -> None:
    headers = Headers([("Content-Length", "10"), ("Subject", "x"), ("l", "20")])
    response = Response(200, "OK", headers, b"body")
    assert response.serialize() == b"SIP/2.0 200 OK\r\nContent-Length: 4\r\nSubject: x\r\n\r\nbody"


def test_non_utf8_header_bytes_survive_round_trip() -> None:
    data = _replace(OPTIONS, b"Content-Length", b"X-Raw: \xff\xfe ok\r\nContent-Length")
    request = _request(data)
    assert request.serialize() == data


def test_request_built_by_code() -> None:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye1")
    headers.add("Max-Forwards", "70")
    headers.add("From", '"Bridge" <sip:bridge@example.com>;tag=abc')
    headers.add("To", "<sip:alice@example.org>;tag=xyz")
    headers.add("Call-ID", "c1@bridge")
    headers.add("CSeq", "2 BYE")
    request = Request("BYE", Uri.parse("sip:alice@192.0.2.4:5062"), headers)
    assert request.vias[0].branch == "z9hG4bKbye1"
    assert request.from_.display == "Bridge"
    assert request.to.tag == "xyz"
    assert request.cseq == CSeq(2, "BYE")
    assert request.serialize() == (
        b"BYE sip:alice@192.0.2.4:5062 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye1\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Bridge" <sip:bridge@example.com>;tag=abc\r\n'
        b"To: <sip:alice@example.org>;tag=xyz\r\n"
        b"Call-ID: c1@bridge\r\n"
        b"CSeq: 2 BYE\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    parsed = _request(request.serialize())
    assert (parsed.method, parsed.uri, parsed.body) == (request.method, request.uri, b"")
    assert parsed.headers.items() == [*request.headers.items(), ("Content-Length", "0")]


def test_accessors_follow_header_changes() -> None:
    request = _request(OPTIONS)
    assert request.call_id == "opt-1"
    request.headers.set("Call-ID", "opt-2")
    assert request.call_id == "opt-2"
    request.headers = Headers(request.headers.items())
    request.headers.set("CSeq", "7 OPTIONS")
    assert request.cseq.seq == 7


def test_code_built_request_with_missing_header_raises_on_access() -> None:
    request = Request("BYE", Uri.parse("sip:a@example.com"), Headers([("Call-ID", "x")]))
    with pytest.raises(SipParseError, match="missing Via"):
        _ = request.vias


def test_set_vias_after_editing() -> None:
    request = _request(INVITE)
    top = request.vias[0]
    top.params["received"] = "192.0.2.99"
    top.params["rport"] = "5099"
    request.set_vias(request.vias)
    assert request.vias[0].received == "192.0.2.99"
    lines = request.headers.get_lines("Via")
    assert lines[0] == (
        "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport=5099;received=192.0.2.99"
    )
    assert len(lines) == 3  # one field per Via now
    assert request.headers.items()[0][0] == "Via"  # kept in place
    assert parse_message(request.serialize()) == request


# ----------------------------------------------------------------------------- re-exports


def test_value_types_are_re_exported() -> None:
    # Uri, Headers and the header values live in their own modules; message.py re-exports
    # them so that ``from sipbridge.sip.message import ...`` keeps working.
    from sipbridge.sip import headers, uri, values

    assert Uri is uri.Uri
    assert Headers is headers.Headers
    assert canonical_header_name is headers.canonical_header_name
    assert (NameAddr, Via, CSeq) == (values.NameAddr, values.Via, values.CSeq)


# ----------------------------------------------------------------------------- responses


def test_make_response_copies_headers_and_adds_tag() -> None:
    request = _request(
        _replace(
            INVITE, b"Content-Length", b"Record-Route: <sip:p.example.com;lr>\r\nContent-Length"
        )
    )
    response = make_response(request, 180, to_tag="as83kd9bs")
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert response.headers.get("To") == "<sip:+15551234567@sip.example.com>;tag=as83kd9bs"
    assert response.to.tag == "as83kd9bs"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert "Contact" not in response.headers
    assert "Record-Route" not in response.headers
    assert response.body == b""
    out = response.serialize()
    assert out.startswith(b"SIP/2.0 180 Ringing\r\n")
    assert out.endswith(b"Content-Length: 0\r\n\r\n")
    assert _response(out).vias == request.vias


def test_make_response_keeps_existing_to_tag() -> None:
    request = _request(
        _replace(INVITE, b"To: <sip:+15551234567@sip.example.com>", b"To: <sip:x@y>;tag=old")
    )
    response = make_response(request, 200, to_tag="new")
    assert response.headers.get("To") == "<sip:x@y>;tag=old"


def test_make_response_reasons() -> None:
    request = _request(OPTIONS)
    assert make_response(request, 100).reason == "Trying"
    assert make_response(request, 100).to.tag is None
    assert make_response(request, 486, "Busy Busy").reason == "Busy Busy"
    assert make_response(request, 299).reason == "Success"
    assert make_response(request, 200).headers.get("To") == "<sip:bridge.example.com>"


def test_default_reason() -> None:
    assert default_reason(200) == "OK"
    assert default_reason(416) == "Unsupported URI Scheme"
    assert default_reason(513) == "Message Too Large"
    assert default_reason(499) == "Client Error"
    assert default_reason(999) == "Unknown"
    assert REASON_PHRASES[481] == "Call/Transaction Does Not Exist"
    assert all(100 <= code <= 699 for code in REASON_PHRASES)


def test_build_error_response_from_raw_headers() -> None:
    data = _replace(INVITE, b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    data = _replace(data, b"To: <sip:+15551234567@sip.example.com>", b"To: broken <<")
    exc = _parse_error(data)
    assert exc.headers is not None
    response = build_error_response(exc.headers, 400, to_tag="t1")
    assert response is not None
    assert (response.status, response.reason) == (400, "Bad Request")
    assert response.headers.get_lines("Via") == exc.headers.get_lines("Via")
    assert response.headers.get("To") == "broken <<;tag=t1"
    assert response.headers.get("CSeq") == "314159 BYE"
    assert response.headers.get("From") == exc.headers.get("From")
    assert response.headers.get("Call-ID") == "a84b4c76e66710@pc33.example.org"
    assert response.serialize().endswith(b"Content-Length: 0\r\n\r\n")


def test_build_error_response_to_tag_and_duplicates() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d> ; TAG = 5"),
            ("To", "<sip:e@f>"),
            ("Call-ID", "x"),
            ("CSeq", "1 INVITE"),
        ]
    )
    response = build_error_response(headers, 400, "Duplicate To", to_tag="new")
    assert response is not None
    assert response.reason == "Duplicate To"
    assert response.headers.get_lines("To") == ["<sip:c@d> ; TAG = 5"]
    assert response.to.tag == "5"
    without_tag = build_error_response(headers, 400)
    assert without_tag is not None


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_build_error_response_needs_only_via(missing: str) -> None:
    request = _request(OPTIONS)
    headers = request.headers.copy()
    headers.remove(missing)
    response = build_error_response(headers, 400, to_tag="t")
    if missing == "Via":
        assert response is None
    else:
        assert response is not None
        assert missing not in response.headers
        assert response.headers.get_lines("Via") == request.headers.get_lines("Via")
    assert build_error_response(request.headers, 400) is not None


def test_header_line_limit() -> None:
    from sipbridge.sip.message import MAX_HEADER_LINES

    head = (
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-h\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
        "Call-ID: h\r\nCSeq: 1 OPTIONS\r\n"
    )
    at_limit = head + "X-Pad: 1\r\n" * (MAX_HEADER_LINES - 6) + "Content-Length: 0\r\n\r\n"
    assert parse_message(at_limit.encode()).method == "OPTIONS"  # type: ignore[union-attr]
    over = head + "X-Pad: 1\r\n" * (MAX_HEADER_LINES - 5) + "Content-Length: 0\r\n\r\n"
    with pytest.raises(SipParseError) as caught:
        parse_message(over.encode())
    assert caught.value.status_hint == 400 and "header lines" in caught.value.reason
    # Enough parsed to answer the 400 (RFC 3261 §21.4.1).
    assert caught.value.headers is not None and caught.value.headers.get("Call-ID") == "h"
