import time

import pytest

from sipbridge.sip import grammar
from sipbridge.sip.errors import SipParseError


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("INVITE", True),
        ("!interesting-Method0123456789_*+`.%indeed'~", True),
        ("RE%47IST%45R", True),
        ("", False),
        ("IN VITE", False),
        ("Contact:", False),
        ("caf\u00e9", False),
    ],
)
def test_is_token(text: str, ok: bool) -> None:
    assert grammar.is_token(text) is ok


@pytest.mark.parametrize(
    ("quoted", "text"),
    [
        ('""', ""),
        ('"Alice"', "Alice"),
        ('"J Rosenberg \\\\\\""', 'J Rosenberg \\"'),
        ('"BEL:\\\x07 NUL:\\\x00"', "BEL:\x07 NUL:\x00"),
    ],
)
def test_unquote(quoted: str, text: str) -> None:
    assert grammar.QUOTED_STRING_RE.fullmatch(quoted)
    assert grammar.unquote(quoted) == text


@pytest.mark.parametrize(
    "text", ["", "Alice", 'a"b\\c', "tab\there", "ctl\x00\x07\x7f", "\u00e9t\u00e9"]
)
def test_quote_round_trip(text: str) -> None:
    quoted = grammar.quote(text)
    assert grammar.QUOTED_STRING_RE.fullmatch(quoted)
    assert grammar.unquote(quoted) == text


def test_quote_never_writes_line_breaks() -> None:
    assert grammar.quote("a\r\nb") == '"a  b"'


@pytest.mark.parametrize("text", ['"unterminated', '"ends in escape\\"', '"a"b"'])
def test_quoted_string_rejects(text: str) -> None:
    assert grammar.QUOTED_STRING_RE.fullmatch(text) is None


def test_unterminated_quote_fails_in_linear_time() -> None:
    # A backtracking-prone pattern would take forever here.
    text = '"' + "a\\b" * 50_000
    started = time.perf_counter()
    assert grammar.QUOTED_STRING_RE.fullmatch(text) is None
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("plain", "plain"),
        ("%75se%72", "user"),
        ("sips%3Auser%40example.com", "sips:user@example.com"),
        ("null-%00-null", "null-\x00-null"),
        ("caf%C3%A9", "caf\u00e9"),
        ("value%2541", "value%41"),
        ("100%", "100%"),  # not an escape: left for the grammar check to refuse
    ],
)
def test_unescape(escaped: str, text: str) -> None:
    assert grammar.unescape(escaped) == text


def test_escape() -> None:
    assert grammar.escape("user", grammar.USER_SAFE) == "user"
    assert grammar.escape("sips:user@example.com", grammar.USER_SAFE) == "sips%3Auser%40example.com"
    assert grammar.escape("I have spaces", grammar.USER_SAFE) == "I%20have%20spaces"
    assert grammar.escape("caf\u00e9", grammar.USER_SAFE) == "caf%C3%A9"
    assert grammar.escape("a;b?c", grammar.USER_SAFE) == "a;b?c"
    assert grammar.escape("a;b?c", grammar.PARAM_SAFE) == "a%3Bb%3Fc"
    assert grammar.escape("a:b", grammar.PASSWORD_SAFE) == "a%3Ab"
    assert grammar.escape("<sip:x>", grammar.HEADER_SAFE) == "%3Csip:x%3E"


def test_escape_round_trips_non_utf8_bytes() -> None:
    text = grammar.unescape("%FF%00")
    assert grammar.escape(text, grammar.USER_SAFE) == "%FF%00"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.com", True),
        ("example.com.", True),
        ("a-b.example", True),
        ("hlau_4100", True),
        ("192.0.2.1", True),
        ("255.255.255.255", True),
        ("192.0.2.256", False),
        ("192.0.2", False),
        ("2001", False),
        ("[2001:db8::10]", True),
        ("[::ffff:192.0.2.10]", True),
        ("[2001:db8::192.0.2.1]", True),
        ("[2001:db8:::192.0.2.1]", False),  # RFC 5118 §4.4
        ("[2001:db8::1%eth0]", False),
        ("[2001:db8::1", False),
        ("2001:db8::1", False),
        ("", False),
        ("exa mple.com", False),
        ("a..b", False),
    ],
)
def test_is_valid_host(host: str, ok: bool) -> None:
    assert grammar.is_valid_host(host) is ok


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com", "example.com", None),
        ("example.com:5070", "example.com", 5070),
        ("192.0.2.1:0", "192.0.2.1", 0),
        ("[2001:db8::10]", "2001:db8::10", None),
        ("[2001:db8::10]:5070", "2001:db8::10", 5070),
        ("[2001:db8::10:5070]", "2001:db8::10:5070", None),  # RFC 5118 §4.3
    ],
)
def test_parse_hostport(text: str, host: str, port: int | None) -> None:
    assert grammar.parse_hostport(text) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "2001:db8::10",
        "example.com:",
        "example.com:abc",
        "example.com:65536",
        "[::1]x",
        "[::1",
        ":5060",
    ],
)
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        grammar.parse_hostport(text)


