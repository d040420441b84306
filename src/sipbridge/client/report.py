"""What ``sipbridge call`` concludes: the exit code, a failure explained in words with the
command that fixes it, and the quality report's lines. Plain functions of the call's
outcome; no I/O.

Exit codes (docs/operations.md, "Test call"):

====  =====================================================================
0     the call connected and agent audio came back
1     a local error: no socket, the TCP/TLS connection refused or its handshake failed
2     bad input (an option, the number, the ``--play`` file)
3     no answer from the server (the INVITE timed out, or it answered nothing final)
4     the number is not routed (404, 484, 604)
5     refused: authentication or access (401, 407, 403)
6     any other failure response (480, 486, 488, 503, ...)
7     answered, but no agent audio came back
130   interrupted (Ctrl-C) before the call was answered
====  =====================================================================
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sipbridge.client.audio import AudioReport
from sipbridge.client.signaling import Ended, EndReason

__all__ = ["ExitCode", "Explanation", "audio_lines", "exit_code", "explain", "reason_text"]


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NO_RESPONSE = 3
    NOT_ROUTED = 4
    REFUSED = 5
    FAILED = 6
    NO_AUDIO = 7
    INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Explanation:
    """A failure in words: what happened, and what to do about it."""

    code: ExitCode
    message: str
    fix: str = ""


# RFC 3326: Reason: SIP ;cause=503 ;text="agent_unreachable"
_REASON_TEXT_RE = re.compile(r'text\s*=\s*"([^"]*)"', re.IGNORECASE)


def reason_text(headers: dict[str, str]) -> str:
    """The ``text`` of a Reason header (RFC 3326), the server's record reason; ""."""
    match = _REASON_TEXT_RE.search(headers.get("Reason", ""))
    return match.group(1) if match else ""


# The server's record reasons (README, "What the caller hears when something is wrong")
# with the fix for each.
_REASON_FIXES: dict[str, tuple[str, str]] = {
    "agent_missing": (
        "the number's agent no longer exists",
        "sipbridge number update {number} --agent NAME",
    ),
    "agent_not_voice_enabled": (
        "the number's agent is not voice-enabled",
        "sipbridge agent update NAME --voice",
    ),
    "agent_unreachable": (
        "the agent's WebSocket did not answer in time",
        "check the agent URL with `sipbridge doctor`, and that the agent is running",
    ),
    "no_rtp_port": ("the server has no free RTP port", "widen `serve --rtp-ports`"),
    "overload": ("the server is overloaded (media clock late or CPU busy)", ""),
    "server_busy": ("the server is at its --max-calls", "raise `serve --max-calls`"),
    "trunk_busy": (
        "the trunk is at its max_calls",
        "sipbridge trunk update NAME --max-calls N",
    ),
    "draining": ("the server is shutting down (draining)", "start it again"),
    "unhealthy": (
        "the server is unhealthy (its database, or every agent endpoint, is down)",
        "see `sipbridge doctor` and the server's log",
    ),
    "number_not_allowed": (
        "the trunk this call came from may not call this number",
        "sipbridge trunk update NAME --number {number}, or remove the trunk's number list",
    ),
    "no_common_codec": ("no codec in common", "try another --codec, or `serve --codecs`"),
    "srtp_required": ("the server requires SRTP, which `sipbridge call` does not offer", ""),
    "bad_sdp": ("the server could not read our SDP offer", ""),
    "address_family": (
        "the server has no media address of our address family (IPv4/IPv6)",
        "call its address of the other family, or serve on a wildcard --sip-host",
    ),
}


