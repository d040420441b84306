"""The native protocol v1: every message both ways against its exact text."""

import json
from typing import Any

import pytest

from sipbridge.agent import (
    AgentSession,
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    Metadata,
    SendDtmf,
    Transcript,
    TransferCancel,
    TransferComplete,
    TransferRequested,
    UnknownMessage,
)

START: dict[str, Any] = dict(
    from_="+12025550100",
    to="+12025550199",
    agent="support",
    sip_call_id="abc@host",
    sip_headers={"X-Tenant": "acme"},
)


# -- server -> agent --------------------------------------------------------------------


def test_start_exact_text() -> None:
    session = AgentSession("c-1")
    assert session.start_messages(**START) == [
        '{"type":"start","version":1,"call_id":"c-1","from":"+12025550100",'
        '"to":"+12025550199","agent":"support","direction":"inbound","sip_call_id":"abc@host",'
        '"sip_headers":{"X-Tenant":"acme"},"media_format":{"encoding":"pcm_s16le",'
        '"sample_rate":8000,"channels":1,"frame_ms":20},"resumed":false}'
    ]


def test_start_message_single_frame_is_kept() -> None:
    session = AgentSession("c-1")
    assert [session.start_message(**START)] == session.start_messages(**START)


def test_start_outbound() -> None:
    message = json.loads(AgentSession("c-1").start_messages(**START, direction="outbound")[0])
    assert message["direction"] == "outbound"


def test_start_resumed() -> None:
    message = json.loads(AgentSession("c-1").start_messages(**START, resumed=True)[0])
    assert message["resumed"] is True


def test_start_with_unknown_parties_and_wideband() -> None:
    session = AgentSession("c-2", sample_rate=16000, frame_ms=10)
    [text] = session.start_messages(from_=None, to=None, agent="a", sip_call_id="x", sip_headers={})
    message = json.loads(text)
    assert message["from"] is None and message["to"] is None
    assert message["media_format"] == {
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
        "channels": 1,
        "frame_ms": 10,
    }
    assert session.frame_bytes == 320


def test_stop() -> None:
    assert AgentSession("c").stop_message("caller_hangup") == (
        '{"type":"stop","reason":"caller_hangup"}'
    )


def test_caller_audio_is_the_frame_itself() -> None:
    frame = bytes(range(256)) + bytes(64)
    assert AgentSession("c").caller_audio(frame) is frame


def test_caller_dtmf() -> None:
    assert AgentSession("c").caller_dtmf("5", 120) == (
        '{"type":"dtmf","digit":"5","duration_ms":120}'
    )


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        ("accepted", 202, '{"type":"transfer_result","status":"accepted","sip_code":202}'),
        ("failed", 603, '{"type":"transfer_result","status":"failed","sip_code":603}'),
        ("failed", None, '{"type":"transfer_result","status":"failed","sip_code":null}'),
    ],
)
def test_transfer_result(status: str, code: int | None, text: str) -> None:
    session = AgentSession("c")
    session.transfer_result(status, code)
    assert session.data_to_send() == [text]
    assert session.data_to_send() == []


def test_warm_transfer_results_name_the_leg() -> None:
    session = AgentSession("c")
    session.transfer_result("dialing", None, leg="target")
    session.transfer_result("consulting", 200, leg="target")
    session.transfer_result("ended", None, leg="caller", reason="target_hangup")
    assert session.data_to_send() == [
        '{"type":"transfer_result","status":"dialing","sip_code":null,"leg":"target"}',
        '{"type":"transfer_result","status":"consulting","sip_code":200,"leg":"target"}',
        '{"type":"transfer_result","status":"ended","sip_code":null,"leg":"caller",'
        '"reason":"target_hangup"}',
    ]


def test_transfer_result_status_is_checked() -> None:
    with pytest.raises(ValueError):
        AgentSession("c").transfer_result("ok", 200)
    with pytest.raises(ValueError):
        AgentSession("c").transfer_result("dialing", None, leg="agent")


def test_mark_echo_texts() -> None:
    session = AgentSession("c")
    assert session.receive_text('{"type":"mark","name":"u1"}') == []
    assert session.data_to_send() == ['{"type":"mark","name":"u1","status":"played"}']
    session.receive_binary(bytes(640))
    session.receive_text('{"type":"mark","name":"u2"}')
    assert session.receive_text('{"type":"clear"}') == [AudioCleared(640)]
    assert session.data_to_send() == ['{"type":"mark","name":"u2","status":"cleared"}']


def test_text_is_not_escaped_to_ascii() -> None:
    session = AgentSession("c")
    session.receive_text('{"type":"mark","name":"größe ☎"}')
    assert session.data_to_send() == ['{"type":"mark","name":"größe ☎","status":"played"}']


