"""Packet loss concealment after ITU-T G.711 Appendix I, for G.711 and G.722.

Appendix I replaces a lost frame by pitch-period waveform substitution:

- the pitch period P of the last 20 ms of good speech is found by normalized
  cross-correlation over 5-15 ms (§I.2.2), here with one numpy matrix product instead of
  the coarse-then-fine search of the reference code;
- the first 10 ms of the erasure repeat the last period, the next 10 ms the last two, and
  from 20 ms on the last three (§I.2.3: cycling through more periods avoids the buzz of a
  single repeated period); each switch is an overlap-add over P/4 (§I.2.4);
- from 10 ms on the synthetic signal fades by 20 % per 10 ms, reaching silence at 60 ms
  (§I.2.5);
- the first good frame after an erasure is overlap-added with the continuation of the
  synthetic signal over 4 ms, plus 4 ms per further 10 ms of erasure, at most 10 ms
  (§I.2.6).

One deviation: Appendix I delays all output by 3.75 ms so it can overlap-add the last
quarter period *before* the erasure. We keep good frames untouched and undelayed (G.711 to
an 8 kHz agent stays bit-exact) and remove the step at the start of the erasure instead by
fading the junction offset out over P/4 samples.

All lengths scale with the sample rate, so the same code serves 8 kHz (G.711) and 16 kHz
(G.722). Work per frame is a handful of numpy operations; the pitch search runs once per
erasure.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import numpy as np
import numpy.typing as npt

from sipbridge.codecs.base import ConcealingDecoder, Decoder

__all__ = ["G711Plc", "PlcDecoder", "with_concealment"]

_F32 = npt.NDArray[np.float32]


class G711Plc:
    """Concealment state for one decoded stream at ``sample_rate`` (8000 or 16000 Hz).

    Feed every decoded frame through :meth:`good` (it returns the frame, modified only
    when it follows an erasure) and call :meth:`conceal` for each gap with the number of
    samples missing.
    """

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate % 8000 or not 8000 <= sample_rate <= 48000:
            raise ValueError(f"unsupported sample rate {sample_rate}")
        k = sample_rate // 8000
        self.sample_rate: Final = sample_rate
        # §I.2: lengths at 8 kHz, multiplied by k.
        self._pitch_min: Final = 40 * k  # 5 ms (200 Hz)
        self._pitch_max: Final = 120 * k  # 15 ms (66.7 Hz)
        self._corr_len: Final = 160 * k  # 20 ms correlation window
        self._history_len: Final = 390 * k  # 48.75 ms: 3 * pitch_max + pitch_max / 4
        self._ms10: Final = 80 * k
        self._ms4: Final = 32 * k
        self._history = np.zeros(self._history_len, dtype=np.float32)
        # Good frames since the last erasure, as decoded (enough to fill the history).
        self._recent: deque[bytes] = deque()
        self._recent_bytes = 0
        self._history_bytes = 2 * self._history_len
        self._erased = 0  # samples concealed in the current erasure
        self._pitch = self._pitch_max
        self._cycle: _F32 = np.zeros(0, dtype=np.float32)  # period buffer in use
        self._periods = 0
        self._offset = 0.0  # junction step removed over the first P/4 samples
        self._scale = 1.0  # level limit of the current erasure (see _level_limit)

    @property
    def in_erasure(self) -> bool:
        return self._erased > 0

    def _find_pitch(self) -> int:
        # §I.2.2: the lag maximizing the normalized cross-correlation between the last
        # 20 ms and the 20 ms one lag earlier. np.correlate gives every lag's dot product
        # in one C loop and a cumulative sum every window's energy.
        h = self._history
        target = h[-self._corr_len :]
        span = h[-(self._corr_len + self._pitch_max) : -self._pitch_min]
        dots = np.correlate(span, target, mode="valid")  # index 0: lag pitch_max
        squares = np.concatenate(([0.0], np.cumsum(span.astype(np.float64) ** 2)))
        energy = squares[self._corr_len :] - squares[: -self._corr_len] + 1e-3
        score = dots * np.abs(dots) / energy
        return self._pitch_max - int(np.argmax(score))

    def _periodic(self, periods: int, start: int, count: int) -> _F32:
        """``count`` samples of the last ``periods`` pitch periods repeated, from erasure
        sample ``start``; phase-aligned so that every ``periods`` continues the same
        waveform at sample 0."""
        p = self._pitch
        length = periods * p
        buf = self._history[-length:]
        index = (np.arange(start, start + count) + (periods - 1) * p) % length
        result: _F32 = buf[index]
        return result

    def _synth(self, start: int, count: int) -> _F32:
        """Erasure samples ``start`` .. ``start + count`` before attenuation."""
        out = np.empty(count, dtype=np.float32)
        p = self._pitch
        overlap = max(p // 4, 1)
        pos = 0
        while pos < count:
            n = start + pos
            periods = min(3, 1 + n // self._ms10)
            seg_end = (periods * self._ms10) if periods < 3 else start + count
            seg = min(count - pos, max(seg_end - n, 1))
            chunk = self._periodic(periods, n, seg)
            into = n - (periods - 1) * self._ms10
            if periods > 1 and into < overlap:
                # §I.2.4: overlap-add from the previous number of periods.
                m = min(overlap - into, seg)
                prev = self._periodic(periods - 1, n, m)
                ramp = (np.arange(into, into + m, dtype=np.float32) + 1) / (overlap + 1)
                chunk[:m] = prev * (1 - ramp) + chunk[:m] * ramp
            out[pos : pos + seg] = chunk
            pos += seg
        if start < overlap:
            # Remove the junction step (our stand-in for the delayed OLA of §I.2.3).
            m = min(overlap - start, count)
            fade = 1 - (np.arange(start, start + m, dtype=np.float32) / overlap)
            out[:m] += self._offset * fade
        return out

    def _level_limit(self) -> float:
        """Scale for the synthetic signal: never louder than the last 5 ms of speech.

        Our addition to Appendix I: when a loss falls just after a word ends, the pitch
        periods repeated from the history can be far louder than the signal was when it
        stopped (a burst where there was near-silence), which sounds worse than silence.
        """
        h = self._history
        recent = h[-(self._ms10 // 2) :].astype(np.float32)
        source = h[-3 * self._pitch :].astype(np.float32)
        recent_rms = float(np.sqrt(np.mean(recent * recent)))
        source_rms = float(np.sqrt(np.mean(source * source)))
        if source_rms <= recent_rms or source_rms == 0.0:
            return 1.0
        return recent_rms / source_rms

    def _gain(self, start: int, count: int) -> _F32:
        # §I.2.5: no attenuation for 10 ms, then -20 % per 10 ms down to 0 at 60 ms.
        n = np.arange(start, start + count, dtype=np.float32)
        g: _F32 = np.clip(1 - (n - self._ms10) * (0.2 / self._ms10), 0.0, 1.0)
        return g

    def _flush_recent(self) -> None:
        if self._recent:
            self._push_history(np.frombuffer(b"".join(self._recent), dtype="<i2"))
            self._recent.clear()
            self._recent_bytes = 0

    def conceal(self, samples: int) -> bytes:
        """PCM16LE standing in for ``samples`` lost samples."""
        if samples <= 0:
            return b""
        if self._erased == 0:
            self._flush_recent()
            self._pitch = self._find_pitch()
            h = self._history
            self._offset = float(h[-1] - h[-1 - self._pitch])
            self._scale = self._level_limit()
        start = self._erased
        out: _F32 = self._synth(start, samples) * self._gain(start, samples) * self._scale
        self._erased += samples
        data: bytes = np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
        return data

    def good(self, pcm: bytes) -> bytes:  # hot path: every decoded frame
        """Record a decoded frame; after an erasure, overlap-add its start with the
        synthetic signal (§I.2.6) and return the smoothed frame.

        Outside an erasure the frame is only kept (bytes, no numpy work): the history is
        built from the kept frames when a loss needs it (:meth:`conceal`)."""
        if not self._erased:
            if pcm:
                recent = self._recent
                recent.append(pcm)
                self._recent_bytes += len(pcm)
                while self._recent_bytes - len(recent[0]) >= self._history_bytes:
                    self._recent_bytes -= len(recent.popleft())
            return pcm
        frame = np.frombuffer(pcm, dtype="<i2")
        n = len(frame)
        if n == 0:
            return pcm
        if self._erased:
            extra = (self._erased - 1) // self._ms10  # further 10 ms blocks erased
            length = min(self._ms4 * (1 + extra), self._ms10, n)
            synth = self._synth(self._erased, length) * self._gain(self._erased, length)
            synth *= self._scale
            ramp = (np.arange(length, dtype=np.float32) + 1) / (length + 1)
            mixed = frame.astype(np.float32)
            mixed[:length] = synth * (1 - ramp) + mixed[:length] * ramp
            frame = np.clip(np.rint(mixed), -32768, 32767).astype("<i2")
            pcm = frame.tobytes()
            self._erased = 0
        self._push_history(frame)
        return pcm

    def _push_history(self, frame: npt.NDArray[np.int16]) -> None:
        h = self._history
        n = len(frame)
        if n >= len(h):
            h[:] = frame[-len(h) :]
        else:
            h[:-n] = h[n:]
            h[-n:] = frame


class PlcDecoder:
    """A :class:`~sipbridge.codecs.base.Decoder` with G.711 Appendix I concealment:
    implements ``ConcealingDecoder`` for codecs without their own (G.711, G.722)."""

    def __init__(self, decoder: Decoder, sample_rate: int) -> None:
        self._decoder = decoder
        self._plc = G711Plc(sample_rate)

    def decode(self, payload: bytes) -> bytes:
        return self._plc.good(self._decoder.decode(payload))

    def conceal(self, samples: int) -> bytes:
        return self._plc.conceal(samples)

    def decode_fec(self, next_payload: bytes, samples: int) -> bytes:
        # G.711 and G.722 carry no redundancy: concealment is all there is.
        return self._plc.conceal(samples)


def with_concealment(decoder: Decoder, sample_rate: int) -> ConcealingDecoder:
    """``decoder`` itself when it conceals loss (Opus), else wrapped in :class:`PlcDecoder`."""
    if isinstance(decoder, ConcealingDecoder):
        return decoder
    return PlcDecoder(decoder, sample_rate)