def explain(
    ended: Ended,
    *,
    number: str,
    server: str,
    transport: str,
    credentials: bool,
    realm: str | None = None,
) -> Explanation:
    """Why the call did not connect, in words, with the fix; ``ended`` is not a hang-up
    of an answered call (see :func:`exit_code`)."""
    status = ended.status
    why = ended.why
    record = reason_text(ended.headers)
    retry = ended.headers.get("Retry-After")
    said = f"{status} {ended.reason}" + (f" ({record})" if record else "")
    if why is EndReason.TIMEOUT:
        return Explanation(
            ExitCode.NO_RESPONSE,
            f"no final response from {server} over {transport.upper()}",
            "is `sipbridge serve` running there and the port open? A server drops requests "
            "from sources that match no trunk without a word (with no trunk only 127.0.0.1 "
            "may call): `sipbridge trunk add NAME --allow YOUR_IP/32`, or `serve "
            "--reject-unknown 403` to have them refused visibly; `sipbridge ban list` shows "
            "banned sources",
        )
    if why is EndReason.CANCELLED:
        return Explanation(ExitCode.INTERRUPTED, "the call was cancelled before the answer")
    if why is EndReason.AUTH_FAILED:
        where = f' (realm "{realm}")' if realm else ""
        if not credentials:
            return Explanation(
                ExitCode.REFUSED,
                f"{said}: the server wants digest credentials{where}",
                "pass a trunk's --username and --password (`sipbridge trunk add NAME "
                "--username U --password P` on the server)",
            )
        return Explanation(
            ExitCode.REFUSED,
            f"{said}: the server refused our credentials{where}",
            "check --username/--password against the trunk's (`sipbridge trunk list`); "
            "repeated failures get the source banned (`sipbridge ban list`)",
        )
    assert status is not None
    if status in (404, 484, 604):
        if record == "number_not_allowed":
            message, fix = _REASON_FIXES[record]
            return Explanation(ExitCode.NOT_ROUTED, f"{said}: {message}", fix.format(number=number))
        return Explanation(
            ExitCode.NOT_ROUTED,
            f"{said}: the number is not routed",
            f"sipbridge number add {number} --agent NAME",
        )
    if status == 403:
        return Explanation(
            ExitCode.REFUSED,
            f"{said}: the server refused this caller",
            "the source address matches no trunk (`sipbridge trunk add NAME --allow "
            "YOUR_IP/32`), or a trunk wants credentials (--username/--password), or the "
            "source is banned (`sipbridge ban list`)",
        )
    message, fix = _REASON_FIXES.get(record, ("", ""))
    if not message:
        message = {
            408: "the server gave up waiting",
            415: "the server does not take our SDP body",
            420: "the server does not support an extension we require",
            422: "the server wants a longer session interval (Min-SE)",
            480: "nobody can take the call now",
            486: "busy",
            488: "the server did not accept our media offer",
            500: "the server hit an internal error (see its log)",
            503: "the server cannot take the call now",
        }.get(status, "the call failed")
        if status == 488 and not fix:
            fix = "try another --codec"
    if retry:
        message += f"; retry after {retry} s"
    return Explanation(ExitCode.FAILED, f"{said}: {message}", fix.format(number=number))


def exit_code(ended: Ended | None, audio: AudioReport | None) -> ExitCode:
    """0 only when the call was answered and agent audio came back."""
    if audio is not None:
        return ExitCode.OK if audio.audio_ms > 0 else ExitCode.NO_AUDIO
    if ended is None:
        return ExitCode.NO_RESPONSE
    return ExitCode.FAILED


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def audio_lines(report: AudioReport) -> list[str]:
    """The quality report, one figure a line."""
    loss = "n/a" if report.loss_percent is None else f"{report.loss_percent:.1f} %"
    lost = "" if report.packets_lost is None else f", {report.packets_lost} lost"
    lines = [
        f"codec            {report.codec}",
        f"packets          {report.packets_sent} sent, {report.packets_received} received{lost}",
        f"loss             {loss}",
        f"jitter           {'n/a' if report.jitter_ms is None else f'{report.jitter_ms:.1f} ms'}",
        f"first agent audio {_ms(report.first_audio_ms)} after the answer",
        f"agent audio      {report.audio_ms / 1000:.2f} s of sound",
    ]
    if report.echo is not None:
        lines.append(
            f"round trip       {report.echo.delay_ms:.0f} ms (our signal echoed back, "
            f"correlation {report.echo.correlation:.2f})"
        )
    else:
        lines.append("round trip       n/a (our signal did not come back: the agent does not echo)")
    if report.rtcp_rtt_ms is not None:
        lines.append(f"network RTT      {report.rtcp_rtt_ms:.1f} ms (RTCP)")
    mos = "n/a" if report.mos is None else f"{report.mos:.2f} (E-model, ITU-T G.107)"
    lines.append(f"MOS              {mos}")
    return lines
