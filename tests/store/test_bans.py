from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.models import Ban
from sipbridge.store.records import BanRecord
from sipbridge.store.service import NotFound

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


async def ban_count(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Ban)) or 0)


async def test_add_ban_defaults(db: Database) -> None:
    before = datetime.now(UTC)
    ban = await service.add_ban(db, "203.0.113.7")
    assert isinstance(ban, BanRecord)
    assert (ban.address, ban.reason, ban.note, ban.expires_at) == (
        "203.0.113.7",
        "manual",
        None,
        None,
    )
    assert ban.created_at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= ban.created_at <= datetime.now(UTC)
    assert await service.list_bans(db) == [ban]


async def test_add_ban_full(db: Database) -> None:
    ban = await service.add_ban(
        db, "198.51.100.9", reason="flood", duration=600, note="abuse desk #42", now=T0
    )
    assert ban == BanRecord(
        address="198.51.100.9",
        reason="flood",
        created_at=T0,
        expires_at=T0 + timedelta(seconds=600),
        note="abuse desk #42",
    )
    assert await service.list_bans(db, now=T0) == [ban]
    assert ban.to_json()["expires_at"] == "2025-03-01T12:10:00+00:00"


@pytest.mark.parametrize("reason", ["flood", "auth_failures", "unknown_numbers", "scanner"])
async def test_add_ban_reasons(db: Database, reason: str) -> None:
    assert reason in service.BAN_REASONS
    assert (await service.add_ban(db, "192.0.2.1", reason=reason)).reason == reason
    [listed] = await service.list_bans(db)
    assert listed.reason == reason


async def test_list_and_remove_bans(db: Database) -> None:
    await service.add_ban(db, "192.0.2.1", now=T0)
    await service.add_ban(db, "198.51.100.0/24", now=T0 + timedelta(minutes=1))
    await service.add_ban(db, "2001:db8::/32", now=T0 + timedelta(minutes=2))
    # newest first
    assert [b.address for b in await service.list_bans(db, now=T0)] == [
        "2001:db8::/32",
        "198.51.100.0/24",
        "192.0.2.1",
    ]
    assert await service.remove_ban(db, "198.51.100.0/24") == "198.51.100.0/24"
    assert [b.address for b in await service.list_bans(db, now=T0)] == [
        "2001:db8::/32",
        "192.0.2.1",
    ]
    # named as banned, in any equivalent spelling
    assert await service.remove_ban(db, " 192.0.2.1/32 ") == "192.0.2.1"
    assert await service.remove_ban(db, "2001:0db8:0:0::/32") == "2001:db8::/32"
    assert await service.list_bans(db, now=T0) == []


async def test_remove_unknown_ban(db: Database) -> None:
    with pytest.raises(NotFound, match=r"^no ban on 192\.0\.2\.1$"):
        await service.remove_ban(db, "192.0.2.1")
    await service.add_ban(db, "198.51.100.0/24")
    # a network ban is lifted only by naming the network, not an address inside it
    with pytest.raises(NotFound, match=r"^no ban on 198\.51\.100\.7$"):
        await service.remove_ban(db, "198.51.100.7")
    with pytest.raises(NotFound):
        await service.remove_ban(db, "198.51.100.0/25")
    assert [b.address for b in await service.list_bans(db)] == ["198.51.100.0/24"]


async def test_remove_ban_bad_address(db: Database) -> None:
    with pytest.raises(InvalidField, match=r"^address: ") as info:
        await service.remove_ban(db, "not-an-ip")
    assert info.value.field == "address"


async def test_ban_on_same_address_replaces(db: Database) -> None:
    await service.add_ban(db, "203.0.113.7", reason="flood", duration=60, note="first", now=T0)
    later = T0 + timedelta(minutes=5)
    replaced = await service.add_ban(db, "203.0.113.7/32", note="second", now=later)
    assert replaced == BanRecord(
        address="203.0.113.7", reason="manual", created_at=later, expires_at=None, note="second"
    )
    assert await service.list_bans(db, include_expired=True) == [replaced]
    assert await ban_count(db) == 1
    # and back to a timed ban without a note
    timed = await service.add_ban(db, "203.0.113.7", reason="scanner", duration=30, now=later)
    assert (timed.reason, timed.note, timed.expires_at) == (
        "scanner",
        None,
        later + timedelta(seconds=30),
    )
    assert await service.list_bans(db, include_expired=True, now=later) == [timed]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("203.0.113.7/24", "203.0.113.0/24"),
        ("198.51.100.7/32", "198.51.100.7"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1/128", "2001:db8::1"),
        ("2001:db8:1234::5/48", "2001:db8:1234::/48"),
        ("2001:0DB8::/32", "2001:db8::/32"),
    ],
)
async def test_ban_addresses_normalised(db: Database, given: str, stored: str) -> None:
    assert service.validate_ban_address(given) == stored
    assert (await service.add_ban(db, given)).address == stored
    assert [b.address for b in await service.list_bans(db)] == [stored]


