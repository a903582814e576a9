"""Writing a batch plan to the database in one transaction (group commit).

An event whose id is already in the log is a redelivery when its content is the same,
and stored once. With other content it is a conflict (a device whose id counter started
again): the first stays as stored, the second is recorded in ``event_conflicts``, an
alarm among them is raised all the same under an id of the server's, and an
``event_id_reused`` event tells the desk, which notes it on the household's open alarm.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter import logs
from callcenter.domain.events import ServerEventKind, raises_alarm
from callcenter.ingest.batch import BatchPlan, same_content
from callcenter.ingest.protocol import SERVER_ID_PREFIX, server_event_id
from callcenter.store.db import write_locked, write_turn
from callcenter.store.models import Base

log = logging.getLogger("callcenter.ingest")

_events = Base.metadata.tables["device_events"]
_devices = Base.metadata.tables["devices"]
_dead_letters = Base.metadata.tables["dead_letters"]
_conflicts = Base.metadata.tables["event_conflicts"]


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


@dataclass
class Written:
    """What one plan's commit did."""

    # The events that were new, in the order they entered the log.
    events: list[StoredEvent] = field(default_factory=list)
    # Events already in the log with the same content: redeliveries, stored once.
    duplicates: int = 0
    # Events whose id was in the log with other content, recorded now (event_conflicts).
    conflicts: int = 0


def _digest(row: dict[str, Any]) -> str:
    """Tells one content sent under an id from another (kind, device time, data)."""
    content = [row["kind"], row["device_time"].isoformat(), row["data"]]
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def raised_id(event_id: str, digest: str) -> str:
    """The server's id for an alarm sent under an id the device had used before: ``~``
    is in no device's id, and the digest stores a redelivery of it once."""
    return f"{event_id[: 64 - len(digest) - 1]}~{digest}"


class EventWriter:
    """Commits batch plans: new events, dead letters and device liveness together."""

    def __init__(self, engine: AsyncEngine) -> None:
        # It writes from its first statement, so it may as well take the write lock as it
        # begins: on SQLite its statements then run without trips to a worker thread.
        self._engine = write_locked(engine)
        dialect = engine.dialect.name
        self._insert_events = _insert_new_events(dialect)
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._insert_conflict = (
            make(_conflicts)
            .on_conflict_do_nothing(index_elements=["device_id", "event_id", "digest"])
            .returning(_conflicts.c.id)
        )

    async def write(self, plan: BatchPlan) -> Written:
        """Write the plan in one transaction; what was new, doubled or in conflict."""
        written = Written(duplicates=plan.duplicates_in_batch)
        async with write_turn(self._engine), self._engine.begin() as connection:
            if plan.events:
                result = await connection.execute(self._insert_events, plan.events)
                written.events = [StoredEvent(*row) for row in result]
            if plan.reused or len(written.events) < len(plan.events):
                await self._sort_out_doubles(connection, plan, written)
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
        return written

    async def _sort_out_doubles(
        self, connection: AsyncConnection, plan: BatchPlan, written: Written
    ) -> None:
        """Events not stored because their id was taken: a redelivery (same content) is a
        duplicate; other content is a conflict, recorded, and raised if it is an alarm."""
        new = {(event.device_id, event.event_id) for event in written.events}
        doubles: list[dict[str, Any]] = []
        for row in plan.events:
            if (row["device_id"], row["event_id"]) in new:
                continue
            if row["event_id"].startswith(SERVER_ID_PREFIX):
                written.duplicates += 1  # the server's own: one per device and moment
            else:
                doubles.append(row)
        doubles += plan.reused
        if not doubles:
            return
        keys = {(row["device_id"], row["event_id"]) for row in doubles}
        found = await connection.execute(
            select(
                _events.c.id,
                _events.c.device_id,
                _events.c.event_id,
                _events.c.kind,
                _events.c.device_time,
                _events.c.data,
            ).where(tuple_(_events.c.device_id, _events.c.event_id).in_(keys))
        )
        first = {(row.device_id, row.event_id): row._asdict() for row in found}
        for row in doubles:
            stored = first[row["device_id"], row["event_id"]]
            if same_content(stored, row):
                written.duplicates += 1
                continue
            await self._record_conflict(connection, stored, row, written)

    async def _record_conflict(
        self,
        connection: AsyncConnection,
        first: dict[str, Any],
        second: dict[str, Any],
        written: Written,
    ) -> None:
        digest = _digest(second)
        conflict = await connection.scalar(
            self._insert_conflict,
            {
                "received_at": second["received_at"],
                "device_id": second["device_id"],
                "event_id": second["event_id"],
                "digest": digest,
                "stored_id": first["id"],
                "kind": second["kind"],
                "device_time": second["device_time"],
                "data": second["data"],
            },
        )
        if conflict is None:
            written.duplicates += 1  # this second content was recorded before
            return
        written.conflicts += 1
        raised: StoredEvent | None = None
        if raises_alarm(second["kind"]):
            result = await connection.execute(
                self._insert_events, [{**second, "event_id": raised_id(second["event_id"], digest)}]
            )
            row = result.first()  # none only if the log has it already: nothing to raise
            if row is not None:
                raised = StoredEvent(*row)
                written.events.append(raised)
                await connection.execute(
                    update(_conflicts)
                    .where(_conflicts.c.id == conflict)
                    .values(raised_id=raised.id)
                )
        note = {
            **second,
            "event_id": server_event_id(ServerEventKind.EVENT_ID_REUSED, digest),
            "kind": ServerEventKind.EVENT_ID_REUSED.value,
            "device_time": second["received_at"],
            "clock_skew_s": None,
            "data": {
                "event_id": second["event_id"],
                "raised_as": None if raised is None else raised.event_id,
                "first": _content(first),
                "second": _content(second),
            },
        }
        result = await connection.execute(self._insert_events, [note])
        written.events.extend(StoredEvent(*row) for row in result)
        with logs.bound(event_id=first["id"]):
            log.warning(
                "device %d sent event id %r again with other content (%s, first %s)%s",
                second["device_id"],
                second["event_id"],
                second["kind"],
                first["kind"],
                f"; raised as {raised.event_id}" if raised is not None else "",
            )


def _content(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": row["kind"], "device_time": row["device_time"].isoformat(), "data": row["data"]}
