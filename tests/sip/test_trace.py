"""What a SIP trace shows of a message: its Call-ID from the raw bytes, its text with the
digest secrets and media keys masked."""

from __future__ import annotations

import pytest

from sipbridge.sip.trace import call_id_of, masked_text

INVITE = (
    b"INVITE sip:+12025550101@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 2 INVITE\r\n"
    b'Authorization: Digest username="acme", realm="sipbridge", nonce="MTcz.abc",\r\n'
    b' uri="sip:+12025550101@192.0.2.10", response="6629fae49393a05397450978507c4ef1",\r\n'
    b' algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001, opaque="keep"\r\n'
    b"Proxy-Authorization: Digest username=acme, nonce=abc123, response=deadbeef\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 999\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"i:not a header\r\n"
    b"k=base64:c2VjcmV0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;"
    b"inline:c2Vjb25kIGtleSBvZiB0aGUgc2FtZSBjcnlwdG8K|2^20|2:4 KDR=1\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:bk9UV09SVEhUSElORyBCVVQgQSBLRVkhIQ==\r\n"
    b"a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
SECRETS = [
    b"MTcz.abc",
    b"6629fae49393a05397450978507c4ef1",
    b"0a4f113b",
    b"abc123",
    b"deadbeef",
    b"c2VjcmV0",
    b"WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    b"c2Vjb25kIGtleSBvZiB0aGUgc2FtZSBjcnlwdG8K",
    b"bk9UV09SVEhUSElORyBCVVQgQSBLRVkhIQ==",
    b"asd88fgpdd777uzjYhagZg",
]


def test_call_id_full_and_compact_form_header_section_only() -> None:
    assert call_id_of(INVITE) == "a84b4c76e66710@pc33.example.com"
    assert call_id_of(b"ACK sip:x SIP/2.0\r\ni:  short-1 \r\n\r\n") == "short-1"
    assert call_id_of(b"BYE sip:x SIP/2.0\r\ncall-id:lower\r\n\r\n") == "lower"
    assert call_id_of(b"SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\n\r\ni: in-the-body\r\n") is None
    assert call_id_of(b"SIP/2.0 200 OK\nCall-ID: bare-lf\n\n") == "bare-lf"
    assert call_id_of(b"no headers at all") is None
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: \xff\xfe\r\n\r\n") == (
        b"\xff\xfe".decode("utf-8", "surrogateescape")
    )


def test_every_secret_is_masked_and_the_rest_kept() -> None:
    text = masked_text(INVITE)
    for secret in SECRETS:
        assert secret.decode() not in text, secret
    assert 'nonce="***",\r\n' in text and 'response="***",\r\n' in text
    assert 'cnonce="***"' in text and 'opaque="keep"' in text and 'username="acme"' in text
    assert "Proxy-Authorization: Digest username=acme, nonce=***, response=***\r\n" in text
    assert "inline:***|2^20|1:4;inline:***|2^20|2:4 KDR=1\r\n" in text
    assert "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:***\r\n" in text
    assert "k=***\r\nm=audio" in text
    assert "a=ice-pwd:***\r\n" in text
    # Everything else byte for byte.
    kept = [
        line
        for line in INVITE.decode().split("\r\n")
        if not any(secret.decode() in line for secret in SECRETS)
    ]
    assert all(line in text for line in kept)
    assert text.count("\r\n") == INVITE.count(b"\r\n")


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        (
            'WWW-Authenticate: Digest realm="sipbridge", nonce="n0nce", qop="auth"',
            'WWW-Authenticate: Digest realm="sipbridge", nonce="***", qop="auth"',
        ),
        (
            'Authentication-Info: nextnonce="nn", rspauth="ra", qop=auth',
            'Authentication-Info: nextnonce="***", rspauth="***", qop=auth',
        ),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("proxy-authorization: Bearer eyJhbGciOi.x.y", "proxy-authorization: Bearer ***"),
        # Not an authentication header: left alone.
        ("Subject: nonce=42 response=yes", "Subject: nonce=42 response=yes"),
    ],
)
def test_authentication_headers(header: str, shown: str) -> None:
    message = f"SIP/2.0 401 Unauthorized\r\nCall-ID: x\r\n{header}\r\nContent-Length: 0\r\n\r\n"
    assert masked_text(message.encode()) == message.replace(header, shown)


def test_bytes_that_are_not_utf8_are_shown_as_escapes() -> None:
    text = masked_text(b"MESSAGE sip:x SIP/2.0\r\nSubject: \xff\xc3\r\n\r\nbody \x80")
    assert text == "MESSAGE sip:x SIP/2.0\r\nSubject: \\xff\\xc3\r\n\r\nbody \\x80"


def test_message_without_a_body() -> None:
    message = b'ACK sip:x SIP/2.0\r\nAuthorization: Digest nonce="n", response="r"'
    assert (
        masked_text(message)
        == 'ACK sip:x SIP/2.0\r\nAuthorization: Digest nonce="***", response="***"'
    )
