"""E.164 phone number handling (thin layer over ``phonenumbers``).

Two flavours of parsing live here:

* :func:`normalize_e164` is strict and meant for numbers typed by an operator (CLI, API):
  the result must be a *valid* number for its region.
* :func:`dialed_number` / :func:`caller_number` are lenient and meant for the user part of
  SIP URIs coming off the wire: anything that is a *possible* number is accepted, because
  carriers send all sorts of formats and we would rather look a number up than reject it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import phonenumbers

__all__ = ["InvalidNumber", "caller_number", "dialed_number", "normalize_e164"]

# Visual separators allowed in phone numbers (RFC 3966 "visual-separator" plus spaces).
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"\d+")


class InvalidNumber(ValueError):
    """Raised when a text cannot be read as a valid phone number."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(f"{text!r} is not a valid phone number (use E.164, e.g. +12025550101)")


def _strip_tel_scheme(text: str) -> str:
    stripped = text.strip()
    if stripped[:4].lower() == "tel:":
        stripped = stripped[4:]
    # tel URI parameters (";ext=12", ";phone-context=...") are not part of the number.
    return stripped.split(";", 1)[0].strip()


def normalize_e164(text: str, default_region: str | None = None) -> str:
    """Return ``text`` as an E.164 string (``+12025550101``).

    Accepts the usual human formats (``+1 (202) 555-0101``, ``tel:+1-202-555-0101``).
    Without a leading ``+`` the number is read in ``default_region`` (ISO 3166 code such as
    ``"US"``); with no region such a number is rejected. The number must be valid according
    to ``phonenumbers.is_valid_number``, otherwise :class:`InvalidNumber` is raised.
    """
    candidate = _strip_tel_scheme(text)
    if not candidate:
        raise InvalidNumber(text)
    try:
        parsed = phonenumbers.parse(candidate, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(text) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber(text)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _wire_number(user: str | None) -> str | None:
    """Read a SIP URI user part as an international number; E.164 or None."""
    if not user:
        return None
    candidate = unquote(user).split(";", 1)[0]
    candidate = _SEPARATORS.sub("", candidate)
    if candidate.startswith("+"):
        candidate = candidate[1:]
    elif candidate.startswith("00"):
        candidate = candidate[2:]
    if not _DIGITS.fullmatch(candidate):
        return None
    try:
        parsed = phonenumbers.parse("+" + candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def dialed_number(request_uri_user: str | None, to_user: str | None) -> str | None:
    """The number a caller dialed, in E.164, or None.

    Taken from the Request-URI user part, falling back to the To user part when the
    Request-URI does not carry a number. Separators and ``;params`` are stripped; digits
    without ``+`` (or with a ``00`` international prefix) are read as international.
    """
    number = _wire_number(request_uri_user)
    if number is not None:
        return number
    return _wire_number(to_user)


def caller_number(user: str | None) -> str | None:
    """The caller's number from the From user part.

    E.164 when the user part reads as a number, the raw user part otherwise (for example
    ``"anonymous"``), None when there is no user part.
    """
    if not user:
        return None
    number = _wire_number(user)
    return number if number is not None else user
