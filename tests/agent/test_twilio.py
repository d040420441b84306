"""Twilio Media Streams mode: Twilio's message shapes both ways, against exact text."""

import base64
import json
import re
from typing import Any

import pytest

from sipbridge.agent import (
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    Metadata,
    SendDtmf,
    Transcript,
    TransferRequested,
    TwilioSession,
    UnknownMessage,
)
from sipbridge.agent.twilio import derive_sid
from sipbridge.codecs.g711 import ulaw_decode, ulaw_encode

AC = "AC" + "a" * 32
MZ = "MZ" + "b" * 32
CA = "CA" + "c" * 32
START: dict[str, Any] = dict(
    from_="+12025550100",
    to="+12025550199",
    agent="support",
    sip_call_id="abc@host",
    sip_headers={"X-Customer-Id": "4711"},
)


def session(**kwargs: Any) -> TwilioSession:
    return TwilioSession("c-1", account_sid=AC, stream_sid=MZ, call_sid=CA, **kwargs)


def started(**kwargs: Any) -> TwilioSession:
    s = session(**kwargs)
    s.start_messages(**START)
    return s


def media(payload: bytes) -> str:
    body = {"payload": base64.b64encode(payload).decode()}
    return json.dumps({"event": "media", "streamSid": MZ, "media": body})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": MZ, "mark": {"name": name}})


# Every μ-law code but 0x7F, which decodes to the same zero as 0xFF (negative zero).
ULAW = bytes(c for c in range(256) if c != 0x7F)


# -- server -> agent --------------------------------------------------------------------


def test_connected_and_start_exact_text() -> None:
    s = session(custom_parameters={"tenant": "acme"})
    assert s.start_messages(**START) == [
        '{"event":"connected","protocol":"Call","version":"1.0.0"}',
        '{"event":"start","sequenceNumber":"1","start":{"accountSid":"' + AC + '",'
        '"streamSid":"' + MZ + '","callSid":"' + CA + '","tracks":["inbound"],'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
        '"customParameters":{"tenant":"acme","from":"+12025550100",'
        '"from_number":"+12025550100","to":"+12025550199","to_number":"+12025550199",'
        '"X-Customer-Id":"4711"}},"streamSid":"' + MZ + '"}',
    ]


def test_start_without_caller_id() -> None:
    s = session()
    start = json.loads(
        s.start_messages(from_=None, to=None, agent="a", sip_call_id="x", sip_headers={})[1]
    )
    assert start["start"]["customParameters"] == {}


def test_outbound_call_says_so_in_custom_parameters() -> None:
    start = json.loads(session().start_messages(**START, direction="outbound")[1])
    assert start["start"]["customParameters"]["direction"] == "outbound"
    inbound = json.loads(session().start_messages(**START)[1])
    assert "direction" not in inbound["start"]["customParameters"]


def test_call_values_win_over_agent_parameters() -> None:
    s = session(custom_parameters={"from": "fixed", "X-Customer-Id": "0", "keep": "1"})
    start = json.loads(s.start_messages(**START)[1])
    assert start["start"]["customParameters"] == {
        "from": "+12025550100",
        "from_number": "+12025550100",
        "X-Customer-Id": "4711",
        "keep": "1",
        "to": "+12025550199",
        "to_number": "+12025550199",
    }


def test_media_exact_text() -> None:
    s = started()
    pcm = ulaw_decode(ULAW[:160])
    payload = base64.b64encode(ULAW[:160]).decode()
    assert s.caller_audio(pcm) == (
        '{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"' + payload + '"},"streamSid":"' + MZ + '"}'
    )


def test_sequence_chunk_and_timestamp_advance_as_twilio_does() -> None:
    s = started()
    frame = bytes(320)
    messages = [json.loads(s.caller_audio(frame)) for _ in range(3)]
    messages.append(json.loads(s.caller_dtmf("7", 100)))
    messages.append(json.loads(s.caller_audio(frame)))
    messages.append(json.loads(s.stop_message("caller_hangup")))
    assert [m["sequenceNumber"] for m in messages] == ["2", "3", "4", "5", "6", "7"]
    chunks = [m["media"] for m in messages if m["event"] == "media"]
    assert [c["chunk"] for c in chunks] == ["1", "2", "3", "4"]
    assert [c["timestamp"] for c in chunks] == ["0", "20", "40", "60"]
    assert all(c["track"] == "inbound" for c in chunks)
    assert all(m["streamSid"] == MZ for m in messages)


def test_timestamp_follows_the_audio_sent() -> None:
    s = started()
    s.caller_audio(bytes(160))  # 10 ms
    s.caller_audio(bytes(480))  # 30 ms
    assert json.loads(s.caller_audio(bytes(320)))["media"]["timestamp"] == "40"


