"""Fuzz the agent protocol decoders (native and Twilio) with atheris.

    python fuzz/fuzz_agent.py -max_total_time=60 fuzz/corpus/agent

An input is a conversation from the agent, one WebSocket frame per line:

* ``B:<bytes>`` a binary frame (agent audio in the native protocol);
* ``T:<n>`` n frame periods pass (``next_frame`` n times, at most 500);
* ``R`` the agent reconnects (``start_messages(resumed=True)``);
* anything else a text frame (UTF-8; undecodable bytes become U+FFFD as a WebSocket
  library would refuse them).

Both a native and a Twilio session get the whole conversation. ``receive_text`` and
``receive_binary`` never raise; after each frame a frame period passes and
``data_to_send`` is drained. What the sessions send and the events they return must be
usable downstream: frames and texts encode as UTF-8 and JSON, a transfer's target and
headers make a REFER that the SIP parser reads back, ``send_dtmf`` digits queue in the
DTMF sender. The same text decoded with lone surrogates kept must not make
``receive_text`` of a fresh session raise either.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from _common import instrumented, run

with instrumented(__name__ == "__main__"):
    from sipbridge.agent.events import (
        InvalidMessage,
        Metadata,
        SendDtmf,
        TransferRequested,
        UnknownMessage,
    )
    from sipbridge.agent.factory import make_session
    from sipbridge.agent.session import Session
    from sipbridge.media.dtmf import DtmfSender
    from sipbridge.sip.calls import CallState, IncomingCall
    from sipbridge.sip.message import Request, parse_message
    from sipbridge.sip.ua import UserAgent

MAX_LINES = 64
MAX_TICKS = 500
INVITE = (
    b"INVITE sip:+15550100@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-fuzz-1;rport\r\n"
    b"From: <sip:+15550123@127.0.0.1:5070>;tag=caller\r\n"
    b"To: <sip:+15550100@127.0.0.1:5060>\r\n"
    b"Call-ID: fuzz-agent-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.1:5070>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _refer(target: str, headers: dict[str, str]) -> None:
    """What the runtime does with TransferRequested: REFER in an answered call."""
    ua = UserAgent("127.0.0.1", 5060)
    ua.receive_datagram(INVITE, ("127.0.0.1", 5070), 0.0)
    (event,) = ua.events()
    assert isinstance(event, IncomingCall)
    ua.answer(event.call, b"v=0\r\n", 0.0)
    assert event.call.state is CallState.ANSWERED
    ua.datagrams_to_send()
    assert ua.refer(event.call, target, 0.0, headers)
    (sent,) = ua.datagrams_to_send()
    refer = parse_message(sent[0])
    assert isinstance(refer, Request) and refer.method == "REFER"
    assert refer.headers.get_all("Refer-To")[0] == f"<{target}>"


def _check_events(events: list[object]) -> None:
    for event in events:
        assert dataclasses.is_dataclass(event), event
        # Events end up in logs, call events and the database as JSON.
        json.dumps(dataclasses.asdict(event), ensure_ascii=False).encode()  # type: ignore[call-overload]
        if isinstance(event, InvalidMessage | UnknownMessage):
            continue
        if isinstance(event, TransferRequested):
            _refer(event.target, event.headers)
        elif isinstance(event, SendDtmf):
            DtmfSender(8000).queue(event.digits, event.duration_ms)
        elif isinstance(event, Metadata):
            assert isinstance(event.data, dict)


def _drain(session: Session) -> None:
    for frame in session.data_to_send():
        assert isinstance(frame, str)
        frame.encode()  # a WebSocket text frame is UTF-8
        message = json.loads(frame)
        assert isinstance(message, dict) and session.kind_key in message, frame


def _tick(session: Session, count: int) -> None:
    for _ in range(count):
        frame = session.next_frame()
        assert len(frame) == session.frame_bytes
        _drain(session)


def converse(protocol: str, lines: list[bytes]) -> None:
    session = make_session(protocol, "c1", cap_seconds=2.0)
    session.start_messages(
        from_="+15550123", to="+15550100", agent="a", sip_call_id="x", sip_headers={}
    )
    for line in lines:
        if line.startswith(b"B:"):
            events = session.receive_binary(line[2:])
        elif line.startswith(b"T:"):
            digits = line[2:6]
            _tick(session, min(int(digits), MAX_TICKS) if digits.isdigit() else 1)
            continue
        elif line == b"R":
            session.start_messages(
                from_=None, to=None, agent="a", sip_call_id="x", sip_headers={}, resumed=True
            )
            continue
        else:
            text = line.decode("utf-8", "replace")
            events = session.receive_text(text)
            raw = line.decode("utf-8", "surrogateescape")
            if raw != text:
                # No WebSocket delivers lone surrogates, but receive_text takes any str:
                # it must not raise (a throwaway session: what it queues is not checked).
                make_session(protocol, "c2").receive_text(raw)
        assert isinstance(events, list)
        _check_events(events)
        _drain(session)
        _tick(session, 1)
    session.clear_audio()
    session.transfer_result("failed", None)
    _drain(session)
    session.stop_message("caller_hangup").encode()


def check(data: bytes) -> None:
    lines = data.split(b"\n", MAX_LINES)[:MAX_LINES]
    for protocol in ("native", "twilio"):
        converse(protocol, lines)


if __name__ == "__main__":
    run(check, "agent")
    sys.exit(0)
