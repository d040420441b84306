"""Exceptions raised by the SIP layer.

The tree::

    SipError                 base class of every SIP-layer error
    └── SipParseError        bytes that are not a well-formed SIP message (RFC 3261 §7, §25);
                             carries the status a server should answer with
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - import for annotations only (message.py imports us)
    from sipbridge.sip.message import Headers

__all__ = ["SipError", "SipParseError"]


class SipError(Exception):
    """Base class of the errors raised by :mod:`sipbridge.sip`."""


class SipParseError(SipError):
    """A message, header field or URI that does not follow the RFC 3261 §25 grammar.

    ``status_hint`` is the response a server should send (RFC 3261 §21): 400 in general
    (§21.4.1), 505 for a SIP version other than 2.0 (§7.1, §21.5.6), 513 for a message
    larger than the server accepts (§21.5.7). ``headers`` holds the header fields that
    parsed, so that a UAS can still answer a broken request by echoing its Via, From, To,
    Call-ID and CSeq (see ``message.build_error_response``); it is ``None`` when nothing
    usable parsed. ``is_request`` is True/False once the start line showed a
    request/response, else None: a server answers requests only, never responses.
    """

    def __init__(
        self,
        reason: str,
        *,
        status_hint: int = 400,
        headers: Headers | None = None,
        is_request: bool | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.headers = headers
        self.is_request = is_request

    def __str__(self) -> str:
        return f"{self.reason} (answer {self.status_hint})"
