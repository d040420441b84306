"""SDP (RFC 4566) and offer/answer (RFC 3264)."""

from sipbridge.sdp.negotiate import Negotiated, NoCommonCodec, build_answer, negotiate
from sipbridge.sdp.session import (
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    parse_sdp,
)

__all__ = [
    "MediaDescription",
    "Negotiated",
    "NoCommonCodec",
    "Origin",
    "SdpError",
    "SessionDescription",
    "build_answer",
    "negotiate",
    "parse_sdp",
]
