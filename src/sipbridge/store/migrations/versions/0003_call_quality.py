"""media quality figures on calls (packets, bytes, loss, jitter, RTT, concealment, MOS);
an optional CA bundle per agent (agents.ca_bundle)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("packets_in", sa.Integer),
    ("packets_out", sa.Integer),
    ("bytes_in", sa.Integer),
    ("bytes_out", sa.Integer),
    ("packets_lost", sa.Integer),
    ("loss_percent", sa.Float),
    ("jitter_ms", sa.Float),
    ("rtt_ms", sa.Float),
    ("concealed_ms", sa.Integer),
    ("mos", sa.Float),
)


def upgrade() -> None:
    # Plain ALTER TABLE (no batch mode): see 0002 on why the agents table is never rebuilt.
    for name, kind in _COLUMNS:
        op.add_column("calls", sa.Column(name, kind(), nullable=True))
    op.add_column("agents", sa.Column("ca_bundle", sa.String(1024), nullable=True))


def downgrade() -> None:
    op.drop_column("agents", "ca_bundle")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("calls", name)
