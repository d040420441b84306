"""What every codec provides: an encoder, a decoder and a description for SDP and RTP.

PCM on the application side is always signed 16-bit little-endian mono at the codec's
``sample_rate`` (or at one of its ``audio_rates`` when the encoder or decoder was made for
that rate); the payload side is whatever the codec puts in an RTP packet.

A codec is one module that builds a :class:`CodecInfo` and registers it in
``sipbridge.codecs``. Decoders that conceal loss themselves (Opus) implement
:class:`ConcealingDecoder`; the others get ITU-T G.711 Appendix I concealment from
``sipbridge.media.plc.with_concealment``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["CodecInfo", "ConcealingDecoder", "Decoder", "Encoder"]


class Encoder(Protocol):
    """Turns PCM16LE mono at the codec's sample rate into an RTP payload."""

    def encode(self, pcm: bytes) -> bytes: ...


class Decoder(Protocol):
    """Turns an RTP payload into PCM16LE mono at the codec's sample rate."""

    def decode(self, payload: bytes) -> bytes: ...


@runtime_checkable
class ConcealingDecoder(Decoder, Protocol):
    """A decoder that also fills in for lost packets.

    ``conceal(samples)`` returns ``samples`` PCM samples standing in for audio that never
    arrived (packet loss concealment); ``decode_fec(next_payload, samples)`` recovers the
    ``samples`` before ``next_payload`` from the forward error correction data it carries
    (Opus in-band FEC, RFC 6716 §2.1.7), falling back to concealment when it has none.
    """

    def conceal(self, samples: int) -> bytes: ...

    def decode_fec(self, next_payload: bytes, samples: int) -> bytes: ...


@dataclass(frozen=True)
class CodecInfo:
    """A codec as the registry knows it.

    ``clock_rate`` is the RTP timestamp rate written in SDP (RFC 3551 §4.5); it can differ
    from ``sample_rate``, the rate of the PCM handed to the encoder (G.722 is 16 kHz audio
    with an 8 kHz RTP clock, RFC 3551 §4.5.2).

    ``channels`` is the rtpmap encoding parameter (RFC 4566 §6): Opus is always announced
    as ``opus/48000/2`` (RFC 7587 §7) although we send and receive mono. ``fmtp`` is the
    format parameter string to put in an answer, if any.

    ``audio_rates`` lists further PCM rates the codec encodes and decodes at natively
    (Opus at 8-48 kHz, G.722 at 8 kHz through its lower sub-band only), built by
    ``rate_encoder_factory`` / ``rate_decoder_factory``; pass the agent's rate to
    :meth:`encoder` / :meth:`decoder` and resample only when :meth:`audio_rate_for` says
    the codec cannot produce it directly.
    """

    name: str
    encoding_name: str
    clock_rate: int
    sample_rate: int
    static_payload_type: int | None
    encoder_factory: Callable[[], Encoder]
    decoder_factory: Callable[[], Decoder]
    channels: int = 1
    fmtp: str | None = None
    audio_rates: tuple[int, ...] = ()
    rate_encoder_factory: Callable[[int], Encoder] | None = None
    rate_decoder_factory: Callable[[int], Decoder] | None = None

    @property
    def rtpmap(self) -> str:
        """The rtpmap value after the payload type: ``PCMU/8000``, ``opus/48000/2``
        (RFC 4566 §6: the channel count is omitted when it is one)."""
        base = f"{self.encoding_name}/{self.clock_rate}"
        return base if self.channels == 1 else f"{base}/{self.channels}"

    def audio_rate_for(self, wanted: int) -> int:
        """The PCM rate to run the codec at for an agent at ``wanted`` Hz: ``wanted``
        itself when the codec handles it natively, else ``sample_rate`` (then resample)."""
        if wanted == self.sample_rate or wanted in self.audio_rates:
            return wanted
        return self.sample_rate

    def encoder(self, audio_rate: int | None = None) -> Encoder:
        """A new encoder (one per call: some codecs keep state between frames) taking PCM
        at ``audio_rate`` (default ``sample_rate``); ValueError for an unsupported rate."""
        if audio_rate is None or audio_rate == self.sample_rate:
            return self.encoder_factory()
        if audio_rate in self.audio_rates and self.rate_encoder_factory is not None:
            return self.rate_encoder_factory(audio_rate)
        raise ValueError(f"{self.name} cannot encode PCM at {audio_rate} Hz")

    def decoder(self, audio_rate: int | None = None) -> Decoder:
        """A new decoder (one per call) producing PCM at ``audio_rate`` (default
        ``sample_rate``); ValueError for an unsupported rate."""
        if audio_rate is None or audio_rate == self.sample_rate:
            return self.decoder_factory()
        if audio_rate in self.audio_rates and self.rate_decoder_factory is not None:
            return self.rate_decoder_factory(audio_rate)
        raise ValueError(f"{self.name} cannot decode to PCM at {audio_rate} Hz")

    def samples_per_frame(self, ms: int) -> int:
        """PCM samples in a frame of ``ms`` milliseconds at ``sample_rate``."""
        return self.sample_rate * ms // 1000

    def frame_bytes(self, ms: int) -> int:
        """PCM16 bytes in a frame of ``ms`` milliseconds at ``sample_rate``."""
        return 2 * self.samples_per_frame(ms)

    def timestamp_increment(self, ms: int) -> int:
        """RTP timestamp units in a frame of ``ms`` milliseconds (RFC 3550 §5.1)."""
        return self.clock_rate * ms // 1000
