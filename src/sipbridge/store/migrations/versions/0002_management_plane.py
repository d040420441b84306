"""management plane: agent urls/protocol/token/sample rate, trunks, api keys, call events,
caller geography and statistics columns on calls, pagination indexes

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import phonenumbers
import sqlalchemy as sa
from alembic import op
from phonenumbers import geocoder

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Composite indexes for keyset pagination (filter column, received_at, id).
_CALL_INDEXES = {
    "ix_calls_received_at_id": ["received_at", "id"],
    "ix_calls_from_number_received_at": ["from_number", "received_at", "id"],
    "ix_calls_to_number_received_at": ["to_number", "received_at", "id"],
    "ix_calls_agent_name_received_at": ["agent_name", "received_at", "id"],
    "ix_calls_status_received_at": ["status", "received_at", "id"],
    "ix_calls_reason_received_at": ["reason", "received_at", "id"],
}


def _location(number: str | None) -> tuple[str | None, str | None]:
    # A frozen copy of sipbridge.numbers.caller_location as of this revision.
    if not number or not number.startswith("+"):
        return None, None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None, None
    country = phonenumbers.region_code_for_number(parsed)
    if not country or country in (phonenumbers.UNKNOWN_REGION, "001"):
        return None, None
    description = geocoder.description_for_number(parsed, "en") or None
    if description is not None and description == geocoder.country_name_for_number(parsed, "en"):
        description = None
    return country, description


def _migrate_agent_urls() -> None:
    bind = op.get_bind()
    agents = sa.table(
        "agents", sa.column("id", sa.Integer()), sa.column("url"), sa.column("urls", sa.JSON())
    )
    rows = bind.execute(sa.select(agents.c.id, agents.c.url)).all()
    for agent_id, url in rows:
        bind.execute(agents.update().where(agents.c.id == agent_id).values(urls=[url]))


def _backfill_calls() -> None:
    bind = op.get_bind()
    calls = sa.table(
        "calls",
        sa.column("id", sa.String()),
        sa.column("from_number", sa.String()),
        sa.column("received_at", sa.DateTime(timezone=True)),
        sa.column("received_day", sa.Date()),
        sa.column("received_hour", sa.SmallInteger()),
        sa.column("caller_country", sa.String()),
        sa.column("caller_region", sa.String()),
    )
    if bind.dialect.name == "sqlite":  # naive UTC wall time stored as text
        op.execute(
            "UPDATE calls SET received_day = date(received_at), "
            "received_hour = CAST(strftime('%H', received_at) AS INTEGER)"
        )
    else:
        op.execute(
            "UPDATE calls SET received_day = CAST(timezone('UTC', received_at) AS DATE), "
            "received_hour = CAST(extract(hour FROM timezone('UTC', received_at)) AS SMALLINT)"
        )
    # caller geography needs phonenumbers: done in Python, only for E.164 callers
    numbers = bind.execute(
        sa.select(calls.c.from_number).where(calls.c.from_number.like("+%")).distinct()
    ).scalars()
    for number in list(numbers):
        country, region = _location(number)
        if country is None:
            continue
        bind.execute(
            calls.update()
            .where(calls.c.from_number == number)
            .values(caller_country=country, caller_region=region)
        )


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN only (SQLite >= 3.35): a batch "move and copy" of
    # agents would run ON DELETE SET NULL on every phone number while foreign keys are on.
    op.add_column(
        "agents",
        sa.Column("urls", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    )
    op.add_column(
        "agents",
        sa.Column("protocol", sa.String(length=16), server_default="native", nullable=False),
    )
    op.add_column("agents", sa.Column("token", sa.String(length=1024), nullable=True))
    op.add_column(
        "agents",
        sa.Column("sample_rate", sa.Integer(), server_default=sa.text("8000"), nullable=False),
    )
    op.add_column("agents", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    _migrate_agent_urls()
    op.drop_column("agents", "url")

    op.add_column(
        "phone_numbers", sa.Column("created_at", sa.DateTime(timezone=True), nullable=True)
    )

    op.add_column("calls", sa.Column("caller_country", sa.String(length=2), nullable=True))
    op.add_column("calls", sa.Column("caller_region", sa.String(length=255), nullable=True))
    op.add_column("calls", sa.Column("first_audio_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("calls", sa.Column("received_day", sa.Date(), nullable=True))
    op.add_column("calls", sa.Column("received_hour", sa.SmallInteger(), nullable=True))
    op.add_column("calls", sa.Column("first_audio_ms", sa.Float(), nullable=True))
    _backfill_calls()
    op.drop_index("ix_calls_received_at", table_name="calls")
    op.drop_index("ix_calls_from_number", table_name="calls")
    op.drop_index("ix_calls_to_number", table_name="calls")
    for name, columns in _CALL_INDEXES.items():
        op.create_index(name, "calls", columns)

    op.create_table(
        "trunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("password", sa.String(length=255), nullable=True),
        sa.Column("register", sa.Boolean(), nullable=False),
        sa.Column("max_calls", sa.Integer(), nullable=True),
        sa.Column("codecs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trunks")),
        sa.UniqueConstraint("name", name=op.f("uq_trunks_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.create_index(op.f("ix_api_keys_key_hash"), "api_keys", ["key_hash"], unique=True)
    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
    )
    op.create_index("ix_call_events_call_id_at", "call_events", ["call_id", "at", "id"])


def downgrade() -> None:
    op.drop_index("ix_call_events_call_id_at", table_name="call_events")
    op.drop_table("call_events")
    op.drop_index(op.f("ix_api_keys_key_hash"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("trunks")

    for name in _CALL_INDEXES:
        op.drop_index(name, table_name="calls")
    op.create_index("ix_calls_received_at", "calls", ["received_at"])
    op.create_index("ix_calls_from_number", "calls", ["from_number"])
    op.create_index("ix_calls_to_number", "calls", ["to_number"])
    for column in (
        "first_audio_ms",
        "received_hour",
        "received_day",
        "first_audio_at",
        "caller_region",
        "caller_country",
    ):
        op.drop_column("calls", column)

    op.drop_column("phone_numbers", "created_at")

    op.add_column(
        "agents",
        sa.Column("url", sa.String(length=2048), server_default="", nullable=False),
    )
    bind = op.get_bind()
    agents = sa.table(
        "agents", sa.column("id", sa.Integer()), sa.column("url"), sa.column("urls", sa.JSON())
    )
    for agent_id, urls in bind.execute(sa.select(agents.c.id, agents.c.urls)).all():
        first = urls[0] if urls else ""
        bind.execute(agents.update().where(agents.c.id == agent_id).values(url=first))
    for column in ("updated_at", "sample_rate", "token", "protocol", "urls"):
        op.drop_column("agents", column)
