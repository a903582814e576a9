"""Device clocks and reused event ids: an event's clock skew when the device's clock is
wrong, and the events whose id was already in the log with other content.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("device_events", sa.Column("clock_skew_s", sa.Float(), nullable=True))
    op.create_table(
        "event_conflicts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=16), nullable=False),
        sa.Column("stored_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("device_time", UTC_DATETIME, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("raised_id", BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_event_conflicts_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["stored_id"],
            ["device_events.id"],
            name=op.f("fk_event_conflicts_stored_id_device_events"),
        ),
        sa.ForeignKeyConstraint(
            ["raised_id"],
            ["device_events.id"],
            name=op.f("fk_event_conflicts_raised_id_device_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_conflicts")),
        sa.UniqueConstraint(
            "device_id",
            "event_id",
            "digest",
            name=op.f("uq_event_conflicts_device_id_event_id_digest"),
        ),
    )
    op.create_index(
        op.f("ix_event_conflicts_received_at"), "event_conflicts", ["received_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_event_conflicts_received_at"), table_name="event_conflicts")
    op.drop_table("event_conflicts")
    op.drop_column("device_events", "clock_skew_s")
