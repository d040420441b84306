"""ITU-T G.722 (64 kbit/s sub-band ADPCM) through the C-backed ``G722`` package.

RFC 3551 §4.5.2: G.722 samples audio at 16 kHz but its RTP clock runs at 8000 Hz, a
historical error kept for compatibility; static payload type 9 (RFC 3551 table 4), so a
20 ms packet holds 160 octets and advances the timestamp by 160.

The package keeps the ADPCM state in its object, so each encoder and decoder owns one.
It reads numpy int16 arrays (raw bytes would be taken as 8-bit samples) and returns
``array('h')`` from decode. At 8 kHz (``G722(8000, 64000)``) it codes the lower sub-band
only, which is how an 8 kHz agent talks to a G.722 caller without a resampler.
"""

from __future__ import annotations

import sys
from typing import Final

import numpy as np
from G722 import G722  # type: ignore[import-not-found]

from sipbridge.codecs.base import CodecInfo

__all__ = ["G722_CODEC", "G722Decoder", "G722Encoder"]

_BITRATE: Final = 64000
# The package returns native-endian array('h'); PCM16 on our side is little-endian.
_SWAP: Final = sys.byteorder != "little"


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in (8000, 16000):
        raise ValueError(f"G.722 runs at 8000 or 16000 Hz, not {sample_rate}")


class G722Encoder:
    """PCM16LE mono at 16 kHz (or 8 kHz) → G.722 payload, one octet per two samples at
    16 kHz (RFC 3551 §4.5.2)."""

    def __init__(self, sample_rate: int = 16000) -> None:
        _check_rate(sample_rate)
        self.sample_rate: Final = sample_rate
        self._codec = G722(sample_rate, _BITRATE)

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) & 1:
            raise ValueError(f"PCM16 input must have an even length, got {len(pcm)} bytes")
        samples = np.frombuffer(pcm, dtype="<i2")
        if _SWAP:  # pragma: no cover - big-endian hosts only
            samples = samples.astype(np.int16)
        data: bytes = self._codec.encode(samples)
        return data


class G722Decoder:
    """G.722 payload → PCM16LE mono at 16 kHz (or 8 kHz, lower sub-band only).

    It does not conceal loss itself: wrap it with ``sipbridge.media.plc.with_concealment``.
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        _check_rate(sample_rate)
        self.sample_rate: Final = sample_rate
        self._codec = G722(sample_rate, _BITRATE)

    def decode(self, payload: bytes) -> bytes:
        out = self._codec.decode(payload)
        if _SWAP:  # pragma: no cover - big-endian hosts only
            out.byteswap()
        data: bytes = out.tobytes()
        return data


G722_CODEC: Final = CodecInfo(
    name="g722",
    encoding_name="G722",
    clock_rate=8000,
    sample_rate=16000,
    static_payload_type=9,
    encoder_factory=G722Encoder,
    decoder_factory=G722Decoder,
    audio_rates=(8000, 16000),
    rate_encoder_factory=G722Encoder,
    rate_decoder_factory=G722Decoder,
)
