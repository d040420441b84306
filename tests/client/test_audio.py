"""The test caller's media on a fake clock: the echo round trip, DTMF, WAV files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from sipbridge.client.audio import (
    CallAudio,
    WavError,
    echo_delay,
    local_rate,
    probe_signal,
    read_wav,
)
from sipbridge.rtp.packet import parse_rtp_header
from sipbridge.sdp.negotiate import Negotiated

SERVER = ("127.0.0.1", 40000)


def negotiated(codec: str = "pcmu", te: int | None = 101) -> Negotiated:
    pt = {"pcmu": 0, "pcma": 8, "g722": 9}[codec]
    return Negotiated(pt, codec, 8000, te, SERVER[0], SERVER[1], "sendrecv", 20)


def run_echo(audio: CallAudio, delay_frames: int, seconds: float) -> list[bytes]:
    """20 ms ticks; every packet we send comes back ``delay_frames`` later (an echo)."""
    audio.start(0.0)
    sent: list[tuple[float, bytes]] = []
    everything: list[bytes] = []
    for n in range(int(seconds / 0.02)):
        now = n * 0.02
        for packet in audio.tick(now):
            sent.append((now + delay_frames * 0.02 + 0.001, packet))
            everything.append(packet)
        while sent and sent[0][0] <= now:
            at, packet = sent.pop(0)
            audio.receive(packet, SERVER, at)
    return everything


def test_echo_round_trip_is_found_on_the_timeline() -> None:
    audio = CallAudio(negotiated(), signal=probe_signal(8000, 3.0), rate=8000)
    run_echo(audio, delay_frames=6, seconds=3.0)
    report = audio.report()
    assert report.echo is not None
    assert 110 <= report.echo.delay_ms <= 150  # 120 ms, within a frame of it
    assert report.echo.correlation > 0.9 and report.echo.bursts >= 2
    assert report.first_audio_ms is not None and 110 <= report.first_audio_ms <= 150
    assert report.packets_sent == report.packets_received + 6 or report.packets_received > 100
    assert report.mos is not None and report.mos > 4.0 and report.loss_percent == 0.0
    assert report.audio_ms >= 1000


def test_no_echo_and_silence_report_nothing() -> None:
    audio = CallAudio(negotiated(), signal=probe_signal(8000, 2.0), rate=8000)
    audio.start(0.0)
    for n in range(100):
        audio.tick(n * 0.02)
    report = audio.report()
    assert report.echo is None and report.first_audio_ms is None and report.audio_ms == 0
    assert report.mos is None and report.packets_received == 0


def test_echo_delay_on_noise_and_copies() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(16000) * 3000).astype("<i2")
    delayed = np.concatenate([np.zeros(400, dtype="<i2"), x])[:16000]
    match = echo_delay(x.tobytes(), delayed.tobytes(), 8000)
    assert match is not None and match.delay_ms == 50.0 and match.correlation > 0.95
    other = (rng.standard_normal(16000) * 3000).astype("<i2")
    assert echo_delay(x.tobytes(), other.tobytes(), 8000) is None
    assert echo_delay(b"", b"", 8000) is None


def test_dtmf_goes_out_as_rfc4733_events() -> None:
    audio = CallAudio(negotiated(), signal=None, rate=8000, dtmf="1#", dtmf_at=0.1)
    audio.start(0.0)
    packets = [p for n in range(40) for p in audio.tick(n * 0.02)]
    types = [parse_rtp_header(p)[0] for p in packets]
    assert 101 in types and types[0] == 0
    assert audio.dtmf_sent == "1#" and not audio.session.sending_dtmf
    assert audio.report().dtmf_sent == "1#"


def test_dtmf_refused_without_telephone_event() -> None:
    audio = CallAudio(negotiated(te=None), signal=None, rate=8000, dtmf="5", dtmf_at=0.0)
    audio.start(0.0)
    audio.tick(0.0)
    assert audio.dtmf_refused and audio.dtmf_sent == ""


def test_recording_holds_both_directions(tmp_path: Path) -> None:
    audio = CallAudio(negotiated(), signal=probe_signal(8000, 1.0), rate=8000)
    run_echo(audio, delay_frames=2, seconds=1.0)
    path = tmp_path / "rec.wav"
    path.write_bytes(audio.recording())
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert np.abs(frames[:800, 0]).max() > 1000  # our chirp, left, from the start
    assert np.abs(frames[:300, 1]).max() < 100  # the echo, right, 40 ms later
    assert np.abs(frames[300:800, 1]).max() > 1000


def write(path: Path, rate: int, channels: int, samples: np.ndarray, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


def test_read_wav_mixes_down_and_resamples(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    path = tmp_path / "stereo16k.wav"
    write(path, 16000, 2, np.repeat(tone, 2))
    pcm = read_wav(path, 8000)
    assert len(pcm) == 2 * 8000
    out = np.frombuffer(pcm, dtype="<i2")
    assert 5000 < np.abs(out[1000:]).max() < 8500
    assert read_wav(path, 16000) == tone.tobytes()[: len(read_wav(path, 16000))]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"RIFF....WAVEjunk", "not a PCM WAV"), (None, "no such file")],
)
def test_read_wav_refuses_what_it_cannot_read(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WavError, match=message):
        read_wav(path, 8000)


def test_read_wav_refuses_odd_rates_and_widths(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    write(path, 11025, 1, np.zeros(100, dtype="<i2"))
    with pytest.raises(WavError, match="11025 Hz"):
        read_wav(path, 8000)
    write(path, 8000, 1, np.zeros(100, dtype="<i4"), width=4)
    with pytest.raises(WavError, match="32-bit"):
        read_wav(path, 8000)


def test_local_rate_and_probe() -> None:
    assert local_rate("pcmu") == 8000 and local_rate("g722") == 16000
    signal = np.frombuffer(probe_signal(8000, 2.0), dtype="<i2")
    assert len(signal) == 16000
    assert 9000 < np.abs(signal).max() <= 10400  # -10 dBFS
    assert np.abs(signal[4000:8000]).max() == 0  # silence between the chirps
