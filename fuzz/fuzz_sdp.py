"""Fuzz the SDP parser, offer/answer negotiation and the answer builder with atheris.

    python fuzz/fuzz_sdp.py -max_total_time=60 fuzz/corpus/sdp

An input is one SDP body (an offer). ``parse_sdp`` raises only SdpError; what parses
serializes and parses again; ``a=crypto`` lines never raise; ``negotiate`` raises only
NoCommonCodec or SdpError, under each SRTP policy, and chooses SRTP exactly when it is
required; the answer ``build_answer`` makes from a negotiation (with our key when SRTP)
serializes, and parses again with the chosen codec on the chosen port.
"""

from __future__ import annotations

import sys

from _common import instrumented, run

with instrumented(__name__ == "__main__"):
    from sipbridge.sdp.crypto import answer_crypto, crypto_attributes
    from sipbridge.sdp.negotiate import NoCommonCodec, SrtpPolicy, build_answer, negotiate
    from sipbridge.sdp.session import SdpError, parse_sdp

CODECS = ["pcmu", "pcma", "g722", "opus"]


def check(data: bytes) -> None:
    try:
        offer = parse_sdp(data)
    except SdpError:
        return
    # The accessors the negotiation and the runtime read.
    for media in offer.media:
        media.rtpmap(), media.fmtp(), media.direction, media.ptime
        offer.connection_for(media), offer.direction_for(media)
    # What parsed serializes, and that serialization is SDP again.
    parse_sdp(offer.serialize())
    for media in offer.media:
        crypto_attributes(media.attributes)  # never raises: bad lines are skipped
    for policy in (SrtpPolicy.OFF, SrtpPolicy.REQUIRED):
        try:
            strict = negotiate(offer, CODECS, policy)
        except (NoCommonCodec, SdpError):
            continue
        assert (strict.srtp is not None) == (policy is SrtpPolicy.REQUIRED), strict
    try:
        chosen = negotiate(offer, CODECS)
    except (NoCommonCodec, SdpError):
        return
    crypto = answer_crypto(chosen.srtp) if chosen.srtp is not None else None
    assert chosen.codec in CODECS, chosen
    assert 0 <= chosen.payload_type <= 127, chosen
    assert 0 < chosen.remote_port < 65536, chosen
    for version in (0, 1):
        answer = build_answer(offer, chosen, "192.0.2.1", 40000, 1234, version, crypto)
        wire = answer.serialize()
        assert isinstance(wire, bytes)
        again = parse_sdp(wire)  # our own answer must be valid SDP
        assert len(again.media) == len(offer.media)
        accepted = again.media[chosen.media_index]
        assert accepted.port == 40000
        assert accepted.formats[0] == str(chosen.payload_type)
        # The offerer negotiates our answer too (RFC 3264 §7): it holds the chosen codec.
        negotiate(again, [chosen.codec])


if __name__ == "__main__":
    run(check, "sdp")
    sys.exit(0)
