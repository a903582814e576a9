"""Leases: which server does the desk's once-only work (following the event log, firing
timers, the outbox relay, the watchdog, the welfare list), with the fencing number
every transaction of that work checks (engine/leadership.py, store/leases.py).

One row, "desk", made here already lapsed, so the first server to start takes it.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=63), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("taken_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.bulk_insert(
        leases,
        [
            {
                "name": "desk",
                "holder": "",
                "epoch": 0,
                "expires_at": datetime(1970, 1, 1, tzinfo=UTC),
                "taken_at": None,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("leases")
