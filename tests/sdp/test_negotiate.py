import base64
import dataclasses
import secrets

import pytest

from sipbridge.sdp import (
    CryptoAttribute,
    CryptoSuite,
    Negotiated,
    NoCommonCodec,
    SdpError,
    SrtpMismatch,
    SrtpPolicy,
    answer_crypto,
    build_answer,
    build_offer,
    negotiate,
    offer_crypto,
    parse_crypto,
    parse_sdp,
)
from tests.sdp.test_session import RFC4475_SDP01, SIPP_OFFER

G711 = ["pcmu", "pcma"]


def offer(*media: bytes, session: bytes = b"c=IN IP4 192.0.2.1\r\n") -> bytes:
    return (
        b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\n" + session + b"t=0 0\r\n" + b"".join(media)
    )


def test_sipp_offer() -> None:
    negotiated = negotiate(parse_sdp(SIPP_OFFER), G711)
    assert negotiated == Negotiated(
        payload_type=8,
        codec="pcma",
        clock_rate=8000,
        telephone_event_pt=101,
        remote_address="127.0.0.1",
        remote_port=6000,
        direction="sendrecv",
        ptime=None,
        media_index=0,
    )


def test_sipp_answer() -> None:
    sdp = parse_sdp(SIPP_OFFER)
    answer = build_answer(sdp, negotiate(sdp, G711), "203.0.113.7", 10000, 424242)
    assert answer.serialize() == (
        b"v=0\r\n"
        b"o=- 424242 424242 IN IP4 203.0.113.7\r\n"
        b"s=-\r\n"
        b"c=IN IP4 203.0.113.7\r\n"
        b"t=0 0\r\n"
        b"m=audio 10000 RTP/AVP 8 101\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_ipv6_offer_is_answered_in_ip6() -> None:
    """RFC 4566 §5.2/§5.7: an IPv6 answer says IN IP6 on its o= and c= lines; the
    negotiation carries the offer's address type (the socket family the call needs)."""
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    )
    negotiated = negotiate(sdp, G711)
    assert (negotiated.remote_address, negotiated.remote_type) == ("::1", "IP6")
    answer = build_answer(sdp, negotiated, "::1", 10000, 99).serialize()
    assert b"o=- 99 99 IN IP6 ::1\r\n" in answer
    assert b"c=IN IP6 ::1\r\n" in answer


def test_the_address_type_of_a_named_connection_is_the_offers() -> None:
    sdp = parse_sdp(offer(b"m=audio 5000 RTP/AVP 0\r\n", session=b"c=IN IP6 pbx.example.com\r\n"))
    negotiated = negotiate(sdp, G711)
    assert (negotiated.remote_address, negotiated.remote_type) == ("pbx.example.com", "IP6")
    assert negotiate(parse_sdp(SIPP_OFFER), G711).remote_type == "IP4"


def test_rfc4475_sdp01_static_table_and_rejected_video() -> None:
    sdp = parse_sdp(RFC4475_SDP01)
    negotiated = negotiate(sdp, ["PCMU"])
    assert (negotiated.payload_type, negotiated.codec, negotiated.clock_rate) == (0, "pcmu", 8000)
    assert negotiated.telephone_event_pt is None
    assert (negotiated.remote_address, negotiated.remote_port) == ("192.0.2.5", 49217)
    answer = build_answer(sdp, negotiated, "198.51.100.1", 20000, 1)
    audio, video = answer.media
    assert (audio.port, audio.formats, audio.proto) == (20000, ["0"], "RTP/AVP")
    assert audio.rtpmap() == {0: ("PCMU", 8000, None)}
    assert audio.ptime == 20
    assert (video.media, video.port, video.formats, video.attributes) == ("video", 0, ["31"], [])
    assert b"a=fmtp" not in answer.serialize()


def test_our_preference_order_wins() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 18 8 0\r\n"))
    assert negotiate(sdp, ["pcmu", "pcma"]).payload_type == 0
    assert negotiate(sdp, ["pcma", "pcmu"]).payload_type == 8
    assert negotiate(sdp, ["pcmu"]).payload_type == 0
    assert negotiate(sdp, ["G729"]).codec == "g729"