def test_format_host() -> None:
    assert grammar.format_host("2001:db8::1") == "[2001:db8::1]"
    assert grammar.format_host("[2001:db8::1]") == "[2001:db8::1]"
    assert grammar.format_host("example.com") == "example.com"


def test_parse_params() -> None:
    text = ' ;  Tag = 1918181833n;lr ; q=0.33;x="a;b, c";received=2001:db8::9:255;m=[::1]'
    assert grammar.parse_params(text) == {
        "tag": "1918181833n",
        "lr": None,
        "q": "0.33",
        "x": '"a;b, c"',
        "received": "2001:db8::9:255",
        "m": "[::1]",
    }


def test_parse_params_from_position_and_first_wins() -> None:
    assert grammar.parse_params("<x>;a=1;A=2  ", 3) == {"a": "1"}
    assert grammar.parse_params("") == {}


@pytest.mark.parametrize("text", [";;", ";a=", "; =1", ";a b", "junk", ';a="open', ";a;"])
def test_parse_params_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        grammar.parse_params(text)


def test_format_params() -> None:
    assert grammar.format_params({"branch": "z9hG4bK1", "rport": None}) == ";branch=z9hG4bK1;rport"


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ("a,,b,", ["a", "b"]),
        ('"Bell, Alexander" <sip:a@b>, <sip:c@d>', ['"Bell, Alexander" <sip:a@b>', "<sip:c@d>"]),
        ("<sip:a@b;x=1,2>;q=1, <sip:c@d>", ["<sip:a@b;x=1,2>;q=1", "<sip:c@d>"]),
        ('"a \\" , b" <sip:a@b>, c', ['"a \\" , b" <sip:a@b>', "c"]),
        ("", []),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert grammar.split_list(value) == parts


@pytest.mark.parametrize(
    ("line", "groups"),
    [
        ("SIP/2.0 200 OK", ("SIP/2.0", "200", "OK")),
        ("SIP/2.0 100", ("SIP/2.0", "100", None)),
        ("SIP/2.0 100 ", ("SIP/2.0", "100", "")),
        ("sip/2.0 486 Busy Here", ("sip/2.0", "486", "Busy Here")),
    ],
)
def test_status_line(line: str, groups: tuple[str, ...]) -> None:
    m = grammar.STATUS_LINE_RE.fullmatch(line)
    assert m is not None
    assert m.groups() == groups


@pytest.mark.parametrize(
    "line", ["SIP/2.0 4294967301 big", "SIP/2.0 20 OK", "SIP/2 200 OK", "HTTP/1.1 200 OK"]
)
def test_status_line_rejects(line: str) -> None:
    assert grammar.STATUS_LINE_RE.fullmatch(line) is None


def test_request_line() -> None:
    m = grammar.REQUEST_LINE_RE.fullmatch("INVITE  sip:user@example.com  SIP/2.0  ")
    assert m is not None
    assert m.groups() == ("INVITE", "sip:user@example.com", "SIP/2.0")
    assert grammar.REQUEST_LINE_RE.fullmatch("INVITE sip:u@example.com; lr SIP/2.0") is None
    assert grammar.REQUEST_LINE_RE.fullmatch("INVITE sip:u@example.com") is None


def test_sip_version_is_ascii_digits_only() -> None:
    assert grammar.SIP_VERSION_RE.fullmatch("SIP/2.0")
    assert grammar.SIP_VERSION_RE.fullmatch("SIP/\u0662.0") is None  # Arabic-Indic two


@pytest.mark.parametrize(
    ("call_id", "ok"),
    [
        ("a84b4c76e66710@pc33.example.org", True),
        ("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{", True),
        ("a@b@c", False),
        ("has space", False),
        ("", False),
    ],
)
def test_call_id(call_id: str, ok: bool) -> None:
    assert (grammar.CALL_ID_RE.fullmatch(call_id) is not None) is ok
