"""Writing a batch plan to the database in one transaction (group commit).

An event whose id is already in the log is a redelivery when its content is the same,
and stored once. With other content it is a conflict (a device whose id counter started
again): the first stays as stored, the second is recorded in ``event_conflicts``, an
alarm among them is raised all the same under an id of the server's, and an
``event_id_reused`` event tells the desk, which notes it on the household's open alarm.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter import logs
from callcenter.domain.events import ServerEventKind, raises_alarm
from callcenter.ingest.batch import BatchPlan, LivenessChange, same_content
from callcenter.ingest.protocol import SERVER_ID_PREFIX, server_event_id
from callcenter.store.db import strict_json, write_locked, write_turn
from callcenter.store.models import Base, as_utc

log = logging.getLogger("callcenter.ingest")

_events = Base.metadata.tables["device_events"]
_devices = Base.metadata.tables["devices"]
_dead_letters = Base.metadata.tables["dead_letters"]
_conflicts = Base.metadata.tables["event_conflicts"]
_unapplied = Base.metadata.tables["unapplied_events"]


@dataclass(frozen=True)
class StoredEvent:
    """An event that this batch added to the log (a redelivered one is not reported)."""

    id: int
    device_id: int
    household_id: int
    event_id: str
    kind: str


def _stored(row: Any) -> StoredEvent:
    """A row of RETURNING id, device_id, household_id, event_id, kind."""
    return StoredEvent(*row)


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


# On SQLite a batch's new events go in as statements of many rows each, written here
# rather than by SQLAlchemy: its work on each row's values (a column type's conversion for
# each value, the statement's parameters put together row by row) cost more than the
# rest of the commit, and as much again as SQLite's own work. The values are stored
# exactly as SQLAlchemy stores them (tests/test_ingest_writer.py).
_EVENT_COLUMNS = (
    "device_id",
    "household_id",
    "event_id",
    "kind",
    "device_time",
    "received_at",
    "data",
    "clock_skew_s",
)
# 800 parameters a statement: within the 999 of any SQLite's default limit.
_SQLITE_ROWS_PER_INSERT = 100


@functools.cache
def _sqlite_insert_events(rows: int) -> str:
    """The statement for ``rows`` new events on SQLite: stored once, as _insert_new_events."""
    values = "(" + ", ".join("?" * len(_EVENT_COLUMNS)) + ")"
    return (
        f"INSERT INTO device_events ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES {', '.join([values] * rows)} "
        "ON CONFLICT (device_id, event_id) DO NOTHING "
        "RETURNING id, device_id, household_id, event_id, kind"
    )


# On PostgreSQL a batch's new events go in as one statement whatever their number: each
# column's values as one array, unnested in the database, and each new event's
# unapplied_events row inserted by the same statement. SQLAlchemy's many-row INSERT
# prepares each value in Python and sends a statement per thousand rows; the arrays
# go in asyncpg's binary encoding, made in C. The values are those SQLAlchemy would
# send (tests/test_ingest_writer.py).
_POSTGRESQL_INSERT_EVENTS = """
WITH new AS (
    INSERT INTO device_events
        (device_id, household_id, event_id, kind, device_time, received_at, data, clock_skew_s)
    SELECT device_id, household_id, event_id, kind, device_time, received_at,
           data::json, clock_skew_s
    FROM unnest(
        $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
        $6::timestamptz[], $7::text[], $8::float8[]
    ) WITH ORDINALITY
        AS given(device_id, household_id, event_id, kind, device_time, received_at, data,
                 clock_skew_s, n)
    ORDER BY n
    ON CONFLICT (device_id, event_id) DO NOTHING
    RETURNING id, device_id, household_id, event_id, kind
), waiting AS (
    INSERT INTO unapplied_events (id) SELECT id FROM new
)
SELECT id, device_id, household_id, event_id, kind FROM new ORDER BY id
"""


# A batch's device rows on PostgreSQL, in one statement (see _update_device).
_POSTGRESQL_UPDATE_DEVICES = """
UPDATE devices SET
    last_seen_at = CASE
        WHEN devices.last_seen_at IS NULL OR devices.last_seen_at < given.last_seen_at
        THEN given.last_seen_at ELSE devices.last_seen_at END,
    battery_pct = given.battery_pct,
    rssi_dbm = given.rssi_dbm
FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[])
    AS given(id, last_seen_at, battery_pct, rssi_dbm)
WHERE devices.id = given.id
"""


def _postgresql_event_columns(events: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    """The events' values column by column, as _POSTGRESQL_INSERT_EVENTS takes them."""
    return (
        [row["device_id"] for row in events],
        [row["household_id"] for row in events],
        [row["event_id"] for row in events],
        [row["kind"] for row in events],
        [as_utc(row["device_time"]) for row in events],
        [as_utc(row["received_at"]) for row in events],
        [strict_json(row["data"]) for row in events],
        [row["clock_skew_s"] for row in events],
    )


def _sqlite_time(moment: datetime) -> str:
    """A time as store.models.UtcDateTime keeps it on SQLite: UTC, without its zone, to
    the microsecond (SQLAlchemy's SQLite storage format)."""
    return as_utc(moment).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_event_values(events: list[dict[str, Any]]) -> list[Any]:
    """The rows' values in column order, one after another, as the statement takes them."""
    values: list[Any] = []
    times: dict[datetime, str] = {}  # a batch's rows share their received_at
    for row in events:
        received_at = row["received_at"]
        received = times.get(received_at)
        if received is None:
            received = times[received_at] = _sqlite_time(received_at)
        values += (
            row["device_id"],
            row["household_id"],
            row["event_id"],
            row["kind"],
            _sqlite_time(row["device_time"]),
            received,
            strict_json(row["data"]),
            row["clock_skew_s"],
        )
    return values


