"""the agent's response time per turn on calls (turns, response_p50_ms, response_max_ms)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("turns", sa.Integer),
    ("response_p50_ms", sa.Float),
    ("response_max_ms", sa.Float),
)


def upgrade() -> None:
    # Plain ALTER TABLE (no batch mode), as in 0003.
    for name, kind in _COLUMNS:
        op.add_column("calls", sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.drop_column("calls", name)
