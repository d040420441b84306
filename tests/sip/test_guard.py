"""SourceGuard: per-source rate limits, offence counts and bans (sans-I/O, fake clock)."""

from __future__ import annotations

import pytest

from sipbridge.sip.guard import (
    IDLE_BUCKET,
    MAX_TRACKED_SOURCES,
    OFFENCE_WINDOW,
    Admission,
    Ban,
    BanReason,
    GuardLimits,
    Offence,
    SourceGuard,
    in_dialog_call_id,
    normalize_ban_address,
)

ATTACKER = "198.51.100.7"
CARRIER = "203.0.113.10"


def make_guard(**limits: object) -> SourceGuard:
    values: dict[str, object] = {"rate": 10.0, "burst": 20, "ban_time": 600.0}
    values.update(limits)
    return SourceGuard(
        GuardLimits(**values),  # type: ignore[arg-type]
        trusted=lambda host: host.startswith("203.0.113."),
    )


def test_burst_then_rate_then_ban() -> None:
    guard = make_guard()
    verdicts = [guard.admit(ATTACKER, 0.0) for _ in range(20)]
    assert verdicts == [Admission.ADMIT] * 20
    assert guard.admit(ATTACKER, 0.0) is Admission.BANNED
    [ban] = guard.take_new_bans()
    assert ban == Ban(ATTACKER, "flood", 600.0)
    assert guard.is_banned(ATTACKER, 1.0)
    # Everything after is dropped unparsed for the whole ban, and counted.
    assert guard.admit(ATTACKER, 599.0) is Admission.BANNED
    assert guard.dropped_banned == 2
    # The ban ends; the source starts over with a full bucket.
    assert guard.admit(ATTACKER, 600.5) is Admission.ADMIT
    assert not guard.is_banned(ATTACKER, 600.5)


def test_sustained_rate_below_the_limit_is_never_banned() -> None:
    guard = make_guard()
    now = 0.0
    for _ in range(2000):  # 9.5 messages a second for 210 s
        assert guard.admit(ATTACKER, now) is Admission.ADMIT
        now += 1 / 9.5
    assert guard.take_new_bans() == []


def test_rate_just_above_the_limit_is_banned_once_the_burst_is_spent() -> None:
    guard = make_guard()
    now, sent = 0.0, 0
    while guard.admit(ATTACKER, now) is Admission.ADMIT:
        now += 1 / 12  # 12/s against 10/s: the 20-message burst lasts about 10 s
        sent += 1
    assert 100 < sent < 140
    assert [b.reason for b in guard.take_new_bans()] == ["flood"]


def test_trusted_source_is_throttled_never_banned() -> None:
    guard = make_guard()
    verdicts = [guard.admit(CARRIER, 0.0) for _ in range(25)]
    assert verdicts.count(Admission.ADMIT) == 20
    assert verdicts[20:] == [Admission.THROTTLED] * 5
    assert guard.dropped_throttled == 5
    assert guard.take_new_bans() == []
    # Tokens come back with time: the carrier is served again.
    assert guard.admit(CARRIER, 0.5) is Admission.ADMIT


def test_sources_are_independent() -> None:
    guard = make_guard()
    for _ in range(21):
        guard.admit(ATTACKER, 0.0)
    assert guard.is_banned(ATTACKER, 0.0)
    assert guard.admit("192.0.2.1", 0.0) is Admission.ADMIT


def test_scanner_user_agents() -> None:
    guard = make_guard(scanner_user_agents=("friendly-scanner", "sipvicious"))
    assert guard.is_scanner("friendly-scanner")
    assert guard.is_scanner("SIPVicious/0.3.8 (x)")
    assert not guard.is_scanner("Twilio Gateway")
    assert not guard.is_scanner(None)
    assert not guard.is_scanner("")
    assert guard.scanner(ATTACKER, 5.0) == Ban(ATTACKER, "scanner", 605.0)
    assert guard.scanner(CARRIER, 5.0) is None  # a carrier is never banned automatically
    assert not guard.is_banned(CARRIER, 5.0)


@pytest.mark.parametrize(
    ("offence", "limit_name", "reason"),
    [
        (Offence.AUTH_FAILURE, "auth_failures", BanReason.AUTH_FAILURES),
        (Offence.UNKNOWN_NUMBER, "unknown_numbers", BanReason.UNKNOWN_NUMBERS),
    ],
)
def test_offences_ban_at_their_limit_within_a_minute(
    offence: Offence, limit_name: str, reason: BanReason
) -> None:
    guard = make_guard(**{limit_name: 3})
    assert guard.offence(ATTACKER, offence, 0.0) is None
    assert guard.offence(ATTACKER, offence, 10.0) is None
    ban = guard.offence(ATTACKER, offence, 20.0)
    assert ban is not None and ban.reason == reason.value
    # Spread over more than the window: no ban.
    slow = "192.0.2.2"
    for step in range(6):
        assert guard.offence(slow, offence, step * (OFFENCE_WINDOW / 2 + 1)) is None
    # A trusted source is counted but never banned.
    for _ in range(5):
        assert guard.offence(CARRIER, offence, 0.0) is None


