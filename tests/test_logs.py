"""Control characters in log records and terminal output are shown as escapes."""

import io
import logging
import sys

import pytest

from sipbridge.logs import LOG_FORMAT, EscapingFormatter, escape_controls, setup_logging

FORGED = "x\r\n2026-12-06 21:00:00,000 WARNING sipbridge.bans event=source_banned"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode €", "plain text, ünïcode €"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x00\x07\x7f", "\\x00\\x07\\x7f"),
        ("c1 \x85 \x9b", "c1 \\x85 \\x9b"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        (
            "bidi \u202eevil\u202c \u2066x\u2069 \u200f",
            "bidi \\u202eevil\\u202c \\u2066x\\u2069 \\u200f",
        ),
        ("\ufeffbom", "\\ufeffbom"),
    ],
)
def test_escape_controls(text: str, shown: str) -> None:
    assert escape_controls(text) == shown


def test_plain_text_is_returned_as_is() -> None:
    text = "call=abc event=received from=+12025550100"
    assert escape_controls(text) is text


def record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("sipbridge.call", logging.INFO, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_formatter_keeps_one_line_per_record_and_the_format() -> None:
    formatter = EscapingFormatter(LOG_FORMAT)
    line = formatter.format(record("call=%s event=received from=%s", "c1", FORGED + "\x1b[2J"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith(
        "INFO sipbridge.call call=c1 event=received from=x\\r\\n2026-12-06 21:00:00,000 "
        "WARNING sipbridge.bans event=source_banned\\x1b[2J"
    )


def test_traceback_lines_cannot_pass_for_records() -> None:
    formatter = EscapingFormatter(LOG_FORMAT)
    try:
        raise ValueError(FORGED)
    except ValueError:
        text = formatter.format(record("failed", exc_info=sys.exc_info()))
    first, *rest = text.splitlines()
    assert first.endswith("INFO sipbridge.call failed")
    assert rest and all(line.startswith("  ") for line in rest)
    assert "\n  2026-12-06 21:00:00,000 WARNING" in text  # indented: not a record


def test_setup_logging_installs_the_formatter_at_the_root() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        handler = setup_logging("warning", stream)
        assert root.handlers == [handler] and root.level == logging.WARNING
        logging.getLogger("sipbridge.test").warning("from=%s", "a\nb\x1b")
        logging.getLogger("sipbridge.test").info("not shown")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = stream.getvalue().splitlines()
    assert line.endswith("WARNING sipbridge.test from=a\\nb\\x1b")