def test_offer_order_breaks_ties_within_one_codec() -> None:
    sdp = parse_sdp(
        offer(b"m=audio 4000 RTP/AVP 97 96\r\na=rtpmap:97 PCMU/8000\r\na=rtpmap:96 PCMU/8000\r\n")
    )
    assert negotiate(sdp, ["pcma", "pcmu"]).payload_type == 97


def test_only_g722_or_only_opus_is_answered_with_it() -> None:
    g722 = parse_sdp(offer(b"m=audio 4000 RTP/AVP 9\r\n"))
    chosen = negotiate(g722, ["pcmu", "pcma", "g722", "opus"])
    assert (chosen.codec, chosen.payload_type, chosen.clock_rate) == ("g722", 9, 8000)
    opus = parse_sdp(
        offer(
            b"m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
            b"a=fmtp:111 useinbandfec=1\r\n"
        )
    )
    chosen = negotiate(opus, ["pcmu", "pcma", "g722", "opus"])
    assert (chosen.codec, chosen.payload_type, chosen.clock_rate) == ("opus", 111, 48000)
    answer = build_answer(opus, chosen, "192.0.2.9", 5000, session_id=7, version=2)
    [media] = answer.media
    assert media.rtpmap() == {111: ("opus", 48000, 2)}
    assert "useinbandfec=1" in media.fmtp()[111]
    assert answer.origin.session_version == "9"


def test_dynamic_payload_type_mapping() -> None:
    sdp = parse_sdp(
        offer(
            b"m=audio 4000 RTP/AVP 96 97 98\r\n"
            b"a=rtpmap:96 opus/48000/2\r\n"
            b"a=rtpmap:97 pcmu/8000\r\n"
            b"a=rtpmap:98 TELEPHONE-EVENT/8000\r\n"
            b"a=ptime:30\r\n"
        )
    )
    negotiated = negotiate(sdp, G711)
    assert (negotiated.payload_type, negotiated.codec) == (97, "pcmu")
    assert negotiated.telephone_event_pt == 98
    assert negotiated.ptime == 30
    audio = build_answer(sdp, negotiated, "10.0.0.1", 5000, 9).media[0]
    assert audio.formats == ["97", "98"]
    # The answer keeps the offer's payload type numbers and spelling (RFC 3264 §6.1).
    assert audio.rtpmap() == {97: ("pcmu", 8000, None), 98: ("TELEPHONE-EVENT", 8000, None)}
    assert audio.fmtp() == {98: "0-16"}


def test_non_numeric_formats_are_skipped() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP x 8\r\n"))
    assert negotiate(sdp, G711).payload_type == 8


def test_rtpmap_overrides_static_table() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 G729/8000\r\n"))
    assert negotiate(sdp, ["pcmu", "pcma"]).payload_type == 8


def test_wrong_clock_rate_or_channels_is_not_a_match() -> None:
    sdp = parse_sdp(
        offer(
            b"m=audio 4000 RTP/AVP 96 97 0 101 102\r\na=rtpmap:96 PCMU/16000\r\n"
            b"a=rtpmap:97 PCMA/8000/2\r\na=rtpmap:101 telephone-event/48000\r\n"
            b"a=rtpmap:102 telephone-event/8000\r\n"
        )
    )
    negotiated = negotiate(sdp, G711)
    assert negotiated.payload_type == 0
    # RFC 4733 §7.1.1: only the event stream at the codec's clock rate goes with it.
    assert negotiated.telephone_event_pt == 102


@pytest.mark.parametrize(
    "media",
    [
        b"m=audio 4000 RTP/AVP 18 3\r\n",
        b"m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n",
        b"m=audio 4000 RTP/AVP 96 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        b"m=audio 4000 RTP/AVP\r\n",
        b"m=audio 0 RTP/AVP 0\r\n",
        b"m=audio 4000 RTP/SAVP 0\r\n",
        b"m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n",
        b"m=video 4000 RTP/AVP 0\r\n",
        b"",
    ],
)
def test_no_common_codec(media: bytes) -> None:
    with pytest.raises(NoCommonCodec):
        negotiate(parse_sdp(offer(media)), G711)


