"""device_sim's storm and loss check, small: what bench/storm.py runs at 100,000 devices."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.brokers import BrokerAddress
from callcenter.clock import SystemClock
from callcenter.store import models as m
from device_sim import (
    Simulation,
    SimulationSettings,
    SimulatorConfigError,
    check_losses,
    district_devices,
    parse_storm,
    read_ground_truth,
)
from tests.desk_support import desk_config, rows, running_desk
from tests.fixtures.database import DatabaseFactory
from tests.ingest_support import eventually


def _settings(broker: EmbeddedBroker, prefix: str, tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "brokers": (BrokerAddress(broker.host, broker.port),),
        "prefix": prefix,
        "press_rate": 0.0,
        "heartbeat_interval_s": 0.5,
        "ground_truth": tmp_path / "truth.jsonl",
        "report_interval_s": 0.2,
        "seed": 11,
    }
    values.update(overrides)
    return SimulationSettings(**values)


async def _until_storm_acknowledged(simulation: Simulation, presses: int) -> None:
    async def done() -> bool:
        counters = simulation.counters()
        return counters.storm_presses == presses and counters.events_pending == 0

    await eventually(done, within_s=15, what="every storm press acknowledged")


async def test_a_storm_presses_distinct_households_evenly_and_shows_progress(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that a storm of 40 presses over 1 s on 4 shared connections comes from 40
    different households' call buttons, spread over the second, each delivered once (the
    loss check against a subscriber is clean), with progress lines counting it."""
    caplog.set_level(logging.INFO, logger="device_sim")
    settings = _settings(
        broker, topic_prefix, tmp_path, connections=4, storm_presses=40, storm_seconds=1.0
    )
    simulation = Simulation(settings, district_devices(60))
    arrived: Counter[tuple[str, str]] = Counter()
    subscribed = asyncio.Event()

    async def subscriber() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(f"{topic_prefix}/v1/+/+/event", qos=1)
            subscribed.set()
            async for message in client.messages:
                body = json.loads(message.payload)  # type: ignore[arg-type]
                arrived[(str(message.topic).split("/")[3], body["id"])] += 1

    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(subscriber())
        await subscribed.wait()
        running = tg.create_task(simulation.run())
        await _until_storm_acknowledged(simulation, 40)
        await asyncio.sleep(0.5)  # a progress line after the storm

        async def delivered() -> bool:
            return sum(arrived.values()) >= 40

        await eventually(delivered, what="40 presses at the subscriber")
        simulation.stop()
        summary = await running
        listening.cancel()

    truth = read_ground_truth(settings.ground_truth)
    storm = truth.storm_events
    assert len(storm) == 40 == summary.counters.storm_presses
    assert len({event.household for event in storm}) == 40
    assert all(e.serial.startswith("CB-") and e.kind == "emergency_press" for e in storm)
    spread_ms = storm[-1].ts_ms - storm[0].ts_ms
    # 39 gaps of 25 ms: never sooner, later only as far as a busy machine delays the loop.
    assert 975 <= spread_ms <= 5000, spread_ms
    check = check_losses(truth, arrived)
    assert check.clean and check.acknowledged == 40 and check.lost == ()
    assert summary.last_will == "per_connection" and summary.counters.connections == 4
    progress = [r.getMessage() for r in caplog.records if "storm 40/40" in r.getMessage()]
    assert progress, [r.getMessage() for r in caplog.records]
    assert "online 120/120 devices" in progress[-1] and "heartbeats" in progress[-1]