def test_caller_audio_round_trips_through_mulaw() -> None:
    s = started()
    pcm = ulaw_decode(ULAW[:160])
    payload = json.loads(s.caller_audio(pcm))["media"]["payload"]
    assert base64.b64decode(payload) == ULAW[:160]


def test_dtmf_exact_text() -> None:
    assert started().caller_dtmf("5", 250) == (
        '{"event":"dtmf","streamSid":"' + MZ + '","sequenceNumber":"2",'
        '"dtmf":{"track":"inbound_track","digit":"5"}}'
    )


def test_stop_exact_text() -> None:
    assert started().stop_message("caller_hangup") == (
        '{"event":"stop","sequenceNumber":"2","streamSid":"' + MZ + '",'
        '"stop":{"accountSid":"' + AC + '","callSid":"' + CA + '"}}'
    )


def test_mark_echo_exact_text_numbered_when_sent() -> None:
    s = started()
    s.caller_audio(bytes(320))  # "2"
    assert s.receive_text(mark("greeting")) == []
    s.caller_audio(bytes(320))  # "3": numbered now, before the echo is drained
    assert s.data_to_send() == [
        '{"event":"mark","sequenceNumber":"4","streamSid":"' + MZ + '","mark":{"name":"greeting"}}'
    ]


def test_transfer_result_exact_text() -> None:
    s = started()
    s.transfer_result("accepted", 202)
    assert s.data_to_send() == [
        '{"event":"transfer_result","sequenceNumber":"2","streamSid":"' + MZ + '",'
        '"transfer_result":{"status":"accepted","sip_code":202}}'
    ]
    s.transfer_result("failed", None, reason="warm_unsupported")  # in the object, as sip_code
    assert s.data_to_send() == [
        '{"event":"transfer_result","sequenceNumber":"3","streamSid":"' + MZ + '",'
        '"transfer_result":{"status":"failed","sip_code":null,"reason":"warm_unsupported"}}'
    ]


def test_resumed_start_numbers_from_one_and_keeps_the_stream() -> None:
    s = started()
    for _ in range(5):
        s.caller_audio(bytes(320))
    s.receive_text(media(bytes(160)))
    s.receive_text(mark("old"))
    connected, start = s.start_messages(**START, resumed=True)
    assert json.loads(connected)["event"] == "connected"
    message = json.loads(start)
    assert message["sequenceNumber"] == "1"
    assert message["streamSid"] == MZ
    assert message["start"]["customParameters"]["resumed"] == "true"
    media_message = json.loads(s.caller_audio(bytes(320)))
    assert media_message["sequenceNumber"] == "2"
    assert media_message["media"]["chunk"] == "6"
    assert media_message["media"]["timestamp"] == "100"
    s.next_frame()
    s.next_frame()
    assert s.data_to_send() == []  # "old" belonged to the lost connection


def test_derived_sids_are_stable_and_twilio_shaped() -> None:
    a, b = TwilioSession("call-1"), TwilioSession("call-1")
    assert (a.account_sid, a.stream_sid, a.call_sid) == (b.account_sid, b.stream_sid, b.call_sid)
    assert re.fullmatch(r"AC[0-9a-f]{32}", a.account_sid)
    assert re.fullmatch(r"MZ[0-9a-f]{32}", a.stream_sid)
    assert re.fullmatch(r"CA[0-9a-f]{32}", a.call_sid)
    assert TwilioSession("call-2").call_sid != a.call_sid
    assert derive_sid("CA", "call-1") == a.call_sid


def test_given_sids_are_used_and_quoted_safely() -> None:
    s = TwilioSession("c", stream_sid='MZ"odd\\')
    s.start_messages(**START)
    assert json.loads(s.caller_audio(bytes(320)))["streamSid"] == 'MZ"odd\\'


# -- agent -> server --------------------------------------------------------------------


def test_media_of_any_size_is_reframed_into_20_ms() -> None:
    s = started()
    stream = (ULAW * 4)[:1000]
    for size in (1, 159, 161, 7, 400, 272):
        assert s.receive_text(media(stream[:size])) == []
        stream = stream[size:]
    assert stream == b""
    assert s.pending_audio_ms == 125
    frames = [s.next_frame() for _ in range(8)]
    assert all(len(f) == 320 for f in frames)
    assert ulaw_encode(b"".join(frames[:6])) == (ULAW * 4)[:960]
    assert frames[6] == bytes(320)  # the 40-sample tail waits one period
    assert ulaw_encode(frames[7]) == (ULAW * 4)[960:1000] + ulaw_encode(bytes(240))


