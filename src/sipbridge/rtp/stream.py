"""The outbound RTP stream of one call (RFC 3550 §5.1)."""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["RtpSender"]

_HEADER: Final = struct.Struct("!BBHII")
_VERSION_BYTE: Final = 0x80  # V=2, no padding, no extension, no CSRC


class RtpSender:
    """Numbers the packets of one RTP stream: one SSRC, consecutive sequence numbers and a
    timestamp that advances by ``samples_per_frame`` clock units per packet.

    The caller picks random ``initial_sequence``, ``initial_timestamp`` and ``ssrc``
    (RFC 3550 §5.1 and §8.1 ask for unpredictable values) and calls :meth:`packet` once per
    frame, every frame period, then sends the bytes it returns.
    """

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        samples_per_frame: int = 160,
        *,
        initial_sequence: int,
        initial_timestamp: int,
    ) -> None:
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"payload type {payload_type} out of range 0-127")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} out of range")
        if samples_per_frame <= 0:
            raise ValueError("samples_per_frame must be positive")
        self.ssrc: Final = ssrc
        self.payload_type: Final = payload_type
        self.samples_per_frame: Final = samples_per_frame
        self._sequence = initial_sequence & 0xFFFF
        self._timestamp = initial_timestamp & 0xFFFFFFFF
        # RFC 3551 §4.1: the marker flags the first packet of a talkspurt, here the first
        # packet of the stream and the first one after skip().
        self._marker = 0x80
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def sequence(self) -> int:
        """Sequence number of the next packet."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """RTP timestamp of the next packet."""
        return self._timestamp

    def packet(self, payload: bytes) -> bytes:
        """The next RTP packet carrying ``payload``; advances sequence and timestamp."""
        data = (
            _HEADER.pack(
                _VERSION_BYTE,
                self._marker | self.payload_type,
                self._sequence,
                self._timestamp,
                self.ssrc,
            )
            + payload
        )
        self._marker = 0
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self.samples_per_frame) & 0xFFFFFFFF
        # RFC 3550 §6.4.1: the sender report counts packets and payload octets.
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data

    def event_packet(
        self, payload_type: int, timestamp: int, marker: bool, payload: bytes
    ) -> bytes:
        """A packet of another payload type in the same stream (RFC 4733 §2.1: events share
        the audio's SSRC and sequence numbers but carry their own event timestamp).

        Advances the sequence number only; the caller accounts for the audio timestamp
        with :meth:`skip` for the frame periods the events replaced.
        """
        data = (
            _HEADER.pack(
                _VERSION_BYTE,
                (0x80 if marker else 0) | (payload_type & 0x7F),
                self._sequence,
                timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
            + payload
        )
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data

    def mark(self) -> None:
        """The next packet starts a talkspurt: it carries the marker bit (RFC 3551 §4.1)."""
        self._marker = 0x80

    def skip(self, frames: int = 1) -> None:
        """Account for ``frames`` frame periods in which nothing was sent.

        RFC 3550 §5.1: the timestamp follows the sampling clock even when no packet goes
        out, while sequence numbers only count packets sent; the next packet carries the
        marker bit as the start of a new talkspurt (RFC 3551 §4.1).
        """
        if frames < 0:
            raise ValueError("frames must not be negative")
        if frames:
            self._timestamp = (self._timestamp + frames * self.samples_per_frame) & 0xFFFFFFFF
            self._marker = 0x80
