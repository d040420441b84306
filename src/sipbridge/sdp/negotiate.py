"""SDP offer/answer for one audio stream (RFC 3264).

We answer an offer (RFC 3264 §6): accept the first usable audio stream with one codec and,
when offered, telephone-event (RFC 4733); reject every other stream by setting its port to 0.

SRTP with SDES keys (RFC 3711, RFC 4568) follows the call's :class:`SrtpPolicy`:

* ``off``: only RTP/AVP(F) streams are accepted; an offer with nothing else is refused
  with :class:`SrtpMismatch` (``srtp_not_allowed``).
* ``optional`` (the default): the first acceptable stream in offer order wins; an
  RTP/SAVP(F) stream is acceptable when one of its ``a=crypto`` lines is usable
  (sdp/crypto.py), an RTP/AVP(F) stream always (plain RTP). An offer whose only streams
  are SAVP without a usable key is refused (``srtp_no_usable_crypto``).
* ``required``: only RTP/SAVP(F) with a usable key; otherwise ``srtp_required``.

``a=crypto`` lines on an RTP/AVP stream ("best effort" SRTP, not in RFC 4568 §3.1.4 which
defines the attribute for SRTP profiles only) are ignored: such a stream is plain RTP.
The answer (RFC 4568 §7.1.2) keeps the offer's profile and carries exactly one
``a=crypto`` line, with the tag and suite of the offered line we accepted and our own key.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sipbridge.codecs import UnknownCodec, get_codec
from sipbridge.sdp.crypto import CryptoAttribute, crypto_attributes
from sipbridge.sdp.session import (
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    address_type,
)

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Negotiated",
    "NoCommonCodec",
    "SrtpMismatch",
    "SrtpPolicy",
    "build_answer",
    "build_offer",
    "negotiate",
]

# RFC 3551 §6 table 4: static audio payload types, valid without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: Final[dict[int, tuple[str, int, int | None]]] = {
    0: ("PCMU", 8000, None),
    3: ("GSM", 8000, None),
    4: ("G723", 8000, None),
    5: ("DVI4", 8000, None),
    6: ("DVI4", 16000, None),
    7: ("LPC", 8000, None),
    8: ("PCMA", 8000, None),
    9: ("G722", 8000, None),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, None),
    12: ("QCELP", 8000, None),
    13: ("CN", 8000, None),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, None),
    16: ("DVI4", 11025, None),
    17: ("DVI4", 22050, None),
    18: ("G729", 8000, None),
}

# RTP/AVPF (RFC 4585) is plain RTP with earlier feedback, which we may ignore; likewise
# RTP/SAVPF is RTP/SAVP (RFC 3711 §12). DTLS-SRTP (UDP/TLS/RTP/SAVP, RFC 5763) is not
# supported.
_PLAIN_RTP_PROFILES: Final = ("RTP/AVP", "RTP/AVPF")
_SRTP_PROFILES: Final = ("RTP/SAVP", "RTP/SAVPF")
_TELEPHONE_EVENT: Final = "telephone-event"
_ANSWER_DIRECTION: Final = {
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
    "sendrecv": "sendrecv",
}
_ANSWER_PTIME: Final = 20
# RFC 4733 §3.2: events 0-15 are DTMF digits, 16 is flash.
_TELEPHONE_EVENT_FMTP: Final = "0-16"


class NoCommonCodec(Exception):
    """The offer has no audio stream we can accept (answer 488, RFC 3261 §13.3.1.1)."""


class SrtpMismatch(NoCommonCodec):
    """No stream is acceptable because of SRTP (488 too): ``reason`` is the call
    record's reason, ``srtp_required``, ``srtp_not_allowed`` or ``srtp_no_usable_crypto``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SrtpPolicy(enum.Enum):
    """Whether a call may or must use SRTP (per trunk, else the server's ``--srtp``)."""

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class Negotiated:
    """The outcome of :func:`negotiate`.

    ``remote_type`` is the address type of ``remote_address`` (``IP4`` or ``IP6``, RFC 4566
    §5.7): the family of the socket the call's media needs, also when the address is a
    domain name. ``direction`` is ours, as written in the answer: ``recvonly`` when the offer was
    ``sendonly`` (we must not send), and so on. ``ptime`` is the offer's packetization time,
    None when it gave none. ``media_index`` is the position of the accepted m-line.
    """

    payload_type: int
    codec: str
    clock_rate: int
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    direction: str
    ptime: int | None
    media_index: int = 0
    # The offered a=crypto line we accepted (the caller's key, RFC 4568 §7.1.2); None for
    # plain RTP.
    srtp: CryptoAttribute | None = None
    remote_type: str = "IP4"


