"""ITU-T G.711 μ-law (PCMU) and A-law (PCMA) with lookup tables.

Both laws are computed once at import for every possible input: 256 codes to decode and
65536 16-bit samples to encode. A frame is then one numpy fancy-index, with no Python loop
per sample (``audioop`` is deprecated and gone in Python 3.13).

The tables work on 16-bit linear PCM; G.711 itself is specified on 14-bit (μ-law) and
13-bit (A-law) linear values, so the low bits of a 16-bit sample only move the decision
points, never the reconstructed levels, which are the G.711 Table 2a/2b values scaled to
16 bits.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from sipbridge.codecs.base import CodecInfo

__all__ = [
    "PCMA",
    "PCMU",
    "AlawDecoder",
    "AlawEncoder",
    "UlawDecoder",
    "UlawEncoder",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

# Every int16 value, laid out so that position i holds the sample whose uint16 bit pattern
# is i: the encode tables are then indexed by the raw little-endian sample viewed as uint16.
_ALL_SAMPLES: Final = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
_ALL_SAMPLES_32: Final = _ALL_SAMPLES.astype(np.int32)

# μ-law works on the magnitude plus a bias of 0x84 (33 in 14-bit units), which makes every
# segment start at a power of two (G.711 §3.2); 32635 + 0x84 is the largest biased value
# that still fits segment 7.
_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 32635


def _segment(biased: npt.NDArray[np.int32], first_boundary: int) -> npt.NDArray[np.int32]:
    """Segment number 0-7: how many of the boundaries first_boundary << k (k = 0..6) lie
    at or below each value."""
    seg = np.zeros_like(biased)
    for k in range(7):
        seg += biased >= (first_boundary << k)
    return seg


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    # G.711 §3.2: codes are transmitted with every bit inverted.
    code = (~np.arange(256, dtype=np.int32)) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype("<i2")


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = _ALL_SAMPLES_32
    sign = np.where(x < 0, 0x80, 0x00)
    biased = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    # Segment k holds the biased values in [1 << (k + 7), 1 << (k + 8)), the bias making
    # 0x84 the smallest; the mantissa is the four bits after the leading one.
    exponent = _segment(biased, 1 << 8)
    mantissa = (biased >> (exponent + 3)) & 0x0F
    table: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return table


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    # G.711 §3.3: even bits are inverted on the line (XOR 0x55); bit 7 set means positive.
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype("<i2")


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = _ALL_SAMPLES_32
    sign = np.where(x >= 0, 0x80, 0x00)
    # A-law levels are symmetric (±8, ±24, ...), so a negative sample is folded with -x - 1
    # (one's complement) rather than -x: -1..-16 then land in the same step as 0..15.
    magnitude = np.where(x >= 0, x, -x - 1)
    exponent = _segment(magnitude, 1 << 8)
    shift = np.where(exponent == 0, 4, exponent + 3)
    mantissa = (magnitude >> shift) & 0x0F
    table: npt.NDArray[np.uint8] = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


_ULAW_DECODE: Final = _build_ulaw_decode()
_ULAW_ENCODE: Final = _build_ulaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()
_ALAW_ENCODE: Final = _build_alaw_encode()
for _table in (_ULAW_DECODE, _ULAW_ENCODE, _ALAW_DECODE, _ALAW_ENCODE):
    _table.flags.writeable = False


def _samples(pcm: bytes) -> npt.NDArray[np.uint16]:
    """The samples of PCM16LE ``pcm`` as uint16 bit patterns, the encode table index."""
    if len(pcm) & 1:
        raise ValueError(f"PCM16 input must have an even length, got {len(pcm)} bytes")
    samples: npt.NDArray[np.uint16] = np.frombuffer(pcm, dtype="<u2")
    return samples


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16LE → μ-law, one byte per sample. Raises ValueError on odd-length input."""
    return _ULAW_ENCODE[_samples(pcm)].tobytes()


def ulaw_decode(payload: bytes) -> bytes:
    """μ-law → PCM16LE, two bytes per code."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16LE → A-law, one byte per sample. Raises ValueError on odd-length input."""
    return _ALAW_ENCODE[_samples(pcm)].tobytes()


def alaw_decode(payload: bytes) -> bytes:
    """A-law → PCM16LE, two bytes per code."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].tobytes()


class UlawEncoder:
    """Stateless PCMU encoder (G.711 has no memory between frames)."""

    def encode(self, pcm: bytes) -> bytes:
        return ulaw_encode(pcm)


class UlawDecoder:
    """Stateless PCMU decoder."""

    def decode(self, payload: bytes) -> bytes:
        return ulaw_decode(payload)


class AlawEncoder:
    """Stateless PCMA encoder."""

    def encode(self, pcm: bytes) -> bytes:
        return alaw_encode(pcm)


class AlawDecoder:
    """Stateless PCMA decoder."""

    def decode(self, payload: bytes) -> bytes:
        return alaw_decode(payload)


# RFC 3551 §4.5.14 and table 4: static payload types 0 (PCMU) and 8 (PCMA), 8 kHz clock.
PCMU: Final = CodecInfo(
    name="pcmu",
    encoding_name="PCMU",
    clock_rate=8000,
    sample_rate=8000,
    static_payload_type=0,
    encoder_factory=UlawEncoder,
    decoder_factory=UlawDecoder,
)
PCMA: Final = CodecInfo(
    name="pcma",
    encoding_name="PCMA",
    clock_rate=8000,
    sample_rate=8000,
    static_payload_type=8,
    encoder_factory=AlawEncoder,
    decoder_factory=AlawDecoder,
)
