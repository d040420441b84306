"""Tests for sipbridge.sip.uri: URI parsing and escaping."""

import pytest

from sipbridge.sip.errors import SipParseError
from sipbridge.sip.uri import Uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sip:+1202555@host;user=phone",
            Uri("sip", "+1202555", None, "host", None, {"user": "phone"}),
        ),
        ("SIPS:alice@example.com:5061", Uri("sips", "alice", None, "example.com", 5061)),
        ("sip:example.com", Uri("sip", None, None, "example.com")),
        ("sip:alice:secret@example.com", Uri("sip", "alice", "secret", "example.com")),
        ("sip:alice:@example.com", Uri("sip", "alice", "", "example.com")),
        ("sip:[::1]:5070;lr", Uri("sip", None, None, "::1", 5070, {"lr": None})),
        ("sip:bob@[2001:db8::10]", Uri("sip", "bob", None, "2001:db8::10")),
        (
            "sip:u@h;Transport=TCP;maddr=[::1]?Subject=hi%20there&Priority=urgent",
            Uri(
                "sip",
                "u",
                None,
                "h",
                None,
                {"transport": "TCP", "maddr": "[::1]"},
                {"Subject": "hi there", "Priority": "urgent"},
            ),
        ),
        (
            "sip:u@h?Route=%3Csip:x%3E&Empty=",
            Uri("sip", "u", None, "h", headers={"Route": "<sip:x>", "Empty": ""}),
        ),
        ("sip:%75se%72@h;n%61me=v%61lue", Uri("sip", "user", None, "h", None, {"name": "value"})),
        (
            "sip:user;par=u%40example.net@example.com",
            Uri("sip", "user;par=u@example.net", None, "example.com"),
        ),
        (
            "tel:+1-202-555-0100;phone-context=example.com",
            Uri("tel", "+1-202-555-0100", None, "", None, {"phone-context": "example.com"}),
        ),
        ("tel:911", Uri("tel", "911")),
        ("urn:service:sos", Uri("urn", host="service:sos")),
        ("soap.beep://192.0.2.103:3002", Uri("soap.beep", host="//192.0.2.103:3002")),
    ],
)
def test_uri_parse(text: str, expected: Uri) -> None:
    uri = Uri.parse(text)
    assert uri == expected
    assert Uri.parse(str(uri)) == uri


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("sip:+1202555@host;user=phone", "sip:+1202555@host;user=phone"),
        ("sip:%75se%72@h", "sip:user@h"),
        ("sip:sips%3Auser%40example.com@example.net", "sip:sips%3Auser%40example.com@example.net"),
        ("sip:I%20have%20spaces@example.net", "sip:I%20have%20spaces@example.net"),
        ("sip:h;%6C%72;n%61me=v%61lue%25%34%31", "sip:h;lr;name=value%2541"),
        ("sip:[2001:db8::1]:5060", "sip:[2001:db8::1]:5060"),
        ("sip:u@h?Route=%3Csip:x%3E", "sip:u@h?Route=%3Csip:x%3E"),
        ("TEL:+1202555", "tel:+1202555"),
    ],
)
def test_uri_str(text: str, canonical: str) -> None:
    assert str(Uri.parse(text)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",
        "<sip:a@b>",
        "sip:",
        "sip:a@",
        "sip:a b@host",
        "sip:host:port",
        "sip:host:99999",
        "sip:2001:db8::10",
        "sip:[2001:db8::10",
        "sip:[2001:db8:::1]",
        "sip:a%G1@host",
        "sip:a:p;w@host",
        "sip:host;=x",
        "sip:host;a=",
        "sip:host;",
        "sip:host?noequals",
        "sip:host?a=b&",
        "sip:a@b ",
        "tel:",
        "tel:xyz",
        "1sip:host",
        "foo:",
        "foo:a b",
    ],
)
def test_uri_parse_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        Uri.parse(text)
