import base64
import secrets

import pytest

from sipbridge.sdp.crypto import (
    CryptoAttribute,
    CryptoSuite,
    SkippedCrypto,
    answer_crypto,
    answered_crypto,
    crypto_attributes,
    offer_crypto,
    parse_crypto,
)

# RFC 4568 §4's example key (40 base64 characters: 16-byte key + 14-byte salt).
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_LINE = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4 FEC_ORDER=FEC_SRTP"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_line_both_suites() -> None:
    key = secrets.token_bytes(30)
    for suite in CryptoSuite:
        parsed = parse_crypto(f"7 {suite.value} inline:{b64(key)}")
        assert parsed == CryptoAttribute(7, suite, key)


def test_lifetime_accepted_in_both_spellings() -> None:
    key = secrets.token_bytes(30)
    for text, value in (("2^31", 1 << 31), ("2^20", 1 << 20), ("1048576", 1 << 20)):
        parsed = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_32 inline:{b64(key)}|{text}")
        assert isinstance(parsed, CryptoAttribute), parsed
        assert parsed.lifetime == value and parsed.key == key


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (RFC_LINE, "mki not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^31|1:1", "mki not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:1", "mki not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^19", "shorter than a call"),
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}", "unknown suite"),
        (f"1 AEAD_AES_128_GCM inline:{RFC_KEY}", "unknown suite"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}", "unknown suite"),
        (f"x1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "bad tag"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "bad tag"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "not inline"),
        (f"1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}", "not inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64*at*all*padding*xxxx", "not base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-4]}", "is 27 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(bytes(32))}", "is 32 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}", "several keys"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^x", "bad lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^31|2^31", "bad lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^99", "bad lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1|2|3", "too many"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNAUTHENTICATED_SRTP", "UNAUTH"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=24", "KDR=24"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_KEY=inline:{RFC_KEY}", "FEC_KEY"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} NEW_THING=1", "NEW_THING"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag"),
        ("", "needs a tag"),
    ],
)
def test_unusable_lines_are_skipped_with_a_reason(line: str, reason: str) -> None:
    parsed = parse_crypto(line)
    assert isinstance(parsed, SkippedCrypto)
    assert reason in parsed.reason and parsed.value == line


def test_session_parameters_we_accept() -> None:
    parsed = parse_crypto(f"2 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=0 WSH=256 -X=y")
    assert isinstance(parsed, CryptoAttribute)
    assert parsed.window_size == 256 and parsed.key == base64.b64decode(RFC_KEY)
    # The hint is kept inside libsrtp's limits.
    low = parse_crypto(f"2 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=1")
    assert isinstance(low, CryptoAttribute) and low.window_size == 64


def test_value_round_trips() -> None:
    attribute = CryptoAttribute(3, CryptoSuite.AES_CM_128_HMAC_SHA1_32, secrets.token_bytes(30))
    assert attribute.value().startswith("3 AES_CM_128_HMAC_SHA1_32 inline:")
    assert parse_crypto(attribute.value()) == attribute


def test_parser_never_raises_on_junk() -> None:
    rng = secrets.SystemRandom()
    alphabet = "0123456789 AES_CM_128_HMAC_SHA1_80inline:|^;=+/-\t\x00\u00e9"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        assert isinstance(parse_crypto(text), CryptoAttribute | SkippedCrypto)


def test_media_attributes_in_offer_order_duplicates_skipped() -> None:
    k1, k2 = secrets.token_bytes(30), secrets.token_bytes(30)
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", "0 PCMU/8000"),
        ("crypto", f"1 AES_256_CM_HMAC_SHA1_80 inline:{b64(bytes(46))}"),
        ("crypto", f"2 AES_CM_128_HMAC_SHA1_32 inline:{b64(k1)}"),
        ("crypto", f"2 AES_CM_128_HMAC_SHA1_80 inline:{b64(k2)}"),
        ("crypto", f"3 AES_CM_128_HMAC_SHA1_80 inline:{b64(k2)}"),
        ("crypto", None),
    ]
    usable, skipped = crypto_attributes(attributes)
    assert [(c.tag, c.suite, c.key) for c in usable] == [
        (2, CryptoSuite.AES_CM_128_HMAC_SHA1_32, k1),
        (3, CryptoSuite.AES_CM_128_HMAC_SHA1_80, k2),
    ]
    assert [s.reason.split(" ")[0] for s in skipped] == ["unknown", "duplicate", "needs"]


def test_answer_crypto_echoes_tag_and_suite_with_our_own_key() -> None:
    offered = CryptoAttribute(9, CryptoSuite.AES_CM_128_HMAC_SHA1_32, secrets.token_bytes(30))
    first, second = answer_crypto(offered), answer_crypto(offered)
    assert (first.tag, first.suite) == (9, CryptoSuite.AES_CM_128_HMAC_SHA1_32)
    assert len(first.key) == 30 and first.key not in (offered.key, second.key)
    kept = answer_crypto(offered, first.key)
    assert kept.key == first.key
    with pytest.raises(ValueError):
        answer_crypto(offered, bytes(16))


def test_offer_crypto_both_suites_each_with_its_own_fresh_key() -> None:
    first, again = offer_crypto(), offer_crypto()
    assert [(c.tag, c.suite) for c in first] == [
        (1, CryptoSuite.AES_CM_128_HMAC_SHA1_80),
        (2, CryptoSuite.AES_CM_128_HMAC_SHA1_32),
    ]
    keys = {c.key for c in first} | {c.key for c in again}
    assert len(keys) == 4 and all(len(k) == 30 for k in keys)
    assert [parse_crypto(c.value()) for c in first] == first  # what goes in the SDP


def test_answered_crypto_is_our_line_of_the_answers_tag_and_suite() -> None:
    ours = offer_crypto()
    theirs = answer_crypto(ours[1])  # the answerer took tag 2, with its own key
    assert answered_crypto(ours, theirs) is ours[1]
    unknown = CryptoAttribute(3, CryptoSuite.AES_CM_128_HMAC_SHA1_80, theirs.key)
    with pytest.raises(ValueError, match="tag 3 is none we offered"):
        answered_crypto(ours, unknown)
    switched = CryptoAttribute(1, CryptoSuite.AES_CM_128_HMAC_SHA1_32, theirs.key)
    with pytest.raises(ValueError, match="we offered AES_CM_128_HMAC_SHA1_80"):
        answered_crypto(ours, switched)
    with pytest.raises(ValueError, match="our own"):  # one key both ways: keystream reuse
        answered_crypto(ours, ours[0])
