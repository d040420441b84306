"""how each call's MOS was estimated (calls.mos_method: "g107" or "g107-assumed")

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (no batch mode), as in 0003. Rows written before this migration
    # keep null: their MOS was estimated the same way, but nobody recorded it.
    op.add_column("calls", sa.Column("mos_method", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "mos_method")
