"""PCM between the two legs of a bridged call (sans-I/O).

When a transfer is bridged (runtime/bridge.py), each leg keeps its own
:class:`~sipbridge.media.session.MediaSession`: its own codec as negotiated, jitter buffer,
concealment, resampling and RTP sender. Both sessions work at one PCM rate, so what one
decodes is what the other encodes: a different codec on each side is transcoded through
PCM by the codec chain each call already has. A :class:`FrameQueue` carries one
direction: the receiving leg pushes the PCM it decodes, the sending leg's 20 ms clock pops
one frame per tick.

The two legs' clocks run at the same rate but not in phase, and their peers' clocks
drift, so the queue is bounded: beyond ``max_frames`` the oldest audio is dropped (counted
in :attr:`FrameQueue.dropped_bytes`), which caps the delay the relay adds.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MAX_FRAMES", "FrameQueue"]

DEFAULT_MAX_FRAMES: Final = 10  # 200 ms of delay at most


class FrameQueue:
    """PCM16 in any lengths, out in frames of ``frame_bytes``.

    Call :meth:`push` with what one leg decoded; the other leg calls :meth:`pop` once per
    frame (None when less than a frame waits: it sends silence) and :meth:`ready` to know
    whether a whole frame waits.
    """

    def __init__(self, frame_bytes: int, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError("frame_bytes must be a positive even number")
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.frame_bytes = frame_bytes
        self._limit = frame_bytes * max_frames
        self._buffer = bytearray()
        self.dropped_bytes = 0
        self.frames_out = 0

    def __len__(self) -> int:
        return len(self._buffer)

    def push(self, pcm: bytes) -> None:
        buffer = self._buffer
        buffer += pcm
        excess = len(buffer) - self._limit
        if excess > 0:
            # Whole samples only, so the stream stays aligned.
            excess += excess & 1
            del buffer[:excess]
            self.dropped_bytes += excess

    def ready(self) -> bool:
        return len(self._buffer) >= self.frame_bytes

    def pop(self) -> bytes | None:
        size = self.frame_bytes
        buffer = self._buffer
        if len(buffer) < size:
            return None
        frame = bytes(buffer[:size])
        del buffer[:size]
        self.frames_out += 1
        return frame

    def clear(self) -> None:
        self._buffer.clear()
