"""SIP over stream transports (TCP, TLS): transports, addresses and message framing.

RFC 3261 §18.3: on a stream, Content-Length is mandatory and says where a message's body
ends; the next message starts right after it. :class:`StreamFramer` is sans-I/O: the
runtime feeds it the bytes of one connection as they arrive and gets back complete
messages (each one ``bytes`` ready for :meth:`~sipbridge.sip.ua.UserAgent.receive_datagram`)
and the bytes to write back (the RFC 5626 §3.5.1 CRLF keep-alive "pong"). Anything that
cannot be framed raises :class:`FramingError`; the connection cannot be resynchronised
after that and must be closed (after sending ``FramingError.response`` when there is one).

:class:`StreamAddress` is the remote end of a connection as the UA core sees it: a
``(host, port)`` tuple that also carries its :class:`Transport`, so every response and
request the core queues for it finds its way back onto that connection (RFC 3261
§18.2.2), and ``target``, where to open a new connection when it is gone (§18.1.1).
"""

from __future__ import annotations

import enum
import re

from sipbridge.sip.errors import SipParseError
from sipbridge.sip.message import Request, build_error_response, make_response, parse_message

__all__ = [
    "MAX_HEADER_SIZE",
    "PONG",
    "FramingError",
    "StreamAddress",
    "StreamFramer",
    "Transport",
    "transport_of",
]

# The header section's cap: a peer that sends header lines forever is cut off here.
MAX_HEADER_SIZE = 16384
# RFC 5626 §3.5.1: a double CRLF "ping" is answered with a single CRLF "pong".
PING = b"\r\n\r\n"
PONG = b"\r\n"

Address = tuple[str, int]

_HEAD_END = b"\r\n\r\n"
# Content-Length or its compact form "l" (RFC 3261 §7.3.3, §20.14), at a line start.
_CONTENT_LENGTH_RE = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_DIGITS_RE = re.compile(rb"[0-9]{1,10}")


class Transport(enum.Enum):
    """The transport a message came on or goes out on (RFC 3261 §18, the Via token)."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        """Streams are reliable: no Timer E/G retransmissions (RFC 3261 §17.1.2.2, §17.2.1)."""
        return self is not Transport.UDP


class StreamAddress(tuple[str, int]):
    """``(host, port)`` of a TCP or TLS peer, as its socket sees it, with the transport.

    It compares and hashes as the plain tuple, so code that only needs the host and port
    (access checks, logs, call records) works unchanged. ``target`` is the peer's own
    address for new requests (the dialog's next hop), used when the connection is gone.
    """

    transport: Transport
    target: Address | None

    def __new__(
        cls, host: str, port: int, transport: Transport, target: Address | None = None
    ) -> StreamAddress:
        if transport is Transport.UDP:
            raise ValueError("a StreamAddress is for TCP or TLS")
        self = super().__new__(cls, (host, port))
        self.transport = transport
        self.target = target
        return self

    def __repr__(self) -> str:
        return f"StreamAddress({self[0]!r}, {self[1]}, {self.transport.name})"


def transport_of(address: Address) -> Transport:
    """The transport of a source or destination: a :class:`StreamAddress`'s, else UDP."""
    return address.transport if isinstance(address, StreamAddress) else Transport.UDP


class FramingError(Exception):
    """Bytes on a stream that are no SIP message we can frame; the connection must close.

    ``response`` is the error response to send first (400, or 513 for a message over the
    size limit) when the bytes began with a request whose Via parsed, else None.
    """

    def __init__(self, reason: str, response: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class StreamFramer:
    """Splits one connection's byte stream into SIP messages (RFC 3261 §18.3)."""

    def __init__(
        self, max_message_size: int = 65535, max_header_size: int = MAX_HEADER_SIZE
    ) -> None:
        self.max_message_size = max_message_size
        self.max_header_size = min(max_header_size, max_message_size)
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for the header end
        self._message_end: int | None = None  # known once the header section is complete

    @property
    def pending(self) -> bool:
        """True while part of a message has arrived and the rest has not (the runtime
        times this out: slowloris)."""
        # After feed() the buffer is empty, part of a ping (CR/LF only) or a message.
        return bool(self._buffer) and self._buffer[0] not in b"\r\n"

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Take the next bytes of the stream; return the complete messages they finish,
        in order, and what to write back (a CRLF per keep-alive ping, or b"").

        Raises :class:`FramingError`; the framer is unusable afterwards.
        """
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        pongs = 0
        while buffer:
            if self._message_end is None:
                if buffer[0] in b"\r\n":
                    # RFC 5626 §3.5.1 keep-alives, and RFC 3261 §7.5 CRLFs before a
                    # start line. A lone CRLF may be half a ping: wait for more.
                    if buffer.startswith(PING):
                        del buffer[:4]
                        pongs += 1
                        continue
                    if len(buffer) < 4 and PING.startswith(buffer):
                        break
                    del buffer[:1]
                    continue
                head_end = buffer.find(_HEAD_END, max(0, self._scanned - 3))
                if head_end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > self.max_header_size:
                        raise self._error(
                            f"header section longer than {self.max_header_size} bytes", None
                        )
                    break
                body_start = head_end + 4
                if body_start > self.max_header_size:
                    raise self._error(
                        f"header section longer than {self.max_header_size} bytes", None
                    )
                self._message_end = body_start + self._content_length(
                    bytes(buffer[:head_end]), body_start
                )
            end = self._message_end
            if len(buffer) < end:
                break
            messages.append(bytes(buffer[:end]))
            del buffer[:end]
            self._message_end = None
            self._scanned = 0
        return messages, PONG * pongs

    def _content_length(self, head: bytes, body_start: int) -> int:
        """The body length the header section announces, checked (RFC 3261 §18.3)."""
        found = _CONTENT_LENGTH_RE.findall(head)
        if not found:
            raise self._error("no Content-Length on a stream transport", head)
        if len(found) > 1:
            raise self._error("Content-Length appears more than once", head)
        text = found[0].strip(b" \t")
        if _DIGITS_RE.fullmatch(text) is None:
            raise self._error(f"malformed Content-Length {text[:20]!r}", head)
        length = int(text)
        if body_start + length > self.max_message_size:
            raise self._error(
                f"message of {body_start + length} bytes exceeds the "
                f"{self.max_message_size} byte limit",
                head,
                513,
            )
        return length

    def _error(self, reason: str, head: bytes | None, status: int = 400) -> FramingError:
        self._buffer.clear()
        return FramingError(reason, _error_response(head, status, reason) if head else None)


def _error_response(head: bytes, status: int, reason: str) -> bytes | None:
    """400/513 to the request whose header section is ``head`` (RFC 3261 §21.4.1), or
    None when it is a response or no Via parsed (nothing to answer to)."""
    data = head + _HEAD_END
    try:
        message = parse_message(data, len(data))
    except SipParseError as exc:
        if not exc.is_request or exc.headers is None:
            return None
        response = build_error_response(exc.headers, status)
    else:
        if not isinstance(message, Request):
            return None
        response = make_response(message, status)
    if response is None:
        return None
    text = reason[:80].replace("\\", "'").replace('"', "'")
    response.headers.add("Warning", f'399 - "{text}"')
    return response.serialize()
