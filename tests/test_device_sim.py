"""device_sim against a real mosquitto: what a subscriber sees is what the ground truth says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from callcenter.broker import EmbeddedBroker
from callcenter.brokers import BrokerAddress
from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import (
    Channel,
    DeviceEventMessage,
    DeviceMessage,
    HeartbeatMessage,
    PayloadError,
    StatusMessage,
    parse_message,
    subscription,
    topic_for,
)
from device_sim import (
    DeviceSpec,
    Simulation,
    SimulationSettings,
    SimulationSummary,
    SimulatorConfigError,
    district_devices,
    parse_kind_weights,
    read_ground_truth,
)
from device_sim.device import event_id, new_boot_id
from tests.fixtures.database import DatabaseFactory

EventKey = tuple[str, str]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: datetime


class Recorder:
    """Subscribes to every v1 topic under a prefix and keeps what arrives, reconnecting."""

    def __init__(self, broker: EmbeddedBroker, prefix: str, *, persistent: bool = False) -> None:
        self.broker = broker
        self.prefix = prefix
        self.persistent = persistent
        self.received: list[Received] = []
        # Parsed as they arrive, with the server's own parser.
        self.messages: list[DeviceMessage] = []
        self.rejected: list[PayloadError] = []
        self.subscribed = asyncio.Event()
        self._arrived = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=f"recorder-{self.prefix}",
                    clean_session=not self.persistent,
                ) as client:
                    await client.subscribe(subscription(self.prefix), qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        at = datetime.now(UTC)
                        self.received.append(
                            Received(str(message.topic), message.payload, message.retain, at)
                        )
                        try:
                            self.messages.append(
                                parse_message(
                                    self.prefix, str(message.topic), message.payload, received_at=at
                                )
                            )
                        except PayloadError as exc:
                            self.rejected.append(exc)
                        self._arrived.set()
                        self._arrived = asyncio.Event()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def events(self) -> list[DeviceEventMessage]:
        return [m for m in self.messages if isinstance(m, DeviceEventMessage)]

    def event_copies(self) -> Counter[EventKey]:
        """How many times each (serial, event id) arrived."""
        return Counter((m.topic.serial, m.event_id) for m in self.events())

    def statuses(self, serial: str) -> list[StatusMessage]:
        return [
            m for m in self.messages if isinstance(m, StatusMessage) and m.topic.serial == serial
        ]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await self._arrived.wait()


def _settings(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, **overrides: Any
) -> SimulationSettings:
    values: dict[str, Any] = {
        "brokers": (BrokerAddress(broker.host, broker.port),),
        "prefix": prefix,
        "press_rate": 20.0,
        "heartbeat_interval_s": 0.5,
        "drain_timeout_s": 10.0,
        "ground_truth": tmp_path / "ground-truth.jsonl",
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "seed": 7,
    }
    values.update(overrides)
    return SimulationSettings(**values)


async def _run_recorded(
    simulation: Simulation, recorder: Recorder, delivered: Callable[[], bool]
) -> SimulationSummary:
    """Run the simulation to its end while the recorder listens until ``delivered()``."""
    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(recorder.run(), name="test.recorder")
        await recorder.subscribed.wait()
        summary = await simulation.run()
        await recorder.wait_until(delivered)
        listening.cancel()
    return summary


async def test_devices_publish_status_heartbeats_and_events(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that 20 households' devices publish online status, heartbeats and events that
    the protocol parser accepts, and say goodbye with an offline status."""
    devices = district_devices(20)
    simulation = Simulation(_settings(broker, topic_prefix, tmp_path, max_events=30), devices)
    recorder = Recorder(broker, topic_prefix)

    def delivered() -> bool:
        return len(recorder.event_copies()) == 30 and all(
            recorder.statuses(d.serial) and not recorder.statuses(d.serial)[-1].online
            for d in devices
        )

    await _run_recorded(simulation, recorder, delivered)

    assert recorder.rejected == []  # nothing the server would dead-letter
    assert len(recorder.messages) == len(recorder.received)
    messages = recorder.messages
    for device in devices:
        statuses = recorder.statuses(device.serial)
        assert statuses[0].online is True and statuses[0].device_time is not None
        assert statuses[-1].online is False
        beats = [
            m
            for m in messages
            if isinstance(m, HeartbeatMessage) and m.topic.serial == device.serial
        ]
        assert beats, f"{device.serial} sent no heartbeat"
        assert all(beat.battery is not None for beat in beats)
    events = recorder.events()
    assert len(events) == 30 == len(recorder.event_copies())
    for event in events:
        assert event.topic.household == event.topic.serial.removeprefix("BU-").removeprefix("CB-")
        if event.kind in (EventKind.EMERGENCY_PRESS, EventKind.FALL_DETECTED):
            assert event.topic.serial.startswith("CB-")
        if event.kind is EventKind.SERVICE_REQUEST:
            assert event.topic.serial.startswith("BU-")
    counters = simulation.counters()
    assert counters.events_generated == counters.events_acknowledged == 30
    assert counters.events_pending == 0
    assert counters.devices_online == 0


