"""The media side of ``sipbridge call``, sans-I/O: what we send, what comes back, and the
figures of the quality report.

:class:`CallAudio` wraps the server's own media engine (:class:`~sipbridge.media.session.
MediaSession`: jitter buffer, decode and concealment, RFC 4733 DTMF, RFC 3550 statistics,
E-model MOS) with what a test caller adds: a signal to send (a WAV file, or the built-in
probe), DTMF digits at a set time, and both directions kept on one timeline, so the
agent's echo of our signal can be found in what came back (:func:`echo_delay`). The
caller does this:

1. :meth:`CallAudio.start` at the answer;
2. every 20 ms :meth:`tick` and send the packets it returns to :attr:`remote`; each RTP
   datagram to :meth:`receive`; RTCP: :meth:`receive_rtcp`, and
   :meth:`rtcp_report` when :attr:`rtcp_due` has come;
3. after the call, :meth:`report` for the figures and :meth:`recording` for a WAV.

Nothing here opens a socket or reads the clock.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from sipbridge.codecs import get_codec
from sipbridge.media.resample import Resampler
from sipbridge.media.session import FRAME_SECONDS, Address, MediaSession
from sipbridge.sdp.negotiate import Negotiated

__all__ = [
    "AUDIO_THRESHOLD",
    "AudioReport",
    "CallAudio",
    "EchoMatch",
    "WavError",
    "echo_delay",
    "local_rate",
    "probe_signal",
    "read_wav",
    "write_wav",
]

# A 20 ms frame whose RMS is above this (PCM16 units, about -50 dBFS) is sound, not the
# silence a server sends while its agent says nothing (G.711 silence decodes to 0 or 8).
AUDIO_THRESHOLD: Final = 100.0
# An echo is "found" when the normalized cross-correlation at its delay reaches this:
# G.711 both ways and a resampling agent keep it above 0.9; noise stays below 0.2.
ECHO_MIN_CORRELATION: Final = 0.5
MAX_ECHO_SECONDS: Final = 2.0  # the longest round trip looked for
MAX_BURSTS: Final = 20  # bursts of our signal looked for in what came back


class WavError(ValueError):
    """A ``--play`` file that is not a PCM WAV we can read."""


def local_rate(codec: str) -> int:
    """The PCM rate the test caller works at for ``codec``: 16 kHz for the wideband
    codecs (G.722, Opus), 8 kHz for G.711."""
    info = get_codec(codec)
    return 16000 if info.sample_rate > 8000 else 8000


def probe_signal(rate: int, seconds: float) -> bytes:
    """The built-in test signal: 400 ms up-chirps (300 Hz to 3 kHz, -10 dBFS) every
    second. A chirp correlates with itself at one delay only, so the agent's echo of it
    gives the round trip, and it is in the band every codec carries."""
    total = int(rate * seconds)
    out = np.zeros(total, dtype=np.float64)
    length = int(0.4 * rate)
    t = np.arange(length) / rate
    f0, f1 = 300.0, 3000.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * 0.4))
    fade = np.minimum(1.0, np.minimum(t, 0.4 - t) / 0.01)  # 10 ms ramps: no clicks
    chirp = 0.316 * 32767 * np.sin(phase) * fade
    for start in range(0, total, rate):
        piece = chirp[: total - start]
        out[start : start + len(piece)] = piece
    pcm: bytes = out.astype("<i2").tobytes()
    return pcm


def read_wav(path: Path, rate: int) -> bytes:
    """A WAV file as PCM16 mono at ``rate``: channels mixed down, resampled. WavError
    when it is not a readable 8/16-bit PCM WAV."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, source_rate = (
                wav.getnchannels(),
                wav.getsampwidth(),
                wav.getframerate(),
            )
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc})") from None
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    else:
        raise WavError(f"{path}: {8 * width}-bit samples; use 16-bit PCM")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(1)
    if not len(samples):
        raise WavError(f"{path}: no audio in it")
    pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    if source_rate == rate:
        return pcm
    if source_rate not in (8000, 16000, 24000, 32000, 44100, 48000):
        raise WavError(f"{path}: {source_rate} Hz; use 8, 16, 24, 32, 44.1 or 48 kHz")
    converted: bytes = Resampler(source_rate, rate).process(pcm)
    return converted


def write_wav(path: Path, rate: int, sent: bytes, received: bytes) -> None:
    """A two-channel WAV: what we sent on the left, what came back on the right, on one
    timeline (the answer at 0)."""
    n = max(len(sent), len(received)) // 2
    both = np.zeros((n, 2), dtype="<i2")
    left = np.frombuffer(sent, dtype="<i2")
    right = np.frombuffer(received, dtype="<i2")
    both[: len(left), 0] = left
    both[: len(right), 1] = right
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(both.tobytes())


