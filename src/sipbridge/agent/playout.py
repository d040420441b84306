"""Re-frames agent audio, which arrives in chunks of any size, into fixed RTP frames."""

from __future__ import annotations

from collections import deque

__all__ = ["CATCH_UP_MAX_FRAMES", "CATCH_UP_TICKS", "PlayoutBuffer"]

# Catch-up (see PlayoutBuffer): a backlog of 1..CATCH_UP_MAX_FRAMES frames left over after
# every one of CATCH_UP_TICKS frame periods is lag, not a burst, and one silent frame of it
# is skipped. A larger backlog is an agent sending faster than real time: it plays as sent.
CATCH_UP_TICKS = 50  # 1 s of 20 ms frames
CATCH_UP_MAX_FRAMES = 6


class PlayoutBuffer:
    """A FIFO of PCM bytes handed out one frame at a time.

    The caller :meth:`write`\\ s audio as it arrives and calls :meth:`next_frame` once per
    frame period; ``None`` means "send silence this period". Chunks are kept as received and
    sliced on the way out, so a chunk of exactly one frame is passed through without a copy
    and nothing is ever copied twice.

    A partial frame at the tail is held back for one frame period (the rest of the frame
    may be in flight) and then sent padded with zeros, so the end of an utterance is neither
    lost nor held forever.

    Catch-up: an agent that sends in real time (a frame every period) and once misses a
    period leaves one frame of silence played and, from then on, one frame queued for the
    rest of its stream: 20 ms more delay with every miss. When a small backlog (at least
    one frame, at most :data:`CATCH_UP_MAX_FRAMES`) has been left after every frame for
    :data:`CATCH_UP_TICKS` periods, the next frame of digital silence (all zero bytes, what
    agents stream between utterances) is skipped, so the delay goes back down without
    touching any sound. A skipped frame counts as played (:attr:`skipped_frames`).

    Positions in the stream are counted in bytes accepted since creation:
    :attr:`written_bytes` is where the next accepted byte will go and :attr:`played_bytes`
    how many have left (handed out by :meth:`next_frame` or dropped by :meth:`clear`).
    Bytes refused by the cap take no position, so a marker placed at ``written_bytes``
    is reached exactly when everything queued before it has gone.
    """

    def __init__(self, frame_bytes: int = 320, cap_bytes: int = 960_000) -> None:
        if frame_bytes <= 0 or cap_bytes < frame_bytes:
            raise ValueError("need 0 < frame_bytes <= cap_bytes")
        self.frame_bytes = frame_bytes
        self.cap_bytes = cap_bytes
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already handed out
        self._queued = 0
        self._written = 0
        self._tail_waited = False
        self._steady = 0  # periods in a row that left a small backlog (catch-up)
        self.skipped_frames = 0

    @property
    def written_bytes(self) -> int:
        """Bytes accepted since creation (refused bytes do not count)."""
        return self._written

    @property
    def played_bytes(self) -> int:
        """Bytes accepted since creation that are no longer queued."""
        return self._written - self._queued

    @property
    def queued_bytes(self) -> int:
        return self._queued

    @property
    def empty(self) -> bool:
        return self._queued == 0

    def clear(self) -> int:
        """Drop everything queued (the agent was interrupted); returns how many bytes."""
        dropped = self._queued
        self._chunks.clear()
        self._offset = 0
        self._queued = 0
        self._tail_waited = False
        self._steady = 0
        return dropped

    def write(self, data: bytes) -> int:
        """Queue ``data``; returns how many of its bytes were dropped because the buffer
        would exceed ``cap_bytes``. What is already queued is kept: it plays first."""
        room = self.cap_bytes - self._queued
        dropped = len(data) - room
        if dropped > 0:
            data = data[:room]
        else:
            dropped = 0
        if data:
            self._chunks.append(bytes(data))
            self._queued += len(data)
            self._written += len(data)
        return dropped

    def next_frame(self) -> bytes | None:
        """The next frame of ``frame_bytes``, or None when there is nothing to play yet."""
        size = self.frame_bytes
        queued = self._queued
        if queued < size:
            if queued == 0 or not self._tail_waited:
                self._tail_waited = queued != 0
                return None
            frame = self._take(queued) + bytes(size - queued)
            self._tail_waited = False
            return frame
        self._tail_waited = False
        frame = self._take(size)
        left = self._queued
        if left < size or left > CATCH_UP_MAX_FRAMES * size:
            self._steady = 0
            return frame
        self._steady += 1
        if self._steady >= CATCH_UP_TICKS and frame.count(0) == size:
            # A lagging real-time stream: skip this silent frame, play the next one now.
            self._steady = 0
            self.skipped_frames += 1
            return self._take(size)
        return frame

    def _take(self, size: int) -> bytes:
        """Remove and return the first ``size`` queued bytes (size <= queued)."""
        self._queued -= size
        chunks = self._chunks
        head = chunks[0]
        start = self._offset
        end = start + size
        if end < len(head):
            self._offset = end
            return head[start:end]
        if end == len(head):
            chunks.popleft()
            self._offset = 0
            return head if start == 0 else head[start:]
        # The frame spans chunks.
        parts = [memoryview(head)[start:]]
        chunks.popleft()
        needed = end - len(head)
        while needed:
            head = chunks[0]
            if needed < len(head):
                parts.append(memoryview(head)[:needed])
                self._offset = needed
                break
            parts.append(memoryview(head))
            chunks.popleft()
            needed -= len(head)
        else:
            self._offset = 0
        return b"".join(parts)