# A device's liveness as this batch saw it (on SQLite; _POSTGRESQL_UPDATE_DEVICES does the
# same on PostgreSQL). Not its online flag (see _flip_online), and
# last seen only ever later: another server sharing the subscription may have heard the
# device after this batch did, and written it first.
_update_device = (
    update(_devices)
    .where(_devices.c.id == bindparam("p_id"))
    .values(
        last_seen_at=case(
            (
                or_(
                    _devices.c.last_seen_at.is_(None),
                    _devices.c.last_seen_at < bindparam("p_last_seen_at"),
                ),
                bindparam("p_last_seen_at"),
            ),
            else_=_devices.c.last_seen_at,
        ),
        battery_pct=bindparam("p_battery_pct"),
        rssi_dbm=bindparam("p_rssi_dbm"),
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
    # Devices' going online or offline that the database had already (another server
    # sharing the subscription made them first, or heard the "silent" device since).
    liveness_made_already: int = 0


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
        self._sqlite = dialect == "sqlite"
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
            events = plan.events
            if plan.liveness:
                made_already = await _flip_online(connection, plan.liveness)
                if made_already:
                    written.liveness_made_already = len(made_already)
                    events = [row for row in events if id(row) not in made_already]
            # Each new event waits for the call engine, in the transaction that stores it
            # (engine/follower.py). On PostgreSQL the insert of the events adds theirs.
            waiting = 0
            if events:
                written.events = await self._insert_new(connection, events)
                waiting = 0 if self._sqlite else len(written.events)
            if plan.reused or len(written.events) < len(events):
                await self._sort_out_doubles(connection, plan, events, written)
            if len(written.events) > waiting:
                unapplied = [(event.id,) for event in written.events[waiting:]]
                if self._sqlite:
                    await connection.exec_driver_sql(
                        "INSERT INTO unapplied_events (id) VALUES (?)", unapplied
                    )
                else:
                    await connection.execute(
                        insert(_unapplied), [{"id": event_id} for (event_id,) in unapplied]
                    )
            if plan.dead_letters:
                await connection.execute(insert(_dead_letters), plan.dead_letters)
            if plan.device_rows and not self._sqlite:
                # The last row of a device is the one that counts, as one statement each.
                rows = {d.device_id: d for d in plan.device_rows}.values()
                await connection.exec_driver_sql(
                    _POSTGRESQL_UPDATE_DEVICES,
                    (
                        [d.device_id for d in rows],
                        [None if d.last_seen_at is None else as_utc(d.last_seen_at) for d in rows],
                        [d.battery_pct for d in rows],
                        [d.rssi_dbm for d in rows],
                    ),
                )
            elif plan.device_rows:
                await connection.execute(
                    _update_device,
                    [
                        {
                            "p_id": d.device_id,
                            "p_last_seen_at": d.last_seen_at,
                            "p_battery_pct": d.battery_pct,
                            "p_rssi_dbm": d.rssi_dbm,
                        }
                        for d in plan.device_rows
                    ],
                )
        return written

    async def _insert_new(
        self, connection: AsyncConnection, events: list[dict[str, Any]]
    ) -> list[StoredEvent]:
        """Insert the events whose (device, event id) the log has not; those it took, in
        the order they entered it."""
        if not self._sqlite:
            inserted = await connection.exec_driver_sql(
                _POSTGRESQL_INSERT_EVENTS, _postgresql_event_columns(events)
            )
            return [_stored(row) for row in inserted]
        stored: list[StoredEvent] = []
        step = _SQLITE_ROWS_PER_INSERT
        for start in range(0, len(events), step):
            chunk = events[start : start + step]
            result = await connection.exec_driver_sql(
                _sqlite_insert_events(len(chunk)), tuple(_sqlite_event_values(chunk))
            )
            stored.extend(_stored(row) for row in result)
        # SQLite does not promise RETURNING's order; the ids are the log's.
        stored.sort(key=lambda event: event.id)
        return stored

    async def _sort_out_doubles(
        self,
        connection: AsyncConnection,
        plan: BatchPlan,
        events: list[dict[str, Any]],
        written: Written,
    ) -> None:
        """Events not stored because their id was taken: a redelivery (same content) is a
        duplicate; other content is a conflict, recorded, and raised if it is an alarm."""
        new = {(event.device_id, event.event_id) for event in written.events}
        doubles: list[dict[str, Any]] = []
        for row in events:
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


async def _flip_online(connection: AsyncConnection, changes: list[LivenessChange]) -> set[int]:
    """Make each change of a device's online flag where the database still has it the
    other way, in the order the batch saw them; the ``id()`` of the event rows of those
    it did not make, which are not logged.

    A device's first changes in the batch go in one statement per direction, then its
    second ones, and so on: a reconnection storm's thousands of changes cost a couple
    of statements, not one each."""
    rounds: dict[tuple[int, bool, datetime | None], list[LivenessChange]] = {}
    nth: dict[int, int] = {}
    for change in changes:
        turn = nth[change.device_id] = nth.get(change.device_id, -1) + 1
        rounds.setdefault((turn, change.online, change.unheard_since), []).append(change)
    made_already: set[int] = set()
    for (_, online, unheard_since), group in sorted(rounds.items(), key=_round_order):
        flip = (
            update(_devices)
            .where(
                _devices.c.id.in_({change.device_id for change in group}),
                _devices.c.online.is_(not online),
            )
            .values(online=online)
            .returning(_devices.c.id)
        )
        if unheard_since is not None:
            flip = flip.where(
                or_(_devices.c.last_seen_at.is_(None), _devices.c.last_seen_at < unheard_since)
            )
        flipped = set((await connection.execute(flip)).scalars())
        made_already.update(
            id(change.event)
            for change in group
            if change.device_id not in flipped and change.event is not None
        )
    return made_already


def _round_order(item: tuple[tuple[int, bool, datetime | None], Any]) -> tuple[int, bool]:
    (turn, online, _), _group = item
    return turn, online


def _content(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": row["kind"], "device_time": row["device_time"].isoformat(), "data": row["data"]}
