"""TurnTimer: the agent's response time per turn, from energy-detected caller speech."""

from __future__ import annotations

import numpy as np
import pytest

from sipbridge.media.turns import TurnTimer

RATE = 8000


def chunk(dbfs: float, seed: int = 0) -> bytes:
    """20 ms of noise-like signal at ``dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 1, RATE // 50)
    samples *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(samples**2))
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def feed(timer: TurnTimer, start: float, seconds: float, dbfs: float) -> float:
    """Steady noise: chunks every 20 ms from ``start``; returns the time after the last."""
    now = start
    for k in range(round(seconds * 50)):
        timer.caller_audio(chunk(dbfs, k), now)
        now += 0.02
    return now


def speak(timer: TurnTimer, start: float, seconds: float, dbfs: float) -> float:
    """Speech-like: the level rises and falls by 8 dB four times a second (syllables)."""
    now = start
    for k in range(round(seconds * 50)):
        level = dbfs + 8 * np.sin(2 * np.pi * 4 * k / 50)
        timer.caller_audio(chunk(level, k), now)
        now += 0.02
    return now


def test_response_time_from_the_end_of_speech_to_the_agent() -> None:
    timer = TurnTimer()
    t = feed(timer, 0.0, 1.0, -60)  # quiet line
    t = speak(timer, t, 1.0, -20)  # the caller speaks
    last_speech = t - 0.02 * 3  # the last syllable's peak
    t = feed(timer, t, 0.6, -60)  # and stops
    assert timer.agent_started(t) == pytest.approx(t - last_speech, abs=0.041)
    assert timer.count == 1


def test_one_answer_per_turn() -> None:
    timer = TurnTimer()
    t = speak(timer, 0.0, 0.5, -20)  # speech from the first packet on
    t = feed(timer, t, 0.3, -60)
    assert timer.agent_started(t) is not None
    t = feed(timer, t, 0.5, -60)
    assert timer.agent_started(t) is None  # the agent's second utterance answers nothing
    assert timer.count == 1


def test_noise_and_clicks_are_not_a_turn() -> None:
    timer = TurnTimer()
    t = feed(timer, 0.0, 2.0, -50)  # below the floor
    t = feed(timer, t, 0.04, -10)  # a click: two chunks only
    t = feed(timer, t, 0.5, -50)
    assert timer.agent_started(t) is None
    assert timer.count == 0


def test_speech_must_stand_out_from_loud_background_noise() -> None:
    timer = TurnTimer()
    t = feed(timer, 0.0, 3.0, -30)  # a noisy line: the noise level follows it
    t = feed(timer, t, 0.5, -27)  # 3 dB above the noise: not speech
    assert timer.agent_started(t) is None
    t = speak(timer, t, 0.5, -12)  # 18 dB above: speech
    t = feed(timer, t, 0.4, -30)
    assert timer.agent_started(t) == pytest.approx(0.46, abs=0.041)


def test_the_agent_talking_over_the_caller_is_no_answer() -> None:
    timer = TurnTimer()
    t = feed(timer, 0.0, 0.2, -60)
    t = feed(timer, t, 1.0, -20)
    assert timer.agent_started(t) is None  # last speech 20 ms ago: an overlap
    assert timer.count == 0


def test_median_and_maximum() -> None:
    timer = TurnTimer()
    t = 0.0
    t = feed(timer, t, 0.2, -60)
    for wait in (0.3, 0.9, 0.5, 0.7):
        t = feed(timer, t, 0.4, -20)
        timer.agent_started(t - 0.02 + wait)
        t = feed(timer, t + wait, 0.2, -60)
    assert timer.count == 4
    assert timer.p50_ms() == pytest.approx(600, abs=0.1)
    assert timer.max_ms() == pytest.approx(900, abs=0.1)
    assert TurnTimer().p50_ms() is None and TurnTimer().max_ms() is None


def test_empty_chunks_are_ignored() -> None:
    timer = TurnTimer()
    timer.caller_audio(b"", 0.0)
    assert timer.agent_started(1.0) is None
