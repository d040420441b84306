"""Text from the wire made safe to store, encode and log.

SIP text is decoded with ``surrogateescape`` (bytes that are not UTF-8 become lone
surrogates, so a message round-trips byte for byte) and percent-escapes may spell any byte,
NUL and line breaks included. Such a string cannot be encoded as UTF-8 (the agent's JSON,
SQLite), is refused by PostgreSQL (NUL), or forges lines in a log or a terminal.

:func:`clean` keeps every printable character and writes each other one as the RFC 3986
percent-escapes of its bytes (UTF-8; a surrogate stands for the raw byte it came from):
``sip:%FF%FE@h`` gives user ``"%FF%FE"``, ``x\\r\\ny`` gives ``"x%0D%0Ay"``, a bidi override
U+202E gives ``"%E2%80%AE"``. The raw form stays readable, and the result is valid UTF-8
without control, format or separator characters (``str.isprintable``).
"""

from __future__ import annotations

__all__ = ["clean", "clean_opt"]


def clean(text: str) -> str:
    """``text`` with every non-printable character percent-escaped (see the module)."""
    if text.isprintable():
        return text  # the usual case: one C-level scan, no copy
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def clean_opt(text: str | None) -> str | None:
    """:func:`clean` for optional fields."""
    return None if text is None else clean(text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"%{code - 0xDC00:02X}"
    data = ch.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)
