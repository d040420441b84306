"""The RFC 3261 §25 ABNF as compiled regular expressions and small helpers.

The parser in ``message.py`` unfolds header lines (RFC 3261 §7.3.1) before it looks at a
value, so LWS here is plain ``[ \\t]+`` and SWS ``[ \\t]*``: no CRLF is ever left inside a
value. Every repetition below is over a single character class or over alternatives
that cannot start with the same character, so matching stays linear: no catastrophic
backtracking on hostile input (``(a+)*`` shapes are avoided on purpose).

Helpers raise :class:`SipParseError` (status hint 400) on input that does not match.
"""

from __future__ import annotations

import ipaddress
import re
import string

from sipbridge.sip.errors import SipParseError

# RFC 3261 §25.1: LWS = [*WSP CRLF] 1*WSP; SWS = [LWS]. Folding is undone first.
LWS = r"[ \t]+"
SWS = r"[ \t]*"

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rf"[{_TOKEN_CHARS}]+"
TOKEN_RE = re.compile(TOKEN)

# RFC 3261 §25.1: word adds ( ) < > : \ DQUOTE / [ ] ? { } to the token characters.
WORD = rf"[{_TOKEN_CHARS}()<>:\\\"/\[\]?{{}}]+"

# RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE, where
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F). qdtext is taken as anything but
# DQUOTE, backslash and CR/LF (UTF-8 included); each alternative is a single character,
# so an unterminated string fails in linear time.
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
QUOTED_STRING_RE = re.compile(QUOTED_STRING)
_QUOTED_PAIR_RE = re.compile(r"\\([^\r\n])")

# RFC 3261 §20.10: display-name = *(token LWS) / quoted-string; the unquoted form is
# tokens separated by whitespace (the last token may touch the "<": LAQUOT = SWS "<").
DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:{LWS}{TOKEN})*")

# RFC 3261 §25.1: callid = word [ "@" word ].
CALL_ID_RE = re.compile(rf"{WORD}(?:@{WORD})?")

# RFC 3261 §25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (literals are
# case-insensitive in ABNF). [0-9] rather than \d: \d also matches non-ASCII digits.
_SIP_VERSION = r"(?i:SIP)/[0-9]+\.[0-9]+"
SIP_VERSION_RE = re.compile(_SIP_VERSION)

# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF. Runs of SP
# and trailing whitespace are tolerated (RFC 4475 §3.1.2.7 lwsstart, §3.1.2.8 trws).
# The URI is any run of non-SP characters; Uri.parse judges it.
REQUEST_LINE_RE = re.compile(rf"({TOKEN}) +([^ ]+) +({_SIP_VERSION})[ \t]*")

# RFC 3261 §25.1: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF, with
# Status-Code = 3DIGIT. An empty reason (with or without its SP) is accepted
# (RFC 4475 §3.1.1.13 noreason).
STATUS_LINE_RE = re.compile(rf"({_SIP_VERSION}) ([0-9]{{3}})(?: (.*))?", re.DOTALL)

# RFC 3261 §25.1 / RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# RFC 3261 §25.1 character sets of the SIP-URI parts (all besides escaped "%" HEXDIG HEXDIG):
#   unreserved = alphanum / mark; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   user: unreserved / user-unreserved ("&" / "=" / "+" / "$" / "," / ";" / "?" / "/")
#   password: unreserved / "&" / "=" / "+" / "$" / ","
#   paramchar: unreserved / param-unreserved ("[" / "]" / "/" / ":" / "&" / "+" / "$")
#   hname, hvalue: unreserved / hnv-unreserved ("[" / "]" / "/" / "?" / ":" / "+" / "$")
_UNRESERVED = string.ascii_letters + string.digits + "-_.!~*'()"
USER_SAFE = frozenset(_UNRESERVED + "&=+$,;?/")
PASSWORD_SAFE = frozenset(_UNRESERVED + "&=+$,")
PARAM_SAFE = frozenset(_UNRESERVED + "[]/:&+$")
HEADER_SAFE = frozenset(_UNRESERVED + "[]/?:+$")


def _char_class(chars: frozenset[str]) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


_ESCAPED = r"%[0-9A-Fa-f]{2}"
USER_RE = re.compile(rf"(?:{_char_class(USER_SAFE)}|{_ESCAPED})+")
PASSWORD_RE = re.compile(rf"(?:{_char_class(PASSWORD_SAFE)}|{_ESCAPED})*")
PARAM_CHARS_RE = re.compile(rf"(?:{_char_class(PARAM_SAFE)}|{_ESCAPED})+")
HEADER_CHARS_RE = re.compile(rf"(?:{_char_class(HEADER_SAFE)}|{_ESCAPED})*")
_ESCAPES_RE = re.compile(rf"(?:{_ESCAPED})+")

# RFC 3966 §3: telephone-subscriber digits (global "+..." or local), visual separators
# included. Kept permissive: the number is handed on as text, never as an integer.
TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# RFC 3986 §3: the scheme-specific part of an absoluteURI whose scheme we do not know
# (RFC 3261 §19.1.1 "absoluteURI"): no whitespace, controls, quotes or angle brackets.
OPAQUE_RE = re.compile(r'[^\x00-\x20"<>\x7f]+')

# RFC 3261 §25.1: hostname = *( domainlabel "." ) toplabel [ "." ]. Deliberately lenient:
# "_" shows up in real deployments, and hyphen placement is not checked. Labels are
# separated by ".", which no label contains, so this is linear.
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?")
# RFC 3261 §25.1: IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
_IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
# RFC 3261 §25.1 IPv6address characters; the structure (RFC 5118 §4.5: at most one "::",
# eight groups, optional dotted IPv4 tail) is checked by the ipaddress module.
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+")
# RFC 3261 §25.1: port = 1*DIGIT; more than 5 digits cannot be a port.
_PORT_RE = re.compile(r"[0-9]{1,5}")

