"""SIP messages (RFC 3261 §7): parsing, the typed header values, serialization.

``parse_message(data)`` turns one datagram into a :class:`Request` or :class:`Response`, or
raises :class:`SipParseError` whose ``status_hint`` says how a server should answer
(``build_error_response`` builds that answer from what parsed). The caller must:

* drop keep-alives (bare CRLFs) before calling, they are not messages;
* never answer when ``SipParseError.is_request`` is not True (responses are dropped);
* decide URI schemes (416), Require (420) and bodies (415) itself: those are UA policy and
  parse here without complaint.

Header values are kept as text in :class:`Headers` (full header names, folding undone);
the ones every message must carry (Via, From, To, Call-ID, CSeq, plus Max-Forwards and
Contact when present) are parsed and checked while parsing, and exposed as typed
accessors. A message built by code gets the same accessors, parsed from its headers on
first use and again whenever the headers change.

:class:`Uri` lives in ``uri.py``, :class:`Headers` and the header names in ``headers.py``,
and :class:`NameAddr`, :class:`Via` and :class:`CSeq` in ``values.py``; this module
re-exports them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipbridge.sip import grammar
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.headers import Headers, canonical_header_name
from sipbridge.sip.uri import Uri
from sipbridge.sip.values import CSeq, NameAddr, Via

__all__ = [
    "REASON_PHRASES",
    "CSeq",
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "Uri",
    "Via",
    "build_error_response",
    "canonical_header_name",
    "default_reason",
    "make_response",
    "parse_message",
]

# RFC 3261 §21 plus the codes later RFCs registered (IANA "SIP Response Codes").
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",  # RFC 6228
    200: "OK",
    202: "Accepted",  # RFC 6665
    204: "No Notification",  # RFC 5839
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",  # RFC 3903
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",  # RFC 4412
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",  # RFC 4028
    423: "Interval Too Brief",
    428: "Use Identity Header",  # RFC 4474
    429: "Provide Referrer Identity",  # RFC 3892
    430: "Flow Failed",  # RFC 5626
    433: "Anonymity Disallowed",  # RFC 5079
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",  # RFC 5626
    440: "Max-Breadth Exceeded",  # RFC 5393
    469: "Bad Info Package",  # RFC 6086
    470: "Consent Needed",  # RFC 5360
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",  # RFC 6665
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",  # RFC 3329
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",  # RFC 8599
    580: "Precondition Failure",  # RFC 3312
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",  # RFC 8197
    608: "Rejected",  # RFC 8688
}

# RFC 3261 §21: an unknown code is treated as the x00 of its class.
_CLASS_REASONS = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def default_reason(status: int) -> str:
    """The reason phrase for ``status``: from REASON_PHRASES, else its class's name."""
    return REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


# ----------------------------------------------------------------------------- messages


@dataclass(slots=True)
class _Parsed:
    """The typed view of a message's headers, remembered with the headers' version."""

    headers: Headers
    version: int
    vias: list[Via]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: CSeq
    max_forwards: int | None
    contacts: list[NameAddr]


def _single(headers: Headers, name: str) -> str:
    # RFC 3261 §7.3.1: only list headers may appear more than once (RFC 4475 §3.1.2.11
    # multi01 carries two From, To, Call-ID and CSeq).
    lines = headers.get_lines(name)
    if not lines:
        raise SipParseError(f"missing {name} header")
    if len(lines) > 1:
        raise SipParseError(f"{name} header appears {len(lines)} times")
    return lines[0]


