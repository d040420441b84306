import numpy as np
import pytest

from sipbridge.media.resample import Resampler


def sine(rate: int, freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds))
    return (10000 * np.sin(2 * np.pi * freq * t / rate)).astype("<i2")


def stream(resampler: Resampler, signal: np.ndarray, frame: int) -> np.ndarray:
    chunks = [
        resampler.process(signal[i : i + frame].tobytes()) for i in range(0, len(signal), frame)
    ]
    return np.frombuffer(b"".join(chunks), dtype="<i2")


def test_identity_is_free_and_bit_exact() -> None:
    resampler = Resampler(8000, 8000)
    data = sine(8000, 440, 0.02).tobytes()
    assert resampler.identity
    assert resampler.process(data) is data
    assert resampler.delay_ms == 0.0
    resampler.reset()


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (16000, 48000)])
def test_every_frame_has_the_exact_output_length(src: int, dst: int) -> None:
    resampler = Resampler(src, dst)
    frame = bytes(2 * src // 50)
    assert [len(resampler.process(frame)) for _ in range(10)] == [2 * dst // 50] * 10


@pytest.mark.parametrize(("src", "dst", "freq"), [(8000, 16000, 1000.0), (16000, 8000, 700.0)])
def test_sine_quality(src: int, dst: int, freq: float) -> None:
    out = stream(Resampler(src, dst), sine(src, freq), src // 50)[1000:].astype(float)
    assert len(out) == dst - 1000
    # Least-squares fit of a sine at freq: what is left is noise and distortion.
    t = np.arange(len(out)) / dst
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, out, rcond=None)
    fit = basis @ coef
    assert 10 * np.log10(np.sum(fit**2) / np.sum((out - fit) ** 2)) > 60
    assert abs(np.hypot(*coef) - 10000) < 100


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000)])
def test_latency_is_small_and_constant(src: int, dst: int) -> None:
    click = np.zeros(src // 5, dtype="<i2")
    click[src // 50] = 20000  # in the second frame
    out = stream(Resampler(src, dst), click, src // 50)
    peak_ms = 1000 * int(np.argmax(np.abs(out.astype(int)))) / dst
    assert 20 <= peak_ms <= 20 + 5  # a few milliseconds of filter delay, no bursts


def test_odd_length_and_reset() -> None:
    resampler = Resampler(8000, 16000)
    with pytest.raises(ValueError, match="even length"):
        resampler.process(b"\x00")
    resampler.process(bytes(320))
    resampler.reset()
    assert len(resampler.process(bytes(320))) == 640
    with pytest.raises(ValueError):
        Resampler(0, 8000)


def test_clipping_is_saturated_not_wrapped() -> None:
    resampler = Resampler(8000, 16000)
    square = np.tile(np.array([32767] * 8 + [-32768] * 8, dtype="<i2"), 50)
    out = stream(resampler, square, 160)
    assert out.max() <= 32767 and out.min() >= -32768
    assert out[400:].max() > 30000


def test_chunks_of_any_size_give_the_same_stream() -> None:
    signal = sine(16000, 440, 0.3)
    whole = stream(Resampler(16000, 8000), signal, 4800)
    resampler = Resampler(16000, 8000)
    pieces, i = [], 0
    for size in [1, 7, 160, 33, 320, 2, 999] * 10:
        pieces.append(resampler.process(signal[i : i + size].tobytes()))
        i += size
        if i >= len(signal):
            break
    pieces.append(resampler.process(signal[i:].tobytes()))
    assert np.array_equal(np.frombuffer(b"".join(pieces), "<i2"), whole)


def test_delay_is_a_few_milliseconds() -> None:
    assert 0 < Resampler(8000, 16000).delay_ms < 5
    assert 0 < Resampler(16000, 8000).delay_ms < 5
