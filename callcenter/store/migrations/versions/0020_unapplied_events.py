"""Unapplied events: what the call engine has still to apply, one row per event.

Until now the engine followed the log from a position (``cursors``): every event with a
higher id was still to apply. With several servers storing events that is not safe.
Two servers' transactions take ids in one order and may commit in the other: a server
paused (or slow) between taking its ids and committing makes its events visible only
after the engine has applied later ones and moved past them, and they were never
applied. Now ingest adds a row here in the transaction that stores the event, and the
engine deletes it in the transaction that applies the event, whatever order the commits
come in. The ``call_engine`` cursor stays, as the newest event applied and when.

Events past the cursor when this runs are the ones still to apply.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "unapplied_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["device_events.id"], name=op.f("fk_unapplied_events_id_device_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unapplied_events")),
    )
    op.execute(
        "INSERT INTO unapplied_events (id) SELECT id FROM device_events WHERE id > "
        "COALESCE((SELECT position FROM cursors WHERE name = 'call_engine'), 0)"
    )


def downgrade() -> None:
    # The cursor goes back to just below the first event still to apply (events after
    # it that were applied out of order would be applied again: only a downgrade run
    # while servers are stopped and the table is empty is exact).
    op.execute(
        "UPDATE cursors SET position = (SELECT MIN(id) - 1 FROM unapplied_events) "
        "WHERE name = 'call_engine' AND EXISTS (SELECT 1 FROM unapplied_events)"
    )
    op.drop_table("unapplied_events")
