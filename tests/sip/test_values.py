"""Tests for sipbridge.sip.values: NameAddr, Via and CSeq."""

import pytest

from sipbridge.sip.errors import SipParseError
from sipbridge.sip.uri import Uri
from sipbridge.sip.values import CSeq, NameAddr, Via

# ----------------------------------------------------------------------------- NameAddr


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ('"Alice" <sip:alice@example.org>;tag=1', "Alice", "sip:alice@example.org", {"tag": "1"}),
        (
            '"J Rosenberg \\\\\\""  <sip:j@example.com> ; tag = 98',
            'J Rosenberg \\"',
            "sip:j@example.com",
            {"tag": "98"},
        ),
        ('"" <sip:a@b>', "", "sip:a@b", {}),
        (
            "caller<sip:caller@example.com>;tag=323",
            "caller",
            "sip:caller@example.com",
            {"tag": "323"},
        ),
        ("A. Bell <sip:a@b>", "A. Bell", "sip:a@b", {}),
        ("<sip:a@b;lr>", None, "sip:a@b;lr", {}),
        ("sip:a@b;tag=x;user=phone", None, "sip:a@b", {"tag": "x", "user": "phone"}),
        ("sip:a@b ;   tag    = 1918181833n", None, "sip:a@b", {"tag": "1918181833n"}),
        ("tel:+1202555;tag=1", None, "tel:+1202555", {"tag": "1"}),
        ("<isbn:2983792873>", None, "isbn:2983792873", {}),
        ('"Quoted <not a uri>" <sip:a@b>', "Quoted <not a uri>", "sip:a@b", {}),
    ],
)
def test_name_addr_parse(
    text: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    value = NameAddr.parse(text)
    assert value.display == display
    assert str(value.uri) == uri
    assert value.params == params
    assert NameAddr.parse(str(value)) == value


def test_name_addr_tag_and_str() -> None:
    value = NameAddr.parse('"A \\"B\\"" <sip:a@b>;tag=9;x="y z"')
    assert value.tag == "9"
    assert str(value) == '"A \\"B\\"" <sip:a@b>;tag=9;x="y z"'
    assert NameAddr(None, Uri.parse("sip:a@b")).tag is None
    assert str(NameAddr(None, Uri.parse("sip:a@b"), {"lr": None})) == "<sip:a@b>;lr"


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',
        '"Alice" sip:a@b',
        "<sip:a@b",
        "< sip:a@b >",
        "<sip:a@b >",
        "Bell, Alexander <sip:a@b>",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "<sip:a@b> junk",
        "<sip:a@b>;;",
        "<sip:a@b>;tag=",
        "",
    ],
)
def test_name_addr_parse_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


# ----------------------------------------------------------------------------- Via, CSeq


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
            Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None}),
        ),
        (
            "SIP  /   2.0 /udp    192.0.2.2;branch=390skdjuw",
            Via("UDP", "192.0.2.2", None, {"branch": "390skdjuw"}),
        ),
        (
            "sip/2.0/TLS host.example.com : 5061 ; Branch = z9hG4bK2",
            Via("TLS", "host.example.com", 5061, {"branch": "z9hG4bK2"}),
        ),
        (
            "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255",
            Via("UDP", "2001:db8::9:1", 6050, {"received": "2001:db8::9:255"}),
        ),
        ("SIP/2.0/UNKNOWN t4.example.com", Via("UNKNOWN", "t4.example.com")),
    ],
)
def test_via_parse(text: str, expected: Via) -> None:
    via = Via.parse(text)
    assert via == expected
    assert Via.parse(str(via)) == via


def test_via_accessors_and_str() -> None:
    via = Via.parse("SIP/2.0/UDP [::1];branch=z9hG4bKx;received=[::2];rport=5062")
    assert (via.branch, via.received, via.rport) == ("z9hG4bKx", "[::2]", "5062")
    assert str(via) == "SIP/2.0/UDP [::1];branch=z9hG4bKx;received=[::2];rport=5062"
    bare = Via("TCP", "example.com")
    assert (bare.branch, bare.received, bare.rport) == (None, None, None)
    assert str(bare) == "SIP/2.0/TCP example.com"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 192.0.2.1",
        "SIP/3.0/UDP 192.0.2.1",
        "HTTP/2.0/UDP 192.0.2.1",
        "SIP/2.0/UDP 192.0.2.1:",
        "SIP/2.0/UDP 192.0.2.1:123456",
        "SIP/2.0/UDP 192.0.2.1:65536",
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP [2001:db8:::1]",
        "SIP/2.0/UDP host junk",
    ],
)
def test_via_parse_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse(" 0009  INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    for bad in ("INVITE", "1", "-1 INVITE", "1 IN VITE", "1" * 5000 + " INVITE", "4294967296 ACK"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)