def test_the_loss_check_finds_lost_doubled_and_unknown_events(tmp_path: Path) -> None:
    """Test that the loss check counts an acknowledged event missing from the store as
    lost, one stored twice as doubled, one the log never generated as unknown, and lets
    a pending (unacknowledged) event be stored or not."""
    lines = [
        {"record": "run", "boot": "b", "started_at": "x", "prefix": "p", "devices": 2},
        *(
            {
                "record": "event",
                "boot": "b",
                "serial": "CB-H0001",
                "household": "H0001",
                "id": f"CB-H0001-b-{n}",
                "kind": "emergency_press",
                "ts": n,
                "duplicate": False,
                "storm": True,
            }
            for n in (1, 2, 3, 4, 5)
        ),
        *(
            {"record": "ack", "serial": "CB-H0001", "id": f"CB-H0001-b-{n}", "acked_ts": n}
            for n in (1, 2, 3, 4)
        ),
    ]
    path = tmp_path / "truth.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    truth = read_ground_truth(path)
    assert [e.storm for e in truth.events.values()] == [True] * 5
    stored = {
        ("CB-H0001", "CB-H0001-b-1"): 1,
        ("CB-H0001", "CB-H0001-b-2"): 2,
        # b-3 acknowledged but missing: lost
        ("CB-H0001", "CB-H0001-b-4"): 1,
        ("CB-H0001", "CB-H0001-b-5"): 1,  # pending, yet stored: fine
        ("CB-H0009", "CB-H0009-x-1"): 1,
    }
    check = check_losses(truth, stored)
    assert [e.event_id for e in check.lost] == ["CB-H0001-b-3"]
    assert [e.event_id for e in check.doubled] == ["CB-H0001-b-2"]
    assert check.unknown == (("CB-H0009", "CB-H0009-x-1"),)
    assert check.pending_stored == 1 and not check.clean
    assert check.as_dict()["events_lost"] == 1


@pytest.mark.parametrize(
    ("text", "expected"), [("10000:60", (10000, 60.0)), ("5:0.5", (5, 0.5)), ("1:1", (1, 1.0))]
)
def test_storm_parses(text: str, expected: tuple[int, float]) -> None:
    """Test that --storm COUNT:SECONDS parses into presses and seconds."""
    assert parse_storm(text) == expected


@pytest.mark.parametrize("text", ["", "100", "0:60", "10:0", "x:1", "10:-1", "10:nan"])
def test_a_storm_that_cannot_work_is_refused(text: str) -> None:
    """Test that a malformed or empty storm is refused with the expected form."""
    with pytest.raises(SimulatorConfigError, match="COUNT:SECONDS"):
        parse_storm(text)


def test_a_storm_needs_that_many_households() -> None:
    """Test that a storm larger than the households with a call button is refused, and
    that an event limit is accepted with a storm and no Poisson presses."""
    with pytest.raises(SimulatorConfigError, match="needs as many households"):
        Simulation(SimulationSettings(press_rate=0, storm_presses=11), district_devices(10))
    settings = SimulationSettings(press_rate=0, storm_presses=10, max_events=10)
    assert settings.problems() == []
    assert "storm" in " ".join(SimulationSettings(press_rate=0, max_events=5).problems())


async def test_every_storm_press_is_stored_once_and_opens_a_call(
    broker: EmbeddedBroker,
    topic_prefix: str,
    tmp_path: Path,
    sqlite_database_factory: DatabaseFactory,
) -> None:
    """Test that a storm of 20 presses in 1 s against the real server is stored exactly
    once per press (the loss check over device_events is clean) and that each press
    opened a call for its household."""
    url = await sqlite_database_factory("seeded")
    config = desk_config(host=broker.host, port=broker.port, prefix=topic_prefix, database_url=url)
    settings = _settings(
        broker, topic_prefix, tmp_path, storm_presses=20, storm_seconds=1.0, max_events=20
    )
    async with running_desk(config, SystemClock()) as server:
        summary = await Simulation(settings, district_devices(30)).run()
        truth = read_ground_truth(settings.ground_truth)

        async def stored() -> list[Any]:
            return await rows(
                server,
                select(m.Device.serial, m.DeviceEvent.event_id, m.Call.id)
                .join(m.Device, m.Device.id == m.DeviceEvent.device_id)
                .outerjoin(m.Call, m.Call.event_id == m.DeviceEvent.id)
                .where(m.DeviceEvent.event_id.like(f"%-{summary.boot_id}-%")),
            )

        async def all_called() -> bool:
            found = await stored()
            return len(found) >= 20 and all(call_id is not None for *_, call_id in found)

        await eventually(all_called, what="a call for every storm press")
        found = await stored()
    assert summary.stopped_by == "events" and summary.counters.storm_presses == 20
    check = check_losses(truth, Counter((serial, event_id) for serial, event_id, _ in found))
    assert check.clean and check.acknowledged == 20
    assert len({call_id for *_, call_id in found}) == 20
