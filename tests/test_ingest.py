"""Ingest end to end on a real mosquitto and a real database file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from callcenter.broker import EmbeddedBroker
from callcenter.config import Config
from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import (
    Channel,
    DeadLetterReason,
    event_payload,
    heartbeat_payload,
    status_payload,
    topic_for,
)
from callcenter.store.db import create_engine
from callcenter.store.models import DeadLetter, Device, DeviceEvent, Household
from tests.ingest_support import (
    eventually,
    ingest_config,
    publish_events,
    reported_count,
    running_ingest,
    stored_event_keys,
)

PUBLISHER = Path(__file__).resolve().parent.parent / "bench" / "publisher.py"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_events_are_stored_once_and_acknowledged(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that events are logged, and a redelivered event id is stored only once."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    events = [(f"H{n:04d}", f"CB-H{n:04d}", f"e{n}") for n in range(1, 101)]
    async with running_ingest(config, seeded_database_url) as ingest:
        await publish_events(broker.host, broker.port, topic_prefix, events)
        await publish_events(broker.host, broker.port, topic_prefix, events[:30])

        async def all_seen() -> bool:
            return ingest.stats.messages >= 130

        await eventually(all_seen, what="130 messages ingested")
    keys = await stored_event_keys(seeded_database_url)
    assert sorted(keys) == sorted((serial, eid) for _, serial, eid in events)
    assert ingest.stats.duplicates == 30


async def test_each_dead_letter_reason_is_kept_and_ingest_keeps_running(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that every kind of bad message becomes a dead letter with its reason and the
    payload, and good events after them are still stored."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    event_topic = topic_for(topic_prefix, "H0001", "CB-H0001", Channel.EVENT)
    bad = [
        (f"{topic_prefix}/v1/H0001/CB-H0001", b"{}", DeadLetterReason.BAD_TOPIC),
        (event_topic, b"{" + b" " * 9000 + b"}", DeadLetterReason.TOO_LARGE),
        (event_topic, b"\x00 definitely not json", DeadLetterReason.MALFORMED_JSON),
        (event_topic, json.dumps({"v": 1, "id": "x"}).encode(), DeadLetterReason.SCHEMA),
        (
            event_topic,
            b'{"v":1,"id":"nan","ts":%d,"kind":"fall_detected","data":{"g":NaN}}' % _now_ms(),
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            topic_for(topic_prefix, "H0001", "CB-NOBODY", Channel.EVENT),
            event_payload("u1", EventKind.EMERGENCY_PRESS, _now_ms()),
            DeadLetterReason.UNKNOWN_DEVICE,
        ),
        (
            # A device of H0002 claiming to speak for H0001: a spoof across households.
            topic_for(topic_prefix, "H0001", "CB-H0002", Channel.EVENT),
            event_payload("spoof", EventKind.EMERGENCY_PRESS, _now_ms()),
            DeadLetterReason.HOUSEHOLD_MISMATCH,
        ),
    ]
    async with running_ingest(config, seeded_database_url) as ingest:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            for topic, payload, _ in bad:
                await client.publish(topic, payload, qos=1)
        await publish_events(broker.host, broker.port, topic_prefix, [("H0003", "CB-H0003", "ok")])

        async def settled() -> bool:
            return ingest.stats.messages >= len(bad) + 1

        await eventually(settled, what="all messages handled")

    engine = create_engine(seeded_database_url)
    async with engine.connect() as connection:
        letters = (
            await connection.execute(
                select(DeadLetter.reason, DeadLetter.payload_size, DeadLetter.payload).order_by(
                    DeadLetter.id
                )
            )
        ).all()
    await engine.dispose()
    assert [row.reason for row in letters] == [reason.value for _, _, reason in bad]
    assert letters[1].payload_size == 9002 and len(letters[1].payload) == 8192
    assert letters[2].payload == b"\x00 definitely not json"
    assert await stored_event_keys(seeded_database_url) == [("CB-H0003", "ok")]


@pytest.mark.sqlite_only("the outage is made with SQLite's exclusive lock")
async def test_a_database_outage_holds_messages_unacknowledged_until_it_ends(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that while the database refuses writes nothing is acknowledged or lost, and
    everything is stored once the database is back."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    # A plain sqlite3 connection holding an exclusive lock makes every write fail.
    blocker = sqlite3.connect(make_url(seeded_database_url).database or "", isolation_level=None)
    async with running_ingest(config, seeded_database_url) as ingest:
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            events = [(f"H{n:04d}", f"CB-H{n:04d}", f"outage-{n}") for n in range(1, 21)]
            await publish_events(broker.host, broker.port, topic_prefix, events)

            async def retrying() -> bool:
                return ingest.stats.store_retries >= 1

            await eventually(retrying, within_s=30, what="a failed commit to be retried")
            assert ingest.stats.events_stored == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        async def stored() -> bool:
            return await reported_count(seeded_database_url) >= 20

        await eventually(stored, within_s=30, what="events stored after the outage")
    assert len(await stored_event_keys(seeded_database_url)) == 20


async def test_events_sent_while_the_server_is_down_arrive_when_it_returns(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that the persistent session keeps events published while ingest is away."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    async with running_ingest(config, seeded_database_url):
        pass  # creates the session on the broker
    events = [(f"H{n:04d}", f"CB-H{n:04d}", f"away-{n}") for n in range(1, 51)]
    await publish_events(broker.host, broker.port, topic_prefix, events)
    async with running_ingest(config, seeded_database_url):

        async def caught_up() -> bool:
            return await reported_count(seeded_database_url) >= 50

        await eventually(caught_up, what="queued events delivered")
    assert len(await stored_event_keys(seeded_database_url)) == 50


async def test_last_will_and_silence_take_devices_offline(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a device whose connection dies is logged offline by its last will, and one
    whose heartbeats stop is logged offline after the configured missed beats."""
    config = ingest_config(
        host=broker.host,
        port=broker.port,
        prefix=topic_prefix,
        heartbeat_interval_s=0.4,
        offline_after_missed=2,
    )
    will_topic = topic_for(topic_prefix, "H0005", "BU-H0005", Channel.STATUS)
    beat_topic = topic_for(topic_prefix, "H0006", "BU-H0006", Channel.HEARTBEAT)
    async with running_ingest(config, seeded_database_url) as ingest:
        # The base unit is a separate process holding a connection with a last will,
        # killed without a DISCONNECT the way a unit losing power would be.
        base_unit = await asyncio.create_subprocess_exec(
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-i",
            "BU-H0005",
            "-t",
            f"{topic_prefix}/v1/H0005/BU-H0005/command",
            "-k",
            "5",
            "--will-topic",
            will_topic,
            "--will-payload",
            status_payload(False).decode(),
            "--will-qos",
            "1",
            "--will-retain",
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiomqtt.Client(broker.host, broker.port) as other:
                await asyncio.sleep(0.3)  # let the base unit connect first
                await other.publish(will_topic, status_payload(True, _now_ms()), qos=1, retain=True)
                await other.publish(beat_topic, heartbeat_payload(_now_ms(), battery=42))

            async def both_online() -> bool:
                five = ingest.registry.get("BU-H0005")
                six = ingest.registry.get("BU-H0006")
                return bool(five and five.online and six and six.online)

            await eventually(both_online, what="devices online")
        finally:
            base_unit.kill()
            await base_unit.wait()

        async def both_offline() -> bool:
            five = ingest.registry.get("BU-H0005")
            six = ingest.registry.get("BU-H0006")
            return bool(five and not five.online and six and not six.online)

        await eventually(both_offline, within_s=20, what="devices offline")

    engine = create_engine(seeded_database_url)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Device.serial, DeviceEvent.kind, DeviceEvent.data)
                .join(Device, Device.id == DeviceEvent.device_id)
                .where(Device.serial.in_(["BU-H0005", "BU-H0006"]))
                .order_by(DeviceEvent.id)
            )
        ).all()
        battery = (
            await connection.execute(select(Device.battery_pct).where(Device.serial == "BU-H0006"))
        ).scalar_one()
    await engine.dispose()
    by_device = {
        serial: [(kind, data["reason"]) for s, kind, data in rows if s == serial]
        for serial in ("BU-H0005", "BU-H0006")
    }
    assert by_device["BU-H0005"] == [("device_online", "status"), ("device_offline", "last_will")]
    assert by_device["BU-H0006"] == [
        ("device_online", "heartbeat"),
        ("device_offline", "heartbeats_missed"),
    ]
    assert battery == 42


