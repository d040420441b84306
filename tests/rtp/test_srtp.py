import secrets

import pylibsrtp
import pytest

from sipbridge.rtp.rtcp import ReceiverReport, SenderReport, parse_compound, serialize_compound
from sipbridge.rtp.srtp import SUITES, SrtpSession
from sipbridge.rtp.stream import RtpSender

SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
TAG_LENGTH = {SHA1_80: 10, SHA1_32: 4}
PROFILE = {
    SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def peer(suite: str, key: bytes, inbound: bool) -> pylibsrtp.Session:
    """The other end through pylibsrtp's own public API."""
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key, ssrc_type, srtp_profile=PROFILE[suite]))


def rtp_stream(ssrc: int = 0x1234) -> RtpSender:
    return RtpSender(
        ssrc=ssrc,
        payload_type=0,
        samples_per_frame=160,
        initial_sequence=65530,
        initial_timestamp=0,
    )


def test_known_answer_vector() -> None:
    # libsrtp's test/srtp_driver.c reference packet for AES_CM_128_HMAC_SHA1_80.
    key = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
    plain = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
    cipher = bytes.fromhex(
        "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
    )
    session = SrtpSession(SHA1_80, key, key)
    assert session.protect(plain) == cipher
    assert session.unprotect(cipher) == plain


@pytest.mark.parametrize("suite", [SHA1_80, SHA1_32])
def test_both_directions_with_an_independent_peer(suite: str) -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    session = SrtpSession(suite, ours, theirs)
    assert session.suite == suite
    their_rx, their_tx = peer(suite, ours, inbound=True), peer(suite, theirs, inbound=False)
    sender, caller = rtp_stream(), rtp_stream(0x5678)
    for n in range(20):  # across a sequence number wrap (initial 65530): the ROC moves
        payload = secrets.token_bytes(160)
        packet = sender.packet(payload)
        protected = session.protect(packet)
        assert protected is not None
        assert len(protected) == len(packet) + TAG_LENGTH[suite]
        assert payload not in protected
        assert their_rx.unprotect(protected) == packet
        incoming = caller.packet(bytes([n]) * 160)
        assert session.unprotect(their_tx.protect(incoming)) == incoming
    report = serialize_compound([SenderReport(0x1234, 1 << 32, 160, 20, 3200, ())])
    protected = session.protect_rtcp(report)
    # RFC 3711 §3.4: E flag + 31-bit index, then the tag (80 bits for both suites).
    assert protected is not None and len(protected) == len(report) + 4 + 10
    assert parse_compound(their_rx.unprotect_rtcp(protected)) == parse_compound(report)
    theirs_rr = serialize_compound([ReceiverReport(0x5678, ())])
    assert session.unprotect_rtcp(their_tx.protect_rtcp(theirs_rr)) == theirs_rr
    assert session.stats.dropped == 0


def test_failures_are_counted_never_raised() -> None:
    key = secrets.token_bytes(30)
    session = SrtpSession(SHA1_80, secrets.token_bytes(30), key)
    tx = peer(SHA1_80, key, inbound=False)
    sender = rtp_stream()
    packets = [tx.protect(sender.packet(bytes([n % 256]) * 160)) for n in range(300)]
    assert session.unprotect(packets[1]) is not None

    tampered = bytearray(packets[2])
    tampered[20] ^= 1
    assert session.unprotect(bytes(tampered)) is None
    assert session.unprotect(packets[2][:-1] + bytes([packets[2][-1] ^ 0x80])) is None
    assert session.stats.auth_failures == 2
    assert session.unprotect(packets[2]) is not None  # the real one still passes

    assert session.unprotect(packets[1]) is None  # replayed
    assert session.unprotect(packets[299]) is not None
    assert session.unprotect(packets[0]) is None  # older than the 128-packet window
    assert session.stats.replays == 2

    plain = sender.packet(bytes(160))  # not SRTP at all: no tag to verify
    assert session.unprotect(plain) is None
    assert session.stats.auth_failures == 3
    report = serialize_compound([SenderReport(1, 1, 0, 0, 0, ())])
    forger = peer(SHA1_80, secrets.token_bytes(30), inbound=False)
    assert session.unprotect_rtcp(forger.protect_rtcp(report)) is None
    assert session.stats.auth_failures == 4
    assert session.unprotect_rtcp(report) is None  # plain RTCP: no E flag, no tag
    assert session.stats.malformed == 1
    for junk in (b"", b"\x80", bytes(7), bytes(2000)):
        assert session.unprotect(junk) is None
        assert session.unprotect_rtcp(junk) is None
    assert session.stats.malformed == 9
    assert session.stats.dropped == (
        session.stats.auth_failures + session.stats.replays + session.stats.malformed
    )
    assert session.protect(bytes(2000)) is None and session.stats.protect_failures == 1


