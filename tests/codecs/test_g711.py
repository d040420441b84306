from collections.abc import Callable

import numpy as np
import pytest

from sipbridge.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

ALL_CODES = bytes(range(256))
Codec = Callable[[bytes], bytes]
LAWS: list[tuple[Codec, Codec]] = [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xF0, 120)],
)
def test_ulaw_decode_known_values(code: int, value: int) -> None:
    assert samples(ulaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_known_values(code: int, value: int) -> None:
    assert samples(alaw_decode(bytes([code]))) == [value]


def test_encode_known_values() -> None:
    assert ulaw_encode(pcm(0, 32767, -32768, 8, -8)) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])
    assert alaw_encode(pcm(0, 32767, -32768, 8, -8)) == bytes([0xD5, 0xAA, 0x2A, 0xD5, 0x55])


@pytest.mark.parametrize(("encode", "decode"), LAWS)
def test_decoded_levels_survive_a_round_trip(encode: Codec, decode: Codec) -> None:
    levels = decode(ALL_CODES)
    assert decode(encode(levels)) == levels


def test_codes_round_trip_except_negative_zero() -> None:
    # μ-law has two codes for 0 (0x7F is -0); every other code is its own level.
    codes = [c for c in range(256) if c != 0x7F]
    assert ulaw_encode(ulaw_decode(bytes(codes))) == bytes(codes)
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("encode", "decode"), LAWS)
def test_quantization_is_monotonic_and_close(encode: Codec, decode: Codec) -> None:
    every = np.arange(-32768, 32768, dtype="<i2")
    out = np.frombuffer(decode(encode(every.tobytes())), dtype="<i2").astype(np.int32)
    assert np.all(np.diff(out) >= 0)
    # The largest step is 1024 (A-law segment 7); the error stays within a step.
    assert np.max(np.abs(out - every.astype(np.int32))) <= 1024
    assert len(np.unique(out)) == (255 if decode is ulaw_decode else 256)


@pytest.mark.parametrize(("encode", "decode"), LAWS)
def test_lengths_and_odd_input(encode: Codec, decode: Codec) -> None:
    assert len(encode(bytes(320))) == 160
    assert len(decode(bytes(160))) == 320
    assert encode(b"") == b""
    assert decode(b"") == b""
    with pytest.raises(ValueError, match="even length"):
        encode(b"\x00\x00\x00")


def test_sine_signal_to_noise() -> None:
    t = np.arange(8000)
    signal = (10000 * np.sin(2 * np.pi * 440 * t / 8000)).astype("<i2")
    for encode, decode in LAWS:
        out = np.frombuffer(decode(encode(signal.tobytes())), dtype="<i2").astype(float)
        noise = out - signal
        snr = 10 * np.log10(np.sum(signal.astype(float) ** 2) / np.sum(noise**2))
        assert snr > 33  # G.711 gives about 38 dB on a loud sine
