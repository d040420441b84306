"""Stream framing (RFC 3261 §18.3), keep-alives (RFC 5626 §3.5.1), StreamAddress."""

from __future__ import annotations

import pytest

from sipbridge.sip.framing import (
    MAX_HEADER_SIZE,
    PONG,
    FramingError,
    StreamAddress,
    StreamFramer,
    Transport,
    transport_of,
)
from sipbridge.sip.message import Request, Response, parse_message


def request(method: str = "OPTIONS", body: bytes = b"", *, length: str | None = None) -> bytes:
    length_line = f"Content-Length: {len(body) if length is None else length}\r\n"
    return (
        f"{method} sip:100@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK-1\r\n"
        "From: <sip:a@127.0.0.2>;tag=1\r\n"
        "To: <sip:100@127.0.0.1>\r\n"
        "Call-ID: framing-1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{length_line}"
        "\r\n"
    ).encode() + body


INVITE = request("INVITE", b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\n")
RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-2\r\n"
    b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n"
    b"l: 0\r\n\r\n"
)


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    messages: list[bytes] = []
    replies = b""
    for chunk in chunks:
        got, reply = framer.feed(chunk)
        messages.extend(got)
        replies += reply
    return messages, replies


def test_one_message_with_a_body() -> None:
    framer = StreamFramer()
    messages, reply = framer.feed(INVITE)
    assert messages == [INVITE] and reply == b""
    parsed = parse_message(messages[0])
    assert isinstance(parsed, Request) and parsed.body.startswith(b"v=0")
    assert not framer.pending


def test_every_split_point_of_three_messages_with_a_ping_between() -> None:
    stream = INVITE + b"\r\n\r\n" + RESPONSE + request("BYE")
    expected = [INVITE, RESPONSE, request("BYE")]
    for i in range(len(stream) + 1):
        framer = StreamFramer()
        messages, reply = feed_all(framer, [stream[:i], stream[i:]])
        assert messages == expected, i
        assert reply == PONG, i
        assert not framer.pending
    # and two split points, every pair at a stride
    for i in range(0, len(stream), 7):
        for j in range(i, len(stream) + 1, 11):
            messages, _ = feed_all(StreamFramer(), [stream[:i], stream[i:j], stream[j:]])
            assert messages == expected, (i, j)


def test_byte_by_byte_and_all_at_once() -> None:
    stream = (INVITE + RESPONSE) * 3
    framer = StreamFramer()
    one_by_one, _ = feed_all(framer, [stream[i : i + 1] for i in range(len(stream))])
    assert one_by_one == [INVITE, RESPONSE] * 3
    assert StreamFramer().feed(stream)[0] == [INVITE, RESPONSE] * 3


def test_pending_while_a_message_is_incomplete() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:10]) == ([], b"")
    assert framer.pending
    framer.feed(INVITE[10:-3])
    assert framer.pending  # headers complete, body not
    assert framer.feed(INVITE[-3:]) == ([INVITE], b"")
    assert not framer.pending


def test_keepalive_pings_answered_with_pongs_even_split() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == ([], PONG * 2)
    assert framer.feed(b"\r\n") == ([], b"")  # half a ping: wait
    assert not framer.pending  # a keep-alive is not a message in progress
    assert framer.feed(b"\r") == ([], b"")
    assert framer.feed(b"\n") == ([], PONG)
    # A lone CRLF (a pong, or RFC 3261 §7.5 CRLFs before a start line) is skipped.
    assert framer.feed(b"\r\n" + RESPONSE) == ([RESPONSE], b"")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (request(length="-1"), "malformed Content-Length"),
        (request(length="abc"), "malformed Content-Length"),
        (request(length="99999999999"), "malformed Content-Length"),
        (request(length="70000"), "exceeds"),
        (request(length=""), "malformed Content-Length"),
        (request().replace(b"Content-Length: 0\r\n", b""), "no Content-Length"),
        (
            request().replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 0\r\n"),
            "more than once",
        ),
    ],
)
def test_bad_content_length_is_an_error_answered_400_or_513(message: bytes, reason: str) -> None:
    framer = StreamFramer()
    with pytest.raises(FramingError, match=reason) as caught:
        for i in range(len(message)):
            framer.feed(message[i : i + 1])
    assert caught.value.response is not None
    response = parse_message(caught.value.response)
    assert isinstance(response, Response)
    assert response.status == (513 if reason == "exceeds" else 400)
    assert response.call_id == "framing-1" and response.vias[0].branch == "z9hG4bK-1"


def test_a_bad_response_gets_no_answer() -> None:
    with pytest.raises(FramingError) as caught:
        StreamFramer().feed(RESPONSE.replace(b"l: 0", b"l: x"))
    assert caught.value.response is None


def test_garbage_and_huge_headers_close_without_an_answer() -> None:
    framer = StreamFramer()
    with pytest.raises(FramingError, match="header section longer") as caught:
        for _ in range(MAX_HEADER_SIZE // 1000 + 2):
            framer.feed(b"x" * 1000)
    assert caught.value.response is None
    framer = StreamFramer(max_header_size=200)
    head = request().replace(b"Call-ID", b"X-Pad: " + b"p" * 300 + b"\r\nCall-ID")
    with pytest.raises(FramingError, match="header section longer"):
        framer.feed(head)
    # Binary noise with a blank line: no Content-Length, no request line: no answer.
    with pytest.raises(FramingError) as caught:
        StreamFramer().feed(b"\x16\x03\x01\x02\x00\x01\r\n\r\n")
    assert caught.value.response is None


def test_the_size_limit_counts_header_and_body() -> None:
    body = b"x" * 100
    message = request("INVITE", body)
    limit = len(message)
    assert StreamFramer(max_message_size=limit).feed(message)[0] == [message]
    with pytest.raises(FramingError, match="exceeds"):
        StreamFramer(max_message_size=limit - 1).feed(message)


def test_stream_address_is_a_host_port_tuple_with_a_transport() -> None:
    address = StreamAddress("127.0.0.2", 5070, Transport.TLS, target=("127.0.0.2", 5061))
    assert address == ("127.0.0.2", 5070) and hash(address) == hash(("127.0.0.2", 5070))
    host, port = address
    assert (host, port) == ("127.0.0.2", 5070)
    assert transport_of(address) is Transport.TLS and address.target == ("127.0.0.2", 5061)
    assert transport_of(("127.0.0.2", 5070)) is Transport.UDP
    assert Transport.TCP.reliable and not Transport.UDP.reliable
    with pytest.raises(ValueError):
        StreamAddress("127.0.0.2", 5070, Transport.UDP)
