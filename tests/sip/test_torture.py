"""The RFC 4475 SIP torture messages and the RFC 5118 IPv6 ones, at the parser level.

The files live in ``shared/testdata`` beside the repository (see its README.md); the
``SIPBRIDGE_TESTDATA`` environment variable points elsewhere. Every file is named here,
so a missing folder or file fails the tests instead of skipping them.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sipbridge.sip.errors import SipParseError
from sipbridge.sip.message import (
    Headers,
    Request,
    Response,
    build_error_response,
    parse_message,
)


def _testdata_dir() -> Path:
    override = os.environ.get("SIPBRIDGE_TESTDATA")
    if override:
        return Path(override)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "testdata"


TESTDATA = _testdata_dir()


def _load(name: str) -> bytes:
    folder, stem = name.split("/")
    return (TESTDATA / folder / f"{stem}.dat").read_bytes()


def _parse(name: str) -> Request | Response:
    return parse_message(_load(name))


def _request(name: str) -> Request:
    message = _parse(name)
    assert isinstance(message, Request)
    return message


def _response(name: str) -> Response:
    message = _parse(name)
    assert isinstance(message, Response)
    return message


# RFC 4475 §3.1.1: valid messages every element must handle.
VALID = [
    "rfc4475/wsinv",
    "rfc4475/intmeth",
    "rfc4475/esc01",
    "rfc4475/escnull",
    "rfc4475/esc02",
    "rfc4475/lwsdisp",
    "rfc4475/longreq",
    "rfc4475/dblreq",
    "rfc4475/semiuri",
    "rfc4475/transports",
    "rfc4475/mpart01",
    "rfc4475/unreason",
    "rfc4475/noreason",
]
# RFC 4475 §3.1.2: "may be rejected or tolerated"; this parser tolerates them.
TOLERATED = ["rfc4475/lwsstart", "rfc4475/trws", "rfc4475/escruri", "rfc4475/baddate"]
# RFC 4475 §3.2-§3.4: well-formed; the UA layer answers them (416, 420, 415...). bcast
# (a response) and unksm2 (unknown schemes in To/From/Contact) are well-formed as well.
APPLICATION_LAYER = [
    "rfc4475/unkscm",
    "rfc4475/novelsc",
    "rfc4475/bext01",
    "rfc4475/invut",
    "rfc4475/sdp01",
    "rfc4475/zeromf",
    "rfc4475/cparam01",
    "rfc4475/cparam02",
    "rfc4475/regescrt",
    "rfc4475/inv2543",
    "rfc4475/badbranch",
    "rfc4475/regaut01",
    "rfc4475/bcast",
    "rfc4475/unksm2",
]
# RFC 5118: the valid IPv6 messages.
VALID_IPV6 = [
    "rfc5118/ipv4-mapped-ipv6",
    "rfc5118/ipv6-correct-abnf-2-colons",
    "rfc5118/ipv6-good",
    "rfc5118/ipv6-in-sdp",
    "rfc5118/mult-ip-in-header",
    "rfc5118/mult-ip-in-sdp",
    "rfc5118/port-ambiguous",
    "rfc5118/port-unambiguous",
    "rfc5118/via-received-param-no-delim",
    "rfc5118/via-received-param-with-delim",
]
PARSEABLE = VALID + TOLERATED + APPLICATION_LAYER + VALID_IPV6

# Invalid requests: (file, status hint, a word of the reason). RFC 4475 §3.1.2 and
# RFC 5118 §4.4, §4.5.
INVALID_REQUESTS = [
    ("rfc4475/badinv01", 400, "parameters"),
    ("rfc4475/clerr", 400, "Content-Length"),
    ("rfc4475/ncl", 400, "Content-Length"),
    ("rfc4475/scalar02", 400, "CSeq"),
    ("rfc4475/quotbal", 400, "quoted"),
    ("rfc4475/ltgtruri", 400, "Request-URI"),
    ("rfc4475/lwsruri", 400, "Request-Line"),
    ("rfc4475/regbadct", 400, "enclosed"),
    ("rfc4475/badaspec", 400, "URI"),
    ("rfc4475/baddn", 400, "display name"),
    ("rfc4475/mismatch01", 400, "CSeq method"),
    ("rfc4475/mismatch02", 400, "CSeq method"),
    ("rfc4475/insuf", 400, "missing"),
    ("rfc4475/multi01", 400, "appears 2 times"),
    ("rfc4475/mcl01", 400, "Content-Length"),
    ("rfc4475/badvers", 505, "version"),
    ("rfc5118/ipv6-bad", 400, "host"),
    ("rfc5118/ipv6-bug-abnf-3-colons", 400, "host"),
]
# RFC 4475 §3.1.2.5 scalarlg and §3.1.2.6 bigcode: responses to drop silently.
INVALID_RESPONSES = ["rfc4475/scalarlg", "rfc4475/bigcode"]

# The answer would echo a header that is itself the broken part, so it does not re-parse.
ECHOES_BROKEN_HEADER = {
    "rfc4475/badinv01",
    "rfc4475/quotbal",
    "rfc4475/badaspec",
    "rfc4475/baddn",
    "rfc4475/scalar02",
    "rfc4475/badvers",
    "rfc5118/ipv6-bug-abnf-3-colons",
}


def test_testdata_folder_is_complete() -> None:
    assert TESTDATA.is_dir(), f"missing test data folder {TESTDATA}"
    on_disk = {
        f"{path.parent.name}/{path.stem}"
        for folder in ("rfc4475", "rfc5118")
        for path in (TESTDATA / folder).glob("*.dat")
    }
    named = set(PARSEABLE) | {name for name, _, _ in INVALID_REQUESTS} | set(INVALID_RESPONSES)
    assert on_disk == named
    assert len(named) == 49 + 12


@pytest.mark.parametrize("name", PARSEABLE)
def test_parses(name: str) -> None:
    message = _parse(name)
    # The mandatory headers parsed (the accessors are what the UA layer relies on).
    assert message.vias
    assert message.call_id
    assert message.cseq.seq >= 0
    assert message.from_.uri.scheme
    assert message.to.uri.scheme


@pytest.mark.parametrize("name", PARSEABLE)
def test_round_trip(name: str) -> None:
    message = _parse(name)
    out = message.serialize()
    again = parse_message(out)
    assert again.serialize() == out
    assert type(again) is type(message)
    assert again.body == message.body
    assert (again.vias, again.from_, again.to) == (message.vias, message.from_, message.to)
    assert (again.call_id, again.cseq, again.contacts) == (
        message.call_id,
        message.cseq,
        message.contacts,
    )
    if isinstance(message, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri) == (message.method, message.uri)
    # Same header fields apart from Content-Length, which is always written.
    assert _without_length(again.headers) == _without_length(message.headers)


def _without_length(headers: Headers) -> list[tuple[str, str]]:
    return [item for item in headers.items() if item[0] != "Content-Length"]


@pytest.mark.parametrize(("name", "status", "word"), INVALID_REQUESTS)
def test_invalid_request(name: str, status: int, word: str) -> None:
    with pytest.raises(SipParseError) as info:
        _parse(name)
    exc = info.value
    assert exc.status_hint == status
    assert word.lower() in exc.reason.lower()
    assert exc.is_request is True
    assert exc.headers is not None
    response = build_error_response(exc.headers, exc.status_hint, to_tag="sb1")
    assert response is not None
    if name == "rfc4475/insuf":
        # No From, To or Call-ID: the 400 carries the Via and CSeq the client
        # matches it on (RFC 4475 §3.1.2.8 asks for the 400).
        assert response.status == 400
        assert "Call-ID" not in response.headers and "From" not in response.headers
        assert response.headers.get_lines("Via") == exc.headers.get_lines("Via")
        return
    assert response.status == status
    assert response.headers.get_lines("Via") == exc.headers.get_lines("Via")
    assert response.headers.get("Call-ID") == exc.headers.get("Call-ID")
    assert response.headers.get("CSeq") == exc.headers.get("CSeq")
    out = response.serialize()
    if name in ECHOES_BROKEN_HEADER:
        with pytest.raises(SipParseError):
            parse_message(out)
    else:
        answer = parse_message(out)
        assert isinstance(answer, Response)
        assert answer.status == status
        assert answer.to.tag is not None


@pytest.mark.parametrize("name", INVALID_RESPONSES)
def test_invalid_response(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        _parse(name)
    assert info.value.is_request is False
    assert info.value.status_hint == 400


# ----------------------------------------------------------------------------- key fields


def _check_wsinv() -> None:
    request = _request("rfc4475/wsinv")
    assert request.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert request.cseq.seq == 9
    assert request.max_forwards == 68
    assert request.from_.display == 'J Rosenberg \\"'
    assert request.from_.tag == "98asjd8"
    assert request.to.tag == "1918181833n"
    assert [(v.transport, v.host, v.branch) for v in request.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert request.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert request.headers.get("Subject") == ""
    contact = request.contacts[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(request.body) == 150


def _check_intmeth() -> None:
    request = _request("rfc4475/intmeth")
    assert request.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert request.cseq.method == request.method
    assert request.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert request.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert request.uri.host == "example.com"
    assert request.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert request.from_.display == "token1~` token2'+_ token3*%!.-"
    assert request.from_.tag == "_token~1'+`*%!-."
    assert request.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert request.vias[0].branch == "z9hG4bK-.!%66*_+`'~"


def _check_esc01() -> None:
    request = _request("rfc4475/esc01")
    # User parts are stored unescaped and escaped again on output (RFC 3261 §19.1.4).
    assert request.uri.user == "sips:user@example.com"
    assert str(request.uri) == "sip:sips%3Auser%40example.com@example.net"
    assert request.to.uri.user == "user"
    assert request.from_.uri.user == "I have spaces"
    contact = request.contacts[0].uri
    assert contact.user == "caller"
    assert contact.params == {"lr": None, "name": "value%41"}
    assert request.headers.get("Content-Type") == "application/sdp"


def _check_escnull() -> None:
    request = _request("rfc4475/escnull")
    assert request.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in request.contacts] == ["\x00", "\x00\x00"]


def _check_esc02() -> None:
    request = _request("rfc4475/esc02")
    assert request.method == "RE%47IST%45R"  # methods are never unescaped
    assert request.to.display == "%Z%45"
    # "C%6Fntact" is not Contact: an unknown header.
    assert [c.uri.host for c in request.contacts] == ["host1.example.com", "host3.example.com"]
    assert request.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _check_lwsdisp() -> None:
    request = _request("rfc4475/lwsdisp")
    assert request.from_.display == "caller"
    assert request.from_.uri.user == "caller"


def _check_longreq() -> None:
    request = _request("rfc4475/longreq")
    assert len(request.vias) == 34
    assert request.vias[-1].received == "192.0.2.5"
    assert request.to.display is not None
    assert request.to.display.startswith("I have a user name of extreme")
    assert request.to.uri.port == 6000
    assert len(request.from_.tag or "") > 100


def _check_dblreq() -> None:
    request = _request("rfc4475/dblreq")
    assert request.method == "REGISTER"
    assert request.body == b""
    assert request.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def _check_semiuri() -> None:
    request = _request("rfc4475/semiuri")
    assert request.uri.user == "user;par=u@example.net"
    assert request.uri.params == {}
    assert len(request.headers.get_all("Accept")) == 6


def _check_transports() -> None:
    request = _request("rfc4475/transports")
    assert [v.transport for v in request.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _check_mpart01() -> None:
    request = _request("rfc4475/mpart01")
    data = _load("rfc4475/mpart01")
    assert request.method == "MESSAGE"
    assert len(request.body) == 553
    assert request.body == data[data.index(b"\r\n\r\n") + 4 :][:553]
    assert request.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert request.body.rstrip().endswith(b"--7a9cbec02ceef655--")


def _check_unreason() -> None:
    response = _response("rfc4475/unreason")
    assert response.status == 200
    assert response.reason.startswith("= 2**3 * 5**2 ")
    assert "\u043d\u043e" in response.reason  # the UTF-8 reason phrase decoded


def _check_noreason() -> None:
    response = _response("rfc4475/noreason")
    assert (response.status, response.reason) == (100, "")


def _check_unkscm() -> None:
    request = _request("rfc4475/unkscm")
    assert request.uri.scheme == "nobodyknowsthisscheme"
    assert request.uri.host == "totallyopaquecontent"


def _check_novelsc() -> None:
    assert _request("rfc4475/novelsc").uri.scheme == "soap.beep"


def _check_unksm2() -> None:
    request = _request("rfc4475/unksm2")
    assert (request.to.uri.scheme, request.from_.uri.scheme) == ("isbn", "http")
    assert request.contacts[0].uri.scheme == "name"


def _check_bext01() -> None:
    request = _request("rfc4475/bext01")
    assert request.headers.get_all("Require") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def _check_zeromf() -> None:
    assert _request("rfc4475/zeromf").max_forwards == 0


def _check_cparam01() -> None:
    contact = _request("rfc4475/cparam01").contacts[0]
    # addr-spec form: ";unknownparam" is a header parameter, not a URI parameter.
    assert contact.uri.user == "+19725552222"
    assert (contact.uri.params, contact.params) == ({}, {"unknownparam": None})


def _check_cparam02() -> None:
    contact = _request("rfc4475/cparam02").contacts[0]
    assert (contact.uri.params, contact.params) == ({"unknownparam": None}, {})


def _check_regescrt() -> None:
    contact = _request("rfc4475/regescrt").contacts[0]
    assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}


def _check_escruri() -> None:
    assert _request("rfc4475/escruri").uri.headers == {"Route": "<sip:example.com>"}


def _check_inv2543() -> None:
    request = _request("rfc4475/inv2543")
    assert request.vias[0].branch is None
    assert request.from_.tag is None
    assert request.max_forwards is None
    assert request.to.params == {"user": "phone"}
    assert request.from_.uri.params == {"user": "phone"}
    assert len(request.body) == 105  # no Content-Length: the rest of the datagram


def _check_badbranch() -> None:
    assert _request("rfc4475/badbranch").vias[0].branch == "z9hG4bK"


def _check_bcast() -> None:
    response = _response("rfc4475/bcast")
    assert [v.host for v in response.vias] == ["192.0.2.198", "255.255.255.255"]


def _check_ipv6_good() -> None:
    request = _request("rfc5118/ipv6-good")
    assert (request.uri.host, request.uri.port) == ("2001:db8::10", None)
    assert request.vias[0].host == "2001:db8::9:1"
    assert request.contacts[0].uri.host == "2001:db8::1"
    assert str(request.uri) == "sip:[2001:db8::10]"


def _check_port_ambiguous() -> None:
    uri = _request("rfc5118/port-ambiguous").uri
    assert (uri.host, uri.port) == ("2001:db8::10:5070", None)


def _check_port_unambiguous() -> None:
    uri = _request("rfc5118/port-unambiguous").uri
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)


def _check_received_no_delim() -> None:
    assert _request("rfc5118/via-received-param-no-delim").vias[0].received == "2001:db8::9:255"


def _check_received_with_delim() -> None:
    via = _request("rfc5118/via-received-param-with-delim").vias[0]
    assert via.received == "[2001:db8::9:255]"


def _check_ipv4_mapped() -> None:
    via = _request("rfc5118/ipv4-mapped-ipv6").vias[0]
    assert (via.host, via.port) == ("::ffff:192.0.2.10", 19823)


def _check_mult_ip_in_header() -> None:
    request = _request("rfc5118/mult-ip-in-header")
    assert [(v.host, v.port) for v in request.vias] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
        ("2001:db8::9:255", None),
    ]


def _check_two_colons() -> None:
    assert _request("rfc5118/ipv6-correct-abnf-2-colons").uri.host == "2001:db8::192.0.2.1"


KEY_FIELDS: list[Callable[[], None]] = [
    _check_wsinv,
    _check_intmeth,
    _check_esc01,
    _check_escnull,
    _check_esc02,
    _check_lwsdisp,
    _check_longreq,
    _check_dblreq,
    _check_semiuri,
    _check_transports,
    _check_mpart01,
    _check_unreason,
    _check_noreason,
    _check_unkscm,
    _check_novelsc,
    _check_unksm2,
    _check_bext01,
    _check_zeromf,
    _check_cparam01,
    _check_cparam02,
    _check_regescrt,
    _check_escruri,
    _check_inv2543,
    _check_badbranch,
    _check_bcast,
    _check_ipv6_good,
    _check_port_ambiguous,
    _check_port_unambiguous,
    _check_received_no_delim,
    _check_received_with_delim,
    _check_ipv4_mapped,
    _check_mult_ip_in_header,
    _check_two_colons,
]


@pytest.mark.parametrize("check", KEY_FIELDS, ids=lambda check: check.__name__[7:])
def test_key_fields(check: Callable[[], None]) -> None:
    check()
