"""The register kept by the centre itself: the resident's record (medicines, allergies,
doctor, advance wishes, language, hearing and sight), contacts as an ordered responder
list (a second number, a key, the hours they may be called, the family portal), devices
retired and moved with their history, escalation policies edited as data, and the
audit log's before and after of every change.

A supervisor's policy and a device's retirement change what the desk's registry holds,
so both bump the registry's version (0008's triggers).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)
EMPTY_LIST = sa.text("'[]'")
BUMP = "UPDATE registry_version SET version = version + 1 WHERE id = 1"

_RESIDENT_TEXT = (
    ("sex", 8),
    ("doctor", 80),
    ("clinic", 120),
    ("clinic_phone", 32),
    ("hospital", 120),
    ("speaks", 32),
    ("hearing", 16),
    ("sight", 16),
)
_RESIDENT_LISTS = ("conditions", "medicines", "allergies")

# (trigger, table, event): 0008's registry_changed() once per statement on PostgreSQL.
TRIGGERS = (
    ("registry_changed_escalation_policies_insert", "escalation_policies", "INSERT"),
    ("registry_changed_escalation_policies_update", "escalation_policies", "UPDATE"),
    ("registry_changed_escalation_policies_delete", "escalation_policies", "DELETE"),
    ("registry_changed_devices_retired", "devices", "UPDATE OF retired_at"),
)


def upgrade() -> None:
    # Plain ADD COLUMN, never batch mode: a batch copy would drop the tables' registry
    # triggers on SQLite (see 0008).
    op.add_column("residents", sa.Column("birth_date", sa.Date(), nullable=True))
    for name, length in _RESIDENT_TEXT:
        op.add_column(
            "residents",
            sa.Column(name, sa.String(length=length), server_default="", nullable=False),
        )
    for name in _RESIDENT_LISTS:
        op.add_column(
            "residents", sa.Column(name, sa.JSON(), server_default=EMPTY_LIST, nullable=False)
        )
    op.add_column(
        "residents",
        sa.Column("do_not_resuscitate", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("residents", sa.Column("wishes", sa.Text(), server_default="", nullable=False))
    op.add_column(
        "family_contacts",
        sa.Column("phone_alt", sa.String(length=32), server_default="", nullable=False),
    )
    op.add_column(
        "family_contacts",
        sa.Column("holds_key", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("family_contacts", sa.Column("call_from", sa.Time(), nullable=True))
    op.add_column("family_contacts", sa.Column("call_until", sa.Time(), nullable=True))
    op.add_column(
        "family_contacts",
        sa.Column("portal", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column("devices", sa.Column("retired_at", UTC_DATETIME, nullable=True))
    op.add_column("devices", sa.Column("rssi_dbm", sa.SmallInteger(), nullable=True))
    op.add_column("audit_log", sa.Column("before", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("after", sa.JSON(), nullable=True))
    op.create_table(
        "device_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("from_household_id", sa.Integer(), nullable=False),
        sa.Column("to_household_id", sa.Integer(), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("by", sa.String(length=96), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_moves_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["from_household_id"],
            ["households.id"],
            name=op.f("fk_device_moves_from_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["to_household_id"],
            ["households.id"],
            name=op.f("fk_device_moves_to_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_moves")),
    )
    op.create_index(op.f("ix_device_moves_device_id"), "device_moves", ["device_id"])
    op.create_table(
        "escalation_policies",
        sa.Column("call_type", sa.String(length=32), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("edited_by", sa.String(length=96), nullable=False),
        sa.Column("edited_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("call_type", name=op.f("pk_escalation_policies")),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table_name, event in TRIGGERS:
        if postgresql:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table_name} "
                "FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()"
            )
        else:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table_name} BEGIN {BUMP}; END")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table_name, _event in TRIGGERS:
        suffix = f" ON {table_name}" if postgresql else ""
        op.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")
    op.drop_table("escalation_policies")
    op.drop_index(op.f("ix_device_moves_device_id"), table_name="device_moves")
    op.drop_table("device_moves")
    op.drop_column("audit_log", "after")
    op.drop_column("audit_log", "before")
    op.drop_column("devices", "rssi_dbm")
    op.drop_column("devices", "retired_at")
    # DROP COLUMN in place (SQLite 3.35 and later), keeping the registry triggers.
    for name in ("portal", "call_until", "call_from", "holds_key", "phone_alt"):
        op.execute(f"ALTER TABLE family_contacts DROP COLUMN {name}")
    resident_columns = (
        "wishes",
        "do_not_resuscitate",
        *_RESIDENT_LISTS,
        *(name for name, _length in _RESIDENT_TEXT),
        "birth_date",
    )
    for name in resident_columns:
        op.execute(f"ALTER TABLE residents DROP COLUMN {name}")
