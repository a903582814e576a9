"""Follows the device event log: applies each event ingest stored, once.

Ingest stores each event together with a row in ``unapplied_events``; applying the event
deletes that row in the same transaction, so an event is acted on exactly once however
servers stop, start and take over from each other. Ingest's notice of new events is only
a prompt to look now; the table is the truth.

Why a row per event and not a position in the log: with several servers storing events,
their transactions take ids in one order and may commit in another (a server paused
between the two), so an event can become visible below a position the engine has passed.
The events are applied in id order as they become visible, the late one when it comes.
The ``call_engine`` cursor still says the newest event applied and when (health).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.engine.desk import Desk, LoggedEvent
from callcenter.ingest.mqtt import backoff_delays
from callcenter.ingest.protocol import DeadLetterReason
from callcenter.store import models as m
from callcenter.store.db import database_unavailable, what_it_said

log = logging.getLogger("callcenter.follower")

CURSOR = "call_engine"
_READ_AHEAD = 200
# Events applied in one transaction: enough that a storm of presses shares its commits
# and its reading of who is free, few enough that the write lock is held only briefly.
BATCH = 25
# An event the engine fails on this many times is set aside as a dead letter (with the
# error) rather than holding up every call behind it. Database outages do not count.
ATTEMPTS = 3


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

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        """Apply events until stop(); the log is polled too, in case a prompt was missed."""
        while not self._stopping.is_set():
            self._prompt.clear()
            try:
                await self.catch_up()
            except Exception as error:
                if not database_unavailable(error):
                    log.exception("reading the event log failed; trying again shortly")
                else:  # a whole traceback each second of an outage would say nothing more
                    log.warning(
                        "cannot read the event log: database unavailable (%s)", what_it_said(error)
                    )
            # catch_up read the log to its end; what was stored since has prompted.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prompt.wait(), self._poll_s)

    async def catch_up(self) -> int:
        """Apply every event not yet applied; how many were applied.

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
        """Apply those of ``events`` still unapplied in the caller's transaction; how many
        were applied. Each is claimed by deleting its row first: another instance that
        got to one already has deleted it (or holds it, and this waits for its end)."""
        claimed = await _claim(session, events)
        applied = 0
        for event in events:
            if event.id in claimed:
                await self._desk.apply_event(session, event)
                applied += 1
        if claimed:
            await _advance(session, max(claimed), self._clock)
        return applied

    async def position(self) -> int:
        """The newest event applied (older ones may still wait, when stored late)."""
        async with AsyncSession(self._engine) as session:
            return await _cursor(session)

    async def waiting(self) -> int:
        """How many stored events are still to apply."""
        async with AsyncSession(self._engine) as session:
            return int(await session.scalar(_WAITING) or 0)

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
            except Exception as error:
                if not database_unavailable(error):
                    if await self._failed(event, error, attempt):
                        return
                    continue
                # Not the event's fault: wait for the database as long as it takes. An
                # alarm is never set aside because the database was busy, away or
                # failing over to its replica.
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
                    return  # still unapplied: the next start applies it

    async def _failed(self, event: LoggedEvent, error: Exception, attempt: int) -> bool:
        """The engine failed on ``event`` for the ``attempt``-th time: set it aside as a
        dead letter after ATTEMPTS (True), else wait a little before the next (False)."""
        log.error(
            "event %d (%s from %s, household %s) failed, attempt %d of %d",
            event.id,
            event.kind,
            event.device,
            await self._household_code(event),
            attempt,
            ATTEMPTS,
            exc_info=error,
        )
        if attempt >= ATTEMPTS:
            self.events_failed += 1
            await self._set_aside(event, error)
            return True
        await asyncio.sleep(0.2 * attempt)
        return False

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _set_aside(self, event: LoggedEvent, error: Exception) -> None:
        async def work(session: AsyncSession) -> None:
            if not await _claim(session, [event]):
                return  # applied meanwhile, by another instance
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
_unapplied = m.Base.metadata.tables["unapplied_events"]
_POSITION = select(_cursors.c.position).where(_cursors.c.name == CURSOR)
# The events still to apply, oldest first.
_AHEAD = (
    select(
        _events.c.id,
        _events.c.household_id,
        _devices.c.serial,
        _events.c.kind,
        _events.c.received_at,
        _events.c.data,
    )
    .select_from(_unapplied)
    .join(_events, _events.c.id == _unapplied.c.id)
    .join(_devices, _devices.c.id == _events.c.device_id)
    .order_by(_unapplied.c.id)
    .limit(_READ_AHEAD)
)
_WAITING = select(func.count()).select_from(_unapplied)
_CLAIM = (
    delete(_unapplied)
    .where(_unapplied.c.id.in_(bindparam("ids", expanding=True)))
    .returning(_unapplied.c.id)
)
# The cursor only ever moves forward: a late event applied after newer ones leaves it.
_ADVANCE = (
    update(_cursors)
    .where(_cursors.c.name == CURSOR)
    .values(
        position=case(
            (_cursors.c.position < bindparam("position"), bindparam("position")),
            else_=_cursors.c.position,
        ),
        updated_at=bindparam("now"),
    )
)


async def _claim(session: AsyncSession, events: Sequence[LoggedEvent]) -> set[int]:
    """Delete the rows of those of ``events`` still unapplied; their ids."""
    claimed = await session.execute(_CLAIM, {"ids": [event.id for event in events]})
    return set(claimed.scalars())


async def _cursor(session: AsyncSession) -> int:
    position = (await session.execute(_POSITION)).scalar()
    return int(position) if position is not None else 0


async def _advance(session: AsyncSession, position: int, clock: Clock) -> None:
    now = clock.now()
    moved = await session.execute(_ADVANCE, {"position": position, "now": now})
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(
            insert(_cursors).values(name=CURSOR, position=position, updated_at=now)
        )