def test_manual_bans_and_networks() -> None:
    guard = make_guard()
    assert guard.ban("198.51.100.0/24", "manual", 0.0, duration=None) is not None
    assert guard.admit("198.51.100.99", 1e9) is Admission.BANNED
    assert guard.admit("198.51.101.1", 1e9) is Admission.ADMIT
    # A manual ban holds for trusted sources too.
    guard.ban(CARRIER, "manual", 0.0, duration=30.0)
    assert guard.admit(CARRIER, 10.0) is Admission.BANNED
    assert guard.admit(CARRIER, 31.0) is Admission.ADMIT
    assert guard.unban("198.51.100.0/24")
    assert not guard.unban("198.51.100.0/24")
    assert guard.admit("198.51.100.99", 1e9) is Admission.ADMIT


def test_a_shorter_ban_does_not_replace_a_longer_one() -> None:
    guard = make_guard()
    assert guard.ban(ATTACKER, "manual", 0.0, duration=None) is not None
    assert guard.ban(ATTACKER, "flood", 0.0) is None
    assert guard.bans(0.0) == [Ban(ATTACKER, "manual", None)]
    longer = guard.ban("192.0.2.9", "flood", 0.0)
    assert longer is not None and longer.until == 600.0
    assert guard.ban("192.0.2.9", "manual", 10.0, duration=5000.0) is not None
    assert guard.bans(10.0)[-1].until == 5010.0


def test_load_replaces_stored_bans_but_keeps_unsaved_ones() -> None:
    guard = make_guard()
    mine = guard.ban(ATTACKER, "scanner", 0.0)
    assert mine is not None
    guard.load([Ban("192.0.2.50", "manual", None), Ban("192.0.2.51", "flood", 5.0)], 10.0)
    banned = {b.address for b in guard.bans(10.0)}
    assert banned == {ATTACKER, "192.0.2.50"}  # the ended one is not loaded
    # Once stored, the store's list is the truth: lifting it there lifts it here.
    guard.saved(mine)
    guard.load([], 11.0)
    assert guard.bans(11.0) == []
    assert guard.admit(ATTACKER, 11.0) is Admission.ADMIT


def test_take_new_bans_once() -> None:
    guard = make_guard()
    assert not guard.has_new_bans
    guard.ban(ATTACKER, "manual", 0.0)
    assert guard.has_new_bans
    assert len(guard.take_new_bans()) == 1
    assert guard.take_new_bans() == []


def test_expire_forgets_idle_state() -> None:
    guard = make_guard()
    guard.admit("192.0.2.1", 0.0)
    guard.offence("192.0.2.1", Offence.AUTH_FAILURE, 0.0)
    guard.ban(ATTACKER, "flood", 0.0, duration=1.0)
    guard.ban("198.51.100.0/24", "manual", 0.0, duration=1.0)
    guard.expire(IDLE_BUCKET + OFFENCE_WINDOW + 1)
    assert guard._buckets == {}
    assert guard._offences == {}
    assert guard._hosts == {}
    assert guard._networks == []
    assert guard._unsaved == {}


def test_tracked_sources_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sipbridge.sip.guard.MAX_TRACKED_SOURCES", 3)
    guard = make_guard()
    for i in range(10):
        assert guard.admit(f"192.0.2.{i}", 0.0) is Admission.ADMIT
    assert len(guard._buckets) == 3
    assert MAX_TRACKED_SOURCES == 100_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7/24 ", "203.0.113.0/24"),
        ("203.0.113.7/32", "203.0.113.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1/128", "192.0.2.1"),
    ],
)
def test_normalize_ban_address(text: str, expected: str) -> None:
    assert normalize_ban_address(text) == expected


@pytest.mark.parametrize("text", ["", "example.com", "300.1.1.1", "10.0.0.0/33"])
def test_normalize_ban_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_ban_address(text)


def test_ipv4_bans_hold_for_ipv4_mapped_sources() -> None:
    """A dual-stack socket ("::") reports IPv4 peers as ::ffff:a.b.c.d."""
    guard = make_guard()
    guard.ban("192.0.2.1", "manual", 0.0)
    guard.ban("198.51.100.0/24", "manual", 0.0)
    assert guard.admit("::ffff:192.0.2.1", 1.0) is Admission.BANNED
    assert guard.admit("::ffff:198.51.100.9", 1.0) is Admission.BANNED
    assert [b.address for b in guard.bans(1.0)] == ["192.0.2.1", "198.51.100.0/24"]
    # An automatic ban of a mapped source is stored as the IPv4 address.
    for _ in range(21):
        guard.admit("::ffff:203.0.113.50", 2.0)
    assert guard.is_banned("203.0.113.50", 2.0)
    assert "203.0.113.50" in {b.address for b in guard.bans(2.0)}
    assert guard.unban("192.0.2.1")
    assert guard.admit("::ffff:192.0.2.1", 3.0) is Admission.ADMIT


