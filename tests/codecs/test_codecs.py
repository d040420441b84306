import dataclasses

import pytest

from sipbridge import codecs
from sipbridge.codecs import CodecInfo, UnknownCodec, codec_names, get_codec, register
from sipbridge.codecs.g711 import AlawDecoder, AlawEncoder, UlawDecoder, UlawEncoder


def test_g711_is_registered_on_import() -> None:
    assert {"pcmu", "pcma", "g722", "opus"} <= set(codec_names())
    assert codec_names() == sorted(codec_names())


@pytest.mark.parametrize("name", ["pcmu", "PCMU", "Pcmu"])
def test_lookup_is_case_insensitive(name: str) -> None:
    info = get_codec(name)
    assert info.name == "pcmu"
    assert info.encoding_name == "PCMU"
    assert info.static_payload_type == 0
    assert (info.clock_rate, info.sample_rate) == (8000, 8000)


def test_pcma_description_and_factories() -> None:
    info = get_codec("pcma")
    assert info.static_payload_type == 8
    assert isinstance(info.encoder(), AlawEncoder)
    assert isinstance(info.decoder(), AlawDecoder)
    assert isinstance(get_codec("pcmu").encoder(), UlawEncoder)
    assert isinstance(get_codec("pcmu").decoder(), UlawDecoder)
    assert info.encoder().encode(b"\x00\x00") == b"\xd5"
    assert info.decoder().decode(b"\xd5") == b"\x08\x00"
    assert get_codec("pcmu").encoder().encode(b"\x00\x00") == b"\xff"
    assert get_codec("pcmu").decoder().decode(b"\x00") == (-32124).to_bytes(
        2, "little", signed=True
    )


def test_unknown_codec() -> None:
    with pytest.raises(UnknownCodec):
        get_codec("ilbc")
    with pytest.raises(KeyError):
        get_codec("g729")


def test_frame_helpers() -> None:
    info = get_codec("pcmu")
    assert info.samples_per_frame(20) == 160
    assert info.frame_bytes(20) == 320
    assert info.timestamp_increment(20) == 160
    wide = dataclasses.replace(info, name="wide", sample_rate=16000)
    assert wide.frame_bytes(20) == 640
    assert wide.timestamp_increment(20) == 160


def test_register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "_registry", dict(codecs._registry))
    info = CodecInfo("L16x", "L16X", 8000, 8000, None, UlawEncoder, UlawDecoder)
    register(info)
    register(info)  # the same codec again is harmless
    assert get_codec("l16x") is info
    assert "l16x" in codec_names()
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(info, clock_rate=16000))
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(get_codec("pcmu"), static_payload_type=None))


def test_rtpmap_and_rates() -> None:
    assert get_codec("pcmu").rtpmap == "PCMU/8000"
    assert get_codec("g722").rtpmap == "G722/8000"
    assert get_codec("opus").rtpmap == "opus/48000/2"
    g722 = get_codec("g722")
    assert (g722.clock_rate, g722.sample_rate, g722.static_payload_type) == (8000, 16000, 9)
    assert g722.timestamp_increment(20) == 160
    assert g722.frame_bytes(20) == 640
    opus = get_codec("opus")
    assert opus.static_payload_type is None
    assert opus.timestamp_increment(20) == 960
    assert opus.fmtp is not None and "useinbandfec=1" in opus.fmtp
    # The rate to run each codec at for an 8 or 16 kHz agent: no resampler when native.
    assert opus.audio_rate_for(8000) == 8000
    assert opus.audio_rate_for(16000) == 16000
    assert g722.audio_rate_for(8000) == 8000
    assert get_codec("pcmu").audio_rate_for(16000) == 8000


def test_rate_specific_factories() -> None:
    assert len(get_codec("g722").decoder(8000).decode(bytes(160))) == 320
    assert len(get_codec("g722").decoder().decode(bytes(160))) == 640
    assert len(get_codec("opus").encoder(8000).encode(bytes(320))) > 0
    assert isinstance(get_codec("pcmu").encoder(8000), UlawEncoder)
    with pytest.raises(ValueError, match="cannot encode"):
        get_codec("pcmu").encoder(16000)
    with pytest.raises(ValueError, match="cannot decode"):
        get_codec("g722").decoder(11025)
