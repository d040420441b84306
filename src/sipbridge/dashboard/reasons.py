"""A call record's reason in plain words, with what to do about it (the call page and the
Conversations table). The reasons are those of README "What the caller hears when
something is wrong" and docs/operations.md; an unknown one is shown as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Explanation", "explain", "known_reasons"]


@dataclass(frozen=True)
class Explanation:
    """``text``: what happened; ``fix``: what to change (None: nothing to fix)."""

    text: str
    fix: str | None = None


_REASONS: Final[dict[str, Explanation]] = {
    # Normal endings of answered calls.
    "caller_hangup": Explanation("the caller hung up"),
    "agent_hangup": Explanation("the agent ended the call"),
    "agent_disconnected": Explanation("the agent closed its connection (cleanly)"),
    "transferred": Explanation("the agent transferred the caller"),
    "operator_hangup": Explanation("an operator hung up from the Live calls page"),
    "caller_cancelled": Explanation("the caller hung up before the call was answered"),
    "callee_hangup": Explanation("the person we called hung up (outbound call)"),
    "target_hangup": Explanation("the caller had been transferred; the transfer target hung up"),
    "transfer_cancelled": Explanation(
        "a warm transfer's target leg: the agent called the transfer off and we hung up"
    ),
    # Outbound calls that were not answered (POST /api/calls, sipbridge dial).
    "busy": Explanation("the called number was busy (486/600)"),
    "no_answer": Explanation(
        "nobody answered within the ring timeout; we cancelled the call",
        "give a longer ring_timeout",
    ),
    "rejected": Explanation(
        "the carrier or the callee refused the call (see its SIP code)",
        "check the number and the trunk's account with the carrier",
    ),
    "auth_failed": Explanation(
        "the trunk refused our digest credentials",
        "check the trunk's username and password on the Trunks page",
    ),
    "trunk_timeout": Explanation(
        "the trunk's host never answered our INVITE",
        "check the trunk's host and transport, and the network to it",
    ),
    "trunk_unreachable": Explanation(
        "the TCP or TLS connection to the trunk's host could not be opened (the call's "
        "events say why: refused, timed out, a certificate that does not verify)",
        "check the trunk's host, port and transport; for TLS, that --tls-ca trusts its certificate",
    ),
    "cancelled": Explanation("the outbound call was cancelled before it was answered"),
    "answered_after_cancel": Explanation(
        "the callee answered just as we cancelled; we hung up at once"
    ),
    # Routing.
    "unknown_number": Explanation(
        "the dialed number is not in the database",
        "add it on the Numbers page, with the agent that should answer it",
    ),
    "agent_missing": Explanation(
        "the number has no agent (its agent was removed)",
        "give the number an agent on the Numbers page",
    ),
    "agent_not_voice_enabled": Explanation(
        "the number's agent is not voice-enabled",
        "enable it on the Agents page",
    ),
    "not_allowed_number": Explanation(
        "the trunk may not call this number",
        "add the number to the trunk's allowed numbers on the Trunks page",
    ),
    "unknown_source": Explanation(
        "the call came from an address no trunk allows",
        "add the carrier's network to a trunk on the Trunks page",
    ),
    # The agent.
    "agent_unreachable": Explanation(
        "no agent endpoint answered the WebSocket within the connect timeout",
        "check that the agent is running and its URL and token on the Agents page are right "
        "(sipbridge doctor tests them)",
    ),
    "agent_lost": Explanation(
        "the agent's connection dropped mid-call and one reconnection failed",
        "look at the agent's logs and network; its URL can list a second endpoint",
    ),
    "agent_protocol_error": Explanation(
        "the agent sent messages faster than allowed",
        "slow the agent's messages down (docs/security.md, agent limits)",
    ),
    # Media and SDP.
    "no_common_codec": Explanation(
        "the caller offered no codec we use",
        "allow one of the caller's codecs with serve --codecs or the trunk's codecs",
    ),
    "bad_sdp": Explanation("the caller's SDP offer could not be read", "ask the carrier"),
    "address_family": Explanation(
        "the caller's media address is IPv4/IPv6 and the server listens on the other family",
        "serve on a wildcard address (--sip-host 0.0.0.0 or ::)",
    ),
    "srtp_required": Explanation(
        "the trunk requires SRTP and the caller offered plain RTP",
        "set the trunk's SRTP to optional, or enable SRTP at the carrier",
    ),
    "srtp_not_allowed": Explanation(
        "the caller offered only SRTP and SRTP is off",
        "set the trunk's SRTP to optional",
    ),
    "srtp_no_usable_crypto": Explanation(
        "the caller's SRTP offer had no key suite we support", "ask the carrier"
    ),
    "no_rtp_port": Explanation(
        "every RTP port was in use", "widen serve --rtp-ports or lower --max-calls"
    ),
    "media_timeout": Explanation(
        "no audio came from the caller for the media timeout",
        "check the carrier's media path and firewalls (RTP ports); see serve --media-timeout",
    ),
    "no_sdp_answer": Explanation("the caller's ACK carried no SDP answer", "ask the carrier"),
    "bad_sdp_answer": Explanation("the caller's SDP answer could not be used", "ask the carrier"),
    # SIP.
    "ack_timeout": Explanation(
        "the caller never acknowledged our answer (ACK)",
        "check NAT: set serve --public-ip to the address callers reach",
    ),
    "session_expired": Explanation("the caller's session refresh never came (RFC 4028)"),
    "session_refresh_failed": Explanation("our session refresh was refused or not answered"),
    "session_interval_too_small": Explanation(
        "the caller's Session-Expires is below --min-se", "lower serve --min-se"
    ),
    "max_duration": Explanation(
        "the call reached the longest duration allowed", "raise serve --max-call-duration"
    ),
    "malformed_request": Explanation("the INVITE could not be parsed", "ask the carrier"),
    "unsupported_media_type": Explanation("the INVITE's body was not SDP", "ask the carrier"),
    "bad_extension": Explanation("the INVITE required a SIP extension we do not support"),
    "unsupported_uri_scheme": Explanation("the INVITE's address scheme is not sip/sips/tel"),
    # Capacity and the instance.
    "server_busy": Explanation(
        "the server was at --max-calls", "raise serve --max-calls or add an instance"
    ),
    "trunk_busy": Explanation(
        "the trunk was at its max calls", "raise the trunk's max calls on the Trunks page"
    ),
    "source_busy": Explanation("the source had too many calls being set up at once"),
    "overload": Explanation(
        "the server was overloaded (its media clock ran late or the CPU was busy)",
        "add an instance or a faster CPU (docs/scaling.md)",
    ),
    "draining": Explanation("the server was shutting down (draining)"),
    "unhealthy": Explanation(
        "the server refused calls: the database or every agent endpoint was down",
        "see the call's refusal event and sipbridge doctor",
    ),
    "server_shutdown": Explanation("the server was stopped during the call"),
    "instance_restarted": Explanation(
        "the server handling the call stopped without closing it; closed at its restart",
        "look for a crash in the server's logs",
    ),
    "instance_lost": Explanation(
        "the server handling the call disappeared; another instance closed it",
        "look for a crash of that instance (docs/scaling.md)",
    ),
    "internal_error": Explanation(
        "an internal error in sipbridge", "look for the traceback in the server's log"
    ),
}


def explain(reason: str | None) -> Explanation | None:
    """The plain words for ``reason`` (None: no reason; unknown: the code itself)."""
    if not reason:
        return None
    return _REASONS.get(reason) or Explanation(reason.replace("_", " "))


def known_reasons() -> list[str]:
    """Every reason with plain words (the Conversations filter suggests them)."""
    return sorted(_REASONS)
