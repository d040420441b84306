"""Failures in words and exit codes."""

from __future__ import annotations

import pytest

from sipbridge.client.audio import AudioReport, EchoMatch
from sipbridge.client.report import ExitCode, audio_lines, exit_code, explain, reason_text
from sipbridge.client.signaling import Ended, EndReason

NUMBER = "+12025550101"


def why(ended: Ended, credentials: bool = False, realm: str | None = None) -> tuple[ExitCode, str]:
    found = explain(
        ended,
        number=NUMBER,
        server="198.51.100.7:5060",
        transport="udp",
        credentials=credentials,
        realm=realm,
    )
    return found.code, f"{found.message} | {found.fix}"


def rejected(status: int, reason: str = "", **headers: str) -> Ended:
    return Ended(EndReason.REJECTED, 1.0, status, reason or "Whatever", dict(headers))


def test_404_names_the_command_that_routes_the_number() -> None:
    code, text = why(rejected(404, "Not Found", Reason='SIP ;cause=404 ;text="unknown_number"'))
    assert code is ExitCode.NOT_ROUTED
    assert "the number is not routed" in text and f"sipbridge number add {NUMBER} --agent" in text
    code, text = why(rejected(404, Reason='SIP ;cause=404 ;text="number_not_allowed"'))
    assert code is ExitCode.NOT_ROUTED and "--number +12025550101" in text


def test_403_and_digest() -> None:
    code, text = why(rejected(403, "Forbidden"))
    assert code is ExitCode.REFUSED and "trunk add NAME --allow" in text
    asked = Ended(EndReason.AUTH_FAILED, 1.0, 401, "Unauthorized")
    code, text = why(asked, realm="sipbridge.test")
    assert code is ExitCode.REFUSED and "wants digest credentials" in text
    assert '"sipbridge.test"' in text and "--username and --password" in text
    code, text = why(asked, credentials=True)
    assert code is ExitCode.REFUSED and "refused our credentials" in text


def test_503_gives_its_reason_header_and_retry_after() -> None:
    ended = rejected(
        503,
        "Service Unavailable",
        Reason='SIP ;cause=503 ;text="agent_unreachable"',
        **{"Retry-After": "10"},
    )
    code, text = why(ended)
    assert code is ExitCode.FAILED
    assert "503 Service Unavailable (agent_unreachable)" in text
    assert "agent's WebSocket did not answer" in text and "retry after 10 s" in text
    assert "sipbridge doctor" in text


@pytest.mark.parametrize(
    ("status", "words"),
    [(488, "did not accept our media offer"), (486, "busy"), (480, "nobody can take")],
)
def test_other_statuses(status: int, words: str) -> None:
    code, text = why(rejected(status))
    assert code is ExitCode.FAILED and words in text


def test_timeout_explains_silent_drops() -> None:
    code, text = why(Ended(EndReason.TIMEOUT, 32.0))
    assert code is ExitCode.NO_RESPONSE
    assert "no final response from 198.51.100.7:5060 over UDP" in text
    assert "--reject-unknown 403" in text and "trunk add" in text


def test_reason_text() -> None:
    assert reason_text({"Reason": 'SIP ;cause=480 ;text="agent_missing"'}) == "agent_missing"
    assert reason_text({}) == ""


def report(audio_ms: int, echo: EchoMatch | None = None) -> AudioReport:
    return AudioReport("pcmu", 250, 250, 0, 0.0, 1.2, 4.38, None, 22.0, echo, audio_ms, "", False)


def test_exit_code_needs_agent_audio() -> None:
    assert exit_code(Ended(EndReason.HANGUP, 5.0), report(1200)) is ExitCode.OK
    assert exit_code(Ended(EndReason.HANGUP, 5.0), report(0)) is ExitCode.NO_AUDIO
    assert exit_code(None, None) is ExitCode.NO_RESPONSE
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 7, 130]


def test_audio_lines() -> None:
    lines = "\n".join(audio_lines(report(1200, EchoMatch(23.0, 0.99, 3))))
    assert "250 sent, 250 received, 0 lost" in lines and "MOS              4.38" in lines
    assert "round trip       23 ms" in lines and "first agent audio 22 ms" in lines
    assert "did not come back" in "\n".join(audio_lines(report(1200)))
