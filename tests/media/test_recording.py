"""The stereo aligner and the WAV header, with a fake clock: where each side's chunks land
on the call's timeline."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from sipbridge.media.recording import (
    WAV_HEADER_BYTES,
    WAV_MAX_DATA_BYTES,
    Side,
    StereoAligner,
    wav_header,
)

RATE = 8000
FRAME = 160  # 20 ms


def pcm(value: int, samples: int = FRAME) -> bytes:
    return np.full(samples, value, "<i2").tobytes()


def channels(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    stereo = np.frombuffer(data, "<i2")
    return stereo[0::2], stereo[1::2]


def test_wav_header_is_read_by_the_wave_module() -> None:
    data = np.arange(400, dtype="<i2").tobytes()
    header = wav_header(16000, 2, len(data))
    assert len(header) == WAV_HEADER_BYTES
    with wave.open(io.BytesIO(header + data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 16000)
        assert wav.getnframes() == 200  # 400 samples, two per frame
        assert wav.readframes(200) == data


@pytest.mark.parametrize(("rate", "channels_", "size"), [(0, 2, 0), (8000, 0, 0), (8000, 2, -1)])
def test_wav_header_refuses_impossible_values(rate: int, channels_: int, size: int) -> None:
    with pytest.raises(ValueError):
        wav_header(rate, channels_, size)
    with pytest.raises(ValueError):
        wav_header(8000, 2, WAV_MAX_DATA_BYTES + 1)


def test_both_sides_in_step_make_two_aligned_channels() -> None:
    """Caller packets (stamped at arrival: they end then) and agent frames (stamped when
    sent: they start then), 20 ms apart: left is the caller, right the agent, in step."""
    aligner = StereoAligner(RATE, start=100.0)
    for n in range(50):
        aligner.add(Side.CALLER, 100.0 + (n + 1) * 0.02, pcm(1000))
        aligner.add(Side.AGENT, 100.0 + n * 0.02, pcm(-2000))
    data = aligner.take(101.0) + aligner.finish()
    left, right = channels(data)
    assert len(left) == len(right) == 50 * FRAME
    assert set(left.tolist()) == {1000} and set(right.tolist()) == {-2000}
    assert aligner.samples_out == 50 * FRAME and aligner.padded_samples == 0


def test_a_side_that_sends_nothing_is_silence_at_its_time() -> None:
    """The agent speaks from 0.5 s to 0.7 s only: its channel is silent before, its audio
    lands at 0.5 s, and the call's length is kept by the caller's channel."""
    aligner = StereoAligner(RATE, start=0.0)
    for n in range(50):
        aligner.add(Side.CALLER, (n + 1) * 0.02, pcm(100))
    for n in range(10):
        aligner.add(Side.AGENT, 0.5 + n * 0.02, pcm(3000))
    left, right = channels(aligner.take(1.0) + aligner.finish())
    assert len(left) == RATE  # one second
    speaking = np.flatnonzero(right)
    assert speaking[0] == 4000 and speaking[-1] == 5599  # 0.5 s to 0.7 s
    assert set(left.tolist()) == {100}


def test_a_gap_in_the_callers_stream_is_padded_and_the_rest_stays_in_place() -> None:
    aligner = StereoAligner(RATE, start=0.0)
    aligner.add(Side.CALLER, 0.02, pcm(1))
    aligner.add(Side.CALLER, 0.52, pcm(2))  # nothing for half a second (hold, no RTP)
    left, _right = channels(aligner.finish())
    assert np.flatnonzero(left == 2)[0] == 4000 and len(left) == 4160
    assert aligner.padded_samples >= 4000 - FRAME


def test_small_jitter_is_not_padded() -> None:
    """A packet 40 ms late (within the tolerance) follows the previous one directly."""
    aligner = StereoAligner(RATE, start=0.0)
    aligner.add(Side.CALLER, 0.02, pcm(1))
    aligner.add(Side.CALLER, 0.08, pcm(2))
    left, _ = channels(aligner.finish())
    assert left.tolist() == [1] * FRAME + [2] * FRAME


def test_a_burst_is_kept_and_a_side_running_ahead_is_trimmed() -> None:
    """Five packets arriving at once (a burst after jitter) are all kept; a side that
    delivers far more audio than time passes (a fast clock) loses the excess beyond the
    lead, so it cannot drift away from the other."""
    aligner = StereoAligner(RATE, start=0.0)
    for _ in range(5):
        aligner.add(Side.CALLER, 0.1, pcm(7))
    assert aligner.trimmed_samples == 0
    for _ in range(50):  # a whole second of audio stamped at the same instant
        aligner.add(Side.CALLER, 0.12, pcm(8))
    left, _ = channels(aligner.finish())
    lead = round(0.25 * RATE)
    assert len(left) <= round(0.12 * RATE) + lead + FRAME
    assert aligner.trimmed_samples > 0
    assert np.count_nonzero(left) + aligner.trimmed_samples == 55 * FRAME


def test_take_emits_up_to_the_hold_and_keeps_the_rest() -> None:
    aligner = StereoAligner(RATE, start=0.0, hold=0.2)
    for n in range(25):  # 0.5 s of caller audio
        aligner.add(Side.CALLER, (n + 1) * 0.02, pcm(5))
    first = aligner.take(0.5)
    assert len(first) == 2 * 2 * round(0.3 * RATE)  # up to 0.3 s, both channels
    assert aligner.take(0.5) == b""  # nothing new is due
    rest = aligner.finish()
    assert len(first + rest) == 2 * 2 * 25 * FRAME
    left, right = channels(first + rest)
    assert set(left.tolist()) == {5} and not right.any()


def test_a_chunk_behind_an_emitted_silence_is_not_trimmed() -> None:
    """The agent stays silent past the hold (take() padded its channel), then speaks:
    its audio lands at its time, none of it lost."""
    aligner = StereoAligner(RATE, start=0.0)
    out = b""
    for n in range(50):
        aligner.add(Side.CALLER, (n + 1) * 0.02, pcm(1))
        out += aligner.take((n + 1) * 0.02)
    aligner.add(Side.AGENT, 0.9, pcm(9, 800))
    out += aligner.finish()
    _left, right = channels(out)
    assert np.count_nonzero(right == 9) == 800 and aligner.trimmed_samples == 0
    assert np.flatnonzero(right)[0] == round(0.9 * RATE)


def test_odd_bytes_and_empty_chunks_are_ignored() -> None:
    aligner = StereoAligner(RATE, start=0.0)
    aligner.add(Side.AGENT, 0.0, b"")
    aligner.add(Side.AGENT, 0.0, pcm(4, 3) + b"\x01")
    left, right = channels(aligner.finish())
    assert right.tolist() == [4, 4, 4] and left.tolist() == [0, 0, 0]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        StereoAligner(0, start=0.0)
    with pytest.raises(ValueError):
        StereoAligner(RATE, start=0.0, hold=0.3, max_lead=0.25)


def test_finish_pads_to_the_end_of_the_call() -> None:
    """Audio that stopped before the call ended (dropped, or both sides quiet): the
    file still lasts until the end."""
    aligner = StereoAligner(RATE, start=10.0)
    aligner.add(Side.CALLER, 10.02, pcm(3))
    left, right = channels(aligner.finish(end=12.0))
    assert len(left) == 2 * RATE and left[:FRAME].tolist() == [3] * FRAME
    assert not left[FRAME:].any() and not right.any()
    assert aligner.samples_out == 2 * RATE