def _parse_headers(headers: Headers, method: str | None) -> _Parsed:
    # RFC 3261 §8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via are mandatory in a
    # request; Max-Forwards is only checked when present (RFC 2543 peers, inv2543, leave
    # it out and an endpoint can serve them). Responses carry the same set minus it.
    vias = [Via.parse(value) for value in headers.get_all("Via")]
    if not vias:
        raise SipParseError("missing Via header")
    from_ = NameAddr.parse(_single(headers, "From"))
    to = NameAddr.parse(_single(headers, "To"))
    call_id = _single(headers, "Call-ID")
    if grammar.CALL_ID_RE.fullmatch(call_id) is None:
        raise SipParseError(f"malformed Call-ID {call_id!r}")
    cseq = CSeq.parse(_single(headers, "CSeq"))
    if method is not None and cseq.method != method:
        # RFC 3261 §8.1.1.5: the CSeq method matches the request (RFC 4475 mismatch01).
        raise SipParseError(f"CSeq method {cseq.method} does not match {method}")
    max_forwards: int | None = None
    mf_lines = headers.get_lines("Max-Forwards")
    if mf_lines:
        mf_text = _single(headers, "Max-Forwards")
        # RFC 3261 §20.22: 1*DIGIT, in practice 0-255 (§8.1.1.6).
        if not (mf_text.isascii() and mf_text.isdigit()) or len(mf_text) > 10:
            raise SipParseError(f"malformed Max-Forwards {mf_text!r}")
        max_forwards = int(mf_text)
        if max_forwards > 255:
            raise SipParseError(f"Max-Forwards {max_forwards} out of range")
    # RFC 3261 §20.10: Contact is a list of name-addr/addr-spec, or "*" (REGISTER only).
    contacts = [NameAddr.parse(v) for v in headers.get_all("Contact") if v != "*"]
    return _Parsed(
        headers, headers._version, vias, from_, to, call_id, cseq, max_forwards, contacts
    )


class _TypedHeaders:
    """Typed accessors shared by Request and Response, parsed from ``headers``.

    The view is computed once and reused until ``headers`` changes (or is replaced).
    Objects returned are that view: to change the message, change ``headers`` (or call
    :meth:`set_vias` after editing a Via).
    """

    headers: Headers
    _parsed: _Parsed | None

    def _method(self) -> str | None:
        return None

    def _view(self) -> _Parsed:
        parsed = self._parsed
        headers = self.headers
        if parsed is None or parsed.headers is not headers or parsed.version != headers._version:
            parsed = _parse_headers(headers, self._method())
            self._parsed = parsed
        return parsed

    @property
    def vias(self) -> list[Via]:
        return self._view().vias

    @property
    def from_(self) -> NameAddr:
        return self._view().from_

    @property
    def to(self) -> NameAddr:
        return self._view().to

    @property
    def call_id(self) -> str:
        return self._view().call_id

    @property
    def cseq(self) -> CSeq:
        return self._view().cseq

    @property
    def max_forwards(self) -> int | None:
        return self._view().max_forwards

    @property
    def contacts(self) -> list[NameAddr]:
        """The Contact values (empty when absent or ``*``)."""
        return self._view().contacts

    def set_vias(self, vias: Sequence[Via]) -> None:
        """Rewrite the Via header fields from ``vias`` (one field each, in place)."""
        self.headers._replace("Via", [str(via) for via in vias])


@dataclass
class Request(_TypedHeaders):
    """A SIP request (RFC 3261 §7.1). ``serialize()`` writes it as SIP/2.0."""

    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    _parsed: _Parsed | None = field(default=None, init=False, repr=False, compare=False)

    def _method(self) -> str | None:
        return self.method

    def serialize(self) -> bytes:
        return _serialize(f"{self.method} {self.uri} SIP/2.0", self.headers, self.body)


