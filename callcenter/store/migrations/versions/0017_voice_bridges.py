"""Click-to-call bridges: the operator's ring (an outbox voice row) with what it is about
(a call, or a welfare call ringing the resident), which try it is, how it ended, and the
reference of its recording while one is kept.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "voice_bridges",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("outbox_id", BIG_ID, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=True),
        sa.Column("welfare_id", BIG_ID, nullable=True),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.SmallInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("recording_sid", sa.String(length=34), nullable=True),
        sa.Column("recording_url", sa.String(length=255), nullable=True),
        sa.Column("recording_expires_at", UTC_DATETIME, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_voice_bridges_outbox_id_outbox")
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_voice_bridges_call_id_calls")
        ),
        sa.ForeignKeyConstraint(
            ["welfare_id"],
            ["welfare_calls.id"],
            name=op.f("fk_voice_bridges_welfare_id_welfare_calls"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_voice_bridges_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voice_bridges")),
        sa.UniqueConstraint("outbox_id", name=op.f("uq_voice_bridges_outbox_id")),
    )
    op.create_index(op.f("ix_voice_bridges_call_id"), "voice_bridges", ["call_id"])
    op.create_index(op.f("ix_voice_bridges_welfare_id"), "voice_bridges", ["welfare_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_voice_bridges_welfare_id"), table_name="voice_bridges")
    op.drop_index(op.f("ix_voice_bridges_call_id"), table_name="voice_bridges")
    op.drop_table("voice_bridges")