# -- agent -> server --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ('{"type":"hangup"}', HangupRequested(after_playout=True)),
        ('{"type":"hangup","reason":"done"}', HangupRequested(after_playout=True)),
        ('{"type":"hangup","after_playout":true}', HangupRequested(after_playout=True)),
        ('{"type":"hangup","after_playout":false}', HangupRequested(after_playout=False)),
        (
            '{"type":"transfer","target":"tel:+15551234567"}',
            TransferRequested("tel:+15551234567", {}),
        ),
        (
            '{"type":"transfer","target":"sip:sales@pbx.example.com;transport=tcp",'
            '"headers":{"X-Reason":"sales","User-to-User":"0123"}}',
            TransferRequested(
                "sip:sales@pbx.example.com;transport=tcp",
                {"X-Reason": "sales", "User-to-User": "0123"},
            ),
        ),
        (
            '{"type":"transfer","target":"tel:+15551234567","mode":"warm"}',
            TransferRequested("tel:+15551234567", {}, "warm"),
        ),
        (
            '{"type":"transfer","target":"tel:+15551234567","mode":"blind"}',
            TransferRequested("tel:+15551234567", {}, "blind"),
        ),
        ('{"type":"transfer_complete"}', TransferComplete()),
        ('{"type":"transfer_cancel"}', TransferCancel()),
        ('{"type":"send_dtmf","digits":"12#"}', SendDtmf("12#", 100)),
        ('{"type":"send_dtmf","digits":"*0ad","duration_ms":250}', SendDtmf("*0AD", 250)),
        (
            '{"type":"transcript","role":"caller","text":"I need help","final":true}',
            Transcript("caller", "I need help", True),
        ),
        (
            '{"type":"transcript","role":"agent","text":"Sure","final":false}',
            Transcript("agent", "Sure", False),
        ),
        (
            '{"type":"metadata","data":{"intent":"billing","score":0.9,"tags":["a"]}}',
            Metadata({"intent": "billing", "score": 0.9, "tags": ["a"]}),
        ),
        ('{"type":"clear"}', AudioCleared(0)),
        ('{"type":"mark","name":"x"}', None),
    ],
)
def test_agent_messages(text: str, event: object) -> None:
    assert AgentSession("c").receive_text(text) == ([] if event is None else [event])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"type":"hangup","after_playout":"yes"}', "after_playout"),
        ('{"type":"transfer"}', "target"),
        ('{"type":"transfer","target":"http://example.com"}', "tel:, sip: or sips:"),
        ('{"type":"transfer","target":"sip:"}', "not a valid URI"),
        ('{"type":"transfer","target":"tel:555 1234"}', "not a valid URI"),
        ('{"type":"transfer","target":"tel:+1","headers":[]}', "headers"),
        ('{"type":"transfer","target":"tel:+1","headers":{"Bad Name":"x"}}', "token"),
        ('{"type":"transfer","target":"tel:+1","headers":{"X-A":"a\\r\\nVia: x"}}', "one-line"),
        ('{"type":"transfer","target":"tel:+1","headers":{"X-A":5}}', "one-line"),
        ('{"type":"transfer","target":"tel:+1","mode":"cold"}', '"blind" or "warm"'),
        ('{"type":"transfer","target":"tel:+1","mode":["warm"]}', '"blind" or "warm"'),
        ('{"type":"send_dtmf"}', "digits"),
        ('{"type":"send_dtmf","digits":""}', "digits"),
        ('{"type":"send_dtmf","digits":"12E"}', "0-9"),
        ('{"type":"send_dtmf","digits":"1","duration_ms":39}', "duration_ms"),
        ('{"type":"send_dtmf","digits":"1","duration_ms":2001}', "duration_ms"),
        ('{"type":"send_dtmf","digits":"1","duration_ms":100.0}', "duration_ms"),
        ('{"type":"send_dtmf","digits":"1","duration_ms":true}', "duration_ms"),
        ('{"type":"transcript","role":"bot","text":"x"}', "role"),
        ('{"type":"transcript","role":"agent"}', "text"),
        ('{"type":"transcript","role":"agent","text":"x","final":1}', "final"),
        ('{"type":"metadata"}', "data"),
        ('{"type":"metadata","data":[1]}', "data"),
        ('{"type":"mark"}', "name"),
        ('{"type":"mark","name":7}', "name"),
    ],
)
def test_invalid_requests(text: str, reason: str) -> None:
    session = AgentSession("c")
    [event] = session.receive_text(text)
    assert isinstance(event, InvalidMessage)
    assert reason in event.reason
    assert session.data_to_send() == []


