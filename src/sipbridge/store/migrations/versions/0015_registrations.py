"""each registering trunk's last known registration state, per instance (registrations):
what `sipbridge trunk list` shows without a running server

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registrations",
        # No foreign keys: a row outlives neither its trunk (removed with it) nor matters
        # without its instance (the instance's state says whether the row is current).
        sa.Column("trunk", sa.String(length=100), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("registered_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_reason", sa.String(length=200), nullable=True),
        sa.Column("next_attempt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trunk", "instance", name=op.f("pk_registrations")),
    )


def downgrade() -> None:
    op.drop_table("registrations")
