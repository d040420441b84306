"""A call recording as a sans-I/O object: both sides' PCM, stamped with the time it passed
the bridge, in; two-channel (left the caller, right the agent) PCM16 blocks aligned on
one wall-clock timeline out; and the RIFF/WAVE header of the file they make.

The two sides do not arrive as one stream. The caller's audio comes per RTP packet after
the jitter buffer (in bursts after network jitter, concealment for gaps, nothing while the
caller is on hold); the agent's goes out one 20 ms frame per media tick, and not at all
while it is silent. :class:`StereoAligner` gives every chunk its place on the call's
timeline from its time stamp, so the two channels line up with the clock:

- a chunk whose place is more than ``tolerance`` after where its channel has reached (the
  side sent nothing meanwhile) is preceded by silence up to its place;
- a chunk that arrives early (a burst) goes straight after what its channel holds; a
  channel running more than ``max_lead`` ahead of the clock (a caller whose sample clock
  is faster than ours, over a long call) loses the excess, so it never drifts;
- :meth:`StereoAligner.take` returns the stereo samples up to ``hold`` before ``now``
  (a channel with nothing there is silent), and :meth:`StereoAligner.finish` the rest.

What the caller must do: :meth:`StereoAligner.add` each chunk in the order they were
stamped per side (the sides may interleave in any order), then ``take(now)`` with a
``now`` no earlier than any chunk added, and write what it returns after
:func:`wav_header`; at the end, ``finish()`` and rewrite the header with the data size
(:func:`wav_header` again). Time is the caller's monotonic clock in seconds; nothing here
reads it.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

import numpy as np

__all__ = [
    "WAV_HEADER_BYTES",
    "WAV_MAX_DATA_BYTES",
    "Side",
    "StereoAligner",
    "wav_header",
]

WAV_HEADER_BYTES: Final = 44
# The RIFF size field is 32 bits and counts 36 header bytes before the data: past this,
# a WAV file cannot say how long it is (18 hours of 16 kHz stereo).
WAV_MAX_DATA_BYTES: Final = 0xFFFFFFFF - 36
_PCM: Final = 1  # WAVE_FORMAT_PCM
_BYTES_PER_SAMPLE: Final = 2  # PCM16


class Side(IntEnum):
    """Which channel a chunk belongs to (its index in a stereo frame)."""

    CALLER = 0  # left
    AGENT = 1  # right


def wav_header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    """The 44-byte RIFF/WAVE header of ``data_bytes`` of little-endian PCM16 (the
    canonical layout: ``RIFF``, ``fmt `` chunk of 16 bytes, ``data`` chunk)."""
    if not 0 <= data_bytes <= WAV_MAX_DATA_BYTES:
        raise ValueError(f"a WAV file holds at most {WAV_MAX_DATA_BYTES} bytes of data")
    if sample_rate <= 0 or channels <= 0:
        raise ValueError("sample_rate and channels must be positive")
    block_align = channels * _BYTES_PER_SAMPLE
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        8 * _BYTES_PER_SAMPLE,
        b"data",
        data_bytes,
    )


class StereoAligner:
    """Both sides of a call on one timeline; see the module docstring.

    ``start`` is the time of the recording's first sample; ``rate`` the sample rate of
    every chunk (PCM16 mono, little-endian). ``tolerance``, ``max_lead`` and ``hold`` are
    seconds. Figures: :attr:`samples_out` (per channel, so the duration is
    ``samples_out / rate``), :attr:`padded_samples` (silence inserted for a side that sent
    nothing) and :attr:`trimmed_samples` (audio dropped from a side running ahead).
    """

    def __init__(
        self,
        rate: int,
        start: float,
        *,
        tolerance: float = 0.06,
        max_lead: float = 0.25,
        hold: float = 0.2,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if not 0 <= tolerance <= hold < max_lead:
            # A chunk placed after a take() padded its channel up to ``now - hold`` is at
            # most ``hold`` behind: it must not count as running ahead.
            raise ValueError("need 0 <= tolerance <= hold < max_lead")
        self.rate = rate
        self.start = start
        self._tolerance = round(tolerance * rate)
        self._max_lead = round(max_lead * rate)
        self._hold = round(hold * rate)
        self._channels = (bytearray(), bytearray())
        self._base = 0  # the timeline index (samples) of the first sample held
        self.samples_out = 0
        self.padded_samples = 0
        self.trimmed_samples = 0

    def _index(self, at: float) -> int:
        return round((at - self.start) * self.rate)

    def add(self, side: Side, at: float, pcm: bytes) -> None:
        """One chunk of ``side``: the caller's ends at ``at`` (it was just received), the
        agent's starts at ``at`` (it was just sent)."""
        count = len(pcm) // _BYTES_PER_SAMPLE
        if not count:
            return
        place = self._index(at) - (count if side == Side.CALLER else 0)
        channel = self._channels[side]
        reached = self._base + len(channel) // _BYTES_PER_SAMPLE
        if place - reached > self._tolerance:
            gap = place - reached
            channel.extend(bytes(_BYTES_PER_SAMPLE * gap))
            self.padded_samples += gap
        elif reached - place > self._max_lead:
            excess = min(reached - place - self._max_lead, count)
            self.trimmed_samples += excess
            if excess == count:
                return
            pcm = pcm[_BYTES_PER_SAMPLE * excess :]  # the oldest part goes
        channel.extend(pcm[: _BYTES_PER_SAMPLE * (len(pcm) // _BYTES_PER_SAMPLE)])

    def take(self, now: float) -> bytes:
        """Interleaved stereo PCM16 of the timeline up to ``hold`` before ``now`` (b""
        when there is none yet); a side with nothing there is silent."""
        return self._emit(self._index(now) - self._hold)

    def finish(self, end: float | None = None) -> bytes:
        """Everything still held, the shorter side padded with silence, and silence up to
        ``end`` (the end of the call) when the audio stops before it."""
        longest = max(len(channel) for channel in self._channels) // _BYTES_PER_SAMPLE
        last = self._base + longest
        if end is not None:
            last = max(last, self._index(end))
        return self._emit(last)

    def _emit(self, end: int) -> bytes:
        count = end - self._base
        if count <= 0:
            return b""
        out = np.zeros(2 * count, dtype="<i2")
        for side, channel in enumerate(self._channels):
            have = min(len(channel) // _BYTES_PER_SAMPLE, count)
            if have:
                out[side : 2 * have : 2] = np.frombuffer(channel, dtype="<i2", count=have)
                del channel[: _BYTES_PER_SAMPLE * have]
            missing = count - have
            if missing > 0:
                self.padded_samples += missing
        self._base = end
        self.samples_out += count
        return out.tobytes()
