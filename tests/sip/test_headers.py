"""Tests for sipbridge.sip.headers: the Headers multi-map and header names."""

import pytest

from sipbridge.sip.headers import Headers, canonical_header_name


def test_headers_multimap() -> None:
    headers = Headers(
        [("v", "SIP/2.0/UDP a"), ("Subject", "x"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c")]
    )
    assert len(headers) == 3
    assert "via" in headers
    assert "V" in headers
    assert "Route" not in headers
    assert 3 not in headers
    assert headers.get("Via") == "SIP/2.0/UDP a"
    assert headers.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert headers.get_lines("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    assert headers.get("Missing") is None
    assert headers.get_all("Missing") == []
    headers.set("s", "y")
    assert headers.get_all("Subject") == ["y"]
    headers.set("via", "SIP/2.0/UDP z")
    assert headers.items() == [("Via", "SIP/2.0/UDP z"), ("Subject", "y")]
    headers.set("X-New", "1")
    assert headers.items()[-1] == ("X-New", "1")
    headers.remove("SUBJECT")
    headers.remove("Not-There")
    assert list(headers) == [("Via", "SIP/2.0/UDP z"), ("X-New", "1")]
    assert headers == Headers([("v", "SIP/2.0/UDP z"), ("x-new", "1")])
    assert headers != Headers([("Via", "SIP/2.0/UDP z")])
    assert headers.__eq__(object()) is NotImplemented
    assert "X-New" in repr(headers)


def test_headers_get_skips_empty_list_lines() -> None:
    headers = Headers([("Supported", ""), ("Supported", "timer, 100rel")])
    assert headers.get("Supported") == "timer"
    assert headers.get_all("Supported") == ["timer", "100rel"]


def test_headers_copy_is_independent() -> None:
    headers = Headers([("To", "<sip:a@b>")])
    copy = headers.copy()
    copy.add("From", "<sip:c@d>")
    assert "From" not in headers
    assert copy.get("To") == "<sip:a@b>"


def test_non_list_headers_are_not_split() -> None:
    headers = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"')])
    assert headers.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']


@pytest.mark.parametrize(
    ("name", "value"), [("Bad Name", "x"), ("", "x"), ("X", "a\r\nVia: evil"), ("X", "a\nb")]
)
def test_headers_refuse_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        Headers().add(name, value)
    with pytest.raises(ValueError):
        Headers().set(name, value)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("v", "Via"),
        ("F", "From"),
        ("t", "To"),
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("s", "Subject"),
        ("e", "Content-Encoding"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
        ("cseq", "CSeq"),
        ("WWW-AUTHENTICATE", "WWW-Authenticate"),
        ("X-Custom-Thing", "X-Custom-Thing"),
        ("z", "z"),
    ],
)
def test_canonical_header_name(name: str, canonical: str) -> None:
    assert canonical_header_name(name) == canonical
