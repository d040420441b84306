"""the instances sharing the database: their SIP address, start, last heartbeat and state
(running, draining, stopped, lost), and which peer recorded a lost one's open calls

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instances",
        # The owner id on the calls the instance writes (--instance-id).
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("sip_address", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        # Every time is the database's clock, never an instance's.
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_by", sa.String(length=255), nullable=True),
        sa.Column("lost_calls", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )


def downgrade() -> None:
    op.drop_table("instances")
