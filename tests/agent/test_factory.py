import pytest

from sipbridge.agent import PROTOCOLS, AgentSession, TwilioSession, make_session


def test_native() -> None:
    session = make_session("native", "c-1")
    assert isinstance(session, AgentSession)
    assert (session.protocol, session.sample_rate, session.frame_bytes) == ("native", 8000, 320)


def test_native_wideband_and_cap() -> None:
    session = make_session("native", "c-1", sample_rate=16000, cap_seconds=1.0)
    assert (session.sample_rate, session.frame_bytes) == (16000, 640)
    session.receive_binary(bytes(64000))
    assert session.pending_audio_ms == 1000


def test_twilio_is_always_8000_and_takes_its_keywords() -> None:
    session = make_session(
        "twilio",
        "c-1",
        sample_rate=16000,
        stream_sid="MZ" + "0" * 32,
        custom_parameters={"tenant": "acme"},
    )
    assert isinstance(session, TwilioSession)
    assert (session.protocol, session.sample_rate, session.frame_bytes) == ("twilio", 8000, 320)
    assert session.stream_sid == "MZ" + "0" * 32
    assert session.custom_parameters == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("protocol", "kwargs"),
    [
        ("websocket", {}),
        ("", {}),
        ("native", {"sample_rate": 48000}),
        ("native", {"stream_sid": "MZ1"}),
        ("native", {"custom_parameters": {}}),
    ],
)
def test_refused(protocol: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_session(protocol, "c", **kwargs)  # type: ignore[arg-type]


def test_protocol_names() -> None:
    assert PROTOCOLS == ("native", "twilio")
    for name in PROTOCOLS:
        assert make_session(name, "c").protocol == name
