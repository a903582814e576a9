"""EventWriter's new events and device rows on both databases: they are written by
statements of ingest's own (writer.py), which must store exactly what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select

from callcenter.ingest.batch import BatchPlan
from callcenter.ingest.registry import DeviceState, evolve, load_devices
from callcenter.ingest.writer import EventWriter
from callcenter.store import models as m
from callcenter.store.db import create_engine, refused_by_database

pytestmark = pytest.mark.asyncio

SERIAL = "CB-H0001"
RECEIVED = datetime(2026, 12, 7, 2, 0, 0, 654321, tzinfo=UTC)
# A device's time in another zone, as a UTC column must take it.
DEVICE_TIME = datetime(2026, 12, 7, 9, 59, 58, 123456, tzinfo=timezone(timedelta(hours=8)))


def _row(device: DeviceState, event_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "household_id": device.household_id,
        "event_id": event_id,
        "kind": "fall_detected",
        "device_time": DEVICE_TIME,
        "received_at": RECEIVED,
        "data": {"who": "张 伟", "confidence": 0.875, "axes": [1, None, -2.5], "ok": True},
        "clock_skew_s": -301.5,
        **changes,
    }


async def _device(url: str) -> DeviceState:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            (device,) = await load_devices(connection, [SERIAL])
    finally:
        await engine.dispose()
    return device


async def test_new_events_are_stored_as_sqlalchemy_stores_them(seeded_database_url: str) -> None:
    """Test that an event the writer stores reads back, value for value as the database
    holds it, the same as one SQLAlchemy inserted: times in UTC to the microsecond, the
    data's JSON text, the clock skew."""
    device = await _device(seeded_database_url)
    engine = create_engine(seeded_database_url)
    try:
        written = await EventWriter(engine).write(BatchPlan(events=[_row(device, "by-writer")]))
        assert [event.event_id for event in written.events] == ["by-writer"]
        async with engine.begin() as connection:
            await connection.execute(
                insert(m.DeviceEvent.__table__), [_row(device, "by-sqlalchemy")]
            )
        async with engine.connect() as connection:
            stored = (
                await connection.exec_driver_sql(
                    "SELECT event_id, device_id, household_id, kind, device_time, received_at,"
                    " data, clock_skew_s FROM device_events"
                    " WHERE event_id IN ('by-writer', 'by-sqlalchemy') ORDER BY event_id DESC"
                )
            ).all()
            read = (
                await connection.execute(
                    select(m.DeviceEvent.device_time, m.DeviceEvent.data).where(
                        m.DeviceEvent.event_id == "by-writer"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    assert [row[0] for row in stored] == ["by-writer", "by-sqlalchemy"]
    assert stored[0][1:] == stored[1][1:]
    assert (read.device_time, read.data) == (DEVICE_TIME, _row(device, "x")["data"])


async def test_a_batch_larger_than_a_statement_stores_each_new_event_once(
    seeded_database_url: str,
) -> None:
    """Test that a batch of more events than one statement takes stores them all, in
    order, each waiting for the call engine; and that a batch holding some of them again
    stores only the new ones and counts the others as duplicates."""
    device = await _device(seeded_database_url)
    engine = create_engine(seeded_database_url)
    writer = EventWriter(engine)
    try:
        first = await writer.write(BatchPlan(events=[_row(device, f"e{n}") for n in range(250)]))
        second = await writer.write(
            BatchPlan(events=[_row(device, f"e{n}") for n in range(150, 400)])
        )
        async with engine.connect() as connection:
            waiting = set(await connection.scalars(select(m.UnappliedEvent.id)))
    finally:
        await engine.dispose()
    assert [event.event_id for event in first.events] == [f"e{n}" for n in range(250)]
    assert [event.event_id for event in second.events] == [f"e{n}" for n in range(250, 400)]
    assert second.duplicates == 100
    ids = [event.id for event in first.events + second.events]
    assert ids == sorted(ids) and waiting >= set(ids)


async def test_a_time_without_its_zone_is_refused(seeded_database_url: str) -> None:
    """Test that a naive time is refused as the database refusing the row (so ingest
    writes the batch message by message), and nothing of the batch is kept."""
    device = await _device(seeded_database_url)
    engine = create_engine(seeded_database_url)
    try:
        plan = BatchPlan(
            events=[
                _row(device, "fine"),
                _row(device, "naive", device_time=DEVICE_TIME.replace(tzinfo=None)),
            ]
        )
        with pytest.raises(Exception) as caught:
            await EventWriter(engine).write(plan)
        assert refused_by_database(caught.value)
        async with engine.connect() as connection:
            kept = await connection.scalar(
                select(m.DeviceEvent.id).where(m.DeviceEvent.event_id == "fine")
            )
    finally:
        await engine.dispose()
    assert kept is None


async def test_device_rows_keep_the_latest_time_heard_and_the_last_battery_given(
    seeded_database_url: str,
) -> None:
    """Test that a batch's device rows set the battery and signal it gives, and the time
    last heard only forward (another server may have written a later one), with the
    last row of a device in a batch the one that counts."""
    device = await _device(seeded_database_url)
    engine = create_engine(seeded_database_url)
    writer = EventWriter(engine)
    later = RECEIVED + timedelta(seconds=30)

    def heard(at: datetime, battery: int, rssi: int) -> DeviceState:
        return evolve(device, last_seen_at=at, battery_pct=battery, rssi_dbm=rssi)

    async def stored() -> tuple[datetime, int, int]:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    select(m.Device.last_seen_at, m.Device.battery_pct, m.Device.rssi_dbm).where(
                        m.Device.id == device.device_id
                    )
                )
            ).one()
        return row.last_seen_at, row.battery_pct, row.rssi_dbm

    try:
        await writer.write(BatchPlan(device_rows=[heard(RECEIVED, 80, -70), heard(later, 75, -71)]))
        assert await stored() == (later, 75, -71)
        await writer.write(BatchPlan(device_rows=[heard(RECEIVED, 60, -90)]))
        assert await stored() == (later, 60, -90)
    finally:
        await engine.dispose()
