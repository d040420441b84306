"""RTP (RFC 3550): packet parsing and serialization, and the outbound stream state."""

from sipbridge.rtp.packet import RtpError, RtpPacket, is_rtcp, parse_rtp_header
from sipbridge.rtp.stream import RtpSender

__all__ = ["RtpError", "RtpPacket", "RtpSender", "is_rtcp", "parse_rtp_header"]