async def test_ground_truth_matches_what_the_broker_delivered(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that the ground-truth log lists exactly the events a subscriber received, each
    acknowledged, with the kind and device time that were published."""
    settings = _settings(broker, topic_prefix, tmp_path, max_events=40, press_rate=40.0)
    simulation = Simulation(settings, district_devices(20))
    recorder = Recorder(broker, topic_prefix)

    await _run_recorded(simulation, recorder, lambda: len(recorder.event_copies()) >= 40)

    assert settings.ground_truth is not None
    truth = read_ground_truth(settings.ground_truth)
    assert truth.sent == set(recorder.event_copies())
    assert (truth.acknowledged, truth.pending, truth.runs) == (40, 0, 1)
    for message in recorder.events():
        logged = truth.events[(message.topic.serial, message.event_id)]
        assert logged.kind == message.kind.value
        assert logged.household == message.topic.household
        assert logged.ts_ms == int(message.device_time.timestamp() * 1000)
        assert logged.boot_id == simulation.boot_id
        assert logged.acked_ts_ms is not None and logged.acked_ts_ms >= logged.ts_ms


async def test_pending_events_are_republished_after_a_broker_restart(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that when the broker stops and comes back on the same port, the devices
    reconnect and every event generated meanwhile reaches the subscriber."""
    settings = _settings(broker, topic_prefix, tmp_path, press_rate=40.0, heartbeat_interval_s=1)
    simulation = Simulation(settings, district_devices(20))
    recorder = Recorder(broker, topic_prefix, persistent=True)

    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(recorder.run(), name="test.recorder")
        await recorder.subscribed.wait()
        running = tg.create_task(simulation.run(), name="test.simulation")
        await simulation.wait_online(10)
        await asyncio.sleep(1.0)
        await broker.stop()
        await asyncio.sleep(1.0)  # presses go on and wait in the devices' outboxes
        during_outage = simulation.counters()
        await broker.start()
        await simulation.wait_online(10)
        await asyncio.sleep(0.5)
        simulation.stop()
        summary = await running
        assert settings.ground_truth is not None
        truth = read_ground_truth(settings.ground_truth)
        await recorder.wait_until(lambda: set(recorder.event_copies()) >= truth.sent)
        listening.cancel()

    assert during_outage.devices_online == 0
    assert during_outage.events_pending > 0, "no event was generated while the broker was down"
    assert summary.counters.events_pending == 0
    assert summary.counters.reconnects >= 40
    assert summary.counters.connection_losses >= 40
    assert truth.pending == 0
    assert set(recorder.event_copies()) == truth.sent
    assert len(truth.sent) == summary.counters.events_generated


class Partition:
    """A TCP relay in front of the broker that can swallow what devices send, like a
    network that went dead without either side noticing yet."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.swallowing = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Partition:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.broker.host, self.broker.port
        )

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, from_device: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if from_device and self.swallowing:
                        continue
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(
            pump(reader, upstream_writer, from_device=True),
            pump(upstream_reader, writer, from_device=False),
        )


async def test_an_event_without_puback_is_published_again_with_the_same_id(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that an event whose PUBACK never came (the network died under it) stays in
    the outbox and is published again, with the same id, after the device reconnects."""
    async with Partition(broker) as partition:
        settings = _settings(
            broker,
            topic_prefix,
            tmp_path,
            brokers=(BrokerAddress(broker.host, partition.port),),
            press_rate=0.0,
            heartbeat_interval_s=0,
        )
        simulation = Simulation(settings, district_devices(1))
        recorder = Recorder(broker, topic_prefix)

        async with asyncio.TaskGroup() as tg:
            listening = tg.create_task(recorder.run(), name="test.recorder")
            await recorder.subscribed.wait()
            running = tg.create_task(simulation.run(), name="test.simulation")
            await simulation.wait_online(10)
            partition.swallowing = True
            identifier = simulation.press("CB-H0001")
            await asyncio.sleep(0.3)
            unanswered = simulation.counters()
            partition.swallowing = False
            simulation.cut_connection("CB-H0001", offline_for_s=0)
            await simulation.wait_acknowledged(10)
            simulation.stop()
            summary = await running
            await recorder.wait_until(lambda: len(recorder.event_copies()) == 1)
            listening.cancel()

    assert (unanswered.events_generated, unanswered.events_pending) == (1, 1)
    assert recorder.event_copies() == Counter({("CB-H0001", identifier): 1})
    assert summary.counters.republished == 1
    assert summary.counters.events_acknowledged == 1
    assert summary.counters.reconnects == 1


async def test_duplicates_are_published_when_asked(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that with --duplicate-rate 1 every event is published twice with the same id."""
    settings = _settings(broker, topic_prefix, tmp_path, max_events=20, duplicate_rate=1.0)
    simulation = Simulation(settings, district_devices(5))
    recorder = Recorder(broker, topic_prefix)

    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(recorder.run(), name="test.recorder")
        await recorder.subscribed.wait()
        summary = await simulation.run()
        await recorder.wait_until(lambda: sum(recorder.event_copies().values()) >= 40)
        listening.cancel()

    copies = recorder.event_copies()
    assert len(copies) == 20
    assert set(copies.values()) == {2}
    assert summary.counters.duplicates_sent == 20
    assert settings.ground_truth is not None
    truth = read_ground_truth(settings.ground_truth)
    assert truth.duplicates_sent == 20
    assert all(event.duplicate_requested for event in truth.events.values())


async def test_abrupt_disconnect_leaves_the_last_will_retained(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that a device whose connection drops without DISCONNECT leaves its last will,
    offline, retained on its status topic, and that stopping does not wait for it."""
    settings = _settings(broker, topic_prefix, tmp_path, press_rate=0.0, heartbeat_interval_s=0)
    simulation = Simulation(settings, district_devices(2))
    recorder = Recorder(broker, topic_prefix)
    status_topic = topic_for(topic_prefix, "H0001", "CB-H0001", Channel.STATUS)

    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(recorder.run(), name="test.recorder")
        await recorder.subscribed.wait()
        running = tg.create_task(simulation.run(), name="test.simulation")
        await simulation.wait_online(10)
        simulation.cut_connection("CB-H0001", offline_for_s=60)
        await recorder.wait_until(lambda: any(not s.online for s in recorder.statuses("CB-H0001")))
        async with aiomqtt.Client(broker.host, broker.port) as newcomer:
            await newcomer.subscribe(status_topic, qos=1)
            async with asyncio.timeout(5):
                retained = await anext(aiter(newcomer.messages))
        online_while_cut = simulation.counters().devices_online
        simulation.stop()
        async with asyncio.timeout(5):
            await running
        listening.cancel()

    assert retained.retain is True
    assert isinstance(retained.payload, bytes)
    will = parse_message(
        topic_prefix, str(retained.topic), retained.payload, received_at=datetime.now(UTC)
    )
    assert isinstance(will, StatusMessage)
    assert will.online is False and will.device_time is None  # the will, not a goodbye
    assert online_while_cut == 3


async def test_devices_can_share_connections(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that with --connections 3 all 40 devices still report status and events, and
    the summary says the last wills are per connection."""
    devices = district_devices(20)
    settings = _settings(broker, topic_prefix, tmp_path, max_events=30, connections=3)
    simulation = Simulation(settings, devices)
    recorder = Recorder(broker, topic_prefix)

    def delivered() -> bool:
        return len(recorder.event_copies()) == 30 and all(
            len(recorder.statuses(d.serial)) == 2 for d in devices
        )

    summary = await _run_recorded(simulation, recorder, delivered)

    assert summary.last_will == "per_connection"
    assert summary.counters.connections == 3
    assert summary.counters.events_acknowledged == 30
    for device in devices:
        statuses = recorder.statuses(device.serial)
        assert [s.online for s in statuses] == [True, False], device.serial


async def test_a_restarted_simulator_never_reuses_event_ids(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that two runs appending to one ground-truth log use disjoint event ids."""
    settings = _settings(broker, topic_prefix, tmp_path, max_events=10, heartbeat_interval_s=0)
    first = await Simulation(settings, district_devices(1)).run()
    second = await Simulation(settings, district_devices(1)).run()

    assert first.boot_id != second.boot_id
    assert settings.ground_truth is not None
    truth = read_ground_truth(settings.ground_truth)
    assert truth.runs == 2
    assert len(truth.sent) == 20 == truth.acknowledged
    assert {event.boot_id for event in truth.events.values()} == {first.boot_id, second.boot_id}


async def test_press_sends_one_named_event(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that press() makes one device report the given event kind at once."""
    settings = _settings(broker, topic_prefix, tmp_path, press_rate=0.0, heartbeat_interval_s=0)
    simulation = Simulation(settings, district_devices(2))
    recorder = Recorder(broker, topic_prefix)

    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(recorder.run(), name="test.recorder")
        await recorder.subscribed.wait()
        running = tg.create_task(simulation.run(), name="test.simulation")
        await simulation.wait_online(10)
        identifier = simulation.press("CB-H0002", EventKind.FALL_DETECTED)
        await simulation.wait_acknowledged(5)
        simulation.stop()
        await running
        await recorder.wait_until(lambda: len(recorder.event_copies()) == 1)
        listening.cancel()

    [event] = recorder.events()
    assert (event.topic.serial, event.event_id, event.kind) == (
        "CB-H0002",
        identifier,
        EventKind.FALL_DETECTED,
    )
    with pytest.raises(SimulatorConfigError, match="no simulated device"):
        simulation.press("CB-H9999")


async def _device_sim(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device_sim",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_cli_runs_until_the_event_limit_and_prints_a_summary(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Test that device-sim --events N stops after N acknowledged events, exits 0 and
    prints its summary as JSON on the last line."""
    log = tmp_path / "truth.jsonl"
    process = await _device_sim(
        "--households", "3", "--broker-port", str(broker.port), "--prefix", topic_prefix,
        "--press-rate", "20", "--events", "10", "--heartbeat-interval", "0",
        "--ground-truth", str(log),
    )  # fmt: skip
    async with asyncio.timeout(15):
        stdout, stderr = await process.communicate()

    assert process.returncode == 0, stderr.decode()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["stopped_by"] == "events"
    assert summary["events_generated"] == summary["events_acknowledged"] == 10
    assert summary["events_pending"] == 0
    assert summary["devices"] == 6 and summary["last_will"] == "per_device"
    assert read_ground_truth(log).acknowledged == 10


async def test_cli_stops_cleanly_on_sigterm(broker: EmbeddedBroker, topic_prefix: str) -> None:
    """Test that SIGTERM makes device-sim disconnect gracefully, exit 0 and print a summary."""
    process = await _device_sim(
        "--households", "2", "--broker-port", str(broker.port), "--prefix", topic_prefix,
        "--press-rate", "5",
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(10):
        async for line in process.stderr:
            if b"all 4 devices connected" in line:
                break
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        stdout, _ = await process.communicate()

    assert process.returncode == 0
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["stopped_by"] == "stop"
    assert summary["events_pending"] == 0


def test_cli_rejects_impossible_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """Test that device-sim explains a setting that cannot work and exits 2."""
    from device_sim.cli import main

    assert main(["--households", "1", "--duplicate-rate", "2", "--log-level", "ERROR"]) == 2
    assert "duplicate rate must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emergency_press=1", {EventKind.EMERGENCY_PRESS: 1.0}),
        (
            " cancel = 2.5 , low_battery=0.5,",
            {EventKind.CANCEL: 2.5, EventKind.LOW_BATTERY: 0.5},
        ),
    ],
)
def test_kind_weights_parse(text: str, expected: dict[EventKind, float]) -> None:
    """Test that kind weights parse, and kinds left out weigh nothing."""
    weights = parse_kind_weights(text)
    assert {kind: w for kind, w in weights.items() if w} == expected
    assert set(weights) == set(EventKind)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("panic=1", "unknown event kind 'panic'"),
        ("cancel", "not of the form kind=number"),
        ("cancel=x", "not a number"),
        ("cancel=-1", "must be >= 0"),
        ("cancel=0", "at least one event kind"),
    ],
)
def test_kind_weights_reject_nonsense(text: str, complaint: str) -> None:
    """Test that a bad kind weight says what is wrong with it."""
    with pytest.raises(SimulatorConfigError, match=complaint):
        parse_kind_weights(text)