def test_a_new_caller_ssrc_is_accepted_only_with_the_key() -> None:
    key = secrets.token_bytes(30)
    session = SrtpSession(SHA1_80, secrets.token_bytes(30), key)
    tx = peer(SHA1_80, key, inbound=False)
    for ssrc in (1, 2, 3):
        packet = rtp_stream(ssrc).packet(bytes(160))
        assert session.unprotect(tx.protect(packet)) == packet
    forger = peer(SHA1_80, secrets.token_bytes(30), inbound=False)
    assert session.unprotect(forger.protect(rtp_stream(4).packet(bytes(160)))) is None


def test_update_rekeys_only_what_changed() -> None:
    ours, theirs, theirs2 = (secrets.token_bytes(30) for _ in range(3))
    session = SrtpSession(SHA1_80, ours, theirs)
    rx = peer(SHA1_80, ours, inbound=True)
    tx = peer(SHA1_80, theirs, inbound=False)
    sender, caller = rtp_stream(), rtp_stream(0x77)
    first = tx.protect(caller.packet(bytes(160)))
    assert session.unprotect(first) is not None
    assert rx.unprotect(session.protect(sender.packet(bytes(160)))) is not None

    # Same keys (a hold re-INVITE): nothing is reset, a replay is still a replay.
    session.update(SHA1_80, ours, theirs)
    assert session.unprotect(first) is None and session.stats.replays == 1
    # The caller's new key: packets under it pass, packets under the old one fail;
    # our outbound stream goes on unchanged for the peer.
    session.update(SHA1_80, ours, theirs2)
    new_tx = peer(SHA1_80, theirs2, inbound=False)
    assert session.unprotect(new_tx.protect(caller.packet(bytes(160)))) is not None
    assert session.unprotect(tx.protect(caller.packet(bytes(160)))) is None
    for _ in range(5):
        assert rx.unprotect(session.protect(sender.packet(bytes(160)))) is not None
    # Another suite with a new key of ours: a fresh outbound stream.
    ours2 = secrets.token_bytes(30)
    session.update(SHA1_32, ours2, theirs2)
    rx32 = peer(SHA1_32, ours2, inbound=True)
    protected = session.protect(sender.packet(bytes(160)))
    assert protected is not None and rx32.unprotect(protected) is not None


def test_bad_parameters_are_refused_and_leave_the_session_unchanged() -> None:
    assert set(SUITES) == {SHA1_80, SHA1_32}
    key = secrets.token_bytes(30)
    with pytest.raises(ValueError, match="suite"):
        SrtpSession("AES_256_CM_HMAC_SHA1_80", key, key)
    with pytest.raises(ValueError, match="30 bytes"):
        SrtpSession(SHA1_80, key[:16], key)
    session = SrtpSession(SHA1_80, key, key)
    with pytest.raises(ValueError):
        session.update(SHA1_80, key, key[:29])
    packet = rtp_stream().packet(bytes(160))
    assert session.unprotect(peer(SHA1_80, key, inbound=False).protect(packet)) == packet
