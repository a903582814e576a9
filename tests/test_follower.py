"""The event follower: against a database that is locked away from it for a while, and
applying a burst of events several to a transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from callcenter.clock import ManualClock
from callcenter.domain.policy import PolicyBook
from callcenter.engine.desk import Desk, DeskSettings
from callcenter.engine.district import District
from callcenter.engine.follower import ATTEMPTS, EventFollower
from callcenter.store import models as m
from callcenter.store.db import create_engine
from tests.desk_support import MONDAY_MORNING
from tests.ingest_support import eventually


def _impatient(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=50")
    cursor.close()


@pytest.mark.sqlite_only("the outage is made with SQLite's exclusive lock")
async def test_an_alarm_waits_out_a_database_outage_and_is_never_set_aside(
    seeded_database_url: str,
) -> None:
    """Test that while the database refuses the follower, the press is retried for as
    long as it takes (not dead-lettered after a few attempts), and opens its call after."""
    engine = create_engine(seeded_database_url)
    # Fail fast on the lock (after the engine's own 5 s setting), so the test is quick.
    event.listen(engine.sync_engine, "connect", _impatient)
    await _press(engine, "CB-H0001", "press-1")
    clock = ManualClock(MONDAY_MORNING)
    desk = Desk(
        engine,
        clock,
        District(engine, zone=ZoneInfo("Asia/Shanghai")),
        PolicyBook(),
        DeskSettings(topic_prefix="eldercare"),
    )
    follower = EventFollower(engine, desk, clock)
    await desk.district.registry()
    blocker = sqlite3.connect(make_url(seeded_database_url).database or "", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    catching_up = asyncio.create_task(follower.catch_up())
    try:

        async def waited() -> bool:
            # More waits than the attempts a failing event gets before it is set aside.
            return follower.database_waits > ATTEMPTS

        await eventually(waited, within_s=30, what="the follower to wait for the database")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await asyncio.wait_for(catching_up, 30) == 1
    async with AsyncSession(engine) as session:
        calls = await session.scalar(select(func.count()).select_from(m.Call))
        dead = await session.scalar(select(func.count()).select_from(m.DeadLetter))
    await engine.dispose()
    assert (calls, dead, follower.events_failed) == (1, 0, 0)


def _desk_on(engine: AsyncEngine, clock: ManualClock) -> Desk:
    return Desk(
        engine,
        clock,
        District(engine, zone=ZoneInfo("Asia/Shanghai")),
        PolicyBook(),
        DeskSettings(topic_prefix="eldercare"),
    )


async def _press(engine: AsyncEngine, serial: str, event_id: str) -> int:
    """A press stored as ingest stores it (the event and its row to apply); its id."""
    async with engine.begin() as connection:
        return await _store_press(connection, serial, event_id)


async def _store_press(connection: AsyncConnection, serial: str, event_id: str) -> int:
    device_id, household_id = (
        await connection.execute(
            select(m.Device.id, m.Device.household_id).where(m.Device.serial == serial)
        )
    ).one()
    stored = await connection.scalar(
        insert(m.DeviceEvent)
        .values(
            device_id=device_id,
            household_id=household_id,
            event_id=event_id,
            kind="emergency_press",
            device_time=MONDAY_MORNING,
            received_at=MONDAY_MORNING,
            data={},
        )
        .returning(m.DeviceEvent.id)
    )
    await connection.execute(insert(m.UnappliedEvent).values(id=stored))
    return int(stored)


async def _opened(engine: AsyncEngine) -> list[str]:
    """The households with a call, in the order their calls were opened."""
    async with AsyncSession(engine) as session:
        return list(
            await session.scalars(
                select(m.Household.code)
                .join(m.Call, m.Call.household_id == m.Household.id)
                .order_by(m.Call.id)
            )
        )


async def _neighbours(engine: AsyncEngine, count: int) -> list[str]:
    """Codes of ``count`` households with the same home station."""
    async with AsyncSession(engine) as session:
        station = await session.scalar(
            select(m.Household.home_station_id).order_by(m.Household.id).limit(1)
        )
        return list(
            (
                await session.scalars(
                    select(m.Household.code)
                    .where(m.Household.home_station_id == station)
                    .order_by(m.Household.id)
                    .limit(count)
                )
            ).all()
        )


async def test_a_burst_of_presses_is_decided_in_one_transaction_with_a_carer_each(
    seeded_database_url: str,
) -> None:
    """Test that presses from five neighbours, in the log together, are applied in one
    transaction, and that each decision sees the carers the ones before it sent: five
    calls, five different carers. The log, shorter than one read-ahead, is read once."""
    engine = create_engine(seeded_database_url)
    log_reads: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "unapplied_events" in statement:
            log_reads.append(statement)

    try:
        homes = await _neighbours(engine, 5)
        for n, home in enumerate(homes):
            await _press(engine, f"CB-{home}", f"burst-{n}")
        clock = ManualClock(MONDAY_MORNING)
        follower = EventFollower(engine, _desk_on(engine, clock), clock)
        event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
        assert await follower.catch_up() == 5
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        assert len(log_reads) == 1
        async with AsyncSession(engine) as session:
            sent = (
                await session.execute(
                    select(m.CallAssignment.call_id, m.CallAssignment.carer_id).where(
                        m.CallAssignment.active.is_(True)
                    )
                )
            ).all()
        assert (follower.events_applied, follower.batches_applied) == (5, 1)
        assert len({call for call, _ in sent}) == 5
        assert len({carer for _, carer in sent}) == 5
    finally:
        await engine.dispose()


@pytest.mark.sqlite_only("the broken event is written past SQLite's foreign keys")
async def test_an_event_the_engine_fails_on_is_set_aside_alone_from_its_batch(
    seeded_database_url: str,
) -> None:
    """Test that an event the engine cannot apply (its household is gone from the
    district) makes its batch go one event at a time: the events around it open their
    calls, and it alone is set aside as a dead letter."""
    engine = create_engine(seeded_database_url)
    try:
        first, last = await _neighbours(engine, 2)
        await _press(engine, f"CB-{first}", "before")
        # A press logged for a household that is not in the district (foreign keys are
        # off on a plain sqlite3 connection): no decision can be made for it.
        raw = sqlite3.connect(make_url(seeded_database_url).database or "")
        with raw:
            raw.execute(
                "INSERT INTO device_events (device_id, household_id, event_id, kind,"
                " device_time, received_at, data) SELECT device_id, 999999, 'orphan', kind,"
                " device_time, received_at, data FROM device_events WHERE event_id = 'before'"
            )
            raw.execute(
                "INSERT INTO unapplied_events (id)"
                " SELECT id FROM device_events WHERE event_id = 'orphan'"
            )
        raw.close()
        await _press(engine, f"CB-{last}", "after")
        clock = ManualClock(MONDAY_MORNING)
        follower = EventFollower(engine, _desk_on(engine, clock), clock)
        assert await follower.catch_up() == 3
        opened = await _opened(engine)
        async with AsyncSession(engine) as session:
            dead = (await session.scalars(select(m.DeadLetter.detail))).all()
            position = await follower.position()
            last_id = await session.scalar(select(func.max(m.DeviceEvent.id)))
        assert opened == [first, last]
        assert len(dead) == 1 and "orphan" not in dead[0] and "emergency_press" in dead[0]
        assert (follower.events_applied, follower.events_failed, follower.batches_applied) == (
            2,
            1,
            0,
        )
        assert position == last_id
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_an_event_committed_after_a_newer_one_was_applied_is_applied_too(
    seeded_database_url: str,
) -> None:
    """Test that an event whose transaction took its id first and committed last (one
    server paused between the two, another storing and applying in the meantime) still
    becomes a call, once: the engine does not go by a position in the log."""
    engine = create_engine(seeded_database_url)
    try:
        early, late = await _neighbours(engine, 2)
        clock = ManualClock(MONDAY_MORNING)
        follower = EventFollower(engine, _desk_on(engine, clock), clock)
        async with engine.connect() as paused:
            transaction = await paused.begin()
            held = await _store_press(paused, f"CB-{early}", "taken-first")
            newer = await _press(engine, f"CB-{late}", "committed-first")
            assert newer > held
            assert await follower.catch_up() == 1
            assert await follower.position() == newer
            await transaction.commit()
        assert await follower.waiting() == 1
        assert await follower.catch_up() == 1
        assert await follower.catch_up() == 0
        assert await _opened(engine) == [late, early]
        assert (await follower.waiting(), await follower.position()) == (0, newer)
    finally:
        await engine.dispose()
