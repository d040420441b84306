import pytest

from sipbridge.agent import PlayoutBuffer


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