def test_no_common_codec_says_why() -> None:
    with pytest.raises(NoCommonCodec, match="RTP/SAVP"):
        negotiate(parse_sdp(offer(b"m=audio 4000 RTP/SAVP 0\r\n")), G711)
    with pytest.raises(NoCommonCodec, match="GSM/8000"):
        negotiate(parse_sdp(offer(b"m=audio 4000 RTP/AVP 3\r\n")), G711)
    with pytest.raises(NoCommonCodec, match="no audio stream"):
        negotiate(parse_sdp(offer()), G711)


def test_picks_a_later_usable_audio_stream() -> None:
    sdp = parse_sdp(
        offer(
            b"m=video 5000 RTP/AVP 31\r\n"
            b"m=audio 4000 RTP/SAVP 0\r\n"
            b"m=audio 0 RTP/AVP 0\r\n"
            b"m=audio 4002 RTP/AVPF 8\r\nc=IN IP6 2001:db8::5\r\n"
        )
    )
    negotiated = negotiate(sdp, G711)
    assert negotiated.media_index == 3
    assert (negotiated.remote_address, negotiated.remote_port) == ("2001:db8::5", 4002)
    answer = build_answer(sdp, negotiated, "2001:db8::1", 6000, 5)
    assert [(m.media, m.port, m.proto) for m in answer.media] == [
        ("video", 0, "RTP/AVP"),
        ("audio", 0, "RTP/SAVP"),
        ("audio", 0, "RTP/AVP"),
        ("audio", 6000, "RTP/AVPF"),
    ]
    text = answer.serialize()
    assert b"o=- 5 5 IN IP6 2001:db8::1\r\n" in text
    assert b"c=IN IP6 2001:db8::1\r\n" in text


@pytest.mark.parametrize(
    ("offered", "ours"),
    [
        (b"", "sendrecv"),
        (b"a=sendrecv\r\n", "sendrecv"),
        (b"a=sendonly\r\n", "recvonly"),
        (b"a=recvonly\r\n", "sendonly"),
        (b"a=inactive\r\n", "inactive"),
    ],
)
def test_direction_is_mirrored(offered: bytes, ours: str) -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n" + offered))
    negotiated = negotiate(sdp, G711)
    assert negotiated.direction == ours
    answer = build_answer(sdp, negotiated, "10.0.0.1", 5000, 1)
    assert answer.media[0].direction == ours
    assert answer.media[0].attributes[-1] == (ours, None)


def test_session_level_direction_is_mirrored() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n", session=b"c=IN IP4 h\r\na=sendonly\r\n"))
    assert negotiate(sdp, G711).direction == "recvonly"


def test_answer_keeps_offer_timing_and_names_no_software() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n").replace(b"t=0 0", b"t=100 200"))
    answer = build_answer(sdp, negotiate(sdp, G711), "10.0.0.1", 5000, 1)
    assert answer.times == [(100, 200)]
    text = answer.serialize()
    assert b"sipbridge" not in text.lower()
    assert b"a=tool" not in text
    assert parse_sdp(text) == answer


def test_build_answer_rejects_a_foreign_negotiation() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n"))
    negotiated = dataclasses.replace(negotiate(sdp, G711), media_index=1)
    with pytest.raises(ValueError, match="no m-line 1"):
        build_answer(sdp, negotiated, "10.0.0.1", 5000, 1)
    with pytest.raises(ValueError, match="does not belong"):
        build_answer(sdp, dataclasses.replace(negotiated, media_index=0, payload_type=8), "h", 1, 1)


def test_missing_connection_address_on_a_built_offer() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n"))
    sdp.connection = None
    with pytest.raises(SdpError, match="no connection address"):
        negotiate(sdp, G711)


# ---------------------------------------------------------------- SRTP (RFC 4568)

KEY_A = secrets.token_bytes(30)
KEY_B = secrets.token_bytes(30)


def savp(port: int, *cryptos: str, proto: str = "RTP/SAVP") -> bytes:
    lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return f"m=audio {port} {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{lines}".encode()


def line(tag: int, key: bytes, suite: str = "AES_CM_128_HMAC_SHA1_80", extra: str = "") -> str:
    return f"{tag} {suite} inline:{base64.b64encode(key).decode()}{extra}"


