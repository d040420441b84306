"""Streaming PCM16 resampling between the codec's rate and the agent's rate.

One :class:`Resampler` per direction per call, because the filter keeps state between
frames. When the rates match it is an identity that returns its input object unchanged,
so G.711 through an 8 kHz agent stays bit-exact and costs nothing.

The converter is a polyphase FIR (a Kaiser-windowed sinc at the common rate
``in_rate * L``, evaluated only where outputs fall), vectorised with numpy: every call
returns exactly ``len(input) * out_rate / in_rate`` samples, with a constant delay of
half the filter (about 3 ms between 8 and 16 kHz) and no block-wise bursts. libsoxr's
streaming API was the first choice, but its fixed-rate streams release output in
blocks of hundreds of milliseconds, and its low-latency variable-rate mode needs
soxr ≥ 1.1, which cannot be installed beside pipecat-ai (it pins soxr ~= 1.0).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Resampler"]

# Taps per output phase: 48 gives about 80 dB of stopband with the Kaiser window below
# and a transition band of about 8 % of the lower Nyquist frequency.
_TAPS_PER_PHASE: Final = 48
_KAISER_BETA: Final = 8.0
# Passband edge as a fraction of the lower of the two Nyquist frequencies: telephone
# speech (up to 3.4 kHz at 8 kHz) passes untouched, aliasing stays below the stopband.
_CUTOFF: Final = 0.92


def _design(up: int, down: int) -> npt.NDArray[np.float64]:
    """Polyphase matrix ``[up, taps]`` of the anti-aliasing / anti-imaging low-pass."""
    length = _TAPS_PER_PHASE * max(up, down)
    length += (-length) % up  # a whole number of taps per phase
    # The cutoff at the common rate, in cycles per sample.
    cutoff = _CUTOFF * 0.5 / max(up, down)
    n = np.arange(length) - (length - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, _KAISER_BETA)
    taps *= up / taps.sum()  # unity gain at DC after zero-stuffing by ``up``
    # Phase p uses taps p, p + up, p + 2 up, ...; reversed so a window of the newest
    # inputs (oldest first) is multiplied directly.
    phases: npt.NDArray[np.float64] = taps.reshape(-1, up).T[:, ::-1].copy()
    return phases


class Resampler:
    """PCM16LE mono at ``in_rate`` → PCM16LE mono at ``out_rate``, chunk by chunk.

    Call :meth:`process` with each frame in order; the output of a call always holds
    ``in_samples * out_rate / in_rate`` samples (fractions carried to the next call).
    :meth:`reset` forgets the history, e.g. after a codec change in a re-INVITE.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate: Final = in_rate
        self.out_rate: Final = out_rate
        self.identity: Final = in_rate == out_rate
        ratio = Fraction(out_rate, in_rate)
        self._up = ratio.numerator
        self._down = ratio.denominator
        self._phases = _design(self._up, self._down) if not self.identity else np.zeros((1, 1))
        self._taps = self._phases.shape[1]
        # np.convolve flips its kernel: hand it each phase reversed.
        self._kernels = [np.ascontiguousarray(row[::-1]) for row in self._phases]
        self.reset()

    def reset(self) -> None:
        """Start over as a new stream (drops the filter history)."""
        # Filter memory, plus ``down`` samples more: with chunks that are not a multiple
        # of the decimation, an output can fall just before the chunk's first sample.
        self._keep = self._taps - 1 + self._down
        self._history: npt.NDArray[np.float64] = np.zeros(self._keep)
        self._in_total = 0  # input samples consumed since the start
        self._out_total = 0  # output samples produced since the start

    @property
    def delay_ms(self) -> float:
        """The resampler's latency in milliseconds (0 for the identity)."""
        if self.identity:
            return 0.0
        return float(1000.0 * (self._taps * self._up - 1) / 2 / (self.in_rate * self._up))

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; raises ValueError on odd-length input."""
        if self.identity:
            return pcm
        if len(pcm) & 1:
            raise ValueError(f"PCM16 input must have an even length, got {len(pcm)} bytes")
        samples = np.frombuffer(pcm, dtype="<i2")
        up, down = self._up, self._down
        start_in = self._in_total
        self._in_total += len(samples)
        # Output n sits at position n * down on the common grid, i.e. after input
        # sample (n * down) // up with filter phase (n * down) % up.
        begin, end_out = self._out_total, self._in_total * up // down
        self._out_total = end_out
        count = end_out - begin
        buffer = np.concatenate((self._history, samples))
        self._history = buffer[len(buffer) - self._keep :]
        if count <= 0:
            return b""
        if down == 1:
            # Integer upsampling: every input yields ``up`` outputs, one per phase: one
            # C-level convolution per phase, interleaved.
            first = begin // up - start_in + self._down
            lead = begin % up
            stop = first + (lead + count + up - 1) // up
            span = buffer[first : stop + self._taps - 1]
            out = np.empty((stop - first, up))
            for phase, kernel in enumerate(self._kernels):
                out[:, phase] = np.convolve(span, kernel, "valid")
            out = out.reshape(-1)[lead : lead + count]
        elif up == 1:
            # Integer decimation: filter, keep every ``down``-th output.
            first = begin * down - start_in + self._down
            span = buffer[first : first + (count - 1) * down + self._taps]
            out = np.convolve(span, self._kernels[0], "valid")[::down]
        else:
            # The window ending at the newest input of each output (oldest sample first).
            positions = np.arange(begin, end_out) * down
            newest = positions // up - start_in + self._down
            windows = sliding_window_view(buffer, self._taps)[newest]
            out = np.einsum("ij,ij->i", windows, self._phases[positions % up])
        # Saturate, then round half away from zero on the way to int16.
        np.clip(out, -32768.0, 32767.0, out=out)
        return np.rint(out, out=out).astype("<i2").tobytes()
