"""Per-call caps on what an agent may store or queue, protocol errors counted once per
kind, and the message-rate bucket."""

import json

import pytest

from sipbridge.agent import AgentSession, InvalidMessage, Metadata, Transcript, TwilioSession
from sipbridge.agent.events import LimitReached
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits, MessageRate, parse_agent_limits


def transcript(text: str) -> str:
    return json.dumps({"type": "transcript", "role": "agent", "text": text})


def test_defaults_are_the_documented_ones() -> None:
    limits = DEFAULT_LIMITS
    assert (limits.transcripts, limits.transcript_bytes, limits.transcript_text_bytes) == (
        1000,
        1 << 20,
        8192,
    )
    assert (limits.metadata_messages, limits.metadata_bytes, limits.metadata_message_bytes) == (
        100,
        256 * 1024,
        64 * 1024,
    )
    assert (limits.dtmf_pending, limits.dtmf_digits) == (64, 1000)
    assert (limits.message_rate, limits.message_burst) == (500.0, 2000)
    # Real-time audio (50 frames/s) is a tenth of the average rate.
    assert limits.message_rate >= 10 * 50


def test_transcript_count_cap_reports_once_and_counts() -> None:
    session = AgentSession("c", limits=AgentLimits(transcripts=3))
    kept = [session.receive_text(transcript(f"line {i}")) for i in range(3)]
    assert all(isinstance(events[0], Transcript) for events in kept)
    first = session.receive_text(transcript("one too many"))
    assert first == [LimitReached("transcript", "more than 3 lines")]
    for _ in range(100):
        assert session.receive_text(transcript("more")) == []
    assert session.dropped == {"transcript": 101}


def test_transcript_bytes_and_single_text_caps() -> None:
    session = AgentSession("c", limits=AgentLimits(transcript_bytes=20, transcript_text_bytes=10))
    [big] = session.receive_text(transcript("é" * 6))  # 12 bytes of UTF-8
    assert isinstance(big, LimitReached) and "10 bytes" in big.detail
    assert isinstance(session.receive_text(transcript("a" * 10))[0], Transcript)
    assert isinstance(session.receive_text(transcript("b" * 10))[0], Transcript)
    assert session.receive_text(transcript("c")) == []  # 21 bytes in the call: dropped
    assert session.dropped == {"transcript": 2}


def test_metadata_caps() -> None:
    limits = AgentLimits(metadata_messages=2, metadata_bytes=60, metadata_message_bytes=40)
    session = AgentSession("c", limits=limits)

    def metadata(value: str) -> str:
        return json.dumps({"type": "metadata", "data": {"k": value}})

    [too_big] = session.receive_text(metadata("x" * 40))
    assert isinstance(too_big, LimitReached) and too_big.kind == "metadata"
    assert isinstance(session.receive_text(metadata("a" * 20))[0], Metadata)  # 28 bytes
    assert session.receive_text(metadata("b" * 30)) == []  # 66 bytes in all: dropped
    assert isinstance(session.receive_text(metadata("c"))[0], Metadata)
    assert session.receive_text(metadata("d")) == []  # a third message
    assert session.dropped == {"metadata": 3}


def test_dtmf_caps() -> None:
    session = AgentSession("c", limits=AgentLimits(dtmf_pending=4, dtmf_digits=6))
    assert session.admit_dtmf(3, pending=0) is None
    assert session.admit_dtmf(2, pending=3) == [LimitReached("dtmf", "more than 4 digits waiting")]
    assert session.admit_dtmf(1, pending=3) is None
    assert session.admit_dtmf(3, pending=0) == []  # 7 digits in the call: dropped, counted
    assert session.dropped == {"dtmf": 2}


@pytest.mark.parametrize("make", [AgentSession, TwilioSession])
def test_protocol_errors_reported_once_per_kind_and_counted(make: type) -> None:
    session = make("c")
    reported = []
    for _ in range(1000):
        reported += session.receive_text("{not json")
        reported += session.receive_text("[1]")
        reported += session.receive_text("{}")
        reported += session.receive_binary(b"\x01")
    kinds = {event.kind for event in reported if isinstance(event, InvalidMessage)}
    assert len(reported) == 4
    binary = "audio" if make is AgentSession else "binary"
    assert kinds == {"invalid_json", "not_object", "no_type", binary}
    assert sorted(session.protocol_errors.values()) == [1000] * 4


def test_wrong_fields_count_under_the_message_type() -> None:
    session = AgentSession("c")
    bad = json.dumps({"type": "send_dtmf", "digits": "x"})
    [first] = session.receive_text(bad)
    assert isinstance(first, InvalidMessage) and first.kind == "send_dtmf"
    assert session.receive_text(bad) == []
    assert session.protocol_errors == {"send_dtmf": 2}


def test_message_rate_bucket() -> None:
    rate = MessageRate(100.0, 10, now=0.0)
    assert all(rate.allow(0.0) for _ in range(10))
    assert not rate.allow(0.0)
    assert rate.allow(0.01)  # one token back after 10 ms
    assert not rate.allow(0.01)
    # Long idle refills to the burst, not beyond.
    assert sum(rate.allow(100.0) for _ in range(20)) == 10
    # Steady traffic under the rate always passes.
    now = 200.0
    for _ in range(1000):
        now += 0.02
        assert rate.allow(now)
    with pytest.raises(ValueError):
        MessageRate(0, 1, 0.0)


def test_caps_measure_text_with_lone_surrogates_without_raising() -> None:
    session = AgentSession("c")
    # A str that did not come from UTF-8 (the fuzzer feeds such text directly).
    [kept] = session.receive_text('{"type":"transcript","role":"agent","text":"a\udc80"}')
    assert isinstance(kept, Transcript)
    [data] = session.receive_text('{"type":"metadata","data":{"k":"\ud800"}}')
    assert isinstance(data, Metadata)


def test_parse_agent_limits() -> None:
    limits = parse_agent_limits("transcripts=5000, message-rate=1000.5,dtmf_pending=8")
    assert (limits.transcripts, limits.message_rate, limits.dtmf_pending) == (5000, 1000.5, 8)
    assert limits.metadata_bytes == DEFAULT_LIMITS.metadata_bytes
    assert parse_agent_limits("") == DEFAULT_LIMITS
    for bad in ("transcripts", "nope=1", "transcripts=x", "transcripts=0", "message_rate=-1"):
        with pytest.raises(ValueError):
            parse_agent_limits(bad)
