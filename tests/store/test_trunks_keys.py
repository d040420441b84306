import asyncio
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.models import ApiKey
from sipbridge.store.service import UNSET, AlreadyExists, NotFound

# --------------------------------------------------------------------------- trunks


async def test_add_trunk_defaults(db: Database) -> None:
    trunk = await service.add_trunk(db, "plain")
    assert trunk.name == "plain"
    assert trunk.allowed_cidrs == [] and trunk.codecs == []
    assert (trunk.host, trunk.username, trunk.password) == (None, None, None)
    assert trunk.register is False and trunk.max_calls is None
    assert await service.get_trunk(db, "plain") == trunk


async def test_add_trunk_full(db: Database) -> None:
    trunk = await service.add_trunk(
        db,
        "telnyx",
        allowed_cidrs=["192.0.2.7", "203.0.113.5/24", "2001:db8::/32", "192.0.2.7/32"],
        host="sip.telnyx.example:5060",
        username="acct",
        password="pw",
        register=True,
        max_calls=30,
        codecs=["PCMU", "pcma", "opus", "pcmu"],
    )
    # networks normalized (host bits cleared), duplicates dropped, codecs lower-cased
    assert trunk.allowed_cidrs == ["192.0.2.7/32", "203.0.113.0/24", "2001:db8::/32"]
    assert trunk.codecs == ["pcmu", "pcma", "opus"]
    assert (trunk.host, trunk.username, trunk.password) == ("sip.telnyx.example:5060", "acct", "pw")
    assert trunk.register is True and trunk.max_calls == 30
    assert await service.get_trunk(db, "telnyx") == trunk
    assert "pw" not in str(trunk.to_json())


@pytest.mark.parametrize("host", ["203.0.113.9", "[2001:db8::1]:5080", "sip.example.com."])
async def test_trunk_hosts_accepted(db: Database, host: str) -> None:
    assert (await service.add_trunk(db, "t", host=host)).host == host


