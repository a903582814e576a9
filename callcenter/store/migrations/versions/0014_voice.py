"""Phone calls the desk places: each status Twilio reported for one of them, kept once
per CallSid and SequenceNumber, so a status callback posted again changes nothing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "voice_statuses",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_sid", sa.String(length=34), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outbox_id", BIG_ID, nullable=True),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_voice_statuses_outbox_id_outbox")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voice_statuses")),
        sa.UniqueConstraint(
            "call_sid", "sequence", name=op.f("uq_voice_statuses_call_sid_sequence")
        ),
    )


def downgrade() -> None:
    op.drop_table("voice_statuses")
