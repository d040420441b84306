from pathlib import Path

import pytest

from sipbridge.sdp import MediaDescription, Origin, SdpError, SessionDescription, parse_sdp
from tests.sip.test_ua import torture_dir

# The shared torture messages: $SIPBRIDGE_TESTDATA, else shared/testdata beside the checkout.
TESTDATA = torture_dir()

SIPP_OFFER = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-11,16\r\n"
)

# The body of RFC 4475 §3.4.2 (sdp01).
RFC4475_SDP01 = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)


def body(path: Path) -> bytes:
    data = path.read_bytes()
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    return data.split(sep, 1)[1]


def test_parse_sipp_offer() -> None:
    sdp = parse_sdp(SIPP_OFFER)
    assert sdp.version == 0
    assert sdp.origin == Origin("user1", "53655765", "2353687637", "IN", "IP4", "127.0.0.1")
    assert sdp.session_name == "-"
    assert sdp.connection == "127.0.0.1"
    assert sdp.times == [(0, 0)]
    [audio] = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        6000,
        "RTP/AVP",
        ["8", "101"],
    )
    assert audio.connection is None
    assert sdp.connection_for(audio) == "127.0.0.1"
    assert audio.rtpmap() == {8: ("PCMA", 8000, None), 101: ("telephone-event", 8000, None)}
    assert audio.fmtp() == {101: "0-11,16"}
    assert audio.direction == "sendrecv"
    assert audio.ptime is None
    assert sdp.serialize() == SIPP_OFFER


def test_rfc4475_sdp01_body() -> None:
    assert body(TESTDATA / "rfc4475/sdp01.dat") == RFC4475_SDP01
    sdp = parse_sdp(RFC4475_SDP01)
    audio, video = sdp.media
    assert audio.formats == ["0", "12"]
    assert audio.rtpmap() == {}
    # "a=rtpmap:31 LPC" has no clock rate: ignored rather than failing the description.
    assert video.rtpmap() == {}
    assert video.attributes == [("rtpmap", "31 LPC")]
    assert sdp.serialize() == RFC4475_SDP01


def test_rfc5118_ipv6() -> None:
    sdp = parse_sdp(body(TESTDATA / "rfc5118/ipv6-in-sdp.dat"))
    assert sdp.connection == "2001:db8::20"
    assert sdp.origin.addrtype == "IP6"
    assert sdp.times == [(3338481189, 3370017201)]
    assert sdp.media[0].rtpmap() == {2: ("G726-32", 8000, None)}
    assert b"c=IN IP6 2001:db8::20\r\n" in sdp.serialize()


def test_ipv6_loopback_offer_round_trips() -> None:
    data = (
        b"v=0\r\no=- 7 7 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    )
    sdp = parse_sdp(data)
    assert sdp.origin == Origin("-", "7", "7", "IN", "IP6", "::1")
    assert sdp.connection == "::1" and sdp.connection_type == "IP6"
    assert sdp.connection_type_for(sdp.media[0]) == "IP6"
    assert sdp.serialize() == data


def test_a_domain_name_keeps_its_address_type() -> None:
    """RFC 4566 §5.7: a c= line may carry a domain name; its addrtype says which family
    to resolve it in (the address alone cannot)."""
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP6 media.example.com\r\ns=-\r\nc=IN IP6 media.example.com\r\n"
        b"t=0 0\r\nm=audio 5000 RTP/AVP 0\r\nm=audio 5002 RTP/AVP 0\r\n"
        b"c=IN IP4 other.example.com\r\n"
    )
    first, second = sdp.media
    assert sdp.connection_type_for(first) == "IP6"
    assert sdp.connection_type_for(second) == "IP4"
    out = sdp.serialize()
    assert b"c=IN IP6 media.example.com\r\n" in out
    assert b"c=IN IP4 other.example.com\r\n" in out


def test_rfc5118_media_level_connections() -> None:
    sdp = parse_sdp(body(TESTDATA / "rfc5118/mult-ip-in-sdp.dat"))
    audio, video = sdp.media
    assert sdp.connection is None
    assert sdp.connection_for(audio) == "192.0.2.1"
    assert sdp.connection_for(video) == "2001:db8::1"
    assert sdp.session_name == "-"  # "s=" was empty
    out = sdp.serialize().decode()
    assert "m=audio 22334 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n" in out
    assert "c=IN IP6 2001:db8::1\r\n" in out


