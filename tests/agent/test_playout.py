from collections.abc import Callable

import numpy as np
import pytest

from sipbridge.agent import PlayoutBuffer
from sipbridge.agent.playout import CATCH_UP_TICKS


def chunk(start: int, size: int) -> bytes:
    return bytes((start + i) % 251 for i in range(size))


def test_empty_buffer() -> None:
    buffer = PlayoutBuffer()
    assert buffer.empty
    assert buffer.queued_bytes == 0
    assert buffer.next_frame() is None
    assert buffer.next_frame() is None


def test_exact_frames_pass_through_without_copy() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    data = b"abcd"
    buffer.write(data)
    assert buffer.next_frame() is data
    assert buffer.empty


def test_reframes_chunks_of_any_size_in_order() -> None:
    buffer = PlayoutBuffer(frame_bytes=320)
    stream = chunk(0, 320 * 7)
    for size in (1, 100, 319, 641, 5, 1174):
        assert buffer.write(stream[:size]) == 0
        stream = stream[size:]
    assert stream == b""
    assert buffer.queued_bytes == 320 * 7
    frames = [buffer.next_frame() for _ in range(7)]
    assert b"".join(f or b"" for f in frames) == chunk(0, 320 * 7)
    assert all(f is not None and len(f) == 320 for f in frames)
    assert buffer.empty


def test_frame_spanning_many_chunks() -> None:
    buffer = PlayoutBuffer(frame_bytes=10)
    for piece in (b"ab", b"cd", b"ef", b"gh", b"ijkl"):
        buffer.write(piece)
    assert buffer.next_frame() == b"abcdefghij"
    assert buffer.queued_bytes == 2
    buffer.write(b"mnopqrst")
    assert buffer.next_frame() == b"klmnopqrst"
    assert buffer.empty


def test_partial_tail_waits_one_frame_then_is_padded() -> None:
    buffer = PlayoutBuffer(frame_bytes=8)
    buffer.write(b"abcdefghij")
    assert buffer.next_frame() == b"abcdefgh"
    assert buffer.next_frame() is None  # the rest may be in flight
    assert buffer.queued_bytes == 2
    assert buffer.next_frame() == b"ij" + bytes(6)
    assert buffer.empty
    assert buffer.next_frame() is None


def test_just_in_time_audio_is_not_broken_up() -> None:
    buffer = PlayoutBuffer(frame_bytes=8)
    buffer.write(b"abcd")
    assert buffer.next_frame() is None
    buffer.write(b"efghijkl")
    assert buffer.next_frame() == b"abcdefgh"
    # A full frame resets the grace period: the new tail waits again.
    assert buffer.next_frame() is None
    assert buffer.next_frame() == b"ijkl" + bytes(4)


def test_grace_is_one_period_even_if_the_tail_grows() -> None:
    buffer = PlayoutBuffer(frame_bytes=8)
    buffer.write(b"ab")
    assert buffer.next_frame() is None
    buffer.write(b"cd")
    assert buffer.next_frame() == b"abcd" + bytes(4)


def test_cap_drops_the_excess_of_new_data() -> None:
    buffer = PlayoutBuffer(frame_bytes=4, cap_bytes=10)
    assert buffer.write(b"abcdef") == 0
    assert buffer.write(b"ghijkl") == 2
    assert buffer.queued_bytes == 10
    assert buffer.write(b"mn") == 2
    assert buffer.next_frame() == b"abcd"
    assert buffer.write(b"") == 0
    assert buffer.write(b"opqrstuv") == 4
    assert [buffer.next_frame() for _ in range(4)] == [b"efgh", b"ijop", None, b"qr\0\0"]


def test_clear() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    buffer.write(b"abcdef")
    assert buffer.next_frame() == b"abcd"
    assert buffer.next_frame() is None
    buffer.clear()
    assert buffer.empty
    buffer.write(b"wx")
    assert buffer.next_frame() is None  # a fresh tail gets its full grace period
    assert buffer.next_frame() == b"wx\x00\x00"


def test_accepts_bytearray_and_keeps_its_own_copy() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    data = bytearray(b"abcd")
    buffer.write(data)  # type: ignore[arg-type]
    data[:] = b"zzzz"
    assert buffer.next_frame() == b"abcd"


def test_long_stream_stays_linear() -> None:
    buffer = PlayoutBuffer()
    total = 0
    for i in range(3000):
        buffer.write(chunk(i, 333))
        total += 333
        while buffer.queued_bytes >= 320:
            assert len(buffer.next_frame() or b"") == 320
            total -= 320
    assert buffer.queued_bytes == total


@pytest.mark.parametrize(("frame", "cap"), [(0, 10), (10, 5), (-1, 10)])
def test_invalid_sizes(frame: int, cap: int) -> None:
    with pytest.raises(ValueError):
        PlayoutBuffer(frame, cap)


def test_positions_count_accepted_bytes() -> None:
    buffer = PlayoutBuffer(frame_bytes=4, cap_bytes=10)
    assert (buffer.written_bytes, buffer.played_bytes) == (0, 0)
    buffer.write(b"abcdef")
    assert (buffer.written_bytes, buffer.played_bytes) == (6, 0)
    buffer.next_frame()
    assert (buffer.written_bytes, buffer.played_bytes) == (6, 4)
    assert buffer.write(b"0123456789") == 2  # refused bytes take no position
    assert (buffer.written_bytes, buffer.played_bytes) == (14, 4)


