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

Two formats (``sipbridge serve --log-format``): ``text``, ``LOG_FORMAT`` for a terminal
(``2026-12-07 10:00:00,123 INFO sipbridge.call call=... event=answered codec=pcmu``), and
``json``, one JSON object a line for a log collector (:class:`JsonFormatter`): the time,
level, logger and message, and the record's structured fields: ``call_id``, ``event`` and
the event's own fields, passed as ``extra={"call_id": ..., "event": ..., "fields":
{...}}`` by the call events (runtime/call.py) and the SIP trace (runtime/trace.py).

Levels per component (``--log-levels call=debug,media=warning``, :func:`parse_log_levels`):
each component is the logger ``sipbridge.<component>``; the SIP trace's
``sipbridge.sip.trace`` logs at INFO whatever ``--log-level`` says (a trace is switched
on on purpose), unless ``--log-levels`` names it or ``sip``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Mapping
from typing import IO, Any, Final

__all__ = [
    "COMPONENTS",
    "LOG_FORMAT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TRACE_LOGGER",
    "EscapingFormatter",
    "JsonFormatter",
    "escape_controls",
    "parse_log_levels",
    "setup_logging",
]

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
TRACE_LOGGER: Final = "sipbridge.sip.trace"
# The components of --log-levels: each is the logger sipbridge.<name> (and its children).
COMPONENTS: Final = {
    "agent": "agent connections and endpoints (runtime/agent_client.py, agent_link.py)",
    "api": "the REST API's errors",
    "bans": "bans made, stored and read back",
    "call": "one line per call event, with the call id (runtime/call.py)",
    "cluster": "this instance's heartbeat and lost peers",
    "media": "the media clock",
    "records": "call record writes, the spool",
    "server": "start, trunks, registrations, refused requests, drain, shutdown",
    "sip": "SIP messages: the per-call trace (sip.trace)",
    "sip.trace": "the per-call SIP trace (sipbridge trace on)",
    "spool": "the record spool file",
    "store": "the database layer",
    "transports": "SIP over TCP and TLS connections",
}

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


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# What a record's fields may not overwrite in the JSON object.
_JSON_RESERVED: Final = frozenset({"ts", "level", "logger", "message", "call_id", "event"})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``,
    ``logger``, ``message`` (the rendered message, or the record's ``summary`` when it has
    one), then ``call_id`` and ``event`` when the
    record carries them (``extra=``) and the record's ``fields`` mapping key by key (a
    field named like one of those keys is written ``field_<name>``), and ``exception`` /
    ``stack`` as text. Values JSON cannot hold are written as their ``str()``.

    Every line is one record: JSON escapes line breaks and C0 controls, and the characters
    :func:`escape_controls` escapes that JSON leaves alone (DEL, C1 controls, U+2028/U+2029,
    bidi marks, U+FEFF) are written as ``\\uXXXX`` escapes too; other text stays readable
    (UTF-8)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            # A record whose message carries a long text also kept as a field (the SIP
            # trace's message) gives its short form as ``summary``.
            "message": getattr(record, "summary", None) or record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            entry["call_id"] = call_id
        event = getattr(record, "event", None)
        if event is not None:
            entry["event"] = event
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                name = str(key)
                entry[f"field_{name}" if name in _JSON_RESERVED else name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        text = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
        # Outside strings JSON is ASCII: what is left to escape is inside one.
        return _UNSAFE.sub(_json_escape, text)


def parse_log_levels(text: str) -> dict[str, int]:
    """``"call=debug,media=warning"`` → ``{"sipbridge.call": 10, "sipbridge.media": 30}``;
    ValueError naming the component or level that is wrong (components:
    :data:`COMPONENTS`, levels: :data:`LOG_LEVELS`). An empty text is no change."""
    levels: dict[str, int] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        component = name.strip().lower().removeprefix("sipbridge.")
        level = value.strip().lower()
        if not sep or not component or not level:
            raise ValueError(f"{item!r} must look like COMPONENT=LEVEL, e.g. call=debug")
        if component not in COMPONENTS:
            raise ValueError(
                f"unknown component {name.strip()!r} (known: {', '.join(sorted(COMPONENTS))})"
            )
        if level not in LOG_LEVELS:
            raise ValueError(
                f"{component}: {value.strip()!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        levels[f"sipbridge.{component}"] = logging.getLevelNamesMapping()[level.upper()]
    return levels


def setup_logging(
    level: str,
    stream: IO[str] | None = None,
    *,
    log_format: str = "text",
    levels: Mapping[str, int] | None = None,
) -> logging.Handler:
    """Log records at ``level`` and above to ``stream`` (stderr), one line each: escaped
    text (:class:`EscapingFormatter`) or JSON (:class:`JsonFormatter`, ``log_format``
    ``"json"``); replaces the root logger's handlers. ``levels``: a level per logger
    (:func:`parse_log_levels`), every other ``sipbridge.*`` logger's set back to
    inherit. The SIP trace logger is at INFO unless ``levels`` names it or ``sipbridge.sip``.
    Returns the handler."""
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True
    )
    chosen = dict(levels or {})
    if TRACE_LOGGER not in chosen and "sipbridge.sip" not in chosen:
        chosen[TRACE_LOGGER] = logging.INFO
    for name in (f"sipbridge.{component}" for component in COMPONENTS):
        logging.getLogger(name).setLevel(chosen.get(name, logging.NOTSET))
    for name, value in chosen.items():
        logging.getLogger(name).setLevel(value)
    return handler
