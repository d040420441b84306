import numpy as np
import pytest

from sipbridge.codecs import ConcealingDecoder, get_codec
from sipbridge.codecs import opus as opus_module
from sipbridge.codecs.opus import OpusDecoder, OpusEncoder, OpusError, opus_available

pytestmark = pytest.mark.requires("libopus")


def tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds))
    wave = 6000 * np.sin(2 * np.pi * 300 * t / rate) + 3000 * np.sin(2 * np.pi * 1100 * t / rate)
    return wave.astype("<i2")


def frames(signal: np.ndarray, rate: int) -> list[bytes]:
    n = rate // 50
    return [signal[i : i + n].tobytes() for i in range(0, len(signal), n)]


def correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Best normalized correlation over codec delays up to max_lag samples."""
    best = 0.0
    x = a[max_lag : len(a) - max_lag].astype(float)
    for lag in range(max_lag):
        y = b[max_lag + lag : len(a) - max_lag + lag].astype(float)
        best = max(best, float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y) + 1e-9)))
    return best


@pytest.mark.parametrize("rate", [8000, 16000])
def test_round_trip_at_agent_rate(rate: int) -> None:
    encoder, decoder = OpusEncoder(rate), OpusDecoder(rate)
    signal = tone(rate)
    packets = [encoder.encode(frame) for frame in frames(signal, rate)]
    assert all(0 < len(p) < 200 for p in packets)
    out = np.frombuffer(b"".join(decoder.decode(p) for p in packets), dtype="<i2")
    assert len(out) == len(signal)
    assert correlation(signal, out, rate // 100) > 0.9
    assert decoder.packet_samples(packets[0]) == rate // 50


@pytest.mark.parametrize("rate", [8000, 16000])
def test_plc_and_fec_fill_the_gap(rate: int) -> None:
    encoder = OpusEncoder(rate, fec=True, packet_loss_perc=20)
    signal = tone(rate)
    packets = [encoder.encode(frame) for frame in frames(signal, rate)]
    n = rate // 50
    plc, fec = OpusDecoder(rate), OpusDecoder(rate)
    lost = {10, 20, 30}
    out_plc, out_fec = [], []
    for i, packet in enumerate(packets):
        if i in lost:
            out_plc.append(plc.conceal(n))
            out_fec.append(fec.decode_fec(packets[i + 1], n))
        else:
            out_plc.append(plc.decode(packet))
            out_fec.append(fec.decode(packet))
    assert all(len(chunk) == 2 * n for chunk in out_plc + out_fec)
    pcm_plc = np.frombuffer(b"".join(out_plc), dtype="<i2")
    pcm_fec = np.frombuffer(b"".join(out_fec), dtype="<i2")
    # Concealment is not silence: the lost frames carry signal.
    for i in lost:
        assert np.sqrt(np.mean(pcm_plc[i * n : (i + 1) * n].astype(float) ** 2)) > 500
    assert correlation(signal, pcm_fec, rate // 100) >= correlation(signal, pcm_plc, rate // 100)
    assert correlation(signal, pcm_fec, rate // 100) > 0.85


def test_conceal_edge_cases() -> None:
    decoder = OpusDecoder(16000)
    assert decoder.conceal(0) == b""
    assert decoder.decode_fec(b"", 0) == b""
    assert len(decoder.decode(b"")) == 640  # an empty payload is a lost 20 ms packet
    assert len(decoder.conceal(16000 * 200 // 1000)) == 2 * 3200  # sliced at 120 ms
    assert len(decoder.decode_fec(b"", 320)) == 640
    assert isinstance(decoder, ConcealingDecoder)


def test_registry_entry_uses_48k_clock() -> None:
    info = get_codec("opus")
    assert info.rtpmap == "opus/48000/2"
    encoder = info.encoder(16000)
    decoder = info.decoder(8000)
    packet = encoder.encode(bytes(640))
    # RFC 7587 §4.1: the decoder may run at any rate whatever the encoder used.
    assert len(decoder.decode(packet)) == 320
    assert isinstance(info.encoder(), OpusEncoder)
    assert len(info.decoder().decode(packet)) == 2 * 960


def test_ctl_and_errors() -> None:
    encoder = OpusEncoder(8000, bitrate=12000, fec=False, complexity=5)
    encoder.set_bitrate(32000)
    encoder.set_fec(True, 10)
    with pytest.raises(OpusError, match="opus_encoder_ctl"):
        encoder.set_bitrate(-5)
    with pytest.raises(OpusError, match="opus_encode"):
        encoder.encode(bytes(100))  # not a valid Opus frame length
    with pytest.raises(ValueError, match="even length"):
        encoder.encode(b"\x00")
    with pytest.raises(ValueError, match="Opus runs at"):
        OpusDecoder(44100)
    # A corrupt packet from the network is concealed (20 ms), never raised.
    decoder = OpusDecoder(8000)
    assert len(decoder.decode(b"\xff\xff\xff")) == 320
    assert len(decoder.decode(b"\x03")) == 320
    # Concealment of any length, even not a multiple of 2.5 ms (timestamps are the peer's).
    assert len(decoder.conceal(323)) == 646
    assert len(decoder.decode_fec(b"\x03", 323)) == 646
    encoder.close()
    encoder.close()


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus_module, "_lib", None)
    monkeypatch.setattr(opus_module.ctypes.util, "find_library", lambda name: None)
    assert not opus_available()
    with pytest.raises(OpusError, match="libopus0"):
        OpusEncoder(16000)
