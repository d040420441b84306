"""per-trunk SIP message rate (trunks.max_message_rate: null = the default, 0 = no limit)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (no batch mode), as in 0003. Existing trunks keep null: the
    # default trunk rate (sip/guard.py DEFAULT_TRUNK_MESSAGE_RATE).
    op.add_column("trunks", sa.Column("max_message_rate", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("trunks", "max_message_rate")