def _encodings(media: MediaDescription) -> list[tuple[int, str, int, int | None]]:
    """(payload type, encoding name, clock rate, channels) for each format, in offer
    order; formats that are neither mapped nor static are left out."""
    rtpmap = media.rtpmap()
    result = []
    for fmt in media.formats:
        # RFC 3551 §3: an RTP/AVP format is a payload type, 0-127 in decimal digits
        # (int() alone would also take "+0", " 0" or "0_0").
        if not (fmt.isascii() and fmt.isdigit()) or int(fmt) > 127:
            continue
        pt = int(fmt)
        # An rtpmap for a static payload type overrides the table (RFC 4566 §6 allows it).
        mapping = rtpmap.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if mapping is not None:
            result.append((pt, *mapping))
    return result


def _format_matches(name: str, clock: int, channels: int | None) -> bool:
    # "PCMU/16000" is not the codec we implement, nor is a stereo PCMU; Opus is always
    # announced as opus/48000/2 (RFC 7587 §7). Codecs outside the registry are taken on
    # the caller's word.
    try:
        info = get_codec(name)
    except UnknownCodec:
        return channels in (None, 1)
    return info.clock_rate == clock and (channels or 1) == info.channels


def _srtp_refusal(
    media: MediaDescription, policy: SrtpPolicy
) -> tuple[CryptoAttribute | None, tuple[str, str] | None]:
    """(the crypto line to use, None) for an acceptable stream under ``policy``, else
    (None, (record reason, detail))."""
    proto = media.proto.upper()
    if proto in _PLAIN_RTP_PROFILES:
        if policy is SrtpPolicy.REQUIRED:
            return None, ("srtp_required", f"{media.proto} offered, SRTP required")
        return None, None
    if proto not in _SRTP_PROFILES:
        return None, ("", f"unsupported transport {media.proto}")
    if policy is SrtpPolicy.OFF:
        return None, ("srtp_not_allowed", f"{media.proto} offered, SRTP is off")
    usable, skipped = crypto_attributes(media.attributes)
    if usable:
        return usable[0], None  # RFC 4568 §7.1.1: the offerer's order is its preference
    why = "; ".join(f"{s.value.split(' ')[0]}: {s.reason}" for s in skipped) or "no a=crypto"
    reason = "srtp_required" if policy is SrtpPolicy.REQUIRED else "srtp_no_usable_crypto"
    return None, (reason, f"{media.proto} without a usable key ({why})")