def test_savp_offer_is_answered_with_one_crypto_line_and_our_key() -> None:
    sdp = parse_sdp(
        offer(
            savp(
                4000,
                line(1, KEY_A, "AES_256_CM_HMAC_SHA1_80"),
                line(2, KEY_A, extra="|2^31|1:1"),
                line(3, KEY_A, "AES_CM_128_HMAC_SHA1_32", "|2^31"),
                line(4, KEY_B),
            )
        )
    )
    for policy in (SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED):
        negotiated = negotiate(sdp, G711, policy)
        # The first usable line in the offer's order: tag 3 (1 is unknown, 2 has an MKI).
        assert negotiated.srtp == CryptoAttribute(
            3, CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY_A, lifetime=1 << 31
        )
    ours = answer_crypto(negotiated.srtp)
    answer = build_answer(sdp, negotiated, "10.0.0.1", 5000, 1, crypto=ours)
    [media] = answer.media
    assert media.proto == "RTP/SAVP"
    cryptos = [value for name, value in media.attributes if name == "crypto"]
    assert cryptos == [ours.value()]
    assert cryptos[0].startswith("3 AES_CM_128_HMAC_SHA1_32 inline:")
    parsed = parse_crypto(cryptos[0])
    assert isinstance(parsed, CryptoAttribute) and parsed.key == ours.key != KEY_A
    assert parse_sdp(answer.serialize()) == answer


def test_answer_crypto_must_match_the_accepted_line() -> None:
    sdp = parse_sdp(offer(savp(4000, line(5, KEY_A))))
    negotiated = negotiate(sdp, G711)
    assert negotiated.srtp is not None
    with pytest.raises(ValueError, match="crypto"):
        build_answer(sdp, negotiated, "h", 1, 1)  # SRTP accepted, no key of ours
    other_tag = CryptoAttribute(6, negotiated.srtp.suite, KEY_B)
    with pytest.raises(ValueError, match="crypto"):
        build_answer(sdp, negotiated, "h", 1, 1, crypto=other_tag)
    plain = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n"))
    with pytest.raises(ValueError, match="crypto"):
        build_answer(plain, negotiate(plain, G711), "h", 1, 1, crypto=answer_crypto(other_tag))


def test_optional_takes_plain_rtp_when_no_srtp_is_offered() -> None:
    sdp = parse_sdp(offer(b"m=audio 4000 RTP/AVP 0\r\n"))
    for policy in (SrtpPolicy.OPTIONAL, SrtpPolicy.OFF):
        negotiated = negotiate(sdp, G711, policy)
        assert negotiated.srtp is None
        assert b"crypto" not in build_answer(sdp, negotiated, "h", 1, 1).serialize()
    # "best effort" crypto on RTP/AVP is not SRTP: ignored (and refused when required).
    best_effort = parse_sdp(offer(savp(4000, line(1, KEY_A), proto="RTP/AVP")))
    assert negotiate(best_effort, G711).srtp is None
    with pytest.raises(SrtpMismatch) as refused:
        negotiate(best_effort, G711, SrtpPolicy.REQUIRED)
    assert refused.value.reason == "srtp_required"


def test_required_refuses_plain_and_keyless_offers() -> None:
    for media in (
        b"m=audio 4000 RTP/AVP 0\r\n",
        b"m=audio 4000 RTP/AVPF 0\r\n",
        savp(4000),  # no a=crypto at all
        savp(4000, line(1, KEY_A, "AEAD_AES_256_GCM"), line(2, KEY_A[:20])),
    ):
        with pytest.raises(SrtpMismatch) as refused:
            negotiate(parse_sdp(offer(media)), G711, SrtpPolicy.REQUIRED)
        assert refused.value.reason == "srtp_required"
    assert issubclass(SrtpMismatch, NoCommonCodec)  # still a 488 for older callers
    with pytest.raises(SrtpMismatch, match="AEAD_AES_256_GCM"):
        negotiate(parse_sdp(offer(savp(4000, line(1, KEY_A, "AEAD_AES_256_GCM")))), G711)


def test_off_refuses_srtp_only_offers() -> None:
    for proto in ("RTP/SAVP", "RTP/SAVPF"):
        sdp = parse_sdp(offer(savp(4000, line(1, KEY_A), proto=proto)))
        assert negotiate(sdp, G711).srtp is not None
        with pytest.raises(SrtpMismatch) as refused:
            negotiate(sdp, G711, SrtpPolicy.OFF)
        assert refused.value.reason == "srtp_not_allowed"


