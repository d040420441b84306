"""The agent's response time per turn, measured at the bridge (sans-I/O).

A turn is the caller speaking and the agent answering. The response time is from the
end of the caller's speech (the arrival of the last caller packet with speech in it) to
the agent's first audio after it (the first packet of the agent's next talkspurt). It is
the delay a caller feels, measured where both streams meet, whatever the agent's own
pipeline claims.

Speech is found by a simple energy detector on the decoded caller audio, one decision
per chunk (20 ms): a chunk is speech when its RMS level is above both an absolute floor
(:data:`SPEECH_FLOOR_DBFS`) and the background noise level plus
:data:`SPEECH_ABOVE_NOISE_DB`. The noise level is the 10th percentile of the chunk levels
of the last 3 s (speech has pauses; a steady noise is at that level all the time),
recomputed every half second (every 100 ms during the first second, and nothing counts
as speech before the first 100 ms of levels). The caller
is taken to have spoken once :data:`ONSET_CHUNKS` speech chunks came in a row (a click
or a short noise is not a turn). A talkspurt of the agent that starts while the caller is
still speaking (the last speech chunk less than :data:`OVERLAP_SECONDS` ago) is an
overlap, not an answer, and gives no figure.

What the caller must do: ``caller_audio(pcm, now)`` for each chunk of decoded caller
PCM16 at ``sample_rate`` (``now`` its arrival time), and ``agent_started(now)`` when the
agent's audio starts after silence; it returns the response time in seconds, or None.
:attr:`samples` keeps every figure of the call.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import numpy as np

__all__ = ["ONSET_CHUNKS", "SPEECH_ABOVE_NOISE_DB", "SPEECH_FLOOR_DBFS", "TurnTimer"]

SPEECH_FLOOR_DBFS: Final = -45.0
SPEECH_ABOVE_NOISE_DB: Final = 10.0
ONSET_CHUNKS: Final = 3
OVERLAP_SECONDS: Final = 0.06
_NOISE_WINDOW: Final = 150  # chunks (3 s) the noise level is taken from
_NOISE_EVERY: Final = 25  # chunks between two noise level updates
_NOISE_EVERY_AT_FIRST: Final = 5  # the same during the first second, and the first wait
_FULL_SCALE_DB: Final = 20 * math.log10(32768.0)


class TurnTimer:
    """See the module docstring."""

    def __init__(self) -> None:
        # Levels are kept as mean squares (no logarithm per chunk): the floor and the
        # margin above the noise are turned into factors once.
        self._floor = 10 ** ((SPEECH_FLOOR_DBFS + _FULL_SCALE_DB) / 10)
        self._above_noise = 10 ** (SPEECH_ABOVE_NOISE_DB / 10)
        self._threshold = self._floor  # mean square a chunk must exceed to be speech
        self._levels: deque[float] = deque(maxlen=_NOISE_WINDOW)
        self._until_update = _NOISE_EVERY_AT_FIRST
        self._calibrated = False
        self._run = 0  # speech chunks in a row
        self._last_speech: float | None = None  # arrival of the last speech chunk
        self._spoke = False  # the caller spoke (onset) since the agent last started
        self.samples: list[float] = []

    def caller_audio(self, pcm: bytes, now: float) -> None:  # hot path: once per chunk
        samples = np.frombuffer(pcm, dtype="<i2")
        if not samples.size:
            return
        level = float(samples @ samples.astype(np.float32)) / samples.size
        self._levels.append(level)
        self._until_update -= 1
        if not self._until_update:
            self._calibrated = True
            young = len(self._levels) < 50
            self._until_update = _NOISE_EVERY_AT_FIRST if young else _NOISE_EVERY
            ordered = sorted(self._levels)
            noise = ordered[len(ordered) // 10]
            self._threshold = max(self._floor, noise * self._above_noise)
        if self._calibrated and level > self._threshold:
            self._run += 1
            if self._run >= ONSET_CHUNKS:
                self._spoke = True
            if self._spoke:
                self._last_speech = now
        else:
            self._run = 0

    def agent_started(self, now: float) -> float | None:
        """The agent's audio starts (after silence) at ``now``; the response time if this
        answers the caller's speech."""
        if not self._spoke or self._last_speech is None:
            return None
        self._spoke = False
        response = now - self._last_speech
        if response < OVERLAP_SECONDS:
            return None  # the caller was still talking: an overlap, not an answer
        self.samples.append(response)
        return response

    @property
    def count(self) -> int:
        return len(self.samples)

    def p50_ms(self) -> float | None:
        """The median response time in ms (None without any turn)."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        middle = len(ordered) // 2
        value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        return round(value * 1000, 1)

    def max_ms(self) -> float | None:
        return round(max(self.samples) * 1000, 1) if self.samples else None
