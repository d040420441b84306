"""SDP (RFC 4566), offer/answer (RFC 3264) and SDES keys for SRTP (RFC 4568)."""

from sipbridge.sdp.crypto import (
    CryptoAttribute,
    CryptoSuite,
    answer_crypto,
    answered_crypto,
    offer_crypto,
    parse_crypto,
)
from sipbridge.sdp.negotiate import (
    Negotiated,
    NoCommonCodec,
    SrtpMismatch,
    SrtpPolicy,
    build_answer,
    build_offer,
    negotiate,
)
from sipbridge.sdp.session import (
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    parse_sdp,
)

__all__ = [
    "CryptoAttribute",
    "CryptoSuite",
    "MediaDescription",
    "Negotiated",
    "NoCommonCodec",
    "Origin",
    "SdpError",
    "SessionDescription",
    "SrtpMismatch",
    "SrtpPolicy",
    "answer_crypto",
    "answered_crypto",
    "build_answer",
    "build_offer",
    "negotiate",
    "offer_crypto",
    "parse_crypto",
    "parse_sdp",
]
