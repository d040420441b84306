"""The PCM queue between the two legs of a bridged call."""

from __future__ import annotations

import pytest

from sipbridge.media.relay import FrameQueue


def test_frames_out_of_any_lengths_in_order() -> None:
    queue = FrameQueue(4, max_frames=3)
    assert queue.pop() is None and not queue.ready()
    queue.push(b"\x01\x00\x02")
    assert not queue.ready() and queue.pop() is None
    queue.push(b"\x00\x03\x00\x04\x00")
    assert queue.ready()
    assert queue.pop() == b"\x01\x00\x02\x00"
    assert queue.pop() == b"\x03\x00\x04\x00"
    assert queue.pop() is None and len(queue) == 0
    assert queue.frames_out == 2 and queue.dropped_bytes == 0


def test_the_oldest_audio_goes_beyond_the_bound() -> None:
    queue = FrameQueue(4, max_frames=2)
    queue.push(bytes(range(10)))  # 2.5 frames: the first 2 bytes go
    assert queue.dropped_bytes == 2 and len(queue) == 8
    assert queue.pop() == bytes([2, 3, 4, 5])
    queue.push(b"\xaa" * 6)  # 4 + 6 bytes: the oldest 2 go
    assert queue.dropped_bytes == 4
    assert queue.pop() == bytes([8, 9, 0xAA, 0xAA])
    queue.clear()
    assert queue.pop() is None


@pytest.mark.parametrize(("frame_bytes", "max_frames"), [(0, 1), (3, 1), (4, 0)])
def test_bad_sizes_are_refused(frame_bytes: int, max_frames: int) -> None:
    with pytest.raises(ValueError):
        FrameQueue(frame_bytes, max_frames)