# ---------------------------------------------------------------- trunk rates, in-dialog


def bye(call_id: str, *, compact: bool = False, method: str = "BYE") -> bytes:
    header = "i" if compact else "Call-ID"
    return (
        f"{method} sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\r\n"
        f"{header}: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_in_dialog_call_id_reads_only_ack_bye_cancel_and_responses() -> None:
    assert in_dialog_call_id(bye("abc@host")) == "abc@host"
    assert in_dialog_call_id(bye("abc", compact=True)) == "abc"
    assert in_dialog_call_id(bye("abc", method="ACK")) == "abc"
    assert in_dialog_call_id(bye("abc", method="CANCEL")) == "abc"
    assert in_dialog_call_id(b"SIP/2.0 200 OK\r\ncall-id:  xyz \r\nCSeq: 1 BYE\r\n\r\n") == "xyz"
    # Other methods start calls or need admission: never exempt.
    assert in_dialog_call_id(bye("abc", method="INVITE")) is None
    assert in_dialog_call_id(bye("abc", method="OPTIONS")) is None
    # A Call-ID only in the body does not count; no Call-ID at all is None.
    body = b"BYE sip:a SIP/2.0\r\nCSeq: 2 BYE\r\n\r\nCall-ID: abc\r\n"
    assert in_dialog_call_id(body) is None
    assert in_dialog_call_id(b"BYE sip:a SIP/2.0\r\nCall-ID:\r\n\r\n") is None
    assert in_dialog_call_id(b"garbage") is None


def test_a_trunk_network_has_its_own_higher_rate_and_zero_means_no_limit() -> None:
    rates = {"203.0.113.10": 1000.0, "203.0.113.11": 0.0}
    guard = make_guard(rate=50.0, burst=100)
    guard.source_rate = rates.get
    # 20 calls a second at ~7 messages each, for 10 s: never throttled at 1000/s.
    now = 0.0
    for _ in range(1400):
        assert guard.admit("203.0.113.10", now) is Admission.ADMIT
        now += 1 / 140
    # Its burst is two seconds of its rate.
    verdicts = [guard.admit("203.0.113.10", 100.0) for _ in range(2100)]
    assert verdicts.count(Admission.ADMIT) == 2000
    assert guard.dropped_throttled == 100
    # No limit at all.
    assert all(guard.admit("203.0.113.11", 0.0) is Admission.ADMIT for _ in range(10_000))
    # Everyone else keeps the unknown-source limit (and is banned beyond it).
    assert [guard.admit(ATTACKER, 0.0) for _ in range(101)][-1] is Admission.BANNED


def test_reset_rates_looks_the_rate_up_again() -> None:
    rates: dict[str, float] = {}
    guard = make_guard()
    guard.source_rate = rates.get
    for _ in range(20):
        guard.admit(CARRIER, 0.0)
    assert guard.admit(CARRIER, 0.0) is Admission.THROTTLED
    rates[CARRIER] = 500.0  # the trunk got its own rate
    guard.reset_rates()
    assert all(guard.admit(CARRIER, 0.0) is Admission.ADMIT for _ in range(900))


def test_in_dialog_messages_of_a_live_call_pass_the_rate_limit_and_are_counted() -> None:
    live = {(CARRIER, "call-1"), (ATTACKER, "call-2")}
    asked: list[tuple[str, str]] = []

    def in_dialog(host: str, call_id: str) -> bool:
        asked.append((host, call_id))
        return (host, call_id) in live

    guard = make_guard()
    guard.in_dialog = in_dialog
    for _ in range(20):
        guard.admit(CARRIER, 0.0, bye("other"))
    assert asked == []  # under the rate: no look at the message at all
    assert guard.admit(CARRIER, 0.0, bye("call-1")) is Admission.ADMIT
    assert guard.admit(CARRIER, 0.0, bye("call-1", method="ACK")) is Admission.ADMIT
    assert guard.admitted_in_dialog == 2
    # Over the rate, anything else is throttled as before: other Call-IDs, other methods.
    assert guard.admit(CARRIER, 0.0, bye("call-9")) is Admission.THROTTLED
    assert guard.admit(CARRIER, 0.0, bye("call-1", method="INVITE")) is Admission.THROTTLED
    assert guard.admit(CARRIER, 0.0, bye("call-1", method="OPTIONS")) is Admission.THROTTLED


def test_a_flood_of_forged_byes_is_banned_as_any_flood() -> None:
    guard = make_guard()
    guard.in_dialog = lambda host, call_id: (host, call_id) == (ATTACKER, "live")
    verdicts = [guard.admit(ATTACKER, 0.0, bye(f"guess-{n}")) for n in range(25)]
    assert verdicts[:20] == [Admission.ADMIT] * 20
    assert verdicts[20] is Admission.BANNED
    # Banned: not even a live Call-ID gets through a ban.
    assert guard.admit(ATTACKER, 0.0, bye("live")) is Admission.BANNED
    assert guard.admitted_in_dialog == 0