def test_district_devices_match_the_demo_district() -> None:
    """Test that generated households and serials follow the demo district's naming."""
    devices = district_devices(900)
    assert len(devices) == 1800
    assert devices[:2] == [
        DeviceSpec("H0001", "BU-H0001", "base_unit"),
        DeviceSpec("H0001", "CB-H0001", "call_button"),
    ]
    assert devices[-1] == DeviceSpec("H0900", "CB-H0900", "call_button")


def test_a_device_list_with_repeated_serials_is_refused() -> None:
    """Test that two devices with one serial (one MQTT client id) are refused up front."""
    devices = [DeviceSpec("H1", "X-1", "call_button"), DeviceSpec("H2", "X-1", "call_button")]
    with pytest.raises(SimulatorConfigError, match="appear twice"):
        Simulation(SimulationSettings(), devices)


def test_event_ids_fit_the_protocol() -> None:
    """Test that event ids carry the boot id, differ across boots and stay within 64 chars."""
    first, second = new_boot_id(), new_boot_id()
    assert first != second
    assert event_id("CB-H0001", first, 1) == f"CB-H0001-{first}-1"
    assert len(event_id("S" * 64, first, 10**9)) <= 64


def test_ground_truth_reader_skips_a_truncated_last_line(tmp_path: Path) -> None:
    """Test that a log cut off mid-line by a killed simulator still reads, pending counted."""
    log = tmp_path / "truth.jsonl"
    lines = [
        {"record": "run", "boot": "b1", "started_at": "x", "prefix": "p", "devices": 2,
         "connections": 2},
        {"record": "event", "boot": "b1", "serial": "CB-H0001", "household": "H0001",
         "id": "CB-H0001-b1-1", "kind": "emergency_press", "ts": 1, "duplicate": False},
        {"record": "event", "boot": "b1", "serial": "BU-H0001", "household": "H0001",
         "id": "BU-H0001-b1-1", "kind": "cancel", "ts": 2, "duplicate": False},
        {"record": "ack", "serial": "CB-H0001", "id": "CB-H0001-b1-1", "acked_ts": 3},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"record": "ack", "ser')

    truth = read_ground_truth(log)
    assert truth.sent == {("CB-H0001", "CB-H0001-b1-1"), ("BU-H0001", "BU-H0001-b1-1")}
    assert (truth.acknowledged, truth.pending) == (1, 1)
    assert [e.event_id for e in truth.pending_events] == ["BU-H0001-b1-1"]


async def test_devices_load_from_the_seeded_database(
    sqlite_database_factory: DatabaseFactory,
) -> None:
    """Test that --database reads the same 1,800 devices the demo district seeds, and that
    a database without devices is refused with a message saying so."""
    from device_sim import load_devices_from_database

    devices = await load_devices_from_database(await sqlite_database_factory("seeded"))
    assert devices == district_devices(900)

    with pytest.raises(SimulatorConfigError, match="has no devices"):
        await load_devices_from_database(await sqlite_database_factory("migrated"))