@pytest.mark.parametrize(
    ("host", "stored"),
    [
        ("sip.example.com;transport=TCP", "sip.example.com;transport=tcp"),
        ("203.0.113.9:5061 ; transport = tls", "203.0.113.9:5061;transport=tls"),
        ("[2001:db8::1];transport=udp", "[2001:db8::1]"),
    ],
)
async def test_trunk_host_transport(db: Database, host: str, stored: str) -> None:
    # How registrations (and outbound calls) go: docs/operations.md, "Registration".
    assert (await service.add_trunk(db, "t", host=host)).host == stored


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs"),
        ({"allowed_cidrs": ["not-an-ip"]}, "allowed_cidrs"),
        ({"allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs"),
        ({"allowed_cidrs": [7]}, "allowed_cidrs"),
        ({"codecs": ["g729"]}, "codecs"),
        ({"codecs": [None]}, "codecs"),
        ({"max_calls": 0}, "max_calls"),
        ({"max_calls": 2.5}, "max_calls"),
        ({"max_calls": True}, "max_calls"),
        ({"host": "sip example.com"}, "host"),
        ({"host": "sip.example.com:99999"}, "host"),
        ({"host": "user@sip.example.com"}, "host"),
        ({"host": "-bad-.example"}, "host"),
        ({"host": "sip.example.com;transport=sctp"}, "host"),
        ({"host": "sip.example.com;lr"}, "host"),
        ({"host": ""}, "host"),
        ({"username": ""}, "username"),
        ({"password": "a\x00b"}, "password"),
        ({"register": True}, "register"),
        ({"register": True, "host": "sip.example.com"}, "register"),
        ({"register": "yes"}, "register"),
        ({"name": "bad name"}, "name"),
    ],
)
async def test_add_trunk_rejects_bad_fields(
    db: Database, kwargs: dict[str, object], field: str
) -> None:
    kwargs = dict(kwargs)  # shared by the sqlite and postgresql runs: do not mutate
    name = kwargs.pop("name", "t")
    with pytest.raises(InvalidField, match=rf"^{field}: ") as info:
        await service.add_trunk(db, name, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await service.list_trunks(db) == []


async def test_add_trunk_duplicate(db: Database) -> None:
    await service.add_trunk(db, "t")
    with pytest.raises(AlreadyExists, match="trunk 't' already exists"):
        await service.add_trunk(db, "t", host="h.example")


async def test_list_and_remove_trunks(db: Database) -> None:
    await service.add_trunk(db, "zeta")
    await service.add_trunk(db, "alpha")
    assert [t.name for t in await service.list_trunks(db)] == ["alpha", "zeta"]
    await service.remove_trunk(db, "zeta")
    assert [t.name for t in await service.list_trunks(db)] == ["alpha"]
    with pytest.raises(NotFound, match="trunk 'zeta' not found"):
        await service.remove_trunk(db, "zeta")
    with pytest.raises(NotFound, match="trunk 'zeta' not found"):
        await service.get_trunk(db, "zeta")


async def test_update_trunk(db: Database) -> None:
    created = await service.add_trunk(
        db, "t", host="a.example", username="u", password="p", max_calls=5
    )
    assert await service.update_trunk(db, "t") == created
    updated = await service.update_trunk(
        db, "t", register=True, codecs=["pcma"], allowed_cidrs=["198.51.100.0/24"]
    )
    assert updated.register is True and updated.codecs == ["pcma"]
    assert updated.allowed_cidrs == ["198.51.100.0/24"]
    assert (updated.host, updated.max_calls) == ("a.example", 5)
    cleared = await service.update_trunk(db, "t", password=None, max_calls=None, register=False)
    assert (cleared.password, cleared.max_calls, cleared.register) == (None, None, False)
    cleared = await service.update_trunk(db, "t", host=None, username=UNSET)
    assert (cleared.host, cleared.username) == (None, "u")
    assert await service.get_trunk(db, "t") == cleared


async def test_update_trunk_errors(db: Database) -> None:
    with pytest.raises(NotFound):
        await service.update_trunk(db, "ghost", max_calls=3)
    await service.add_trunk(db, "t", host="a.example", username="u", register=True)
    with pytest.raises(InvalidField, match=r"^register: "):
        await service.update_trunk(db, "t", host=None)  # still registering: needs a host
    with pytest.raises(InvalidField, match=r"^codecs: "):
        await service.update_trunk(db, "t", codecs=["speex"])
    assert (await service.get_trunk(db, "t")).host == "a.example"


# ------------------------------------------------------------------------- api keys


async def test_create_and_verify_api_key(db: Database) -> None:
    record, secret = await service.create_api_key(db, "ci")
    assert secret.startswith("sb_") and len(secret) >= 40
    assert record.name == "ci" and record.prefix == secret[:8]
    assert record.last_used_at is None

    verified = await service.verify_api_key(db, secret)
    assert verified is not None and verified.name == "ci"
    assert verified.last_used_at is not None

    for wrong in ("", secret + "x", secret[:-1], "sb_" + "A" * 43, "x" * 5000):
        assert await service.verify_api_key(db, wrong) is None


async def test_api_key_stored_only_as_hash(db: Database) -> None:
    _, secret = await service.create_api_key(db, "ci")
    async with db.sessionmaker() as session:
        row = (await session.scalars(select(ApiKey))).one()
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (row.key_hash, row.prefix, row.name)


async def test_last_used_written_at_most_once_a_minute(db: Database) -> None:
    _, secret = await service.create_api_key(db, "ci")
    first = await service.verify_api_key(db, secret)
    assert first is not None and first.last_used_at is not None
    second = await service.verify_api_key(db, secret)
    assert second is not None and second.last_used_at == first.last_used_at
    # a minute later it is written again
    stale = first.last_used_at - timedelta(minutes=2)
    async with db.sessionmaker() as session, session.begin():
        await session.execute(update(ApiKey).values(last_used_at=stale))
    third = await service.verify_api_key(db, secret)
    assert third is not None and third.last_used_at is not None
    assert third.last_used_at > stale
    [listed] = await service.list_api_keys(db)
    assert listed.last_used_at == third.last_used_at


async def test_api_keys_list_revoke_duplicates(db: Database) -> None:
    _, first = await service.create_api_key(db, "zeta")
    _, second = await service.create_api_key(db, "alpha")
    assert first != second
    assert [k.name for k in await service.list_api_keys(db)] == ["alpha", "zeta"]
    with pytest.raises(AlreadyExists, match="API key 'zeta' already exists"):
        await service.create_api_key(db, "zeta")
    await service.revoke_api_key(db, "zeta")
    assert await service.verify_api_key(db, first) is None
    assert await service.verify_api_key(db, second) is not None
    with pytest.raises(NotFound, match="API key 'zeta' not found"):
        await service.revoke_api_key(db, "zeta")
    with pytest.raises(InvalidField, match=r"^name: "):
        await service.create_api_key(db, "bad name")


async def test_concurrent_api_key_creation(db: Database) -> None:
    results = await asyncio.gather(
        *(service.create_api_key(db, "same") for _ in range(4)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))


# ------------------------------------------------------- trunk numbers and SRTP


async def test_trunk_numbers_and_srtp_defaults(db: Database) -> None:
    trunk = await service.add_trunk(db, "t")
    assert trunk.allowed_numbers == [] and trunk.srtp == "optional"
    stored = await service.get_trunk(db, "t")
    assert stored.allowed_numbers == [] and stored.srtp == "optional"
    assert stored.to_json()["allowed_numbers"] == [] and stored.to_json()["srtp"] == "optional"


async def test_trunk_allowed_numbers_normalised(db: Database) -> None:
    trunk = await service.add_trunk(
        db,
        "t",
        allowed_numbers=[
            "+1 (202) 555-0101",
            "tel:+44-20-7946-0000",
            "202-555-0102",  # national: read in the default region
            "+12025550101",  # the first one again
            "(202) 555-0102",  # the national one again
        ],
        default_region="US",
    )
    assert trunk.allowed_numbers == ["+12025550101", "+442079460000", "+12025550102"]
    assert (await service.get_trunk(db, "t")).allowed_numbers == trunk.allowed_numbers
    assert [t.allowed_numbers for t in await service.list_trunks(db)] == [trunk.allowed_numbers]


@pytest.mark.parametrize(
    ("numbers", "region"),
    [
        (["12345"], None),
        (["not a number"], "US"),
        (["2025550101"], None),  # national, but no default region
        (["+12025550101", ""], None),
        ([None], None),
        ([12025550101], None),
        ("+12025550101", None),  # a string, not a list of them
    ],
)
async def test_trunk_bad_allowed_numbers(db: Database, numbers: object, region: str | None) -> None:
    with pytest.raises(InvalidField, match=r"^allowed_numbers: ") as info:
        await service.add_trunk(db, "t", allowed_numbers=numbers, default_region=region)  # type: ignore[arg-type]
    assert info.value.field == "allowed_numbers"
    assert await service.list_trunks(db) == []


@pytest.mark.parametrize(("given", "stored"), [("off", "off"), (" Required ", "required")])
async def test_trunk_srtp_modes(db: Database, given: str, stored: str) -> None:
    assert (await service.add_trunk(db, "t", srtp=given)).srtp == stored
    assert (await service.get_trunk(db, "t")).srtp == stored


@pytest.mark.parametrize("srtp", ["on", "", "mandatory", None, True, 1])
async def test_trunk_bad_srtp(db: Database, srtp: object) -> None:
    with pytest.raises(InvalidField, match=r"^srtp: ") as info:
        await service.add_trunk(db, "t", srtp=srtp)  # type: ignore[arg-type]
    assert info.value.field == "srtp"
    assert await service.list_trunks(db) == []


async def test_update_trunk_numbers_and_srtp(db: Database) -> None:
    created = await service.add_trunk(
        db, "t", host="a.example", allowed_numbers=["+12025550101"], srtp="required"
    )
    # left out: unchanged
    unchanged = await service.update_trunk(db, "t", max_calls=3)
    assert (unchanged.allowed_numbers, unchanged.srtp) == (["+12025550101"], "required")

    updated = await service.update_trunk(
        db, "t", allowed_numbers=["020 7946 0000", "+12025550188"], default_region="GB", srtp="OFF"
    )
    assert updated.allowed_numbers == ["+442079460000", "+12025550188"]
    assert updated.srtp == "off"
    assert (updated.host, updated.max_calls, updated.created_at) == (
        "a.example",
        3,
        created.created_at,
    )
    assert await service.get_trunk(db, "t") == updated

    cleared = await service.update_trunk(db, "t", allowed_numbers=[])
    assert (cleared.allowed_numbers, cleared.srtp) == ([], "off")
    assert await service.get_trunk(db, "t") == cleared

    with pytest.raises(InvalidField, match=r"^srtp: "):
        await service.update_trunk(db, "t", srtp="always")
    with pytest.raises(InvalidField, match=r"^allowed_numbers: "):
        await service.update_trunk(db, "t", allowed_numbers=["+1202555"])
    with pytest.raises(NotFound):
        await service.update_trunk(db, "ghost", srtp="off")
    assert await service.get_trunk(db, "t") == cleared


async def test_trunk_record_round_trip(db: Database) -> None:
    created = await service.add_trunk(
        db,
        "carrier",
        allowed_cidrs=["203.0.113.0/24"],
        host="sip.carrier.example",
        username="acct",
        password="pw",
        register=True,
        max_calls=10,
        codecs=["pcma"],
        allowed_numbers=["+12025550101", "+12025550102"],
        srtp="required",
        max_message_rate=400,
    )
    stored = await service.get_trunk(db, "carrier")
    assert stored == created
    assert stored.to_json() == {
        "name": "carrier",
        "allowed_cidrs": ["203.0.113.0/24"],
        "host": "sip.carrier.example",
        "username": "acct",
        "has_password": True,
        "register": True,
        "max_calls": 10,
        "codecs": ["pcma"],
        "allowed_numbers": ["+12025550101", "+12025550102"],
        "srtp": "required",
        "max_message_rate": 400,
        "created_at": created.created_at.isoformat(),
    }


async def test_trunk_bad_default_region_names_it(db: Database) -> None:
    with pytest.raises(InvalidField, match=r"^default_region: ") as info:
        await service.add_trunk(db, "t", allowed_numbers=["+12025550101"], default_region="XX")
    assert info.value.field == "default_region"
    assert await service.list_trunks(db) == []


async def test_trunk_max_message_rate(db: Database) -> None:
    assert (await service.add_trunk(db, "t")).max_message_rate is None  # the default
    assert (await service.add_trunk(db, "u", max_message_rate=0)).max_message_rate == 0
    updated = await service.update_trunk(db, "t", max_message_rate=2500)
    assert updated.max_message_rate == 2500
    assert (await service.get_trunk(db, "t")).to_json()["max_message_rate"] == 2500
    assert (await service.update_trunk(db, "t", max_calls=3)).max_message_rate == 2500
    assert (await service.update_trunk(db, "t", max_message_rate=None)).max_message_rate is None
    for bad in (-1, 1_000_001, 2.5, "100", True):
        with pytest.raises(InvalidField, match="max_message_rate"):
            await service.add_trunk(db, "bad", max_message_rate=bad)  # type: ignore[arg-type]
