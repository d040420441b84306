"""Streaming PCM16 resampling between the codec's rate and the agent's rate.

One :class:`Resampler` per direction per call, because the filter keeps state between
frames. When the rates match it is an identity that returns its input object unchanged,
so G.711 through an 8 kHz agent stays bit-exact and costs nothing.

libsoxr's fixed-rate streams release output in blocks of several hundred milliseconds
(its DFT stage waits for a full block), far too bursty for 20 ms frames. Its
variable-rate engine (``vr=True``, used at a constant ratio) streams sample by sample
with a fixed delay of about 240 input samples (30 ms at 8→16 kHz, 15 ms at 16→8 kHz,
measured by tests/media/test_resample.py), so that is the
engine used here. The wrapper pads the start with the delay's worth of silence so that
every call returns exactly ``len(input) * out_rate / in_rate`` samples: 20 ms in, 20 ms out.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

__all__ = ["Resampler"]


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
        self._quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._in_total = 0
        self._out_total = 0
        self._carry: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        if not self.identity:
            self.reset()

    def reset(self) -> None:
        """Start over as a new stream (drops the filter history and any carried samples)."""
        if self.identity:
            return
        self._stream = soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="int16", quality=self._quality, vr=True
        )
        self._in_total = 0
        self._out_total = 0
        self._carry = np.zeros(0, dtype=np.int16)

    @property
    def delay_ms(self) -> float:
        """The resampler's latency in milliseconds (0 for the identity)."""
        if self._stream is None:
            return 0.0
        return 1000.0 * float(self._stream.delay()) / self.out_rate

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; raises ValueError on odd-length input."""
        if self.identity:
            return pcm
        if len(pcm) & 1:
            raise ValueError(f"PCM16 input must have an even length, got {len(pcm)} bytes")
        stream = self._stream
        assert stream is not None
        samples = np.frombuffer(pcm, dtype=np.int16)
        out: npt.NDArray[np.int16] = stream.resample_chunk(samples)
        self._in_total += len(samples)
        want = self._in_total * self.out_rate // self.in_rate - self._out_total
        if len(self._carry):
            out = np.concatenate((self._carry, out))
            self._carry = self._carry[:0]
        have = len(out)
        if have < want:
            # Start-up: the filter has not released its group delay yet; silence stands in.
            out = np.concatenate((np.zeros(want - have, dtype=np.int16), out))
        elif have > want:
            self._carry = out[want:].copy()
            out = out[:want]
        self._out_total += want
        return out.astype("<i2", copy=False).tobytes()
