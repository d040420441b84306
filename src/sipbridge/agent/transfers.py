"""Where an agent may transfer a caller, and with which headers (sans-I/O).

A transfer sends the caller's carrier a REFER: the caller's side places the new call, and
the operator may pay for it. An agent URL can be compromised, so its ``transfer`` requests
pass :func:`transfer_refusal` first (docs/security.md, "Transfers").

The policy of an agent is its list of allow patterns (``sipbridge agent add
--transfer-allow PATTERN``, repeatable):

- ``+CC...`` (digits, ``*`` for any digits, ``?`` for one): ``tel:`` targets whose E.164
  number matches, e.g. ``+1202555*`` or ``+4420*``;
- ``HOST`` or ``USER@HOST`` (``*`` and ``?`` as wildcards, e.g. ``pbx.example.com``,
  ``sales@*.example.com``): ``sip:``/``sips:`` targets at that host (port ignored);
- ``*``: any target.

An agent with patterns may transfer to the targets that match one of them, nowhere else.
An agent without patterns gets the default policy: ``tel:`` numbers valid in the same
country as the called number (same region; for +1 the same NANP country), except
premium-rate, shared-cost, personal, UAN and voicemail numbers; no ``sip:``/``sips:``
targets at all.

Whatever the policy, an agent cannot set the caller's or the referrer's identity:
:data:`IDENTITY_HEADERS` in a transfer refuse it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Final

import phonenumbers
from phonenumbers import PhoneNumberType

from sipbridge.sip.errors import SipError
from sipbridge.sip.message import Uri

__all__ = [
    "IDENTITY_HEADERS",
    "MAX_PATTERNS",
    "normalize_pattern",
    "transfer_refusal",
]

MAX_PATTERNS: Final = 100
_MAX_PATTERN_LENGTH: Final = 256

#: Identity headers (RFC 3325 P-Asserted/P-Preferred-Identity, RFC 5806 Diversion,
#: RFC 7044 History-Info, RFC 3323 Privacy, RFC 3892 Referred-By, the legacy
#: Remote-Party-ID): carriers bill and display by them, so only sipbridge sets them.
IDENTITY_HEADERS: Final = frozenset(
    {
        "p-asserted-identity",
        "p-preferred-identity",
        "diversion",
        "history-info",
        "privacy",
        "referred-by",
        "b",  # Referred-By, compact form
        "remote-party-id",
    }
)

# Numbers a caller should not be sent to unless the operator says so.
_REFUSED_TYPES: Final = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}
_NUMBER_PATTERN: Final = re.compile(r"\+[0-9*?]+")
_HOST_PATTERN: Final = re.compile(r"(?:[A-Za-z0-9._~!$&'()+,;=%*?-]+@)?[A-Za-z0-9.*?:\[\]-]+")
_VISUAL_SEPARATORS: Final = re.compile(r"[-.()]")


def normalize_pattern(pattern: str) -> str:
    """An allow pattern as stored (``tel:`` dropped, host lower case); ValueError saying
    what is wrong otherwise."""
    text = pattern.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    if not text or len(text) > _MAX_PATTERN_LENGTH:
        raise ValueError(f"a transfer pattern has 1 to {_MAX_PATTERN_LENGTH} characters")
    if text == "*":
        return text
    if text.startswith("+"):
        text = _VISUAL_SEPARATORS.sub("", text)
        if _NUMBER_PATTERN.fullmatch(text) is None:
            raise ValueError(f"{pattern!r}: a number pattern is + then digits, * or ?")
        return text
    for scheme in ("sip:", "sips:"):
        if text[: len(scheme)].lower() == scheme:
            text = text[len(scheme) :]
    if _HOST_PATTERN.fullmatch(text) is None:
        raise ValueError(f"{pattern!r}: expected +NUMBER*, HOST or USER@HOST (wildcards * and ?)")
    user, at, host = text.rpartition("@")
    return f"{user}{at}{host.lower()}"


def transfer_refusal(
    target: str,
    headers: Mapping[str, str],
    allow: Iterable[str],
    dialed: str | None,
) -> str | None:
    """Why a transfer to ``target`` with ``headers`` is refused, or None when it may go.

    ``allow`` are the agent's patterns (as :func:`normalize_pattern` returns them),
    ``dialed`` the called number in E.164 (for the default policy). The reason is a word
    (``identity_header``, ``not_allowed``, ``sip_target``, ``not_a_number``,
    ``other_country``, ``premium_rate``...) and a detail after a colon.
    """
    for name in headers:
        if name.lower() in IDENTITY_HEADERS:
            return f"identity_header: {name} is set by sipbridge, not the agent"
    try:
        uri = Uri.parse(target)
    except (SipError, ValueError):
        return "not_allowed: the target is not a URI"
    patterns = list(allow)
    if uri.scheme == "tel":
        number = _VISUAL_SEPARATORS.sub("", uri.user or "")
        if patterns:
            if number.startswith("+") and _matches(number, patterns, numbers=True):
                return None
            return f"not_allowed: {number} matches none of the agent's transfer patterns"
        return _default_number_policy(number, dialed)
    if uri.scheme in ("sip", "sips"):
        host = uri.host.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if patterns:
            candidates = [host, f"{uri.user}@{host}"] if uri.user else [host]
            if any(_matches(c, patterns, numbers=False) for c in candidates):
                return None
            return f"not_allowed: {host} matches none of the agent's transfer patterns"
        return "sip_target: sip: and sips: targets need a --transfer-allow pattern"
    return f"not_allowed: {uri.scheme}: targets are not transfers"


def _matches(value: str, patterns: list[str], *, numbers: bool) -> bool:
    for pattern in patterns:
        if pattern == "*":
            return True
        if pattern.startswith("+") is not numbers:
            continue
        if numbers:
            if fnmatch.fnmatchcase(value, pattern):
                return True
        elif "@" in pattern:
            if "@" in value and fnmatch.fnmatchcase(value, pattern):
                return True
        elif "@" not in value and fnmatch.fnmatchcase(value, pattern):
            return True
    return False


def _default_number_policy(number: str, dialed: str | None) -> str | None:
    if not number.startswith("+"):
        return "not_a_number: only global numbers (+CC...) without a --transfer-allow pattern"
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return f"not_a_number: {number} is not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return f"not_a_number: {number} is not a valid phone number"
    region = phonenumbers.region_code_for_number(parsed)
    home = _region(dialed)
    if home is None:
        return "other_country: the called number is unknown, so is its country"
    if region != home:
        return f"other_country: {number} is in {region}, the called number in {home}"
    refused = _REFUSED_TYPES.get(phonenumbers.number_type(parsed))
    if refused is not None:
        return f"{refused}: {number}"
    return None


def _region(number: str | None) -> str | None:
    if not number:
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    return region
