"""Opus (RFC 6716) through a small ctypes binding to the system libopus.

RFC 7587 §7: Opus is always announced as ``opus/48000/2`` and its RTP timestamp runs at
48 kHz whatever the audio bandwidth, but a decoder may run at 8, 12, 16, 24 or 48 kHz and
decode any packet straight to that rate (RFC 6716 §4, "the decoder can run at any of the
supported rates regardless of the encoded bandwidth"). We encode and decode mono at the
agent's rate, so neither direction needs a resampler.

Loss handling (RFC 6716 §4.4 and §2.1.7): ``conceal(samples)`` is libopus' own packet loss
concealment (``opus_decode`` with no data); ``decode_fec(next_payload, samples)``
recovers the lost frame from the in-band FEC (LBRR) data of the packet after it. The
encoder sends FEC when ``useinbandfec=1`` was negotiated (RFC 7587 §6.1) and it is told
to expect loss (``OPUS_SET_PACKET_LOSS_PERC``).

libopus is loaded on first use: the codec registers even where the library is missing,
and making an encoder or decoder then raises :class:`OpusError` saying what to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

from sipbridge.codecs.base import CodecInfo

__all__ = [
    "OPUS",
    "OPUS_RATES",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
    "opus_available",
]

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
# opus_defines.h
_OPUS_OK: Final = 0
_APPLICATION_VOIP: Final = 2048
_SET_BITRATE: Final = 4002
_SET_COMPLEXITY: Final = 4010
_SET_INBAND_FEC: Final = 4012
_SET_PACKET_LOSS_PERC: Final = 4014
_SET_SIGNAL: Final = 4024
_SIGNAL_VOICE: Final = 3001
# RFC 6716 §3.2.1: a packet decodes to at most 120 ms; at 48 kHz that is 5760 samples.
_MAX_FRAME_MS: Final = 120
# Upper bound for one encoded packet, recommended by the libopus documentation.
_MAX_PACKET: Final = 1500


class OpusError(RuntimeError):
    """libopus is missing, or it refused a call (the message carries opus_strerror)."""


_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    path = ctypes.util.find_library("opus")
    if path is None:
        raise OpusError(
            "libopus not found: install the system library (Debian/Ubuntu: "
            "apt-get install libopus0) or leave opus out of --codecs"
        )
    lib = ctypes.CDLL(path)
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    err_p = ctypes.POINTER(c_int)
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, err_p]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_destroy.restype = None
    # const opus_int16 *pcm is passed as bytes (c_char_p): no copy of the frame.
    lib.opus_encode.argtypes = [c_void_p, c_char_p, c_int, c_char_p, ctypes.c_int32]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, err_p]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = [c_void_p, c_char_p, ctypes.c_int32, c_void_p, c_int, c_int]
    lib.opus_decode.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = c_char_p
    # opus_encoder_ctl is variadic: argtypes stay unset and every argument is passed as
    # an explicit ctypes.c_int so it is promoted like the C int the macro expands to.
    lib.opus_encoder_ctl.restype = c_int
    _lib = lib
    return lib


def opus_available() -> bool:
    """Whether libopus can be loaded (so ``opus`` may be offered and accepted)."""
    try:
        _load()
    except OpusError:
        return False
    return True


def _check(lib: ctypes.CDLL, code: int, what: str) -> int:
    if code < _OPUS_OK:
        message = lib.opus_strerror(code).decode("ascii", "replace")
        raise OpusError(f"{what} failed: {message} ({code})")
    return code


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus runs at {OPUS_RATES} Hz, not {sample_rate}")


class OpusEncoder:
    """PCM16LE mono at ``sample_rate`` → one Opus packet per call.

    The frame must be 2.5, 5, 10, 20, 40 or 60 ms long (RFC 6716 §2.1.4); a 20 ms frame
    is the usual choice. ``fec`` and ``packet_loss_perc`` switch on in-band FEC
    (RFC 7587 §6.1 ``useinbandfec``); ``bitrate`` is in bit/s (RFC 7587 §3.1.1 suggests
    about 20-32 kbit/s for wideband speech); ``complexity`` trades CPU for quality
    (OPUS_SET_COMPLEXITY, 0-10).
    """

    _handle: int | None = None  # so close() works when __init__ failed early

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        bitrate: int | None = None,
        fec: bool = True,
        packet_loss_perc: int = 5,
        complexity: int = 5,
    ) -> None:
        _check_rate(sample_rate)
        lib = _load()
        self._lib = lib
        self.sample_rate: Final = sample_rate
        error = ctypes.c_int(0)
        handle = lib.opus_encoder_create(sample_rate, 1, _APPLICATION_VOIP, ctypes.byref(error))
        _check(lib, error.value, "opus_encoder_create")
        if not handle:
            raise OpusError("opus_encoder_create returned NULL")
        self._handle = handle
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        self._ctl(_SET_SIGNAL, _SIGNAL_VOICE)
        if bitrate is None:
            # libopus only spends bits on in-band FEC above a rate-dependent threshold:
            # at 16/24 kbit/s (8/16 kHz) it put FEC in 6 of 33 packets after a loss, at
            # 20/40 kbit/s in all of them; 40 kbit/s wideband also scored best clean
            # (bench/bench_quality.py: PESQ 3.74 clean, 3.46 at 5 % loss vs 3.57 / 2.28).
            bitrate = 20000 if sample_rate <= 8000 else 40000
        self.set_bitrate(bitrate)
        self.set_fec(fec, packet_loss_perc)
        # Complexity 5 of 0-10 halves the encoder's cost against the default 10 for a
        # difference in speech quality well below what an agent's recognizer notices.
        self._ctl(_SET_COMPLEXITY, complexity)

    def _ctl(self, request: int, value: int) -> None:
        _check(
            self._lib,
            self._lib.opus_encoder_ctl(
                ctypes.c_void_p(self._handle), ctypes.c_int(request), ctypes.c_int(value)
            ),
            f"opus_encoder_ctl({request})",
        )

    def set_bitrate(self, bitrate: int) -> None:
        """Target bit rate in bit/s (OPUS_SET_BITRATE, 500-512000)."""
        self._ctl(_SET_BITRATE, bitrate)

    def set_fec(self, enabled: bool, packet_loss_perc: int = 5) -> None:
        """In-band FEC on or off, and the loss rate (0-100 %) the encoder plans for; FEC
        is only sent when the expected loss is above zero."""
        self._ctl(_SET_INBAND_FEC, 1 if enabled else 0)
        self._ctl(_SET_PACKET_LOSS_PERC, packet_loss_perc)

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) & 1:
            raise ValueError(f"PCM16 input must have an even length, got {len(pcm)} bytes")
        size = self._lib.opus_encode(self._handle, pcm, len(pcm) >> 1, self._out, _MAX_PACKET)
        _check(self._lib, size, "opus_encode")
        return self._out.raw[:size]

    def close(self) -> None:
        """Free the libopus state now (otherwise it goes with the object)."""
        if self._handle is not None:
            self._lib.opus_encoder_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


class OpusDecoder:
    """Opus packet → PCM16LE mono at ``sample_rate``; conceals loss with libopus' PLC
    and recovers it with in-band FEC (implements ``ConcealingDecoder``)."""

    _handle: int | None = None  # so close() works when __init__ failed early

    def __init__(self, sample_rate: int = 16000) -> None:
        _check_rate(sample_rate)
        lib = _load()
        self._lib = lib
        self.sample_rate: Final = sample_rate
        error = ctypes.c_int(0)
        handle = lib.opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        _check(lib, error.value, "opus_decoder_create")
        if not handle:
            raise OpusError("opus_decoder_create returned NULL")
        self._handle = handle
        self._max_samples = sample_rate * _MAX_FRAME_MS // 1000
        self._out = ctypes.create_string_buffer(2 * self._max_samples)

    def _decode(self, data: bytes | None, samples: int, fec: int) -> bytes:
        size = len(data) if data is not None else 0
        count = self._lib.opus_decode(self._handle, data, size, self._out, samples, fec)
        _check(self._lib, count, "opus_decode")
        return ctypes.string_at(self._out, 2 * count)

    def decode(self, payload: bytes) -> bytes:
        """One packet (any duration up to 120 ms) → its PCM. An empty or corrupt payload
        (RFC 6716 §4.4: a lost packet) is concealed as 20 ms: bad input from the network
        must never stop the stream."""
        if payload:
            try:
                return self._decode(payload, self._max_samples, 0)
            except OpusError:
                pass
        return self.conceal(self.sample_rate // 50)

    def conceal(self, samples: int) -> bytes:
        """Exactly ``samples`` of libopus packet loss concealment. libopus conceals in
        multiples of 2.5 ms (at most 120 ms a call): the last slice is rounded up and
        trimmed, since the caller's timestamps decide the gap."""
        if samples <= 0:
            return b""
        quantum = self.sample_rate // 400  # 2.5 ms
        parts = []
        remaining = samples
        while remaining > 0:
            step = min(-(-remaining // quantum) * quantum, self._max_samples)
            parts.append(self._decode(None, step, 0))
            remaining -= step
        return b"".join(parts)[: 2 * samples]

    def decode_fec(self, next_payload: bytes, samples: int) -> bytes:
        """The ``samples`` just before ``next_payload``, from its in-band FEC data; libopus
        falls back to concealment when the packet carries none. Decode ``next_payload``
        itself afterwards as usual."""
        if samples <= 0:
            return b""
        quantum = self.sample_rate // 400
        if not next_payload or samples > self._max_samples or samples % quantum:
            return self.conceal(samples)
        try:
            return self._decode(next_payload, samples, 1)
        except OpusError:
            return self.conceal(samples)

    def packet_samples(self, payload: bytes) -> int:
        """How many samples at our rate ``payload`` decodes to (RFC 6716 §3.1)."""
        return _check(
            self._lib,
            self._lib.opus_packet_get_nb_samples(payload, len(payload), self.sample_rate),
            "opus_packet_get_nb_samples",
        )

    def close(self) -> None:
        """Free the libopus state now (otherwise it goes with the object)."""
        if self._handle is not None:
            self._lib.opus_decoder_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def _default_encoder() -> OpusEncoder:
    return OpusEncoder(48000)


def _default_decoder() -> OpusDecoder:
    return OpusDecoder(48000)


# RFC 7587 §7: dynamic payload type, "opus/48000/2"; useinbandfec=1 asks the peer to send
# FEC (§6.1); maxplaybackrate tells it we never need more than 16 kHz audio (§6.1), so it
# can save bits on bandwidth an agent does not hear.
OPUS: Final = CodecInfo(
    name="opus",
    encoding_name="opus",
    clock_rate=48000,
    sample_rate=48000,
    static_payload_type=None,
    encoder_factory=_default_encoder,
    decoder_factory=_default_decoder,
    channels=2,
    fmtp="maxplaybackrate=16000; sprop-maxcapturerate=16000; useinbandfec=1",
    audio_rates=OPUS_RATES,
    rate_encoder_factory=OpusEncoder,
    rate_decoder_factory=OpusDecoder,
)
