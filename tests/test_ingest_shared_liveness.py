"""Device liveness with several servers sharing the broker's subscription: each hears
only some of a device's messages, so what one server remembers of a device may be behind
what another has written. A device goes online or offline in the database only where the
database still has it the other way (ingest/writer.py): one event per change whichever
server makes it, and no device declared silent that another server has heard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.domain.events import ServerEventKind
from callcenter.ingest.batch import Limits, Received, find_silent, plan_batch, plan_silent_offline
from callcenter.ingest.protocol import Channel, heartbeat_payload, topic_for
from callcenter.ingest.registry import DeviceRegistry, load_devices
from callcenter.ingest.writer import EventWriter, Written
from callcenter.store import models as m
from callcenter.store.db import create_engine

pytestmark = pytest.mark.asyncio

PREFIX = "eldercare"
LIMITS = Limits(topic_prefix=PREFIX)
SERIAL, HOUSEHOLD = "CB-H0001", "H0001"
T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
SILENCE = timedelta(seconds=180)  # three missed heartbeats of a minute
LIVENESS = (ServerEventKind.DEVICE_ONLINE.value, ServerEventKind.DEVICE_OFFLINE.value)


class Server:
    """One server's ingest as far as liveness goes: its memory of the device and the
    writer it commits with."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.writer = EventWriter(engine)
        self.registry = DeviceRegistry()
        self._engine = engine

    async def reload(self) -> None:
        """Read the devices again (as ingest does every registry_refresh_s when shared)."""
        async with self._engine.connect() as connection:
            self.registry = DeviceRegistry(await load_devices(connection, [SERIAL]))

    async def hears_heartbeat(self, at: datetime) -> Written:
        message = Received(
            topic_for(PREFIX, HOUSEHOLD, SERIAL, Channel.HEARTBEAT),
            heartbeat_payload(int(at.timestamp() * 1000)),
        )
        plan = plan_batch([message], self.registry, at, LIMITS)
        written = await self.writer.write(plan)
        self.registry.update(plan.devices.values())
        return written

    async def declares_the_silent(self, at: datetime) -> Written:
        silent = find_silent(self.registry, at, SILENCE, listening_since=T0 - SILENCE)
        assert [device.serial for device in silent] == [SERIAL]
        plan = plan_silent_offline(silent, at, SILENCE)
        written = await self.writer.write(plan)
        self.registry.update(plan.devices.values())
        return written


async def _logged(engine: AsyncEngine) -> list[str]:
    """The device's online and offline events, in log order."""
    async with engine.connect() as connection:
        return list(
            await connection.scalars(
                select(m.DeviceEvent.kind)
                .join(m.Device, m.Device.id == m.DeviceEvent.device_id)
                .where(m.Device.serial == SERIAL, m.DeviceEvent.kind.in_(LIVENESS))
                .order_by(m.DeviceEvent.id)
            )
        )


async def _row(engine: AsyncEngine) -> tuple[bool, datetime | None]:
    async with engine.connect() as connection:
        online, seen = (
            await connection.execute(
                select(m.Device.online, m.Device.last_seen_at).where(m.Device.serial == SERIAL)
            )
        ).one()
    return bool(online), seen.replace(tzinfo=UTC) if seen and seen.tzinfo is None else seen


async def _two_servers(url: str) -> tuple[AsyncEngine, Server, Server]:
    """Two servers that both know the device online, heard at T0."""
    engine = create_engine(url)
    a, b = Server(engine), Server(engine)
    await a.reload()
    await a.hears_heartbeat(T0)
    await a.reload()
    await b.reload()
    assert (await _row(engine))[0], "the device is online"
    return engine, a, b


async def test_a_silent_device_is_declared_offline_once_though_both_servers_find_it(
    seeded_database_url: str,
) -> None:
    """Test that when two servers each find the device silent, one device_offline is
    logged and the second declaration changes nothing."""
    engine, a, b = await _two_servers(seeded_database_url)
    try:
        before = await _logged(engine)
        first = await a.declares_the_silent(T0 + SILENCE + timedelta(seconds=5))
        second = await b.declares_the_silent(T0 + SILENCE + timedelta(seconds=9))
        assert [e.kind for e in first.events] == [ServerEventKind.DEVICE_OFFLINE.value]
        assert (second.events, second.liveness_made_already) == ([], 1)
        assert (await _logged(engine))[len(before) :] == [ServerEventKind.DEVICE_OFFLINE.value]
        assert (await _row(engine))[0] is False
    finally:
        await engine.dispose()


async def test_a_device_another_server_heard_is_not_declared_offline(
    seeded_database_url: str,
) -> None:
    """Test that a server that has not heard the device for the silence, while the other
    server has, declares nothing; and that last seen never goes back in time when a
    server writes an older sighting after a newer one."""
    engine, a, b = await _two_servers(seeded_database_url)
    try:
        before = await _logged(engine)
        heard = T0 + timedelta(seconds=120)
        await b.hears_heartbeat(heard)
        written = await a.declares_the_silent(T0 + SILENCE + timedelta(seconds=5))
        assert (written.events, written.liveness_made_already) == ([], 1)
        assert await _logged(engine) == before
        assert await _row(engine) == (True, heard)
        # A's sighting from before B's, written after it, leaves B's.
        await a.hears_heartbeat(T0 + timedelta(seconds=60))
        assert await _row(engine) == (True, heard)
    finally:
        await engine.dispose()


async def test_a_device_coming_back_is_one_online_event_whichever_server_hears_it(
    seeded_database_url: str,
) -> None:
    """Test that a device declared offline, then heard by both servers (each still
    remembering it offline), is logged online once."""
    engine, a, b = await _two_servers(seeded_database_url)
    try:
        await a.declares_the_silent(T0 + SILENCE + timedelta(seconds=5))
        await a.reload()
        await b.reload()
        before = await _logged(engine)
        back = T0 + timedelta(seconds=400)
        first = await a.hears_heartbeat(back)
        second = await b.hears_heartbeat(back + timedelta(seconds=30))
        assert [e.kind for e in first.events] == [ServerEventKind.DEVICE_ONLINE.value]
        assert (second.events, second.liveness_made_already) == ([], 1)
        assert (await _logged(engine))[len(before) :] == [ServerEventKind.DEVICE_ONLINE.value]
        assert await _row(engine) == (True, back + timedelta(seconds=30))
    finally:
        await engine.dispose()
