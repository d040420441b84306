"""What every codec provides: an encoder, a decoder and a description for SDP and RTP.

PCM on the application side is always signed 16-bit little-endian mono at the codec's
``sample_rate``; the payload side is whatever the codec puts in an RTP packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CodecInfo", "Decoder", "Encoder"]


class Encoder(Protocol):
    """Turns PCM16LE mono at the codec's sample rate into an RTP payload."""

    def encode(self, pcm: bytes) -> bytes: ...


class Decoder(Protocol):
    """Turns an RTP payload into PCM16LE mono at the codec's sample rate."""

    def decode(self, payload: bytes) -> bytes: ...


@dataclass(frozen=True)
class CodecInfo:
    """A codec as the registry knows it.

    ``clock_rate`` is the RTP timestamp rate written in SDP (RFC 3551 §4.5); it can differ
    from ``sample_rate``, the rate of the PCM handed to the encoder (G.722 is 16 kHz audio
    with an 8 kHz RTP clock, RFC 3551 §4.5.2).
    """

    name: str
    encoding_name: str
    clock_rate: int
    sample_rate: int
    static_payload_type: int | None
    encoder_factory: Callable[[], Encoder]
    decoder_factory: Callable[[], Decoder]

    def encoder(self) -> Encoder:
        """A new encoder (one per call: some codecs keep state between frames)."""
        return self.encoder_factory()

    def decoder(self) -> Decoder:
        """A new decoder (one per call)."""
        return self.decoder_factory()

    def samples_per_frame(self, ms: int) -> int:
        """PCM samples in a frame of ``ms`` milliseconds at ``sample_rate``."""
        return self.sample_rate * ms // 1000

    def frame_bytes(self, ms: int) -> int:
        """PCM16 bytes in a frame of ``ms`` milliseconds at ``sample_rate``."""
        return 2 * self.samples_per_frame(ms)

    def timestamp_increment(self, ms: int) -> int:
        """RTP timestamp units in a frame of ``ms`` milliseconds (RFC 3550 §5.1)."""
        return self.clock_rate * ms // 1000