async def test_expiry(db: Database) -> None:
    await service.add_ban(db, "192.0.2.1", duration=60, now=T0)  # ends T0+60s
    await service.add_ban(db, "192.0.2.2", duration=3600, now=T0)  # ends T0+1h
    await service.add_ban(db, "192.0.2.3", now=T0 + timedelta(seconds=1))  # no end

    def addresses(bans: list[BanRecord]) -> list[str]:
        return sorted(b.address for b in bans)

    everything = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert addresses(await service.list_bans(db, now=T0 + timedelta(seconds=59))) == everything
    # a ban has ended at the very moment it expires
    at_end = T0 + timedelta(seconds=60)
    assert addresses(await service.list_bans(db, now=at_end)) == ["192.0.2.2", "192.0.2.3"]
    two_hours = T0 + timedelta(hours=2)
    assert addresses(await service.list_bans(db, now=two_hours)) == ["192.0.2.3"]
    assert addresses(await service.list_bans(db, include_expired=True, now=two_hours)) == everything
    # without now=: the real clock, long past T0
    assert addresses(await service.list_bans(db)) == ["192.0.2.3"]
    assert addresses(await service.list_bans(db, include_expired=True)) == everything


async def test_purge_expired_bans(db: Database) -> None:
    await service.add_ban(db, "192.0.2.1", duration=60, now=T0)
    await service.add_ban(db, "192.0.2.2", duration=3600, now=T0)
    await service.add_ban(db, "192.0.2.3", now=T0)
    assert await service.purge_expired_bans(db, now=T0 + timedelta(seconds=30)) == 0
    assert await service.purge_expired_bans(db, now=T0 + timedelta(seconds=60)) == 1
    left = await service.list_bans(db, include_expired=True)
    assert sorted(b.address for b in left) == ["192.0.2.2", "192.0.2.3"]
    assert await service.purge_expired_bans(db, now=T0 + timedelta(seconds=60)) == 0
    assert await service.purge_expired_bans(db, now=T0 + timedelta(days=3650)) == 1
    assert [b.address for b in await service.list_bans(db, include_expired=True)] == ["192.0.2.3"]
    # without now=: the real clock
    await service.add_ban(db, "192.0.2.4", duration=1, now=T0)
    assert await service.purge_expired_bans(db) == 1
    assert await ban_count(db) == 1


@pytest.mark.parametrize(
    ("address", "kwargs", "field"),
    [
        ("not-an-ip", {}, "address"),
        ("", {}, "address"),
        ("   ", {}, "address"),
        ("300.1.1.1", {}, "address"),
        ("10.0.0.0/33", {}, "address"),
        ("2001:db8::/129", {}, "address"),
        ("192.0.2.1/24/8", {}, "address"),
        ("host.example", {}, "address"),
        ("1" * 65, {}, "address"),
        (None, {}, "address"),
        (7, {}, "address"),
        ("192.0.2.1", {"duration": 0}, "duration"),
        ("192.0.2.1", {"duration": -5}, "duration"),
        ("192.0.2.1", {"duration": 10 * 365 * 86400 + 1}, "duration"),
        ("192.0.2.1", {"duration": float("inf")}, "duration"),
        ("192.0.2.1", {"duration": float("nan")}, "duration"),
        ("192.0.2.1", {"duration": True}, "duration"),
        ("192.0.2.1", {"duration": "60"}, "duration"),
        ("192.0.2.1", {"reason": "grudge"}, "reason"),
        ("192.0.2.1", {"reason": ""}, "reason"),
        ("192.0.2.1", {"note": "x" * 256}, "note"),
        ("192.0.2.1", {"note": "line\nbreak"}, "note"),
        ("192.0.2.1", {"note": "a\x00b"}, "note"),
        ("192.0.2.1", {"note": 42}, "note"),
    ],
)
async def test_add_ban_rejects_bad_fields(
    db: Database, address: object, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidField, match=rf"^{field}: ") as info:
        await service.add_ban(db, address, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await service.list_bans(db, include_expired=True) == []


async def test_longest_ban_and_longest_note_accepted(db: Database) -> None:
    ban = await service.add_ban(db, "192.0.2.1", duration=10 * 365 * 86400, note="n" * 255, now=T0)
    assert ban.expires_at == T0 + timedelta(days=3650)
    assert (await service.list_bans(db, now=T0)) == [ban]
