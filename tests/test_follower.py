"""The event follower against a database that is locked away from it for a while."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

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


async def test_an_alarm_waits_out_a_database_outage_and_is_never_set_aside(
    seeded_database_url: str,
) -> None:
    """Test that while the database refuses the follower, the press is retried for as
    long as it takes (not dead-lettered after a few attempts), and opens its call after."""
    if not seeded_database_url.startswith("sqlite"):
        pytest.skip("the outage is made with SQLite's exclusive lock")
    engine = create_engine(seeded_database_url)
    # Fail fast on the lock (after the engine's own 5 s setting), so the test is quick.
    event.listen(engine.sync_engine, "connect", _impatient)
    async with engine.begin() as connection:
        device_id, household_id = (
            await connection.execute(
                select(m.Device.id, m.Device.household_id).where(m.Device.serial == "CB-H0001")
            )
        ).one()
        await connection.execute(
            insert(m.DeviceEvent).values(
                device_id=device_id,
                household_id=household_id,
                event_id="press-1",
                kind="emergency_press",
                device_time=MONDAY_MORNING,
                received_at=MONDAY_MORNING,
                data={},
            )
        )
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
