"""SDES keys for SRTP: the ``a=crypto`` attribute (RFC 4568).

``parse_crypto`` reads one attribute value (RFC 4568 §9.1 grammar)::

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params = key-param *(";" key-param)
    key-param  = "inline:" <base64 of master key || master salt> ["|" lifetime] ["|" MKI ":" length]

and never raises: a line we cannot use comes back as :class:`SkippedCrypto` with the
reason, so one odd line costs that line only (RFC 4568 §7.1.1: the answerer picks one of
the offered attributes it supports and ignores the others).

What we accept (RFC 4568 §6.2 suites, the ones libsrtp and every SIP trunk speak):

* ``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32``: a 128-bit master key and a
  112-bit master salt, 30 bytes in all. Other suites (AES_192/256, F8, GCM, NULL ciphers)
  are skipped as ``unknown suite``, not errors.
* **lifetime** (``|2^31`` or ``|1048576``, RFC 4568 §6.1): accepted when it is at least
  2^20 packets, which covers the longest call we allow (4 h of 20 ms packets is
  720 000); a shorter one would need rekeying mid-call, which SDES leaves to a re-INVITE
  we do not send, so such a key is skipped. We never send a lifetime (libsrtp's own limit,
  2^48 SRTP and 2^31 SRTCP packets, applies).
* **MKI** (``|1:4``, RFC 4568 §6.1 / RFC 3711 §3.1): keys carrying an MKI are skipped
  (``mki not supported``): pylibsrtp 1.0 cannot put an MKI in packets or select keys by
  it. For the same reason an attribute with several keys (``;`` between key-params, which
  needs MKIs to tell them apart) is skipped.
* **session parameters** (RFC 4568 §6.3): ``WSH=<n>`` (replay window size hint) is
  accepted; ``KDR=0`` (no re-keying, the default) is accepted, any other ``KDR`` is
  skipped; ``UNENCRYPTED_SRTP``, ``UNENCRYPTED_SRTCP`` and ``UNAUTHENTICATED_SRTP`` are
  skipped (we do not weaken SRTP on request), as are ``FEC_ORDER`` / ``FEC_KEY``. An
  unknown parameter skips the line unless it starts with ``-`` (RFC 4568 §9.1
  ``srtp-session-extension``: a leading dash marks an extension that may be ignored).
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CryptoAttribute",
    "CryptoSuite",
    "SkippedCrypto",
    "answer_crypto",
    "answered_crypto",
    "crypto_attributes",
    "offer_crypto",
    "parse_crypto",
]

# RFC 4568 §6.1: lifetimes below this cannot carry a whole call (see the module docstring).
MIN_LIFETIME: Final = 1 << 20
_MAX_WINDOW: Final = 0x7FFF  # libsrtp's replay window limit


class CryptoSuite(enum.Enum):
    """The SRTP crypto suites we support (RFC 4568 §6.2.1 and §6.2.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def key_length(self) -> int:
        """Master key plus master salt, in bytes (128 + 112 bits for both suites)."""
        return 30


_SUITES: Final = {suite.value: suite for suite in CryptoSuite}


@dataclass(frozen=True)
class CryptoAttribute:
    """One usable ``a=crypto`` line: ``key`` is master key || master salt."""

    tag: int
    suite: CryptoSuite
    key: bytes
    lifetime: int | None = None
    window_size: int | None = None  # WSH session parameter (RFC 4568 §6.3.6)

    def value(self) -> str:
        """The attribute value for ``a=crypto:<value>`` (no lifetime, no MKI)."""
        encoded = base64.b64encode(self.key).decode("ascii")
        text = f"{self.tag} {self.suite.value} inline:{encoded}"
        if self.window_size is not None:
            text += f" WSH={self.window_size}"
        return text


@dataclass(frozen=True)
class SkippedCrypto:
    """An ``a=crypto`` line we cannot use, and why."""

    value: str
    reason: str


def _parse_lifetime(text: str) -> int | None:
    # §9.1: lifetime = ["2^"] 1*(DIGIT)
    digits = text[2:] if text.startswith("2^") else text
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        return None
    number = int(digits)
    if text.startswith("2^"):
        return 1 << number if number <= 64 else None
    return number


def _is_mki(text: str) -> bool:
    # §9.1: mki = mki-value ":" mki-length
    value, colon, length = text.partition(":")
    return bool(colon) and value.isascii() and value.isdigit() and length.isdigit()


def parse_crypto(value: str) -> CryptoAttribute | SkippedCrypto:
    """Parse the value of one ``a=crypto`` line (without ``crypto:``); never raises."""

    def skip(reason: str) -> SkippedCrypto:
        return SkippedCrypto(value, reason)

    fields = value.split()
    if len(fields) < 3:
        return skip("needs a tag, a suite and key parameters")
    tag_text, suite_text, key_params, *session_params = fields
    if not (tag_text.isascii() and tag_text.isdigit()) or len(tag_text) > 9:
        return skip(f"bad tag {tag_text!r}")
    suite = _SUITES.get(suite_text)
    if suite is None:
        return skip(f"unknown suite {suite_text}")
    if ";" in key_params:
        return skip("several keys (needs MKI): not supported")
    method, colon, key_info = key_params.partition(":")
    if not colon or method != "inline":
        return skip(f"key method {method!r} is not inline")
    key_salt, *extras = key_info.split("|")
    if len(extras) > 2:
        return skip("too many '|' fields in the key")
    lifetime: int | None = None
    for extra in extras:
        if _is_mki(extra):
            return skip("mki not supported")
        parsed = _parse_lifetime(extra)
        if parsed is None or lifetime is not None:
            return skip(f"bad lifetime or mki {extra!r}")
        lifetime = parsed
    if lifetime is not None and lifetime < MIN_LIFETIME:
        return skip(f"lifetime {lifetime} is shorter than a call may last")
    try:
        key = base64.b64decode(key_salt, validate=True)
    except (binascii.Error, ValueError):
        return skip("key is not base64")
    if len(key) != suite.key_length:
        return skip(f"key is {len(key)} bytes, {suite.value} needs {suite.key_length}")
    window: int | None = None
    for param in session_params:
        name, _, argument = param.partition("=")
        if name == "WSH" and argument.isascii() and argument.isdigit():
            # §6.3.6: a hint; libsrtp needs at least 64 and at most 0x7fff.
            window = min(max(int(argument), 64), _MAX_WINDOW)
        elif name == "KDR" and argument == "0":
            continue
        elif param.startswith("-"):
            continue  # §9.1 srtp-session-extension: a dash marks it optional
        else:
            return skip(f"session parameter {param} not supported")
    return CryptoAttribute(int(tag_text), suite, key, lifetime, window)


def crypto_attributes(
    attributes: list[tuple[str, str | None]],
) -> tuple[list[CryptoAttribute], list[SkippedCrypto]]:
    """The usable and the skipped ``a=crypto`` lines of one media section, in offer order.

    A tag seen before is skipped (RFC 4568 §9.1: tags are unique within the m-line)."""
    usable: list[CryptoAttribute] = []
    skipped: list[SkippedCrypto] = []
    tags: set[int] = set()
    for name, value in attributes:
        if name != "crypto":
            continue
        parsed = parse_crypto(value or "")
        if isinstance(parsed, CryptoAttribute) and parsed.tag in tags:
            parsed = SkippedCrypto(value or "", f"duplicate tag {parsed.tag}")
        if isinstance(parsed, CryptoAttribute):
            tags.add(parsed.tag)
            usable.append(parsed)
        else:
            skipped.append(parsed)
    return usable, skipped


def answer_crypto(offered: CryptoAttribute, key: bytes | None = None) -> CryptoAttribute:
    """Our answer to the accepted ``offered`` line (RFC 4568 §7.1.2): same tag and suite,
    our own key (``key``, else a fresh one from ``secrets.token_bytes``). The key is never
    the offerer's: each direction has its own master key."""
    if key is None:
        key = secrets.token_bytes(offered.suite.key_length)
    elif len(key) != offered.suite.key_length:
        raise ValueError(f"{offered.suite.value} needs a {offered.suite.key_length}-byte key")
    return CryptoAttribute(offered.tag, offered.suite, key)


def offer_crypto() -> list[CryptoAttribute]:
    """Our ``a=crypto`` lines for an offer (RFC 4568 §7.1.1): both suites, the stronger
    tag first (our preference), each with its own fresh key; the answer picks one."""
    suites = (CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32)
    return [
        CryptoAttribute(tag, suite, secrets.token_bytes(suite.key_length))
        for tag, suite in enumerate(suites, start=1)
    ]


def answered_crypto(offered: list[CryptoAttribute], answer: CryptoAttribute) -> CryptoAttribute:
    """Our offered line the answer's ``answer`` accepted (RFC 4568 §7.1.3: same tag, same
    suite): its key is the one we send with. ValueError when it names no offered line or
    changes its suite, or when the answerer sent our own key back (each direction must
    have its own master key: one key both ways repeats keystream)."""
    for ours in offered:
        if ours.tag == answer.tag:
            if ours.suite is not answer.suite:
                raise ValueError(
                    f"the answer's a=crypto tag {answer.tag} is {answer.suite.value}; "
                    f"we offered {ours.suite.value}"
                )
            if ours.key == answer.key:
                raise ValueError("the answer's a=crypto key is our own")
            return ours
    tags = ", ".join(str(c.tag) for c in offered)
    raise ValueError(f"the answer's a=crypto tag {answer.tag} is none we offered ({tags})")