def negotiate(
    offer: SessionDescription,
    supported: Sequence[str],
    srtp: SrtpPolicy = SrtpPolicy.OPTIONAL,
) -> Negotiated:
    """Choose the audio stream and codec to answer ``offer`` with.

    ``supported`` holds codec names (case-insensitive) in our order of preference. Streams
    are tried in offer order (audio, port not 0, a profile ``srtp`` allows, see the module
    docstring); within the first one that has a supported codec, the one highest in
    ``supported`` wins, the offer's order breaking ties between payload types of one codec
    (RFC 3264 §6.1 lets the answerer apply its own preference). Raises SrtpMismatch when
    the SRTP policy or keys ruled out every stream, NoCommonCodec when nothing else fits.
    """
    rank = {name.lower(): index for index, name in enumerate(supported)}
    reasons: list[str] = []
    srtp_reason: str | None = None
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.port == 0:
            continue
        crypto, refusal = _srtp_refusal(media, srtp)
        if refusal is not None:
            reasons.append(refusal[1])
            srtp_reason = srtp_reason or refusal[0] or None
            continue
        encodings = _encodings(media)
        candidates = [
            (rank[name.lower()], position, pt, name.lower(), clock)
            for position, (pt, name, clock, channels) in enumerate(encodings)
            if name.lower() in rank and _format_matches(name, clock, channels)
        ]
        chosen = min(candidates)[2:] if candidates else None
        if chosen is None:
            offered = " ".join(f"{name}/{clock}" for _, name, clock, _ in encodings)
            reasons.append(f"no supported codec in {offered or 'an empty format list'}")
            continue
        payload_type, codec, clock_rate = chosen
        # RFC 4733 §7.1.1: telephone-event must share the audio codec's clock rate.
        telephone_event = next(
            (
                pt
                for pt, name, clock, _ in encodings
                if name.lower() == _TELEPHONE_EVENT and clock == clock_rate
            ),
            None,
        )
        address = offer.connection_for(media)
        if address is None:
            raise SdpError(f"no connection address for the audio stream on port {media.port}")
        return Negotiated(
            payload_type=payload_type,
            codec=codec,
            clock_rate=clock_rate,
            telephone_event_pt=telephone_event,
            remote_address=address,
            remote_port=media.port,
            direction=_ANSWER_DIRECTION[offer.direction_for(media)],
            ptime=media.ptime,
            media_index=index,
            srtp=crypto,
            remote_type=offer.connection_type_for(media),
        )
    detail = "; ".join(reasons) or "no audio stream offered"
    if srtp_reason is not None:
        raise SrtpMismatch(srtp_reason, detail)
    raise NoCommonCodec(detail)


def build_answer(
    offer: SessionDescription,
    negotiated: Negotiated,
    address: str,
    port: int,
    session_id: int,
    version: int = 0,
    crypto: CryptoAttribute | None = None,
) -> SessionDescription:
    """The RFC 3264 §6 answer to ``offer``: one m-line per offered m-line in the same
    order, the negotiated one accepted on ``address``:``port``, all others rejected with
    port 0 (§6: a rejected stream keeps its m-line).

    For SRTP (``negotiated.srtp`` set) ``crypto`` is our key: the answer's one
    ``a=crypto`` line, with the accepted line's tag and suite (RFC 4568 §7.1.2); see
    :func:`sipbridge.sdp.crypto.answer_crypto`."""
    if not 0 <= negotiated.media_index < len(offer.media):
        raise ValueError(f"offer has no m-line {negotiated.media_index}")
    offered_crypto = negotiated.srtp
    if (offered_crypto is None) != (crypto is None) or (
        offered_crypto is not None
        and crypto is not None
        and (crypto.tag, crypto.suite) != (offered_crypto.tag, offered_crypto.suite)
    ):
        raise ValueError("the answer's crypto must match the accepted offered a=crypto line")
    accepted = offer.media[negotiated.media_index]
    offered_pts = {int(f) for f in accepted.formats if f.isascii() and f.isdigit()}
    if accepted.media != "audio" or negotiated.payload_type not in offered_pts:
        raise ValueError("the negotiation does not belong to this offer")
    offered = accepted.rtpmap()
    pt = negotiated.payload_type
    try:
        info = get_codec(negotiated.codec)
        rtpmap, fmtp = info.rtpmap, info.fmtp
    except UnknownCodec:
        name = (offered.get(pt) or STATIC_PAYLOAD_TYPES.get(pt) or (negotiated.codec.upper(),))[0]
        rtpmap, fmtp = f"{name}/{negotiated.clock_rate}", None
    if pt in offered:
        # Echo the offerer's spelling of the encoding name (RFC 4566 §6: case-insensitive).
        name, clock, channels = offered[pt]
        rtpmap = f"{name}/{clock}" + (f"/{channels}" if channels and channels != 1 else "")
    formats = [str(pt)]
    attributes: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {rtpmap}")]
    if fmtp is not None:
        attributes.append(("fmtp", f"{pt} {fmtp}"))
    te = negotiated.telephone_event_pt
    if te is not None:
        te_name = offered[te][0] if te in offered else _TELEPHONE_EVENT
        formats.append(str(te))
        attributes.append(("rtpmap", f"{te} {te_name}/{negotiated.clock_rate}"))
        attributes.append(("fmtp", f"{te} {_TELEPHONE_EVENT_FMTP}"))
    attributes.append(("ptime", str(_ANSWER_PTIME)))
    attributes.append((negotiated.direction, None))
    if crypto is not None:
        attributes.append(("crypto", crypto.value()))

    media: list[MediaDescription] = []
    for index, m in enumerate(offer.media):
        if index == negotiated.media_index:
            media.append(MediaDescription("audio", port, m.proto, formats, None, attributes))
        else:
            # §6: the format list of a rejected stream is irrelevant but must not be empty;
            # echoing the offer's keeps it valid for the offerer.
            media.append(MediaDescription(m.media, 0, m.proto, list(m.formats) or ["0"]))
    return SessionDescription(
        origin=Origin(
            username="-",
            session_id=str(session_id),
            # RFC 3264 §8: the version goes up by one with every new description.
            session_version=str(session_id + version),
            # RFC 4566 §5.2/§5.7: o= and c= name IN IP6 for an IPv6 address.
            addrtype=address_type(address),
            address=address,
        ),
        session_name="-",
        connection=address,
        connection_type=address_type(address),
        media=media,
        # §6: the t= line of the answer must equal the offer's.
        times=list(offer.times),
    )


