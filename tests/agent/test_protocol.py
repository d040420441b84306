import json

import pytest

from sipbridge.agent import (
    AgentSession,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    UnknownMessage,
)


def test_start_message_exact_text() -> None:
    session = AgentSession("c-1")
    text = session.start_message(
        from_="+12025550100",
        to="+12025550199",
        agent="support",
        sip_call_id="abc@host",
        sip_headers={"X-Tenant": "acme"},
    )
    assert text == (
        '{"type":"start","version":1,"call_id":"c-1","from":"+12025550100",'
        '"to":"+12025550199","agent":"support","sip_call_id":"abc@host",'
        '"sip_headers":{"X-Tenant":"acme"},"media_format":{"encoding":"pcm_s16le",'
        '"sample_rate":8000,"channels":1,"frame_ms":20}}'
    )


def test_start_message_with_unknown_parties_and_other_format() -> None:
    session = AgentSession("c-2", sample_rate=16000, frame_ms=10)
    message = json.loads(
        session.start_message(from_=None, to=None, agent="a", sip_call_id="x", sip_headers={})
    )
    assert message["from"] is None and message["to"] is None
    assert message["media_format"] == {
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
        "channels": 1,
        "frame_ms": 10,
    }
    assert session.frame_bytes == 320


def test_stop_message() -> None:
    assert AgentSession("c").stop_message("caller-hangup") == (
        '{"type":"stop","reason":"caller-hangup"}'
    )


def test_hangup() -> None:
    session = AgentSession("c")
    assert session.receive_text('{"type": "hangup"}') == [HangupRequested()]
    assert session.receive_text('{"type": "hangup", "reason": "done"}') == [HangupRequested()]


def test_unknown_types_are_reported_once_each() -> None:
    session = AgentSession("c")
    assert session.receive_text('{"type":"mark","name":"x"}') == [UnknownMessage("mark")]
    assert session.receive_text('{"type":"mark"}') == []
    assert session.receive_text('{"type":"transcript"}') == [UnknownMessage("transcript")]
    assert AgentSession("other").receive_text('{"type":"mark"}') == [UnknownMessage("mark")]


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
        ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
        ('{"type": "x", "n": ' + "9" * 5000 + "}", "invalid JSON"),
    ],
)
def test_invalid_text(text: str, reason: str) -> None:
    [event] = AgentSession("c").receive_text(text)
    assert isinstance(event, InvalidMessage)
    assert reason in event.reason


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
    session.clear_audio()
    assert not session.has_audio
    assert session.next_frame() == bytes(320)


@pytest.mark.parametrize(
    "kwargs", [{"sample_rate": 0}, {"frame_ms": 0}, {"cap_seconds": 0.0}, {"cap_seconds": -1.0}]
)
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AgentSession("c", **kwargs)  # type: ignore[arg-type]