def test_pipecat_style_media_and_clear() -> None:
    # Shapes TwilioFrameSerializer sends: media with only a payload, clear with a SID.
    s = started()
    payload = base64.b64encode(b"\xff" * 320).decode("utf-8")
    text = json.dumps({"event": "media", "streamSid": MZ, "media": {"payload": payload}})
    assert s.receive_text(text) == []
    assert s.receive_text(json.dumps({"event": "clear", "streamSid": MZ})) == [AudioCleared(640)]
    assert s.next_frame() == bytes(320)


def test_marks_and_clear_in_twilio_shape() -> None:
    s = started()
    s.receive_text(media(ULAW[:160]))
    s.receive_text(mark("a"))
    s.receive_text(media(ULAW[:160]))
    s.receive_text(mark("b"))
    s.next_frame()
    [echo] = s.data_to_send()
    assert json.loads(echo)["mark"] == {"name": "a"}
    assert s.receive_text('{"event":"clear"}') == [AudioCleared(320)]
    [echo] = s.data_to_send()  # a cleared mark is answered the same way
    assert json.loads(echo) == {
        "event": "mark",
        "sequenceNumber": "3",
        "streamSid": MZ,
        "mark": {"name": "b"},
    }


@pytest.mark.parametrize(
    ("message", "event"),
    [
        ({"event": "hangup"}, HangupRequested(True)),
        ({"event": "hangup", "hangup": {"after_playout": False}}, HangupRequested(False)),
        (
            {"event": "transfer", "transfer": {"target": "tel:+15551234567"}},
            TransferRequested("tel:+15551234567", {}),
        ),
        (
            {
                "event": "transfer",
                "streamSid": MZ,
                "transfer": {"target": "sip:q@pbx.example", "headers": {"X-Q": "sales"}},
            },
            TransferRequested("sip:q@pbx.example", {"X-Q": "sales"}),
        ),
        (
            {"event": "send_dtmf", "send_dtmf": {"digits": "1#", "duration_ms": 80}},
            SendDtmf("1#", 80),
        ),
        (
            {"event": "transcript", "transcript": {"role": "caller", "text": "hi"}},
            Transcript("caller", "hi", True),
        ),
        ({"event": "metadata", "metadata": {"data": {"k": 1}}}, Metadata({"k": 1})),
    ],
)
def test_extension_events(message: dict[str, Any], event: object) -> None:
    assert started().receive_text(json.dumps(message)) == [event]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"event": "media"}, '"media" object'),
        ({"event": "media", "media": {}}, "payload"),
        ({"event": "media", "media": {"payload": 5}}, "payload"),
        ({"event": "media", "media": {"payload": "!!!!"}}, "not base64"),
        ({"event": "media", "media": {"payload": "AAA"}}, "not base64"),
        ({"event": "mark"}, '"mark" object'),
        ({"event": "mark", "mark": {}}, "name"),
        ({"event": "transfer"}, '"transfer" object'),
        ({"event": "transfer", "transfer": {"target": "mailto:x@y"}}, "tel:, sip: or sips:"),
        ({"event": "hangup", "hangup": []}, '"hangup" object'),
        ({"event": "send_dtmf", "send_dtmf": {"digits": "x"}}, "0-9"),
        ({"type": "hangup"}, 'no string "event"'),
    ],
)
def test_invalid_messages(message: dict[str, Any], reason: str) -> None:
    [event] = started().receive_text(json.dumps(message))
    assert isinstance(event, InvalidMessage)
    assert reason in event.reason


def test_empty_payload_is_nothing() -> None:
    s = started()
    assert s.receive_text(media(b"")) == []
    assert not s.has_audio


def test_binary_frames_are_invalid() -> None:
    s = started()
    [event] = s.receive_binary(bytes(320))
    assert isinstance(event, InvalidMessage)
    assert not s.has_audio


def test_unknown_events_once_each() -> None:
    s = started()
    assert s.receive_text('{"event":"connected"}') == [UnknownMessage("connected")]
    assert s.receive_text('{"event":"connected"}') == []
    assert s.receive_text('{"event":"dtmf","dtmf":{"digit":"1"}}') == [UnknownMessage("dtmf")]


def test_cap_reports_dropped_audio() -> None:
    s = started(cap_seconds=0.1)  # 800 samples
    assert s.receive_text(media(bytes(700))) == []
    assert s.receive_text(media(bytes(300))) == [AudioDropped(400)]
    assert s.pending_audio_ms == 100


def test_fixed_format() -> None:
    s = session()
    assert (s.sample_rate, s.frame_ms, s.frame_bytes, s.protocol) == (8000, 20, 320, "twilio")
