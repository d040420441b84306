"""SIP traces switched on for a number or a trunk until an expiry (runtime/trace.py)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sip_traces",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        # "number" (calls to or from an E.164 number) or "trunk" (a trunk's calls).
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sip_traces")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_sip_traces_kind")),
    )


def downgrade() -> None:
    op.drop_table("sip_traces")