# RFC 3261 §25.1: generic-param = token [ EQUAL gen-value ], gen-value = token / host /
# quoted-string, each one preceded by SEMI = SWS ";" SWS and with EQUAL = SWS "=" SWS.
# The unquoted value also accepts ":" and "[", "]" so that a host value (received=
# [2001:db8::1]) and RFC 5118 §4.5's bare IPv6 via-received (received=2001:db8::9:255)
# both parse.
_GEN_VALUE = rf"{QUOTED_STRING}|[{_TOKEN_CHARS}:\[\]]+"
GENERIC_PARAM_RE = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({_GEN_VALUE}))?")
_TRAILING_SWS_RE = re.compile(SWS)


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 3261 §25.1 token (method names, header names...)."""
    return TOKEN_RE.fullmatch(text) is not None


def unquote(quoted: str) -> str:
    """The content of a quoted-string (with its DQUOTEs), quoted-pairs resolved (§25.1)."""
    return _QUOTED_PAIR_RE.sub(r"\1", quoted[1:-1])


def quote(text: str) -> str:
    """``text`` as a quoted-string (RFC 3261 §25.1).

    DQUOTE, backslash and the controls qdtext does not allow become quoted-pairs. CR and
    LF cannot be written in a quoted-string at all (quoted-pair excludes them), so they
    are replaced by a space rather than letting a header value span lines.
    """
    out = ['"']
    for ch in text:
        if ch in "\r\n":
            out.append(" ")
        elif ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def unescape(text: str) -> str:
    """Resolve RFC 3261 §25.1 ``escaped`` (``%XX``) sequences.

    Runs of escapes are decoded together as UTF-8 so multi-byte characters survive;
    bytes that are not UTF-8 map to surrogates (``surrogateescape``) and round-trip
    through :func:`escape`. A "%" not followed by two hex digits is left alone: the
    callers validate the text against the grammar first.
    """
    if "%" not in text:
        return text
    return _ESCAPES_RE.sub(
        lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "surrogateescape"),
        text,
    )


def escape(text: str, safe: frozenset[str]) -> str:
    """Percent-encode (RFC 3261 §25.1 ``escaped``) every character of ``text`` not in
    ``safe`` (USER_SAFE, PASSWORD_SAFE, PARAM_SAFE or HEADER_SAFE), as UTF-8 bytes."""
    if all(ch in safe for ch in text):
        return text
    out = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def is_valid_host(host: str) -> bool:
    """True for an RFC 3261 §25.1 ``host``: hostname, IPv4address or IPv6reference.

    ``host`` is as written in the message, so an IPv6 address comes in brackets
    (RFC 5118 §4.1: ``sip:2001:db8::10`` is not a host, ``sip:[2001:db8::10]`` is).
    """
    if host.startswith("["):
        return host.endswith("]") and _is_ipv6(host[1:-1])
    if _HOSTNAME_RE.fullmatch(host) is None:
        return False
    # toplabel = ALPHA ...: a name ending in an all-digit label must be an IPv4 address.
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if last.isascii() and last.isdigit():
        return _IPV4_RE.fullmatch(host) is not None and all(
            int(part) <= 255 for part in host.split(".")
        )
    return True


def _is_ipv6(text: str) -> bool:
    # RFC 5118 §4.4/§4.5: "2001:db8:::192.0.2.1" (three colons) is invalid; the ipaddress
    # module enforces exactly the RFC 4291 text forms the ABNF describes.
    if _IPV6_CHARS_RE.fullmatch(text) is None:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Split RFC 3261 §25.1 ``hostport = host [ ":" port ]``.

    Returns the host without IPv6 brackets (ready for a socket address) and the port.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
    if not is_valid_host(host):
        raise SipParseError(f"invalid host {host!r}")
    port: int | None = None
    if rest:
        if rest[0] != ":" or _PORT_RE.fullmatch(rest[1:]) is None:
            raise SipParseError(f"invalid port in {text!r}")
        port = int(rest[1:])
        if port > 65535:
            raise SipParseError(f"port {port} out of range")
    return (host[1:-1] if host.startswith("[") else host), port


def format_host(host: str) -> str:
    """A host for writing into a message: IPv6 addresses get their brackets back."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` from ``text[pos:]`` up to its end (RFC 3261 §25.1).

    Names are lower-cased (parameter names are case-insensitive, §7.3.1); values are kept
    as written, quoted-strings with their quotes, so they serialize unchanged. A value-less
    parameter maps to None. When a name repeats, the first occurrence wins.
    """
    params: dict[str, str | None] = {}
    end = len(text)
    while pos < end:
        m = GENERIC_PARAM_RE.match(text, pos)
        if m is None:
            trailing = _TRAILING_SWS_RE.match(text, pos)
            if trailing is not None and trailing.end() == end:
                break
            raise SipParseError(f"malformed parameters {text[pos:]!r}")
        params.setdefault(m.group(1).lower(), m.group(2))
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    """``;name=value`` for each parameter, the inverse of :func:`parse_params`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_list(value: str) -> list[str]:
    """Split a header value at the commas that separate list elements (RFC 3261 §7.3.1).

    Commas inside quoted-strings and inside ``<...>`` (a URI may contain commas) do not
    split. Elements are stripped; empty elements are dropped.
    """
    if '"' not in value and "<" not in value:
        return [part for p in value.split(",") if (part := p.strip(" \t"))]
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1  # quoted-pair: the next character cannot close the string
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == "<":
            in_angle = True
        elif ch == ",":
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return [part for p in parts if (part := p.strip(" \t"))]