def test_positions_across_a_padded_tail() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    buffer.write(b"abcdef")
    buffer.next_frame()
    assert buffer.next_frame() is None
    assert buffer.played_bytes == 4
    assert buffer.next_frame() == b"ef\0\0"
    assert buffer.played_bytes == 6 == buffer.written_bytes


def test_clear_returns_what_it_dropped_and_moves_played_to_written() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    buffer.write(b"abcdefg")
    buffer.next_frame()
    assert buffer.clear() == 3
    assert buffer.played_bytes == buffer.written_bytes == 7
    assert buffer.clear() == 0


# ---------------------------------------------------------------- catch-up

FRAME = 320  # 20 ms of PCM16 at 8 kHz


def silent_frame() -> bytes:
    return bytes(FRAME)  # a new object each time: frames are told apart by identity


def loud_frame(n: int) -> bytes:
    return np.full(FRAME // 2, 1000 + n, dtype="<i2").tobytes()


def quiet_noise_frame(n: int) -> bytes:
    """Very quiet but not digital silence (comfort noise, a caller's background)."""
    return np.full(FRAME // 2, 1 + n % 7, dtype="<i2").tobytes()


def run_paced(frames: list[bytes], late: set[int]) -> tuple[PlayoutBuffer, list[int]]:
    """A real-time agent: frame k is written just before period k, except the ``late``
    ones, written just after it. Returns the buffer and, per period, which frame played
    (-1: silence)."""
    buffer = PlayoutBuffer(FRAME)
    index = {id(frame): k for k, frame in enumerate(frames)}  # frames pass through uncopied
    played: list[int] = []
    pending: bytes | None = None
    for k, frame in enumerate(frames):
        if k in late:
            pending = frame
        else:
            buffer.write(frame)
        out = buffer.next_frame()
        played.append(-1 if out is None else index[id(out)])
        if pending is not None:
            buffer.write(pending)
            pending = None
    return buffer, played


def test_a_late_frame_of_a_paced_agent_costs_20_ms_only_until_a_silent_frame() -> None:
    frames = [silent_frame() for _ in range(300)]
    buffer, played = run_paced(frames, late={10})
    assert played[10] == -1  # the late frame: silence played that period
    assert played[11] == 10  # ... and from then on one frame behind
    assert buffer.skipped_frames == 1
    # One frame behind from period 11 on; after CATCH_UP_TICKS such periods (period 60),
    # the silent frame due then (59) is skipped and 60 plays on time: back in step.
    skipped = sorted(set(range(300)) - set(played))
    assert skipped == [9 + CATCH_UP_TICKS]
    assert played[10 + CATCH_UP_TICKS :] == list(range(10 + CATCH_UP_TICKS, 300))
    assert buffer.queued_bytes == 0
    # Positions: the skipped frame counts as played (marks behind it are answered).
    assert buffer.played_bytes == buffer.written_bytes


def test_catch_up_waits_for_the_pause_after_speech() -> None:
    frames = [loud_frame(k) for k in range(200)] + [silent_frame() for _ in range(100)]
    buffer, played = run_paced(frames, late={10})
    assert buffer.skipped_frames == 1
    assert sorted(set(range(300)) - set(played)) == [200]  # the first silent frame
    assert played[11:201] == list(range(10, 200))  # every speech frame, one behind


@pytest.mark.parametrize("make", [loud_frame, quiet_noise_frame])
def test_sound_is_never_skipped(make: Callable[[int], bytes]) -> None:
    frames = [make(k) for k in range(300)]
    buffer, played = run_paced(frames, late={10})
    assert buffer.skipped_frames == 0
    assert played[11:] == list(range(10, 299))  # still one frame behind, nothing cut


def test_a_burst_plays_as_sent() -> None:
    """An agent faster than real time (TTS in one go): a big backlog is not lag."""
    buffer = PlayoutBuffer(FRAME)
    frames = [silent_frame() for _ in range(200)]
    buffer.write(b"".join(frames))
    assert [buffer.next_frame() for _ in range(200)] == frames
    assert buffer.skipped_frames == 0


def test_a_backlog_that_absorbs_jitter_is_left_alone() -> None:
    """A paced agent whose frames come late now and then: the spare frame is used each
    time (nothing left over that period), so it is never skipped."""
    frames = [silent_frame() for _ in range(400)]
    late = {10} | set(range(40, 400, CATCH_UP_TICKS - 10))
    buffer, _played = run_paced(frames, late=late)
    assert buffer.skipped_frames == 0


def test_clear_resets_catch_up() -> None:
    buffer = PlayoutBuffer(FRAME)
    buffer.write(silent_frame() * 3)
    for _ in range(CATCH_UP_TICKS - 1):
        buffer.next_frame()
        buffer.write(silent_frame())
    buffer.clear()
    buffer.write(silent_frame() * 3)
    buffer.next_frame()
    assert buffer.skipped_frames == 0
