import numpy as np
import pytest

from sipbridge.codecs import get_codec
from sipbridge.codecs.g722 import G722Decoder, G722Encoder


def sine(rate: int, freq: float, seconds: float = 1.0, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds))
    return (amplitude * np.sin(2 * np.pi * freq * t / rate)).astype("<i2")


def best_snr(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 64) -> float:
    """SNR in dB at the codec delay that fits best (G.722's QMF delays the output)."""
    ref = reference.astype(float)
    out = decoded.astype(float)
    best = -99.0
    for lag in range(max_lag):
        a = ref[1000 : len(ref) - max_lag]
        b = out[1000 + lag : len(ref) - max_lag + lag]
        noise = np.sum((b - a) ** 2)
        best = max(best, 10 * np.log10(np.sum(a**2) / max(noise, 1e-9)))
    return best


def run(encoder: G722Encoder, decoder: G722Decoder, signal: np.ndarray, frame: int) -> bytes:
    out = []
    for i in range(0, len(signal), frame):
        payload = encoder.encode(signal[i : i + frame].tobytes())
        assert len(payload) == frame // 2 if encoder.sample_rate == 16000 else frame
        out.append(decoder.decode(payload))
    return b"".join(out)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 6000.0])
def test_wideband_sine_snr(freq: float) -> None:
    signal = sine(16000, freq)
    decoded = np.frombuffer(run(G722Encoder(), G722Decoder(), signal, 320), dtype="<i2")
    assert len(decoded) == len(signal)
    # 6 kHz is above narrowband: only G.722's upper sub-band carries it.
    assert best_snr(signal, decoded) > (20 if freq > 4000 else 30)


def test_narrowband_mode_at_8khz() -> None:
    signal = sine(8000, 440.0)
    decoded = np.frombuffer(run(G722Encoder(8000), G722Decoder(8000), signal, 160), dtype="<i2")
    assert len(decoded) == len(signal)
    assert best_snr(signal, decoded) > 30


def test_frame_sizes_and_rtp_clock() -> None:
    info = get_codec("g722")
    encoder, decoder = info.encoder(), info.decoder()
    payload = encoder.encode(bytes(640))  # 20 ms at 16 kHz
    assert len(payload) == 160 == info.timestamp_increment(20)  # RFC 3551 §4.5.2
    assert len(decoder.decode(payload)) == 640


def test_silence_stays_quiet_and_state_is_per_object() -> None:
    encoder, decoder = G722Encoder(), G722Decoder()
    out = np.frombuffer(decoder.decode(encoder.encode(bytes(6400))), dtype="<i2")
    assert np.max(np.abs(out.astype(int))) < 50
    # Two encoders fed the same frames give the same bytes: no shared state.
    a, b = G722Encoder(), G722Encoder()
    frame = sine(16000, 500, 0.02).tobytes()
    assert a.encode(frame) == b.encode(frame)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="even length"):
        G722Encoder().encode(b"\x00")
    with pytest.raises(ValueError, match="8000 or 16000"):
        G722Encoder(48000)
    with pytest.raises(ValueError, match="8000 or 16000"):
        G722Decoder(11025)
