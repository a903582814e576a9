"""Running ingest inside a test, and reading back what it stored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
from sqlalchemy import func, select

from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import Channel, event_payload, topic_for
from callcenter.ingest.service import Ingest
from callcenter.store.db import create_engine
from callcenter.store.models import DeadLetter, Device, DeviceEvent


def ingest_config(
    *,
    host: str,
    port: int,
    prefix: str,
    client_id: str = "ingest-test",
    hosts: list[str] | None = None,
    **ingest: Any,
) -> Config:
    """A configuration pointing at the test broker with a per-test topic prefix (or at
    several brokers, ``hosts``, instead of ``host`` and ``port``)."""
    return Config.model_validate(
        {
            "broker": {
                **({"hosts": hosts} if hosts else {"host": host, "port": port}),
                "topic_prefix": prefix,
                "client_id": client_id,
                "reconnect_max_s": 1.0,
                # The plain test broker (tests/fixtures/broker.py) takes any client: these
                # tests are about what the server does with messages; who may publish is
                # tests/test_device_logins.py's.
                "device_logins": "none",
            },
            "ingest": ingest,
        }
    )


@contextlib.asynccontextmanager
async def running_ingest(
    config: Config, database_url: str, *, connect_within_s: float = 15.0
) -> AsyncIterator[Ingest]:
    """Ingest running in this loop until the block ends; it must still be alive then."""
    engine = create_engine(database_url)
    ingest = Ingest(
        config,
        engine,
        SystemClock(),
        brokers=config.broker.addresses,
    )
    task = asyncio.create_task(ingest.run(), name="callcenter.ingest")
    try:
        async with asyncio.timeout(connect_within_s):
            await ingest.connected.wait()
        yield ingest
        assert not task.done(), f"ingest stopped unexpectedly: {task}"
    finally:
        ingest.stop()
        async with asyncio.timeout(15):
            await task
        await engine.dispose()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


async def stored_event_keys(database_url: str) -> list[tuple[str, str]]:
    """(serial, event id) of every device-reported event in the log, doubles included."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(Device.serial, DeviceEvent.event_id)
                .join(Device, Device.id == DeviceEvent.device_id)
                .where(~DeviceEvent.event_id.startswith("srv:"))
            )
            return [(serial, event_id) for serial, event_id in rows]
    finally:
        await engine.dispose()


async def reported_count(database_url: str) -> int:
    """How many device-reported events the log holds (the server's own not counted):
    what to wait for, rather than ingest's count, which includes devices coming online."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(~DeviceEvent.event_id.startswith("srv:"))
            )
            return int(found or 0)
    finally:
        await engine.dispose()


async def count_rows(database_url: str, model: type[DeviceEvent] | type[DeadLetter]) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(model))).scalar_one()
            )
    finally:
        await engine.dispose()


async def publish_events(
    host: str,
    port: int,
    prefix: str,
    events: list[tuple[str, str, str]],
    kind: EventKind = EventKind.EMERGENCY_PRESS,
    *,
    login: tuple[str, str] | None = None,
) -> None:
    """Publish (household, serial, event id) events at QoS 1 from one test client (as
    the device whose ``login``, user name and password, it is given). An event published
    again is a device re-sending it: the same id, kind and time."""
    now_ms = int(time.time() * 1000)
    username, password = login if login is not None else (None, None)
    async with aiomqtt.Client(
        host, port, identifier=username, username=username, password=password
    ) as client:
        for household, serial, event_id in events:
            stamp = _first_stamps.setdefault((prefix, serial, event_id), now_ms)
            await client.publish(
                topic_for(prefix, household, serial, Channel.EVENT),
                event_payload(event_id, kind, stamp),
                qos=1,
            )


# (topic prefix, serial, event id) -> the time the event was first published with.
_first_stamps: dict[tuple[str, str, str], int] = {}
