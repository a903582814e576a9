"""Follows the device event log from the engine's own durable cursor.

Ingest's notice of new events is only a prompt to look now; the log and the cursor are
the truth. Each event is applied in the same transaction that moves the cursor past it,
so an event is acted on exactly once however the server stops and starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.engine.desk import Desk, LoggedEvent
from callcenter.ingest.mqtt import backoff_delays
from callcenter.ingest.protocol import DeadLetterReason
from callcenter.store import models as m

log = logging.getLogger("callcenter.follower")

CURSOR = "call_engine"
_READ_AHEAD = 200
# Events applied in one transaction: enough that a storm of presses shares its commits
# and its reading of who is free, few enough that the write lock is held only briefly.
BATCH = 25
# An event the engine fails on this many times is set aside as a dead letter (with the
# error) rather than holding up every call behind it. Database outages do not count.
ATTEMPTS = 3
# Errors that mean the database is busy, unreachable or restarting, not a bad event.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, TimeoutError, OSError)


class EventFollower:
    """Reads new events in log order and hands each to the desk."""

    def __init__(
        self,
        engine: AsyncEngine,
        desk: Desk,
        clock: Clock,
        *,
        poll_s: float = 1.0,
        batch: int = BATCH,
    ) -> None:
        self._engine = engine
        self._desk = desk
        self._clock = clock
        self._poll_s = poll_s
        self._batch = max(1, batch)
        self._prompt = asyncio.Event()
        self._stopping = asyncio.Event()
        self.events_applied = 0
        self.events_failed = 0
        self.batches_applied = 0  # transactions that applied several events at once
        self.database_waits = 0

    def prompt(self) -> None:
        """New events were committed: look now rather than at the next poll."""
        self._prompt.set()

    async def on_events(self, _stored: Sequence[Any]) -> None:
        """Ingest listener: new events are in the log."""
        self.prompt()

    def stop(self) -> None:
        self._stopping.set()
        self._prompt.set()

    async def run(self) -> None:
        """Apply events until stop(); the log is polled too, in case a prompt was missed."""
        while not self._stopping.is_set():
            self._prompt.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("reading the event log failed; trying again shortly")
            # catch_up read the log to its end; what was stored since has prompted.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prompt.wait(), self._poll_s)

    async def catch_up(self) -> int:
        """Apply everything in the log past the cursor; how many events were applied.

        Events are applied several to a transaction (``batch`` at most), so a burst of
        presses costs one commit and one reading of who is free per batch rather than
        per press. A batch that fails is applied again one event at a time, so that
        one bad event is retried and set aside on its own, never taking others along."""
        total = 0
        while not self._stopping.is_set():
            events = await self._read_ahead()
            for start in range(0, len(events), self._batch):
                if self._stopping.is_set():
                    break
                batch = events[start : start + self._batch]
                if len(batch) > 1 and await self._apply_batch(batch):
                    total += len(batch)
                    continue
                for event in batch:
                    if self._stopping.is_set():
                        break
                    with logs.bound(event_id=event.id):
                        await self._apply_one(event)
                    total += 1
            if len(events) < _READ_AHEAD:
                # That was the end of the log when it was read. Whatever was stored
                # since has prompted again; run() looks once more when it has.
                break
        return total

    async def _apply_batch(self, events: list[LoggedEvent]) -> bool:
        """Apply ``events`` (in log order) in one transaction; False, with nothing
        applied, when any of them failed (the caller then goes one by one)."""

        async def work(session: AsyncSession) -> int:
            return await self._apply_in(session, events)

        try:
            self.events_applied += await self._desk.perform(work)
            self.batches_applied += 1
        except Exception as error:
            log.info(
                "events %d-%d could not be applied together (%r); applying them one by one",
                events[0].id,
                events[-1].id,
                error,
            )
            return False
        return True

    async def _apply_in(self, session: AsyncSession, events: list[LoggedEvent]) -> int:
        """Apply those of ``events`` past the cursor in the caller's transaction and move
        the cursor past them; how many were applied. The cursor is read under the write
        lock: a second instance may have got here first."""
        after = await _cursor(session, lock=True)
        applied = 0
        for event in events:
            if event.id > after:
                await self._desk.apply_event(session, event)
                applied += 1
        if applied:
            await _advance(session, events[-1].id, self._clock)
        return applied

    async def position(self) -> int:
        async with AsyncSession(self._engine) as session:
            return await _cursor(session)

    async def _read_ahead(self) -> list[LoggedEvent]:
        async with AsyncSession(self._engine) as session:
            rows = await session.execute(_AHEAD)
            return [LoggedEvent(*row) for row in rows.all()]

    async def _apply_one(self, event: LoggedEvent) -> None:
        attempt = 0
        outage = backoff_delays(first_s=0.2, cap_s=10.0)
        while True:
            attempt += 1

            async def work(session: AsyncSession) -> int:
                return await self._apply_in(session, [event])

            try:
                self.events_applied += await self._desk.perform(work)
                return
            except DATABASE_UNAVAILABLE as error:
                # Not the event's fault: wait for the database as long as it takes. An
                # alarm is never set aside because the database was busy or away.
                attempt = 0
                self.database_waits += 1
                wait = next(outage)
                log.warning(
                    "event %d (%s from %s): database unavailable (%s); retrying in %.1f s",
                    event.id,
                    event.kind,
                    event.device,
                    error,
                    wait,
                )
                await self._sleep_unless_stopping(wait)
                if self._stopping.is_set():
                    return  # still past the cursor: the next start applies it
            except Exception as error:
                log.exception(
                    "event %d (%s from %s, household %s) failed, attempt %d of %d",
                    event.id,
                    event.kind,
                    event.device,
                    await self._household_code(event),
                    attempt,
                    ATTEMPTS,
                )
                if attempt >= ATTEMPTS:
                    self.events_failed += 1
                    await self._set_aside(event, error)
                    return
                await asyncio.sleep(0.2 * attempt)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _set_aside(self, event: LoggedEvent, error: Exception) -> None:
        async def work(session: AsyncSession) -> None:
            if await _cursor(session, lock=True) >= event.id:
                return
            now = self._clock.now()
            detail = f"call engine failed on event {event.id} ({event.kind}): {error!r}"
            await session.execute(
                insert(m.DeadLetter).values(
                    received_at=now,
                    topic=f"device_events/{event.id}",
                    reason=DeadLetterReason.ENGINE_FAILED.value,
                    detail=detail[:2000],
                    payload_size=0,
                    payload=b"",
                )
            )
            await _advance(session, event.id, self._clock)

        await self._desk.perform(work)
        log.error(
            "event %d (%s from %s) set aside as a dead letter after %d attempts; "
            "an operator must check household %s by hand",
            event.id,
            event.kind,
            event.device,
            ATTEMPTS,
            await self._household_code(event),
        )

    async def _household_code(self, event: LoggedEvent) -> str:
        try:
            registry = await self._desk.district.registry()
        except Exception:  # the database may be what is failing
            return f"#{event.household_id}"
        household = registry.households.get(event.household_id)
        return household.code if household else f"#{event.household_id}"


# The statements the follower makes all the time, built once: building a statement and
# its cache key anew costs SQLAlchemy more than SQLite spends running it.
_cursors = m.Base.metadata.tables["cursors"]
_events = m.Base.metadata.tables["device_events"]
_devices = m.Base.metadata.tables["devices"]
_POSITION = select(_cursors.c.position).where(_cursors.c.name == CURSOR)
_POSITION_LOCKED = _POSITION.with_for_update()
# The log past the cursor, the cursor read in the same statement.
_AHEAD = (
    select(
        _events.c.id,
        _events.c.household_id,
        _devices.c.serial,
        _events.c.kind,
        _events.c.received_at,
        _events.c.data,
    )
    .join(_devices, _devices.c.id == _events.c.device_id)
    .where(_events.c.id > func.coalesce(_POSITION.scalar_subquery(), 0))
    .order_by(_events.c.id)
    .limit(_READ_AHEAD)
)
_ADVANCE = (
    update(_cursors)
    .where(_cursors.c.name == CURSOR)
    .values(position=bindparam("position"), updated_at=bindparam("now"))
)


async def _cursor(session: AsyncSession, *, lock: bool = False) -> int:
    position = (await session.execute(_POSITION_LOCKED if lock else _POSITION)).scalar()
    return int(position) if position is not None else 0


async def _advance(session: AsyncSession, position: int, clock: Clock) -> None:
    now = clock.now()
    moved = await session.execute(_ADVANCE, {"position": position, "now": now})
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(
            insert(_cursors).values(name=CURSOR, position=position, updated_at=now)
        )