def test_lf_only_blank_lines_and_unknown_lines() -> None:
    sdp = parse_sdp(
        b"v=0\no=- 1 2 IN IP4 10.0.0.1\ns=call\ni=info\nc=IN IP4 10.0.0.1\nb=AS:64\n"
        b"t=0 0\nr=7d 1h 0 25h\ny=unknown\na=tool:x\n\n"
        b"m=audio 4000/2 RTP/AVP 0\ni=voice\nb=TIAS:64000\nq=?\na=ptime:30\na=sendonly\n\n"
    )
    assert sdp.session_name == "call"
    assert sdp.attributes == [("tool", "x")]
    assert sdp.other == [("i", "info"), ("b", "AS:64"), ("r", "7d 1h 0 25h"), ("y", "unknown")]
    [audio] = sdp.media
    assert (audio.port, audio.port_count) == (4000, 2)
    assert audio.other == [("i", "voice"), ("b", "TIAS:64000"), ("q", "?")]
    assert audio.ptime == 30
    assert audio.direction == "sendonly"
    assert sdp.serialize() == (
        b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=call\r\ni=info\r\nc=IN IP4 10.0.0.1\r\n"
        b"b=AS:64\r\nt=0 0\r\nr=7d 1h 0 25h\r\ny=unknown\r\na=tool:x\r\n"
        b"m=audio 4000/2 RTP/AVP 0\r\ni=voice\r\nb=TIAS:64000\r\nq=?\r\na=ptime:30\r\n"
        b"a=sendonly\r\n"
    )
    assert parse_sdp(sdp.serialize()) == sdp


def test_first_media_connection_wins() -> None:
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        b"c=IN IP4 224.2.1.1/127\r\nc=IN IP4 224.2.1.2/127\r\n"
    )
    assert sdp.connection_for(sdp.media[0]) == "224.2.1.1/127"


def test_direction_falls_back_to_session_level() -> None:
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=recvonly\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=inactive\r\n"
    )
    first, second = sdp.media
    assert first.direction == "sendrecv"
    assert sdp.direction_for(first) == "recvonly"
    assert sdp.direction_for(second) == "inactive"


def test_attribute_helpers_tolerate_junk() -> None:
    media = MediaDescription(
        "audio",
        4000,
        "RTP/AVP",
        ["0", "96", "97"],
        attributes=[
            ("rtpmap", "96 opus/48000/2"),
            ("rtpmap", "97 AMR/8000"),
            ("rtpmap", "97 AMR-WB/16000"),  # duplicate: the first one wins
            ("rtpmap", "x PCMU/8000"),
            ("rtpmap", "98 PCMU"),
            ("rtpmap", "200 PCMU/8000"),
            ("rtpmap", None),
            ("fmtp", "96 useinbandfec=1; stereo=0"),
            ("fmtp", "bad"),
            ("ptime", "abc"),
        ],
    )
    assert media.rtpmap() == {96: ("opus", 48000, 2), 97: ("AMR", 8000, None)}
    assert media.fmtp() == {96: "useinbandfec=1; stereo=0"}
    assert media.ptime is None
    assert media.attribute("fmtp") == "96 useinbandfec=1; stereo=0"
    assert media.attribute("missing") is None
    media.attributes = [("ptime", "20.0")]
    assert media.ptime == 20


def test_non_utf8_text_round_trips() -> None:
    data = SIPP_OFFER.replace(b"s=-", b"s=caf\xe9")
    assert parse_sdp(data).serialize() == data


def test_build_and_serialize() -> None:
    sdp = SessionDescription(
        origin=Origin("-", "1", "1", "IN", "IP6", "::1"),
        connection="::1",
        media=[MediaDescription("audio", 5000, "RTP/AVP", ["0"], attributes=[("sendrecv", None)])],
    )
    assert sdp.serialize() == (
        b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/AVP 0\r\na=sendrecv\r\n"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "starts with v="),
        (b"o=- 1 1 IN IP4 h\r\n", "starts with v="),
        (b"v=1\r\no=- 1 1 IN IP4 h\r\n", "version"),
        (b"v=0\r\ns=-\r\n", "missing o="),
        (b"v=0\r\no=- 1 1 IN IP4\r\n", "o= needs 6 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\n", "more than one o="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nnot a line\r\n", "invalid SDP line"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\n=x\r\n", "invalid SDP line"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nt=0\r\n", "invalid t="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "invalid c="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IPX 1.2.3.4\r\n", "invalid c="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio\r\n", "invalid m="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", "invalid port"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", "range"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 5/0 RTP/AVP 0\r\n", "range"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\na=:x\r\n", "invalid a="),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 5000 RTP/AVP 0\r\n", "no c= line"),
        # RFC 4566 §5.7: the address must be of the type the line names.
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 ::1\r\n", "not of type IP4"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP6 192.0.2.1\r\n", "not of type IP6"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(data)


def test_rejected_stream_needs_no_connection() -> None:
    sdp = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP\r\n")
    assert sdp.media[0].formats == []
    assert sdp.connection_for(sdp.media[0]) is None


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)
