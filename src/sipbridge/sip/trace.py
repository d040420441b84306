"""What a SIP trace shows of a message: its Call-ID read from the raw bytes, and its text
with the secrets masked.

The runtime's per-call trace (runtime/trace.py) writes every SIP message of a traced call
to the log. It finds a message's call by :func:`call_id_of` (the Call-ID header of the
header section, no full parse) and writes :func:`masked_text`: the message as text, with

- the digest values that prove or could replay a password masked in every header
  (RFC 3261 §22.4, RFC 7616 §3.4): ``response``, ``nonce``, ``cnonce``, ``nextnonce`` and
  ``rspauth`` of ``Authorization``, ``Proxy-Authorization``, ``WWW-Authenticate``,
  ``Proxy-Authenticate`` and ``Authentication-Info``, and the whole credentials of any
  other scheme (``Basic``);
- the media keys of the SDP body masked: the key of every ``inline:`` key parameter of
  ``a=crypto`` (RFC 4568 §9.1, the SDES master key and salt; its lifetime and MKI stay),
  ``k=`` lines (RFC 4566 §5.12), ``a=key-mgmt`` (RFC 4567) and ``a=ice-pwd`` (RFC 8839).

Bytes that are not UTF-8 are shown as ``\\xNN`` escapes. The text keeps its line breaks:
the log formatters make each record one line (logs.py).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "call_id_of", "masked_text"]

MASK: Final = "***"

# RFC 3261 §7.3.3: the compact form of Call-ID is "i".
_CALL_ID: Final = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\s]+)", re.IGNORECASE | re.MULTILINE)
# RFC 3261 §25.1 digest parameters whose values are secrets (or single-use proofs).
_DIGEST_SECRET: Final = re.compile(
    r'\b(response|nonce|cnonce|nextnonce|rspauth)([ \t]*=[ \t]*)("(?:[^"\\]|\\.)*"|[^\s,;]+)',
    re.IGNORECASE,
)
# An Authorization or Proxy-Authorization line of a scheme other than Digest.
_OTHER_CREDENTIALS: Final = re.compile(
    r"^((?:proxy-)?authorization[ \t]*:[ \t]*)(?!digest\b)([\w-]+)([ \t]+)(\S[^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_AUTH_HEADER: Final = re.compile(
    r"^(?:proxy-|www-)?(?:authorization|authenticate)[ \t]*:|^authentication-info[ \t]*:",
    re.IGNORECASE,
)
# RFC 4568 §9.1: key-param = key-method ":" key-info; inline key-info =
# key||salt ["|" lifetime] ["|" MKI ":" length]. Only the key and salt are masked.
_CRYPTO_LINE: Final = re.compile(r"^a=crypto:.*$", re.MULTILINE)
_INLINE_KEY: Final = re.compile(r"(inline:)([^|;\s]+)", re.IGNORECASE)
_KEY_LINES: Final = re.compile(r"^(k=|a=key-mgmt:|a=ice-pwd:)([^\r\n]*)", re.MULTILINE)


def call_id_of(data: bytes) -> str | None:
    """The Call-ID of the raw message ``data`` (full or compact header name, in the header
    section only), decoded as the parser does; None when it has none."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    match = _CALL_ID.search(data, 0, len(data) if end < 0 else end)
    if match is None:
        return None
    return match.group(1).decode("utf-8", "surrogateescape")


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(3)
    masked = f'"{MASK}"' if value.startswith('"') else MASK
    return f"{match.group(1)}{match.group(2)}{masked}"


def _mask_header_section(head: str) -> str:
    lines = head.split("\n")
    in_auth = False
    for index, line in enumerate(lines):
        if line[:1] in (" ", "\t"):  # RFC 3261 §7.3.1: a folded line continues the header
            pass
        else:
            in_auth = _AUTH_HEADER.match(line) is not None
        if in_auth:
            lines[index] = _DIGEST_SECRET.sub(_mask_value, line)
    return _OTHER_CREDENTIALS.sub(rf"\g<1>\g<2>\g<3>{MASK}", "\n".join(lines))


def _mask_body(body: str) -> str:
    body = _CRYPTO_LINE.sub(lambda m: _INLINE_KEY.sub(rf"\g<1>{MASK}", m.group()), body)
    return _KEY_LINES.sub(rf"\g<1>{MASK}", body)


def masked_text(data: bytes) -> str:
    """The message ``data`` as text (bytes that are not UTF-8 as ``\\xNN``), its digest
    secrets and media keys replaced by ``***`` (see the module docstring)."""
    text = data.decode("utf-8", "backslashreplace")
    split = text.find("\r\n\r\n")
    separator = 4
    if split < 0:
        split, separator = text.find("\n\n"), 2
    if split < 0:
        return _mask_header_section(text)
    head, body = text[:split], text[split + separator :]
    return _mask_header_section(head) + text[split : split + separator] + _mask_body(body)
