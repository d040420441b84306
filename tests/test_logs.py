"""Control characters in log records and terminal output are shown as escapes."""

import datetime
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from sipbridge.logs import (
    COMPONENTS,
    LOG_FORMAT,
    EscapingFormatter,
    JsonFormatter,
    escape_controls,
    parse_log_levels,
    setup_logging,
)

FORGED = "x\r\n2026-12-06 21:00:00,000 WARNING sipbridge.bans event=source_banned"
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


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


def test_setup_logging_installs_the_formatter_at_the_root(restore_logging: None) -> None:
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


# ------------------------------------------------------------------------------ JSON


def test_json_lines_parse_carry_the_fields_and_stay_one_line() -> None:
    formatter = JsonFormatter()
    hostile = FORGED + "\x1b[2J \x7f \x85 \u2028 \u202e \ufeff ünïcode €"
    entry = record("call=%s event=received from=%s", "c1", hostile)
    entry.call_id = "c1"
    entry.event = "received"
    entry.fields = {"from": hostile, "port": 4000, "ok": True, "when": datetime.date(2026, 1, 2)}
    line = formatter.format(entry)
    assert "\n" not in line and "\r" not in line
    assert UNSAFE.search(line) is None, line  # escaped as \\uXXXX, not raw
    assert "ünïcode €" in line  # readable text stays readable
    parsed = json.loads(line)
    assert parsed["level"] == "INFO" and parsed["logger"] == "sipbridge.call"
    assert parsed["call_id"] == "c1" and parsed["event"] == "received"
    assert parsed["from"] == hostile and parsed["port"] == 4000 and parsed["ok"] is True
    assert parsed["when"] == "2026-01-02"  # what JSON cannot hold: its str()
    assert parsed["message"] == f"call=c1 event=received from={hostile}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["ts"])


def test_json_fields_cannot_overwrite_the_record_keys() -> None:
    entry = record("plain")
    entry.fields = {"level": "DEBUG", "message": "forged", "call_id": "x", "note": "n"}
    parsed = json.loads(JsonFormatter().format(entry))
    assert (parsed["level"], parsed["message"]) == ("INFO", "plain")
    assert "call_id" not in parsed and parsed["field_call_id"] == "x"
    assert parsed["field_level"] == "DEBUG" and parsed["note"] == "n"
    entry.summary = "short"
    assert json.loads(JsonFormatter().format(entry))["message"] == "short"


def test_json_traceback_is_one_field() -> None:
    try:
        raise ValueError(FORGED)
    except ValueError:
        line = JsonFormatter().format(record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed"
    assert "ValueError: x\r\n2026-12-06" in parsed["exception"]
    assert parsed["exception"].startswith("Traceback")


# ------------------------------------------------------------------ levels by component


def test_parse_log_levels() -> None:
    assert parse_log_levels("") == {}
    assert parse_log_levels(" call=DEBUG , media=warning,sip.trace=error,") == {
        "sipbridge.call": logging.DEBUG,
        "sipbridge.media": logging.WARNING,
        "sipbridge.sip.trace": logging.ERROR,
    }
    assert parse_log_levels("sipbridge.agent=info") == {"sipbridge.agent": logging.INFO}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("call", "'call' must look like COMPONENT=LEVEL"),
        ("call=", "'call=' must look like COMPONENT=LEVEL"),
        ("=debug", "must look like COMPONENT=LEVEL"),
        ("cal=debug", "unknown component 'cal' (known: agent, api"),
        ("call=loud", "call: 'loud' is not one of debug, info, warning, error, critical"),
    ],
)
def test_parse_log_levels_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_log_levels(text)
    assert message in str(info.value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for component in COMPONENTS:
        logging.getLogger(f"sipbridge.{component}").setLevel(logging.NOTSET)


def test_a_level_per_component(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(
        "warning",
        stream,
        log_format="json",
        levels=parse_log_levels("call=debug,media=error"),
    )
    logging.getLogger("sipbridge.call").debug("call debug")
    logging.getLogger("sipbridge.media").warning("media warning")  # below its error
    logging.getLogger("sipbridge.media").error("media error")
    logging.getLogger("sipbridge.server").info("server info")  # below --log-level
    logging.getLogger("sipbridge.server").warning("server warning")
    logging.getLogger("sipbridge.sip.trace").info("trace info")  # INFO whatever the level
    shown = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert shown == ["call debug", "media error", "server warning", "trace info"]

    # Set up again (a second server in one process): earlier component levels are gone,
    # and naming sip silences the trace below it.
    stream = io.StringIO()
    setup_logging("info", stream, levels=parse_log_levels("sip=warning"))
    logging.getLogger("sipbridge.call").debug("call debug")
    logging.getLogger("sipbridge.sip.trace").info("trace info")
    logging.getLogger("sipbridge.media").info("media info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO sipbridge.media media info")
