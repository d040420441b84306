import itertools

import numpy as np
import pytest

from sipbridge.codecs import get_codec
from sipbridge.codecs.g711 import UlawDecoder, ulaw_encode
from sipbridge.codecs.opus import OpusDecoder
from sipbridge.media.plc import G711Plc, PlcDecoder, with_concealment


def voiced(rate: int, seconds: float = 0.5, f0: float = 125.0) -> np.ndarray:
    """A crude vowel: harmonics of f0 with falling amplitude."""
    t = np.arange(int(rate * seconds)) / rate
    wave = sum((6000 / k) * np.sin(2 * np.pi * k * f0 * t + k) for k in range(1, 8))
    return np.asarray(wave).astype("<i2")


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(float)


def snr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - test) ** 2), 1e-9)))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_pitch_is_found(rate: int) -> None:
    plc = G711Plc(rate)
    signal = voiced(rate, f0=125.0)
    n = rate // 50
    for i in range(0, 10 * n, n):
        plc.good(signal[i : i + n].tobytes())
    plc._flush_recent()  # the history is built lazily, when a loss needs it
    period = plc._find_pitch()
    assert period % (rate // 125) == 0 or abs(period - rate // 125) <= 1


@pytest.mark.parametrize("rate", [8000, 16000])
def test_concealment_beats_silence_and_repetition(rate: int) -> None:
    signal = voiced(rate)
    n = rate // 50
    plc = G711Plc(rate)
    for i in range(0, 10 * n, n):
        assert plc.good(signal[i : i + n].tobytes()) == signal[i : i + n].tobytes()
    truth = signal[10 * n : 11 * n].astype(float)
    concealed = pcm(plc.conceal(n))
    assert len(concealed) == n
    repeated = signal[9 * n : 10 * n].astype(float)  # plain repetition of the last frame
    assert snr(truth, concealed) > 10
    assert snr(truth, concealed) > snr(truth, repeated) + 3
    assert snr(truth, concealed) > snr(truth, np.zeros(n)) + 10


def test_attenuation_reaches_silence_at_60_ms() -> None:
    plc = G711Plc(8000)
    signal = voiced(8000)
    for i in range(0, 800, 160):
        plc.good(signal[i : i + 160].tobytes())
    out = pcm(b"".join(plc.conceal(80) for _ in range(8)))  # 80 ms in 10 ms calls
    level = [np.sqrt(np.mean(out[i : i + 80] ** 2)) for i in range(0, 640, 80)]
    assert level[0] > 1000  # §I.2.5: full level for the first 10 ms
    assert all(a >= b for a, b in itertools.pairwise(level[1:6]))
    assert level[5] < level[1] / 3
    assert level[6] == level[7] == 0  # silence after 60 ms
    assert plc.in_erasure


def test_first_good_frame_is_smoothed_then_bit_exact() -> None:
    plc = G711Plc(8000)
    signal = voiced(8000)
    for i in range(0, 800, 160):
        plc.good(signal[i : i + 160].tobytes())
    plc.conceal(160)
    after = signal[960:1120].tobytes()
    smoothed = plc.good(after)
    assert smoothed != after
    # §I.2.6: a 20 ms erasure is followed by an 8 ms overlap-add (4 ms + 4 ms per further
    # 10 ms); the rest of the frame is untouched.
    assert smoothed[2 * 64 :] == after[2 * 64 :]
    assert smoothed[2 * 60 : 2 * 64] != after[2 * 60 : 2 * 64]
    # Junction continuity: no jump larger than the signal's own steps.
    assert not plc.in_erasure
    nxt = signal[1120:1280].tobytes()
    assert plc.good(nxt) == nxt


def test_no_step_at_the_start_of_an_erasure() -> None:
    plc = G711Plc(8000)
    signal = voiced(8000, f0=133.0)  # a period that is not a whole number of samples
    for i in range(0, 800, 160):
        plc.good(signal[i : i + 160].tobytes())
    concealed = pcm(plc.conceal(160))
    max_step = np.max(np.abs(np.diff(signal[:800].astype(float))))
    assert abs(concealed[0] - float(signal[799])) <= max_step * 1.1


def test_plc_decoder_wraps_g711_and_keeps_it_bit_exact() -> None:
    signal = voiced(8000)
    payloads = [ulaw_encode(signal[i : i + 160].tobytes()) for i in range(0, 4000, 160)]
    plain, wrapped = UlawDecoder(), with_concealment(UlawDecoder(), 8000)
    assert isinstance(wrapped, PlcDecoder)
    for payload in payloads[:10]:
        assert wrapped.decode(payload) == plain.decode(payload)
    assert len(wrapped.conceal(160)) == 320
    assert len(wrapped.decode_fec(payloads[12], 160)) == 320
    assert wrapped.conceal(0) == b""


def test_g722_with_concealment() -> None:
    info = get_codec("g722")
    decoder = with_concealment(info.decoder(), info.sample_rate)
    encoder = info.encoder()
    signal = voiced(16000)
    for i in range(0, 3200, 320):
        decoder.decode(encoder.encode(signal[i : i + 320].tobytes()))
    assert np.sqrt(np.mean(pcm(decoder.conceal(320)) ** 2)) > 1000


@pytest.mark.requires("libopus")
def test_opus_keeps_its_own_concealment() -> None:
    decoder = OpusDecoder(16000)
    assert with_concealment(decoder, 16000) is decoder


def test_short_frames_and_bad_rate() -> None:
    plc = G711Plc(8000)
    assert plc.good(b"") == b""
    plc.good(bytes(8000))  # longer than the history
    assert plc.conceal(0) == b""
    assert pcm(plc.conceal(80)).max() == 0  # silence in, silence out
    with pytest.raises(ValueError):
        G711Plc(11025)


def test_loss_right_after_a_word_ends_is_not_louder_than_the_speech_was() -> None:
    """A loud voiced segment, then a sudden drop to near-silence, then a loss: the
    concealment must stay at the near-silent level, not replay the loud periods."""
    from sipbridge.media.plc import G711Plc

    rate = 8000
    t = np.arange(rate // 5)
    loud = (12000 * np.sin(2 * np.pi * 150 * t / rate)).astype("<i2")
    quiet = (20 * np.sin(2 * np.pi * 150 * np.arange(40) / rate)).astype("<i2")
    plc = G711Plc(rate)
    for i in range(0, len(loud), 160):
        plc.good(loud[i : i + 160].tobytes())
    plc.good(np.concatenate((loud[:120], quiet)).tobytes())  # the word ends abruptly
    concealed = np.frombuffer(plc.conceal(160), "<i2")
    assert np.abs(concealed.astype(int)).max() <= 200


@pytest.mark.parametrize("rate", [8000, 16000])
def test_lazy_history_conceals_exactly_like_an_eager_one(rate: int) -> None:
    """Good frames are only kept until a loss needs them: the concealment must be the
    same, sample for sample, as with the history updated at every frame."""
    signal = voiced(rate, f0=110.0)
    lazy, eager = G711Plc(rate), G711Plc(rate)
    sizes = [rate // 100, rate // 50, 3 * rate // 100]  # 10, 20 and 30 ms packets
    position, out_lazy, out_eager = 0, [], []
    for step in range(60):
        size = sizes[step % 3]
        if step % 11 == 10:  # a loss now and then
            out_lazy.append(lazy.conceal(size))
            out_eager.append(eager.conceal(size))
        else:
            frame = signal[position : position + size].tobytes()
            out_lazy.append(lazy.good(frame))
            out_eager.append(eager.good(frame))
            eager._flush_recent()
        position += size
    assert out_lazy == out_eager
