"""initial schema: agents, phone_numbers, calls

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("voice_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
    )
    op.create_table(
        "phone_numbers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_phone_numbers_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_numbers")),
    )
    op.create_index(op.f("ix_phone_numbers_number"), "phone_numbers", ["number"], unique=True)
    op.create_index(op.f("ix_phone_numbers_agent_id"), "phone_numbers", ["agent_id"])
    op.create_table(
        "calls",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sip_call_id", sa.String(length=255), nullable=False),
        sa.Column("from_number", sa.String(length=255), nullable=True),
        sa.Column("to_number", sa.String(length=255), nullable=True),
        sa.Column("agent_name", sa.String(length=100), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("sip_code", sa.Integer(), nullable=True),
        sa.Column("codec", sa.String(length=32), nullable=True),
        sa.Column("hangup_by", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_index(op.f("ix_calls_sip_call_id"), "calls", ["sip_call_id"])
    op.create_index(op.f("ix_calls_from_number"), "calls", ["from_number"])
    op.create_index(op.f("ix_calls_to_number"), "calls", ["to_number"])
    op.create_index(op.f("ix_calls_received_at"), "calls", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_calls_received_at"), table_name="calls")
    op.drop_index(op.f("ix_calls_to_number"), table_name="calls")
    op.drop_index(op.f("ix_calls_from_number"), table_name="calls")
    op.drop_index(op.f("ix_calls_sip_call_id"), table_name="calls")
    op.drop_table("calls")
    op.drop_index(op.f("ix_phone_numbers_agent_id"), table_name="phone_numbers")
    op.drop_index(op.f("ix_phone_numbers_number"), table_name="phone_numbers")
    op.drop_table("phone_numbers")
    op.drop_table("agents")
