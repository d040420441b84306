"""Text from the outside world made safe for log lines and the operator's terminal.

Callers, trunks and agents choose much of what sipbridge logs and prints: a From user
``x%0D%0A2026-12-06 21:00:00,000 WARNING ...`` would write a forged log line, and
``%1B[2J`` would clear the terminal of whoever reads the log or runs ``sipbridge calls``.
:func:`escape_controls` shows such characters as visible escapes instead (``\\r``,
``\\n``, ``\\x1b``, ``\\u202e``); :class:`EscapingFormatter` applies it to every log
record, at the root (``sipbridge serve`` installs it with :func:`setup_logging`), so no
log call has to remember it.

Escaped: C0 controls (tab, CR, LF, ESC...), DEL, C1 controls (U+0080-U+009F), the line
and paragraph separators U+2028/U+2029 (line breaks for some viewers), the bidirectional
marks, embeddings, overrides and isolates (U+200E/U+200F, U+202A-U+202E, U+2066-U+2069:
text that reads differently from what it is) and U+FEFF.
"""

from __future__ import annotations

import logging
import re
from typing import IO, Final

__all__ = ["LOG_FORMAT", "EscapingFormatter", "escape_controls", "setup_logging"]

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_NAMED: Final = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control, line-separator and bidi character shown as an escape
    (``\\r``, ``\\n``, ``\\t``, ``\\x1b``, ``\\u2028``); other text unchanged."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose records are one line each: the rendered
    message is passed through :func:`escape_controls` (the record's format is kept), and
    a traceback's lines are escaped and indented, so none starts like a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        text = super().formatException(ei)  # type: ignore[arg-type]
        return _indent(text)

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  " + escape_controls(line) for line in text.splitlines())


def setup_logging(level: str, stream: IO[str] | None = None) -> logging.Handler:
    """Log records at ``level`` and above to ``stream`` (stderr), one escaped line each;
    replaces the root logger's handlers. Returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True
    )
    return handler
