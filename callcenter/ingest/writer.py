"""Writing a batch plan to the database in one transaction (group commit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.ingest.batch import BatchPlan
from callcenter.store.db import write_locked, write_turn
from callcenter.store.models import Base

_events = Base.metadata.tables["device_events"]
_devices = Base.metadata.tables["devices"]
_dead_letters = Base.metadata.tables["dead_letters"]


@dataclass(frozen=True)
class StoredEvent:
    """An event that this batch added to the log (a redelivered one is not reported)."""

    id: int
    device_id: int
    household_id: int
    event_id: str
    kind: str


def _insert_new_events(dialect: str) -> Any:
    # ON CONFLICT DO NOTHING on (device_id, event_id): a redelivered event is stored once,
    # and RETURNING reports only the rows that were really new.
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        make(_events)
        .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
        .returning(
            _events.c.id,
            _events.c.device_id,
            _events.c.household_id,
            _events.c.event_id,
            _events.c.kind,
        )
    )


_update_device = (
    update(_devices)
    .where(_devices.c.id == bindparam("p_id"))
    .values(
        online=bindparam("p_online"),
        last_seen_at=bindparam("p_last_seen_at"),
        battery_pct=bindparam("p_battery_pct"),
    )
)


class EventWriter:
    """Commits batch plans: new events, dead letters and device liveness together."""

    def __init__(self, engine: AsyncEngine) -> None:
        # It writes from its first statement, so it may as well take the write lock as it
        # begins: on SQLite its statements then run without trips to a worker thread.
        self._engine = write_locked(engine)
        self._insert_events = _insert_new_events(engine.dialect.name)

    async def write(self, plan: BatchPlan) -> list[StoredEvent]:
        """Write the plan in one transaction; return the events that were new."""
        stored: list[StoredEvent] = []
        async with write_turn(self._engine), self._engine.begin() as connection:
            if plan.events:
                result = await connection.execute(self._insert_events, plan.events)
                stored = [StoredEvent(*row) for row in result]
            if plan.dead_letters:
                await connection.execute(insert(_dead_letters), plan.dead_letters)
            if plan.device_rows:
                await connection.execute(
                    _update_device,
                    [
                        {
                            "p_id": d.device_id,
                            "p_online": d.online,
                            "p_last_seen_at": d.last_seen_at,
                            "p_battery_pct": d.battery_pct,
                        }
                        for d in plan.device_rows
                    ],
                )
        return stored