@dataclass
class Response(_TypedHeaders):
    """A SIP response (RFC 3261 §7.2). ``serialize()`` writes it as SIP/2.0."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    _parsed: _Parsed | None = field(default=None, init=False, repr=False, compare=False)

    def serialize(self) -> bytes:
        return _serialize(f"SIP/2.0 {self.status} {self.reason}", self.headers, self.body)


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    # RFC 3261 §7.4.1 / §18.3: Content-Length is always written and always from the body,
    # at the place of an existing Content-Length field, else last.
    lines = [start_line]
    length_written = False
    for key, name, value in headers._items:
        if key == "content-length":
            if not length_written:
                lines.append(f"Content-Length: {len(body)}")
                length_written = True
            continue
        lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


# ----------------------------------------------------------------------------- parsing

_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,10}")


def _split_header_lines(lines: list[str]) -> tuple[Headers, str | None]:
    """Build Headers from the lines after the start line, undoing folding (RFC 3261
    §7.3.1). Returns what parsed and the first problem met, if any: lines that do not
    parse are skipped so the good ones can still be echoed in a 400."""
    headers = Headers()
    error: str | None = None
    name: str | None = None
    parts: list[str] = []
    for raw in lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue  # the end of a header section cut short (truncated datagram)
        if "\r" in line:
            error = error or "bare CR in a header line"
            continue
        if line[0] in " \t":
            # RFC 3261 §7.3.1: a line starting with whitespace continues the previous one.
            if name is None:
                error = error or "continuation line without a header field"
            else:
                parts.append(line.strip(" \t"))
            continue
        if name is not None:
            headers._append(name, " ".join(p for p in parts if p))
            name = None
        colon = line.find(":")
        # RFC 3261 §7.3.1: field-name HCOLON value, HCOLON = *( SP / HTAB ) ":" SWS.
        field_name = line[:colon].rstrip(" \t") if colon > 0 else ""
        if not grammar.is_token(field_name):
            error = error or f"malformed header line {line[:40]!r}"
            continue
        name = field_name
        parts = [line[colon + 1 :].strip(" \t")]
    if name is not None:
        headers._append(name, " ".join(p for p in parts if p))
    return headers, error


# Header lines one message may have (folded continuation lines count).
MAX_HEADER_LINES = 256


def parse_message(data: bytes, max_size: int = 65535) -> Request | Response:
    """Parse one SIP message from ``data`` (a whole UDP datagram).

    Bytes past Content-Length are ignored; without Content-Length the rest of the data is
    the body (RFC 3261 §18.3, datagram transports). Raises :class:`SipParseError` with the
    status a server should answer (400, 505, 513) and whatever header fields parsed.
    """
    n = len(data)
    start = 0
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    while start < n and data[start] in b"\r\n":
        start += 1
    if start == n:
        raise SipParseError("empty message")
    end_match = _HEAD_END_RE.search(data, start)
    head_end = end_match.start() if end_match is not None else n
    lines = data[start:head_end].decode("utf-8", "surrogateescape").split("\n")
    start_line = lines[0].removesuffix("\r").rstrip(" \t")
    # A cap on header lines: parsing cost and memory stay bounded whatever arrives.
    too_many = len(lines) - 1 > MAX_HEADER_LINES
    headers, header_error = _split_header_lines(lines[1 : MAX_HEADER_LINES + 1])

    def fail(reason: str, status: int = 400) -> SipParseError:
        return SipParseError(reason, status_hint=status, headers=headers, is_request=is_request)

    is_request: bool | None
    if start_line[:4].upper() == "SIP/":
        is_request = False
    else:
        # A request line is recognised by its last word being a SIP-Version, even when
        # the rest is malformed (RFC 4475 ltgtruri, lwsruri): such a request is answered.
        words = start_line.rsplit(" ", 1)
        last = words[-1]
        is_request = True if len(words) == 2 and grammar.SIP_VERSION_RE.fullmatch(last) else None
    if n > max_size:
        # RFC 3261 §21.5.7 513 Message Too Large.
        raise fail(f"message of {n} bytes exceeds the {max_size} byte limit", 513)

    method = ""
    uri: Uri | None = None
    status = 0
    reason = ""
    if is_request is False:
        sm = grammar.STATUS_LINE_RE.fullmatch(start_line)
        if sm is None:
            raise fail(f"malformed Status-Line {start_line[:80]!r}")
        if sm.group(1).upper() != "SIP/2.0":
            raise fail(f"unsupported SIP version {sm.group(1)}", 505)
        status = int(sm.group(2))
        if not 100 <= status <= 699:  # RFC 3261 §21: codes are 100-699
            raise fail(f"status code {status} out of range")
        reason = sm.group(3) or ""
    else:
        if is_request and start_line.rsplit(" ", 1)[-1].upper() != "SIP/2.0":
            # RFC 3261 §21.5.6 505 Version Not Supported (RFC 4475 badvers).
            raise fail(f"unsupported SIP version {start_line.rsplit(' ', 1)[-1]}", 505)
        rm = grammar.REQUEST_LINE_RE.fullmatch(start_line)
        if rm is None:
            raise fail(f"malformed Request-Line {start_line[:80]!r}")
        method = rm.group(1)
        try:
            uri = Uri.parse(rm.group(2))
        except SipParseError as exc:
            raise fail(f"bad Request-URI: {exc.reason}") from exc
    if too_many:
        raise fail(f"more than {MAX_HEADER_LINES} header lines")
    if header_error is not None:
        raise fail(header_error)
    if end_match is None:
        raise fail("no blank line after the header section (truncated message?)")

    body_start = end_match.end()
    length_lines = headers.get_lines("Content-Length")
    if len(length_lines) > 1:
        # RFC 4475 §3.1.2.19 mcl01: two lengths, no way to know which one holds.
        raise fail("Content-Length appears more than once")
    if length_lines:
        length_text = length_lines[0]
        if _CONTENT_LENGTH_RE.fullmatch(length_text) is None:
            raise fail(f"malformed Content-Length {length_text[:20]!r}")  # ncl: -999
        length = int(length_text)
        if body_start + length > n:
            # RFC 3261 §18.3: a datagram shorter than its Content-Length is discarded
            # (RFC 4475 §3.1.2.2 clerr gets a 400).
            raise fail(f"Content-Length {length} larger than the {n - body_start} body bytes")
        body = data[body_start : body_start + length]
    else:
        body = data[body_start:]

    message: Request | Response
    if uri is not None:
        message = Request(method, uri, headers, body)
    else:
        message = Response(status, reason, headers, body)
    try:
        message._view()
    except SipParseError as exc:
        raise fail(exc.reason) from exc
    return message


# ----------------------------------------------------------------------------- responses

_TAG_PARAM_RE = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


def _copy_for_response(
    source: Headers, status: int, reason: str | None, to_value: str | None
) -> Response:
    headers = Headers()
    for via in source.get_lines("Via"):
        headers.add("Via", via)
    for name, value in (
        ("From", source.get("From")),
        ("To", to_value),
        ("Call-ID", source.get("Call-ID")),
        ("CSeq", source.get("CSeq")),
    ):
        if value is not None:
            headers.add(name, value)
    return Response(status, reason or default_reason(status), headers)


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6.2).

    Copies every Via, From, To, Call-ID and CSeq; ``to_tag`` is added to the To when it
    has no tag yet. The caller adds the rest (Contact, Record-Route for dialog-creating
    responses per §12.1.1, Allow, a body...). ``reason`` defaults to REASON_PHRASES.
    """
    to_value = request.headers.get("To") or ""
    if to_tag is not None and request.to.tag is None:
        to_value = f"{to_value};tag={to_tag}"
    return _copy_for_response(request.headers, status, reason, to_value)


def build_error_response(
    headers: Headers, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response | None:
    """A response (usually 400 or 505) to a request that did not parse, built from its
    raw header fields (RFC 3261 §8.2.6.2, §21.4.1).

    Via, From, To, Call-ID and CSeq are copied as written, since they may be the broken
    part. Only the Via is required: it is what the client matches a response on (with
    the CSeq, RFC 3261 §17.1.3), so a request missing From, To or Call-ID still gets
    its 400 (RFC 4475 §3.1.2.8, insuf) with the fields it had. Returns None without a
    Via. When a field appears twice, the first one is echoed.
    """
    if not headers.get_lines("Via"):
        return None
    lines = headers.get_lines("To")
    to_value = lines[0] if lines else None
    if to_value is not None and to_tag is not None and _TAG_PARAM_RE.search(to_value) is None:
        to_value = f"{to_value};tag={to_tag}"
    return _copy_for_response(headers, status, reason, to_value)
