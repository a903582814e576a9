"""The call desk: operators, duty roster, carer positions, calls and their history,
assignments, timers, outbox, and the engine's cursor on the event log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cursors")),
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_operators_token_sha256")),
        sa.UniqueConstraint("username", name=op.f("uq_operators_username")),
    )
    op.create_table(
        "carer_positions",
        sa.Column("carer_id", sa.Integer(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["carer_id"], ["carers.id"], name=op.f("fk_carer_positions_carer_id_carers")
        ),
        sa.PrimaryKeyConstraint("carer_id", name=op.f("pk_carer_positions")),
    )
    op.create_table(
        "duty_roster",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("carer_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("on_duty", sa.Boolean(), nullable=False),
        sa.Column("shift_pattern_code", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["carer_id"], ["carers.id"], name=op.f("fk_duty_roster_carer_id_carers")
        ),
        sa.ForeignKeyConstraint(
            ["shift_pattern_code"],
            ["shift_patterns.code"],
            name=op.f("fk_duty_roster_shift_pattern_code_shift_patterns"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duty_roster")),
        sa.UniqueConstraint("carer_id", "day", name=op.f("uq_duty_roster_carer_id_day")),
    )
    with op.batch_alter_table("duty_roster", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_duty_roster_day"), ["day"], unique=False)

    op.create_table(
        "calls",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("call_type", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("presses", sa.Integer(), nullable=False),
        sa.Column("opened_at", UTC_DATETIME, nullable=False),
        sa.Column("last_press_at", UTC_DATETIME, nullable=True),
        sa.Column("press_noted_at", UTC_DATETIME, nullable=True),
        sa.Column("owner", sa.String(length=80), nullable=True),
        sa.Column("acknowledged_at", UTC_DATETIME, nullable=True),
        sa.Column("closed_at", UTC_DATETIME, nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("cancel_reason", sa.String(length=32), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("fired_steps", sa.JSON(), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["device_events.id"], name=op.f("fk_calls_event_id_device_events")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_calls_household_id_households")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index(
            "ix_calls_household_id_closed_at", ["household_id", "closed_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_calls_opened_at"), ["opened_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_state"), ["state"], unique=False)

    op.create_table(
        "call_assignments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=False),
        sa.Column("carer_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("dispatched_at", UTC_DATETIME, nullable=False),
        sa.Column("dispatched_by", sa.String(length=96), nullable=False),
        sa.Column("travel_s", sa.Float(), nullable=True),
        sa.Column("changed_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_call_assignments_call_id_calls")
        ),
        sa.ForeignKeyConstraint(
            ["carer_id"], ["carers.id"], name=op.f("fk_call_assignments_carer_id_carers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_assignments")),
    )
    with op.batch_alter_table("call_assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_assignments_call_id"), ["call_id"], unique=False)
        batch_op.create_index(
            "uq_call_assignments_active_carer",
            ["carer_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.create_table(
        "call_history",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_call_history_call_id_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_history")),
    )
    with op.batch_alter_table("call_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_history_call_id"), ["call_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=96), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("guard", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=False),
        sa.Column("done_at", UTC_DATETIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_outbox_call_id_calls")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_call_id"), ["call_id"], unique=False)
        batch_op.create_index(
            "ix_outbox_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )

    op.create_table(
        "timers",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("carer_id", sa.Integer(), nullable=True),
        sa.Column("due_at", UTC_DATETIME, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("fired_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_timers_call_id_calls")),
        sa.ForeignKeyConstraint(
            ["carer_id"], ["carers.id"], name=op.f("fk_timers_carer_id_carers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timers")),
    )
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_timers_call_id"), ["call_id"], unique=False)
        batch_op.create_index("ix_timers_state_due_at", ["state", "due_at"], unique=False)

    # The engine starts reading the event log from here: events logged before the call
    # desk existed are history, not calls to open now.
    op.execute(
        "INSERT INTO cursors (name, position, updated_at) "
        "SELECT 'call_engine', COALESCE(MAX(id), 0), CURRENT_TIMESTAMP FROM device_events"
    )


def downgrade() -> None:
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index("ix_timers_state_due_at")
        batch_op.drop_index(batch_op.f("ix_timers_call_id"))

    op.drop_table("timers")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_outbox_call_id"))

    op.drop_table("outbox")
    with op.batch_alter_table("call_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_history_call_id"))

    op.drop_table("call_history")
    with op.batch_alter_table("call_assignments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_call_assignments_active_carer",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index(batch_op.f("ix_call_assignments_call_id"))

    op.drop_table("call_assignments")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_state"))
        batch_op.drop_index(batch_op.f("ix_calls_opened_at"))
        batch_op.drop_index("ix_calls_household_id_closed_at")

    op.drop_table("calls")
    with op.batch_alter_table("duty_roster", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duty_roster_day"))

    op.drop_table("duty_roster")
    op.drop_table("carer_positions")
    op.drop_table("operators")
    op.drop_table("cursors")