def test_dtmf_duration_bounds_are_inclusive() -> None:
    session = AgentSession("c")
    for duration in (40, 2000):
        text = json.dumps({"type": "send_dtmf", "digits": "0", "duration_ms": duration})
        assert session.receive_text(text) == [SendDtmf("0", duration)]


def test_unknown_types_are_reported_once_each() -> None:
    session = AgentSession("c")
    assert session.receive_text('{"type":"speak","text":"x"}') == [UnknownMessage("speak")]
    assert session.receive_text('{"type":"speak"}') == []
    assert session.receive_text('{"type":"ping"}') == [UnknownMessage("ping")]
    assert AgentSession("other").receive_text('{"type":"speak"}') == [UnknownMessage("speak")]


def test_unknown_type_reports_are_bounded() -> None:
    session = AgentSession("c")
    reported = sum(len(session.receive_text(json.dumps({"type": f"t{i}"}))) for i in range(200))
    assert reported == 64
    [event] = AgentSession("c").receive_text(json.dumps({"type": "x" * 1000}))
    assert event == UnknownMessage("x" * 64)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"hangup"', "not a JSON object"),
        ("{}", 'no string "type"'),
        ('{"type": 5}', 'no string "type"'),
        ('{"event": "hangup"}', 'no string "type"'),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
        ('{"type": "x", "n": ' + "9" * 5000 + "}", "invalid JSON"),
        ('{"type": "metadata", "data": {"x": NaN}}', "invalid JSON"),
        ('{"type": "metadata", "data": {"x": -Infinity}}', "invalid JSON"),
        ('{"type": "mark", "name": "\\ud800"}', "invalid JSON"),
    ],
)
def test_invalid_text(text: str, reason: str) -> None:
    [event] = AgentSession("c").receive_text(text)
    assert isinstance(event, InvalidMessage)
    assert reason in event.reason


def test_escaped_surrogate_pairs_are_fine() -> None:
    session = AgentSession("c")
    assert session.receive_text('{"type":"mark","name":"\\ud83d\\ude00"}') == []
    assert session.data_to_send() == ['{"type":"mark","name":"😀","status":"played"}']


def test_audio_is_played_out_in_frames() -> None:
    session = AgentSession("c")
    audio = bytes(range(256)) * 5  # 1280 bytes = 80 ms
    assert session.receive_binary(audio) == []
    assert session.has_audio
    assert session.pending_audio_ms == 80
    frames = [session.next_frame() for _ in range(4)]
    assert b"".join(frames) == audio
    assert not session.has_audio
    assert session.pending_audio_ms == 0


def test_wideband_frames() -> None:
    session = AgentSession("c", sample_rate=16000)
    assert session.frame_bytes == 640
    session.receive_binary(b"\x01\x00" * 640)
    assert session.pending_audio_ms == 40
    assert session.next_frame() == b"\x01\x00" * 320
    assert session.next_frame() == b"\x01\x00" * 320
    assert session.next_frame() == bytes(640)


def test_silence_when_idle_is_shared() -> None:
    session = AgentSession("c")
    first = session.next_frame()
    assert first == bytes(320)
    assert session.next_frame() is first
    assert AgentSession("d").next_frame() is first


def test_tail_is_padded_after_one_period() -> None:
    session = AgentSession("c")
    session.receive_binary(b"\x01\x02" * 50)
    assert session.next_frame() == bytes(320)
    assert session.next_frame() == b"\x01\x02" * 50 + bytes(220)


def test_odd_length_audio_is_skipped() -> None:
    session = AgentSession("c")
    [event] = session.receive_binary(b"\x01\x02\x03")
    assert isinstance(event, InvalidMessage)
    assert "odd-length audio" in event.reason
    assert not session.has_audio
    assert session.receive_binary(b"") == []


def test_cap_reports_dropped_audio() -> None:
    session = AgentSession("c", cap_seconds=0.1)  # 800 samples = 1600 bytes
    assert session.receive_binary(bytes(1000)) == []
    assert session.receive_binary(bytes(1000)) == [AudioDropped(400)]
    assert session.pending_audio_ms == 100


def test_clear_audio() -> None:
    session = AgentSession("c")
    session.receive_binary(b"\x11" * 640)
    assert session.clear_audio() == 640
    assert not session.has_audio
    assert session.next_frame() == bytes(320)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"sample_rate": 10},
        {"frame_ms": 0},
        {"cap_seconds": 0.0},
        {"cap_seconds": -1.0},
    ],
)
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AgentSession("c", **kwargs)  # type: ignore[arg-type]
