"""What both protocols share: marks, clear, the outbox, resumption, robustness.

Driven through the native session (its wire format is the simplest to read); the Twilio
wire format of the same behaviour is checked in test_twilio.py.
"""

import base64
import json
import random
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from sipbridge.agent import (
    AgentEvent,
    AgentSession,
    AudioCleared,
    AudioDropped,
    InvalidMessage,
    Session,
    TwilioSession,
    UnknownMessage,
)
from sipbridge.agent.session import (
    parse_hangup,
    parse_metadata,
    parse_send_dtmf,
    parse_transcript,
    parse_transfer,
)

START: dict[str, Any] = dict(
    from_="+12025550100", to="+12025550199", agent="a", sip_call_id="x@y", sip_headers={}
)


def mark(session: AgentSession, name: str) -> list[AgentEvent]:
    return session.receive_text(json.dumps({"type": "mark", "name": name}))


def echoes(session: Session) -> list[tuple[str, str]]:
    return [(m["name"], m["status"]) for m in map(json.loads, session.data_to_send())]


def test_mark_with_nothing_queued_is_answered_at_once() -> None:
    session = AgentSession("c")
    assert mark(session, "m") == []
    assert echoes(session) == [("m", "played")]
    assert session.pending_marks == 0


def test_mark_after_exactly_its_audio() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(640))  # two frames
    mark(session, "a")
    session.receive_binary(bytes(320))
    mark(session, "b")
    assert session.data_to_send() == []
    session.next_frame()
    assert session.data_to_send() == []
    session.next_frame()  # the last byte before "a" has gone
    assert echoes(session) == [("a", "played")]
    session.next_frame()
    assert echoes(session) == [("b", "played")]
    session.next_frame()
    assert session.data_to_send() == []


def test_marks_keep_their_order_at_one_position() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(320))
    for name in ("x", "y", "z"):
        mark(session, name)
    assert session.pending_marks == 3
    session.next_frame()
    assert echoes(session) == [("x", "played"), ("y", "played"), ("z", "played")]


def test_mark_mid_frame_waits_for_the_frame_holding_its_last_byte() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(400))  # a frame and a quarter
    mark(session, "m")
    session.receive_binary(bytes(240))  # completes the second frame
    session.next_frame()
    assert session.data_to_send() == []
    session.next_frame()
    assert echoes(session) == [("m", "played")]


def test_mark_after_a_partial_tail_waits_for_the_padded_frame() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(100))
    mark(session, "end")
    assert session.next_frame() == bytes(320)  # the tail is held back one period
    assert session.data_to_send() == []
    session.next_frame()  # sent, padded
    assert echoes(session) == [("end", "played")]


def test_mark_positions_ignore_audio_the_cap_dropped() -> None:
    session = AgentSession("c", cap_seconds=0.08)  # 1280 bytes, four frames
    assert session.receive_binary(bytes(960)) == []
    mark(session, "a")  # after frame 3
    assert session.receive_binary(bytes(960)) == [AudioDropped(640)]
    mark(session, "b")  # after frame 4: the dropped audio never plays
    names = []
    for _ in range(5):
        session.next_frame()
        names.append([name for name, _ in echoes(session)])
    assert names == [[], [], ["a"], ["b"], []]


def test_clear_answers_pending_marks_as_cleared_in_order() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(320))
    mark(session, "a")
    session.receive_binary(bytes(960))
    mark(session, "b")
    session.next_frame()
    assert echoes(session) == [("a", "played")]
    assert session.receive_text('{"type":"clear"}') == [AudioCleared(960)]
    assert echoes(session) == [("b", "cleared")]
    assert session.next_frame() == bytes(320)  # not one more byte of the old audio
    assert not session.has_audio


def test_next_frame_after_clear_carries_only_newer_audio() -> None:
    session = AgentSession("c")
    session.receive_binary(b"\x01\x00" * 1000)
    session.next_frame()
    session.receive_text('{"type":"clear"}')
    session.receive_binary(b"\x02\x00" * 160)
    assert session.next_frame() == b"\x02\x00" * 160


def test_marks_after_clear_count_from_the_new_audio() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(3200))
    session.receive_text('{"type":"clear"}')
    mark(session, "now")
    assert echoes(session) == [("now", "played")]
    session.receive_binary(bytes(320))
    mark(session, "later")
    session.next_frame()
    assert echoes(session) == [("later", "played")]


def test_clear_with_a_held_back_tail() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(100))
    mark(session, "m")
    session.next_frame()
    assert session.receive_text('{"type":"clear"}') == [AudioCleared(100)]
    assert echoes(session) == [("m", "cleared")]


def test_pending_marks_are_bounded() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(320))
    for i in range(1000):
        assert mark(session, str(i)) == []
    [event] = mark(session, "one too many")
    assert isinstance(event, InvalidMessage)
    assert session.pending_marks == 1000
    [event] = AgentSession("c").receive_text(json.dumps({"type": "mark", "name": "n" * 1025}))
    assert isinstance(event, InvalidMessage)


def test_resumed_start_forgets_the_old_connection_but_keeps_the_audio() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(640))
    mark(session, "old")
    session.transfer_result("failed", 486)
    session.start_messages(**START, resumed=True)
    assert session.data_to_send() == []
    assert session.pending_marks == 0
    assert session.pending_audio_ms == 40
    session.next_frame()
    session.next_frame()
    assert session.data_to_send() == []