# Dynamic payload types of our own offers (RFC 3551 §6: 96-127).
_OFFER_DYNAMIC_FIRST: Final = 96
_OFFER_TELEPHONE_EVENT: Final = 101


def build_offer(
    codecs: Sequence[str],
    address: str,
    port: int,
    session_id: int,
    version: int = 0,
    crypto: Sequence[CryptoAttribute] = (),
) -> SessionDescription:
    """Our SDP offer (RFC 3264 §5) for an INVITE that came without one (delayed offer,
    RFC 3261 §13.2.1): one RTP/AVP audio stream on ``address``:``port`` with every codec of
    ``codecs`` in our order of preference (static payload types where the codec has one,
    else dynamic ones from 96) and telephone-event (RFC 4733) at each clock rate they use,
    ``a=sendrecv``. The caller's answer comes in the ACK and goes through
    :func:`negotiate` like an offer would. With ``crypto`` (sdp/crypto.py
    ``offer_crypto``) the stream is RTP/SAVP with those ``a=crypto`` lines (RFC 4568
    §7.1.1); the answer's one line names the key we send with (``answered_crypto``)."""
    formats: list[str] = []
    attributes: list[tuple[str, str | None]] = []
    dynamic = _OFFER_DYNAMIC_FIRST
    clocks: list[int] = []
    for name in codecs:
        info = get_codec(name)
        pt = info.static_payload_type
        if pt is None:
            pt, dynamic = dynamic, dynamic + 1
        formats.append(str(pt))
        attributes.append(("rtpmap", f"{pt} {info.rtpmap}"))
        if info.fmtp is not None:
            attributes.append(("fmtp", f"{pt} {info.fmtp}"))
        if info.clock_rate not in clocks:
            clocks.append(info.clock_rate)
    for index, clock in enumerate(clocks):
        pt = _OFFER_TELEPHONE_EVENT + index
        formats.append(str(pt))
        attributes.append(("rtpmap", f"{pt} {_TELEPHONE_EVENT}/{clock}"))
        attributes.append(("fmtp", f"{pt} {_TELEPHONE_EVENT_FMTP}"))
    attributes.append(("ptime", str(_ANSWER_PTIME)))
    attributes.append(("sendrecv", None))
    attributes.extend(("crypto", line.value()) for line in crypto)
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    return SessionDescription(
        origin=Origin(
            username="-",
            session_id=str(session_id),
            session_version=str(session_id + version),
            addrtype=address_type(address),
            address=address,
        ),
        session_name="-",
        connection=address,
        connection_type=address_type(address),
        media=[MediaDescription("audio", port, proto, formats, None, attributes)],
    )
