"""One simulated device: its topics, battery, event counter and outbox.

Like the firmware of a real base unit or call button, a device keeps every event in
its outbox until the broker has acknowledged it (PUBACK), so a dropped connection
means the event is published again, with the same id, once the device is back.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from dataclasses import dataclass

from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import Channel, event_payload, heartbeat_payload, topic_for
from device_sim.district import DeviceSpec

_BASE36 = string.digits + string.ascii_lowercase
# Event ids are at most 64 characters: serial, boot id and counter must fit.
_MAX_SERIAL_IN_ID = 32


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
        if number == 0:
            return digits


def new_boot_id(rng: random.Random | None = None) -> str:
    """An id for one run of the simulator: milliseconds since the epoch plus randomness.

    Event ids embed it, so a restarted simulator never reuses an earlier run's ids.
    """
    chooser = rng or random.SystemRandom()
    suffix = "".join(chooser.choice(_BASE36) for _ in range(3))
    return _base36(time.time_ns() // 1_000_000) + suffix


def event_id(serial: str, boot_id: str, counter: int) -> str:
    """The device-side id of a device's ``counter``-th event in run ``boot_id``."""
    if len(serial) > _MAX_SERIAL_IN_ID:
        serial = hashlib.sha256(serial.encode()).hexdigest()[:16]
    return f"{serial}-{boot_id}-{counter}"


@dataclass(eq=False)
class OutboxEvent:
    """An event a device generated; it stays in the outbox until acknowledged."""

    sequence: int  # district-wide order of generation
    serial: str
    household: str
    event_id: str
    kind: EventKind
    ts_ms: int
    topic: str
    payload: bytes
    # Forced redelivery: publish once more with the same id after the first PUBACK.
    duplicate: bool
    # One of a storm's presses (SimulationSettings.storm_presses).
    storm: bool = False
    attempts: int = 0
    acknowledged: bool = False
    duplicate_sent: bool = False

    @property
    def settled(self) -> bool:
        """Nothing left to publish: acknowledged, and its forced duplicate sent if asked."""
        return self.acknowledged and (self.duplicate_sent or not self.duplicate)


class SimulatedDevice:
    """A base unit or call button as the broker sees it.

    Its outbox holds each event until it is settled: acknowledged by the broker and,
    for a forced duplicate, published the second time as well.
    """

    def __init__(
        self, spec: DeviceSpec, *, prefix: str, boot_id: str, rng: random.Random, phase: float
    ) -> None:
        self.spec = spec
        self.boot_id = boot_id
        self.event_topic = topic_for(prefix, spec.household, spec.serial, Channel.EVENT)
        self.heartbeat_topic = topic_for(prefix, spec.household, spec.serial, Channel.HEARTBEAT)
        self.status_topic = topic_for(prefix, spec.household, spec.serial, Channel.STATUS)
        self.command_topic = topic_for(prefix, spec.household, spec.serial, Channel.COMMAND)
        # Offset of this device's heartbeats within the interval, so they spread out.
        self.heartbeat_phase = phase
        self.outbox: dict[str, OutboxEvent] = {}
        self._rng = rng
        self._counter = 0
        self.battery = rng.randint(55, 100)

    @property
    def serial(self) -> str:
        return self.spec.serial

    def record_event(
        self, kind: EventKind, *, ts_ms: int, sequence: int, duplicate: bool, storm: bool = False
    ) -> OutboxEvent:
        """Create the next event and keep it in the outbox until it is acknowledged."""
        self._counter += 1
        if kind is EventKind.LOW_BATTERY:
            self.battery = min(self.battery, self._rng.randint(5, 15))
        identifier = event_id(self.serial, self.boot_id, self._counter)
        event = OutboxEvent(
            sequence=sequence,
            serial=self.serial,
            household=self.spec.household,
            event_id=identifier,
            kind=kind,
            ts_ms=ts_ms,
            topic=self.event_topic,
            payload=event_payload(identifier, kind, ts_ms, battery=self.battery),
            duplicate=duplicate,
            storm=storm,
        )
        self.outbox[identifier] = event
        return event

    def heartbeat(self, ts_ms: int) -> bytes:
        """The next heartbeat; batteries drain slowly and radio strength wanders."""
        if self._rng.random() < 0.01 and self.battery > 1:
            self.battery -= 1
        return heartbeat_payload(ts_ms, battery=self.battery, rssi=self._rng.randint(-95, -45))