@dataclass(frozen=True, slots=True)
class EchoMatch:
    """Where our signal came back: ``delay_ms`` after we sent it, with ``correlation``
    (normalized, 1.0 a perfect copy)."""

    delay_ms: float
    correlation: float
    bursts: int = 1  # bursts of our signal found in what came back


def _samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)


def _bursts(x: npt.NDArray[np.float64], rate: int) -> list[tuple[int, int]]:
    """(start, end) sample ranges of the sound in ``x``: runs of 20 ms frames above
    :data:`AUDIO_THRESHOLD`, at least 100 ms long, at most :data:`MAX_BURSTS` of them."""
    frame = rate // 50
    frames = len(x) // frame
    if not frames:
        return []
    energy = np.sqrt(np.mean(x[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = energy > AUDIO_THRESHOLD
    out: list[tuple[int, int]] = []
    index = 0
    while index < frames and len(out) < MAX_BURSTS:
        if not loud[index]:
            index += 1
            continue
        end = index
        while end < frames and loud[end]:
            end += 1
        if end - index >= 5:
            # Long stretches (speech, noise) in pieces of up to 1 s, each looked for alone.
            for first in range(index, end, 50):
                if min(end, first + 50) - first >= 5 and len(out) < MAX_BURSTS:
                    out.append((first * frame, min(end, first + 50) * frame))
        index = end
    return out


def echo_delay(
    sent: bytes, received: bytes, rate: int, max_seconds: float = MAX_ECHO_SECONDS
) -> EchoMatch | None:
    """How long after we sent it our signal came back in ``received`` (both PCM16 at
    ``rate`` on one timeline): each burst of sound we sent is looked for in what came
    back over delays of 0 to ``max_seconds`` (normalized cross-correlation, FFT), and
    the median delay of the bursts found (correlation at least
    :data:`ECHO_MIN_CORRELATION`) is the round trip. None when no burst came back."""
    x = _samples(sent)
    max_lag = int(max_seconds * rate)
    # What came back may stop before our last burst's echo would: zeros after it.
    y = _samples(received)
    y = np.concatenate([y, np.zeros(max(0, len(x) + max_lag - len(y)))])
    found: list[tuple[int, float]] = []
    for start, end in _bursts(x, rate):
        template = x[start:end]
        window = y[start : end + max_lag]
        size = 1 << math.ceil(math.log2(len(window) + len(template)))
        spectrum = np.fft.rfft(window, size) * np.conj(np.fft.rfft(template, size))
        lags = len(window) - len(template) + 1
        raw = np.fft.irfft(spectrum, size)[:lags]  # raw[k] = sum template[n] window[n + k]
        # Normalized: divided by both energies (the window's over each shifted span).
        squares = np.concatenate(([0.0], np.cumsum(window * window)))
        energy = squares[len(template) : len(template) + lags] - squares[:lags]
        norm = np.sqrt(np.maximum(energy, 1e-9) * float(np.dot(template, template)))
        score = raw / norm
        peak = float(np.max(score))
        if peak >= ECHO_MIN_CORRELATION:
            # The earliest strong match: a later one is another burst like this one.
            best = int(np.argmax(score >= 0.9 * peak))
            found.append((best, float(score[best])))
    if not found:
        return None
    delays = sorted(lag for lag, _ in found)
    median = delays[len(delays) // 2]
    correlation = min(score for lag, score in found if lag == median)
    return EchoMatch(round(1000.0 * median / rate, 1), round(correlation, 3), len(found))


def _rms(pcm: bytes) -> float:
    samples = _samples(pcm)
    return math.sqrt(float(np.mean(samples * samples))) if len(samples) else 0.0


@dataclass(frozen=True, slots=True)
class AudioReport:
    """The media half of the quality report (None: not measured)."""

    codec: str
    packets_sent: int
    packets_received: int
    packets_lost: int | None
    loss_percent: float | None
    jitter_ms: float | None
    mos: float | None
    rtcp_rtt_ms: float | None  # network round trip from RTCP (RFC 3550 §6.4.1)
    first_audio_ms: float | None  # the answer to the first agent audio
    echo: EchoMatch | None  # the agent's echo of our signal: the audio round trip
    audio_ms: int  # how much of what came back was sound (not silence)
    dtmf_sent: str  # digits sent as RFC 4733 events
    dtmf_refused: bool  # digits asked for, but the answer had no telephone-event


class CallAudio:
    """One call's media for the test caller; see the module docstring."""

    def __init__(
        self,
        negotiated: Negotiated,
        *,
        signal: bytes | None,
        rate: int,
        dtmf: str = "",
        dtmf_at: float = 1.0,
    ) -> None:
        self.rate = rate
        self.session = MediaSession(negotiated, rate)
        self._frame_bytes = 2 * rate // 50
        self._signal = signal or b""
        self._position = 0
        self._dtmf = dtmf
        self._dtmf_at = dtmf_at
        self.dtmf_sent = ""
        self.dtmf_refused = False
        self._sent = bytearray()
        self._received = bytearray()
        self.started: float | None = None
        self.first_audio_at: float | None = None
        self._sound_frames = 0
        self._talking = False  # the last PCM that came back was sound
        self._pending = bytearray()  # received PCM not yet judged sound or silence

    @property
    def remote(self) -> Address:
        return self.session.remote

    @property
    def rtcp_remote(self) -> Address:
        return self.session.rtcp_remote

    @property
    def rtcp_due(self) -> float:
        return self.session.rtcp_due

    def start(self, now: float) -> None:
        self.started = now
        self.session.start(now)

    def tick(self, now: float) -> list[bytes]:
        """One 20 ms frame: our next one goes out (or DTMF events), and gaps in what
        comes back past their deadline are concealed."""
        session = self.session
        started = self.started if self.started is not None else now
        if self._dtmf and now - started >= self._dtmf_at:
            digits, self._dtmf = self._dtmf, ""
            if session.send_dtmf(digits):
                self.dtmf_sent = digits
            else:
                self.dtmf_refused = True
        frame: bytes | None = None
        if not session.sending_dtmf and self._position < len(self._signal):
            frame = self._signal[self._position : self._position + self._frame_bytes]
            frame = frame.ljust(self._frame_bytes, b"\0")
            self._position += self._frame_bytes
        packets = session.tick(now, frame)
        self._sent += frame if frame is not None else bytes(self._frame_bytes)
        self._add(session.poll(now), now)
        return packets

    def receive(self, data: bytes, source: Address, now: float) -> None:
        self._add(self.session.receive_rtp(data, source, now), now)

    def receive_rtcp(self, data: bytes, source: Address, now: float, wallclock: float) -> None:
        self.session.receive_rtcp(data, source, now, wallclock)

    def rtcp_report(self, now: float, wallclock: float) -> bytes | None:
        return self.session.rtcp_report(now, wallclock)

    def _add(self, pcm: bytes, now: float) -> None:
        if not pcm or self.started is None:
            return
        # On our timeline as a receiver's playout would put it: a talkspurt (sound after
        # silence) starts where it arrived, the way a jitter buffer re-anchors at the
        # marker bit (a server sends its first frame at once, ahead of the silence before
        # it in RTP time); within a talkspurt, and for silence, frames follow each other.
        received = self._received
        at = 2 * max(0, int((now - self.started) * self.rate))
        sound = _rms(pcm) > AUDIO_THRESHOLD
        if sound and not self._talking and at < len(received):
            del received[at:]
        if at > len(received) + len(pcm):
            received += bytes(at - len(received))  # a gap in what came back
        self._talking = sound
        received += pcm
        self._pending += pcm
        frame = self._frame_bytes
        while len(self._pending) >= frame:
            chunk = bytes(self._pending[:frame])
            del self._pending[:frame]
            if _rms(chunk) > AUDIO_THRESHOLD:
                self._sound_frames += 1
                if self.first_audio_at is None:
                    self.first_audio_at = now

    @property
    def sent(self) -> bytes:
        return bytes(self._sent)

    @property
    def received(self) -> bytes:
        return bytes(self._received)

    def recording(self) -> bytes:
        """Both directions as a two-channel WAV file's bytes (see :func:`write_wav`)."""
        buffer = io.BytesIO()
        n = max(len(self._sent), len(self._received)) // 2
        both = np.zeros((n, 2), dtype="<i2")
        both[: len(self._sent) // 2, 0] = np.frombuffer(bytes(self._sent), dtype="<i2")
        both[: len(self._received) // 2, 1] = np.frombuffer(bytes(self._received), dtype="<i2")
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            wav.writeframes(both.tobytes())
        return buffer.getvalue()

    def report(self) -> AudioReport:
        quality = self.session.quality()
        first = None
        if self.first_audio_at is not None and self.started is not None:
            first = round(1000.0 * (self.first_audio_at - self.started), 1)
        return AudioReport(
            codec=self.session.codec,
            packets_sent=quality.packets_out,
            packets_received=quality.packets_in,
            packets_lost=quality.packets_lost,
            loss_percent=quality.loss_percent,
            jitter_ms=quality.jitter_ms,
            mos=quality.mos,
            rtcp_rtt_ms=quality.rtt_ms,
            first_audio_ms=first,
            echo=echo_delay(self.sent, self.received, self.rate),
            audio_ms=int(self._sound_frames * FRAME_SECONDS * 1000),
            dtmf_sent=self.dtmf_sent,
            dtmf_refused=self.dtmf_refused,
        )