def test_optional_refuses_savp_without_a_usable_key() -> None:
    sdp = parse_sdp(offer(savp(4000, line(1, KEY_A, extra="|2^31|1:4"))))
    with pytest.raises(SrtpMismatch, match="mki not supported") as refused:
        negotiate(sdp, G711)
    assert refused.value.reason == "srtp_no_usable_crypto"


def test_policy_picks_among_several_streams() -> None:
    # An SAVP stream and a plain fallback stream (the pre-RFC 5939 two-m-line trick).
    sdp = parse_sdp(
        offer(savp(4000, line(1, KEY_A)), b"m=audio 4002 RTP/AVP 0\r\n", b"m=audio 4004 X 0\r\n")
    )
    assert negotiate(sdp, G711).media_index == 0
    assert negotiate(sdp, G711, SrtpPolicy.REQUIRED).media_index == 0
    off = negotiate(sdp, G711, SrtpPolicy.OFF)
    assert (off.media_index, off.remote_port, off.srtp) == (1, 4002, None)
    answer = build_answer(sdp, off, "h", 5000, 1)
    assert [(m.port, m.proto) for m in answer.media] == [
        (0, "RTP/SAVP"),
        (5000, "RTP/AVP"),
        (0, "X"),
    ]
    # A codec mismatch on the SRTP stream is still "no common codec".
    no_codec = parse_sdp(offer(savp(4000, line(1, KEY_A)).replace(b" 0 101", b" 18 101")))
    with pytest.raises(NoCommonCodec) as refused:
        negotiate(no_codec, G711, SrtpPolicy.REQUIRED)
    assert not isinstance(refused.value, SrtpMismatch)


def test_delayed_offer_lists_every_codec_and_telephone_event() -> None:
    offer = build_offer(["pcmu", "pcma", "g722", "opus"], "192.0.2.1", 40000, session_id=7)
    text = offer.serialize().decode()
    assert "m=audio 40000 RTP/AVP 0 8 9 96 101 102\r\n" in text
    assert "a=rtpmap:96 opus/48000/2\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text
    assert "a=rtpmap:102 telephone-event/48000\r\n" in text
    assert "a=fmtp:101 0-16\r\n" in text
    assert "a=sendrecv\r\n" in text and "c=IN IP4 192.0.2.1\r\n" in text
    parsed = parse_sdp(offer.serialize())
    assert parsed.media[0].port == 40000
    # The caller's answer (PCMA and its telephone-event) goes through negotiate().
    answer = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    chosen = negotiate(answer, ["pcmu", "pcma", "g722", "opus"])
    assert (chosen.codec, chosen.telephone_event_pt, chosen.remote_port) == ("pcma", 101, 5004)


def test_an_srtp_offer_is_savp_with_our_keys_and_its_answer_negotiates() -> None:
    keys = offer_crypto()
    offer = build_offer(["pcmu"], "192.0.2.1", 40000, session_id=7, crypto=keys)
    [media] = parse_sdp(offer.serialize()).media
    assert media.proto == "RTP/SAVP"
    assert [parse_crypto(v or "") for n, v in media.attributes if n == "crypto"] == keys
    # An answer taking tag 2 (RFC 4568 §7.1.2: one line, its own key).
    theirs = answer_crypto(keys[1])
    answer = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/SAVP 0\r\na=crypto:" + theirs.value().encode() + b"\r\n"
    )
    chosen = negotiate(answer, ["pcmu"], SrtpPolicy.REQUIRED)
    assert chosen.srtp == theirs
    # A plain answer to it fails the policy the offerer holds it to.
    plain = parse_sdp(answer.serialize().replace(b"RTP/SAVP", b"RTP/AVP"))
    with pytest.raises(SrtpMismatch):
        negotiate(plain, ["pcmu"], SrtpPolicy.REQUIRED)


def test_delayed_offer_in_ipv6() -> None:
    offer = build_offer(["pcma"], "2001:db8::1", 40000, session_id=7, version=1)
    text = offer.serialize().decode()
    assert "o=- 7 8 IN IP6 2001:db8::1\r\n" in text and "c=IN IP6 2001:db8::1\r\n" in text
    assert "m=audio 40000 RTP/AVP 8 101\r\n" in text
