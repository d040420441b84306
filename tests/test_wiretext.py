import json

import pytest

from sipbridge.sip import grammar
from sipbridge.wiretext import clean, clean_opt


@pytest.mark.parametrize(
    ("wire", "stored"),
    [
        ("+12025550101", "+12025550101"),
        ("anonymous", "anonymous"),
        ("%FF%FE", "%FF%FE"),  # not UTF-8: surrogates from surrogateescape
        ("%00", "%00"),  # NUL: PostgreSQL refuses it in text
        ("x%0D%0A2026-12-06 WARNING forged", "x%0D%0A2026-12-06 WARNING forged"),
        ("%1B%5B2J", "%1B[2J"),  # ESC is escaped, the printable rest is kept
        ("%E2%80%AE", "%E2%80%AE"),  # RIGHT-TO-LEFT OVERRIDE
        ("%E2%80%A8", "%E2%80%A8"),  # LINE SEPARATOR
        ("%C2%85", "%C2%85"),  # NEL, a C1 control
        ("%7F", "%7F"),  # DEL
        ("%ED%A0%80", "%ED%A0%80"),  # an encoded surrogate is not UTF-8 either
        ("%C0%80", "%C0%80"),  # overlong NUL
        ("Jos%C3%A9", "José"),  # real UTF-8 stays as it is
        ("%F0%9F%98%80", "\U0001f600"),
    ],
)
def test_wire_user_parts_become_storable_encodable_one_line_text(wire: str, stored: str) -> None:
    text = clean(grammar.unescape(wire))
    assert text == stored
    text.encode("utf-8")  # strict: no surrogate left
    assert "\x00" not in text and text.isprintable()
    json.dumps({"from": text}, ensure_ascii=False).encode("utf-8")


def test_printable_text_is_returned_as_is() -> None:
    text = "+12025550101"
    assert clean(text) is text
    assert clean_opt(None) is None and clean_opt("a\tb") == "a%09b"
