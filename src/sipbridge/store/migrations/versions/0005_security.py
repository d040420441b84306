"""security: bans, trunk allowed numbers and SRTP mode, the call's SRTP suite

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        # An address or a network in canonical text (203.0.113.7, 203.0.113.0/24, 2001:db8::/32).
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),  # NULL: no end
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    op.add_column(
        "trunks",
        sa.Column("allowed_numbers", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    )
    op.add_column(
        "trunks",
        sa.Column("srtp", sa.String(length=16), server_default="optional", nullable=False),
    )
    op.add_column("calls", sa.Column("srtp", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "srtp")
    op.drop_column("trunks", "srtp")
    op.drop_column("trunks", "allowed_numbers")
    op.drop_table("bans")