def test_outbox_keeps_the_order_things_happened_in() -> None:
    session = AgentSession("c")
    session.receive_binary(bytes(320))
    mark(session, "a")
    session.transfer_result("accepted", 202)
    session.next_frame()
    kinds = [json.loads(t)["type"] for t in session.data_to_send()]
    assert kinds == ["transfer_result", "mark"]


# -- the shared request bodies --------------------------------------------------------


def test_parsers_take_the_fields_object() -> None:
    assert parse_hangup({}).after_playout is True  # type: ignore[union-attr]
    assert parse_transfer({"target": "sips:bob@example.com:5061"}).target == (  # type: ignore[union-attr]
        "sips:bob@example.com:5061"
    )
    assert parse_transfer({"target": "tel:+1", "headers": None}).headers == {}  # type: ignore[union-attr]
    assert parse_send_dtmf({"digits": "9"}).duration_ms == 100  # type: ignore[union-attr]
    assert parse_transcript({"role": "agent", "text": ""}).final is True  # type: ignore[union-attr]
    assert parse_metadata({"data": {}}).data == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        {"target": "tel:+1" + "5" * 3000},
        {"target": ""},
        {"target": "sip:a@b", "headers": {f"X-{i}": "v" for i in range(33)}},
        {"target": "sip:a@b", "headers": {"X-A": "v" * 1025}},
        {"target": "sip:a@b", "headers": {"X-A": "a\0b"}},
        {"target": "sip:a@[::1"},
        {"target": "sip:a@host:99999"},
    ],
)
def test_transfer_limits(body: dict[str, Any]) -> None:
    assert isinstance(parse_transfer(body), InvalidMessage)


def test_dtmf_and_transcript_limits() -> None:
    assert isinstance(parse_send_dtmf({"digits": "1" * 65}), InvalidMessage)
    assert not isinstance(parse_send_dtmf({"digits": "1" * 64}), InvalidMessage)
    assert isinstance(parse_transcript({"role": "agent", "text": "x" * 65537}), InvalidMessage)


# -- nothing the agent sends makes a session raise -------------------------------------


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "null"]
    if depth < 3:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", "x", "tel:+1555", "sip:a@b", "12#", "caller", "\u2603", "AAAA"])
    if kind == "int":
        return rng.choice([0, -1, 40, 100, 2000, 2**70])
    if kind == "float":
        return rng.choice([0.5, -1e308])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = [
        "type", "event", "name", "target", "headers", "digits", "duration_ms", "role",
        "text", "final", "data", "after_playout", "media", "payload", "mark", "hangup",
        "transfer", "send_dtmf", "transcript", "metadata",
    ]  # fmt: skip
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


_KINDS = [
    "mark", "clear", "hangup", "transfer", "send_dtmf", "transcript", "metadata", "media",
    "stop", "start", "",
]  # fmt: skip


@pytest.mark.parametrize("make", [lambda: AgentSession("f"), lambda: TwilioSession("f")])
def test_fuzz_never_raises(make: Any) -> None:
    rng = random.Random(4)
    session: Session = make()
    for _ in range(5000):
        message = _random_value(rng)
        if isinstance(message, dict) and rng.random() < 0.8:
            kind = rng.choice(_KINDS)
            message[session.kind_key] = kind
            if rng.random() < 0.5:
                message[kind] = _random_value(rng)
            if kind == "media" and rng.random() < 0.5:
                raw = rng.randbytes(rng.randrange(400))
                message["media"] = {"payload": base64.b64encode(raw).decode()}
        text = json.dumps(message)
        if rng.random() < 0.1:
            text = text[: rng.randrange(len(text) + 1)]
        for event in session.receive_text(text):
            assert isinstance(event, typing.get_args(AgentEvent))
        session.receive_binary(rng.randbytes(rng.randrange(700)))
        frame = session.next_frame()
        assert len(frame) == session.frame_bytes
        for out in session.data_to_send():
            json.loads(out)
            out.encode()
    session.receive_text(rng.randbytes(50).decode("latin-1"))


# -- the documentation's examples stay true ---------------------------------------------

_DOC = Path(__file__).parents[2] / "docs" / "agent-protocol.md"
_AGENT_KINDS = {"mark", "clear", "hangup", "transfer", "send_dtmf", "transcript", "metadata"}


def test_documented_agent_messages_are_understood() -> None:
    text = _DOC.read_text()
    seen = set()
    for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL):
        message = json.loads(block)
        native = "type" in message
        kind = message["type"] if native else message["event"]
        if kind not in _AGENT_KINDS | {"media"} or (
            native and kind == "mark" and "status" in message
        ):
            continue
        if not native and kind == "mark" and "sequenceNumber" in message:
            continue  # our answer, not the agent's mark
        if kind == "media" and "sequenceNumber" in message:
            continue  # caller audio
        session: Session = AgentSession("c") if native else TwilioSession("c")
        events = session.receive_text(block)
        assert not [e for e in events if isinstance(e, InvalidMessage | UnknownMessage)], block
        seen.add(("native" if native else "twilio", kind))
    assert {kind for protocol, kind in seen if protocol == "native"} == _AGENT_KINDS
    assert {kind for protocol, kind in seen if protocol == "twilio"} == _AGENT_KINDS | {"media"}