async def test_ingest_reads_its_devices_again_when_the_registry_changed(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that ingest alone on its subscription keeps the devices it read (and what it
    knows of their liveness) until the district's registry changes, then reads them
    again: a device moved to another household is known there; ingest instances sharing
    the subscription read them again every ``ingest.registry_refresh_s``, each to learn
    what the others heard."""
    timing = {"heartbeat_interval_s": 0.4, "registry_refresh_s": 0.2}  # looks every 0.2 s
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix, **timing)
    engine = create_engine(seeded_database_url)
    try:
        async with running_ingest(config, seeded_database_url) as ingest:
            read = ingest.registry
            await asyncio.sleep(1.5)
            assert ingest.registry is read, "read again with nothing changed"
            async with engine.begin() as connection:
                elsewhere = await connection.scalar(
                    select(Household.id).where(Household.code == "H0002")
                )
                await connection.execute(
                    update(Device).where(Device.serial == "CB-H0001").values(household_id=elsewhere)
                )

            async def moved() -> bool:
                device = ingest.registry.get("CB-H0001")
                return device is not None and device.household_code == "H0002"

            await eventually(moved, within_s=10, what="the moved device read again")

        sharing = Config.model_validate(
            config.model_dump() | {"broker": config.broker.model_dump() | {"shared_group": "g"}}
        )
        async with running_ingest(sharing, seeded_database_url) as ingest:
            read = ingest.registry

            async def read_again() -> bool:
                return ingest.registry is not read

            await eventually(read_again, within_s=10, what="the devices read again")
    finally:
        await engine.dispose()


@pytest.mark.sqlite_only("SQLite's journal mode")
async def test_sqlite_is_in_wal_mode(seeded_database_url: str) -> None:
    """Test that the SQLite store runs in WAL mode so the board can read while ingest writes."""
    engine = create_engine(seeded_database_url)
    async with engine.connect() as connection:
        mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
    await engine.dispose()
    assert mode == "wal"


@pytest.mark.slow
@pytest.mark.sqlite_only("volume test on the SQLite default")
async def test_a_large_backlog_after_an_outage_drains_without_reconnecting(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a resumed session holding a backlog bigger than ingest can read within
    the client's 10 s timeout is consumed while the SUBACK is still behind it, instead of
    timing out and reconnecting forever."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    async with running_ingest(config, seeded_database_url):
        pass  # the session exists; now the server is "down"
    # About 35 s of ingest's work on this machine: several times the client's 10 s.
    count = 80_000
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PUBLISHER),
        "--port",
        str(broker.port),
        "--prefix",
        topic_prefix,
        "--count",
        str(count),
        "--run",
        "backlog",
    )
    assert await publisher.wait() == 0
    async with running_ingest(config, seeded_database_url, connect_within_s=120) as ingest:

        async def drained() -> bool:
            return await reported_count(seeded_database_url) >= count

        await eventually(drained, within_s=120, what="the backlog stored")
        assert ingest.stats.reconnects == 0
    assert len(await stored_event_keys(seeded_database_url)) == count
