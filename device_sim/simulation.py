"""A simulated district: its devices, their connections, presses, and how a run ends.

``Simulation`` is the Python API the CLI, the tests and ``callcenter demo`` share:
construct it with settings and a device list, ``await run()`` inside any event loop,
call ``stop()`` (or set the ``stop`` event given to ``run``) to end it, and read
``counters()`` at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
from collections import deque
from collections.abc import Callable, Sequence

import aiomqtt

from callcenter.brokers import describe
from callcenter.clock import Clock, SystemClock
from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import status_payload
from device_sim.counters import SimulationCounters, SimulationSummary, Tally
from device_sim.device import OutboxEvent, SimulatedDevice, new_boot_id
from device_sim.district import BASE_UNIT, CALL_BUTTON, DeviceSpec, check_devices
from device_sim.groundtruth import GroundTruthLog
from device_sim.link import DeviceLink
from device_sim.settings import SimulationSettings, SimulatorConfigError

log = logging.getLogger("device_sim")

# Which kind of device sends which event; a kind not named here, or a district without
# that kind of device, uses any device.
_SENDERS: dict[EventKind, tuple[str, ...]] = {
    EventKind.EMERGENCY_PRESS: (CALL_BUTTON,),
    EventKind.FALL_DETECTED: (CALL_BUTTON,),
    EventKind.LOW_BATTERY: (CALL_BUTTON,),
    EventKind.SERVICE_REQUEST: (BASE_UNIT,),
    EventKind.CANCEL: (CALL_BUTTON, BASE_UNIT),
}

# File descriptors the process needs besides its connections (stdio, logs, executor).
_FILE_HEADROOM = 64


def ensure_open_file_limit(connections: int) -> None:
    """Raise the soft open-file limit if needed; SimulatorConfigError if it cannot be."""
    needed = connections + _FILE_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return
    limit = soft if hard == resource.RLIM_INFINITY else max(soft, hard)
    raise SimulatorConfigError(
        f"{connections} device connections need about {needed} open files, but this "
        f"process may open {limit}; let devices share connections with --connections N "
        f"(for example --connections {max(1, min(1000, limit // 2))})"
    )


class Simulation:
    """Simulated households' devices speaking protocol v1 to one broker."""

    def __init__(
        self,
        settings: SimulationSettings,
        devices: Sequence[DeviceSpec],
        *,
        clock: Clock | None = None,
    ) -> None:
        settings.check()
        check_devices(devices)
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._rng = random.Random(settings.seed)
        # Never seeded: a rerun with the same seed must still get fresh event ids.
        self.boot_id = new_boot_id()
        spread = settings.heartbeat_interval_s or 1.0
        self._devices = [
            SimulatedDevice(
                spec,
                prefix=settings.prefix,
                boot_id=self.boot_id,
                rng=self._rng,
                phase=self._rng.uniform(0, spread),
            )
            for spec in devices
        ]
        self._device_of = {device.serial: device for device in self._devices}
        self._tally = Tally()
        self._closing = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._all_connected_once = asyncio.Event()
        # Set and replaced whenever something a waiter may watch changes.
        self._changed = asyncio.Event()
        self._stopped_by: str | None = None
        self._drain = True
        self._sequence = 0
        self._pending = 0  # generated, not yet acknowledged
        self._unsettled = 0  # still in an outbox (unacknowledged or duplicate owed)
        self._ground_truth: GroundTruthLog | None = None
        self._started = False
        self._connect_gate = asyncio.Semaphore(settings.connect_concurrency)
        self._links = self._build_links()
        self._link_of = {device.serial: link for link in self._links for device in link.devices}
        self._recent_presses: deque[SimulatedDevice] = deque(maxlen=64)
        self._kinds = [kind for kind, weight in settings.kind_weights.items() if weight > 0]
        self._weights = [settings.kind_weights[kind] for kind in self._kinds]
        self._senders = {kind: self._senders_of(kind) for kind in EventKind}
        self._storm_buttons = self._storm_buttons_of()
        if settings.storm_presses > len(self._storm_buttons):
            raise SimulatorConfigError(
                f"a storm of {settings.storm_presses} presses needs as many households with "
                f"a call button; there are {len(self._storm_buttons)}"
            )

    @property
    def shares_connections(self) -> bool:
        """True when devices share connections (one last will per connection)."""
        return self.settings.connections is not None

    def _build_links(self) -> list[DeviceLink]:
        if self.settings.connections is None:
            groups = [
                (
                    device.serial,
                    [device],
                    aiomqtt.Will(device.status_topic, status_payload(False), qos=1, retain=True),
                )
                for device in self._devices
            ]
        else:
            count = min(self.settings.connections, len(self._devices))
            groups = []
            for index in range(count):
                client_id = f"sim-{self.boot_id}-{index}"
                # One will cannot speak for many devices: it only marks the connection,
                # outside the v1 topics so ingest never mistakes it for a device.
                will = aiomqtt.Will(
                    f"{self.settings.prefix}/sim/{client_id}/status", status_payload(False), qos=1
                )
                groups.append((client_id, self._devices[index::count], will))
        return [
            DeviceLink(
                client_id=client_id,
                devices=members,
                will=will,
                settings=self.settings,
                tally=self._tally,
                connect_gate=self._connect_gate,
                closing=self._closing,
                rng=self._rng,
                now_ms=self._now_ms,
                on_acknowledged=self._acknowledged,
                on_duplicate_sent=self._duplicate_sent,
                on_settled=self._settled,
                on_online_changed=self._online_changed,
            )
            for client_id, members, will in groups
        ]

    def _senders_of(self, kind: EventKind) -> list[SimulatedDevice]:
        senders = _SENDERS.get(kind, ())
        fitting = [device for device in self._devices if device.spec.kind in senders]
        return fitting or self._devices

    def _storm_buttons_of(self) -> dict[str, SimulatedDevice]:
        """One pressing device per household: its call button (first one), as a storm's
        presses come from different households."""
        buttons: dict[str, SimulatedDevice] = {}
        for device in self._senders[EventKind.EMERGENCY_PRESS]:
            buttons.setdefault(device.spec.household, device)
        return buttons

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def _online_changed(self) -> None:
        if not self._all_connected_once.is_set() and all(
            link.connected_once for link in self._links
        ):
            self._all_connected_once.set()
        self._notify()

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    # --- the API for tests and callers -------------------------------------------------

    def counters(self) -> SimulationCounters:
        """A snapshot of what the simulation has done so far."""
        tally = self._tally
        return SimulationCounters(
            devices=len(self._devices),
            connections=len(self._links),
            devices_online=sum(len(link.devices) for link in self._links if link.online),
            events_generated=tally.events_generated,
            events_acknowledged=tally.events_acknowledged,
            events_pending=self._pending,
            storm_presses=tally.storm_presses,
            duplicates_sent=tally.duplicates_sent,
            republished=tally.republished,
            reconnects=tally.reconnects,
            connection_losses=tally.connection_losses,
            connect_failures=tally.connect_failures,
            heartbeats_sent=tally.heartbeats_sent,
            statuses_sent=tally.statuses_sent,
            commands_received=tally.commands_received,
        )

    def stop(self, *, drain: bool = True) -> None:
        """End the run: stop pressing, wait for pending events (unless ``drain`` is
        False or the drain timeout passes), publish offline statuses and disconnect."""
        if not drain:
            self._drain = False
        if self._stopped_by is None:
            self._stopped_by = "stop"
        self._stop_requested.set()
        self._notify()

    def press(self, serial: str, kind: EventKind = EventKind.EMERGENCY_PRESS) -> str:
        """Make one device report an event now (besides the random presses); its id."""
        device = self._device_of.get(serial)
        if device is None:
            raise SimulatorConfigError(f"no simulated device has serial {serial!r}")
        return self._emit(device, kind).event_id

    def cut_connection(self, serial: str, *, offline_for_s: float) -> None:
        """Drop the connection of the device ``serial`` without DISCONNECT (power cut) and
        keep it away ``offline_for_s`` seconds; with shared connections, its whole link."""
        link = self._link_of.get(serial)
        if link is None:
            raise SimulatorConfigError(f"no simulated device has serial {serial!r}")
        link.cut(offline_for_s)

    async def wait_online(self, timeout_s: float) -> None:
        """Return once every device is connected with its online status published."""
        async with asyncio.timeout(timeout_s):
            await self._wait_until(lambda: all(link.online for link in self._links))

    async def wait_acknowledged(self, timeout_s: float) -> None:
        """Return once every generated event is acknowledged (and duplicated if asked)."""
        async with asyncio.timeout(timeout_s):
            await self._wait_until(lambda: self._unsettled == 0)

    async def run(self, stop: asyncio.Event | None = None) -> SimulationSummary:
        """Connect the devices and simulate until a limit, ``stop()`` or ``stop`` is set."""
        if self._started:
            raise RuntimeError("a Simulation runs once; make a new one")
        self._started = True
        ensure_open_file_limit(len(self._links))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.ExitStack() as files:
            if self.settings.ground_truth is not None:
                self._ground_truth = files.enter_context(GroundTruthLog(self.settings.ground_truth))
                self._ground_truth.run_started(
                    boot_id=self.boot_id,
                    prefix=self.settings.prefix,
                    devices=len(self._devices),
                    connections=len(self._links),
                )
            log.info(
                "connecting %d devices over %d connections to %s, at most %d at a time "
                "(boot id %s)",
                len(self._devices),
                len(self._links),
                describe(self.settings.brokers),
                self.settings.connect_concurrency,
                self.boot_id,
            )
            async with asyncio.TaskGroup() as tg:
                links = [
                    tg.create_task(link.run(), name=f"device_sim.link.{link.client_id}")
                    for link in self._links
                ]
                pressers = [
                    tg.create_task(self._generate_presses(), name="device_sim.presses"),
                    tg.create_task(self._storm(), name="device_sim.storm"),
                ]
                helpers = [
                    *pressers,
                    tg.create_task(self._report_progress(), name="device_sim.progress"),
                ]
                if stop is not None:
                    helpers.append(tg.create_task(self._obey(stop), name="device_sim.stop"))
                tg.create_task(
                    self._supervise(links, pressers, helpers), name="device_sim.supervisor"
                )
            summary = SimulationSummary(
                boot_id=self.boot_id,
                stopped_by=self._stopped_by or "stop",
                elapsed_s=loop.time() - started,
                last_will="per_connection" if self.shares_connections else "per_device",
                counters=self.counters(),
            )
            if self._ground_truth is not None:
                self._ground_truth.run_finished(summary.as_dict())
                self._ground_truth = None
        log.info("stopped (%s) after %.1f s", summary.stopped_by, summary.elapsed_s)
        return summary

    # --- inside the run -----------------------------------------------------------------

    async def _obey(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stop()

    async def _supervise(
        self,
        links: list[asyncio.Task[None]],
        pressers: list[asyncio.Task[None]],
        helpers: list[asyncio.Task[None]],
    ) -> None:
        try:
            async with asyncio.timeout(self.settings.duration_s):
                await self._stop_requested.wait()
        except TimeoutError:
            self._stopped_by = self._stopped_by or "duration"
        for presser in pressers:  # no more presses
            presser.cancel()
        if self._drain and self._unsettled and self.settings.drain_timeout_s > 0:
            log.info(
                "stopping (%s): waiting up to %.0f s for %d events still in outboxes "
                "(%d unacknowledged)",
                self._stopped_by,
                self.settings.drain_timeout_s,
                self._unsettled,
                self._pending,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.drain_timeout_s):
                    await self._wait_until(lambda: self._unsettled == 0 or not self._drain)
        self._closing.set()
        for helper in helpers:
            helper.cancel()
        # Saying goodbye costs about a quarter of a millisecond per device here (two
        # cores); a large shared-connection district gets twice that if it exceeds the
        # setting.
        close_timeout = max(self.settings.close_timeout_s, len(self._devices) / 2000)
        _, unfinished = await asyncio.wait(links, timeout=close_timeout)
        if unfinished:
            log.warning("%d connections did not close in time; dropping them", len(unfinished))
            for task in unfinished:
                task.cancel()

    async def _generate_presses(self) -> None:
        rate = self.settings.press_rate
        if rate <= 0:
            return
        # Presses start once the district is up, so a run's events are not all backlog.
        await self._all_connected_once.wait()
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._rng.expovariate(rate)
        while True:
            now = loop.time()
            # At high rates several events fall due per wake-up; emit them all.
            while next_at <= now:
                self._generate_one()
                if self._reached_event_limit():
                    return
                next_at += self._rng.expovariate(rate)
            await asyncio.sleep(next_at - now)

    def _reached_event_limit(self) -> bool:
        """After an event: if it was the last one allowed, end the run and say so."""
        if (
            self.settings.max_events is None
            or self._tally.events_generated < self.settings.max_events
        ):
            return False
        self._stopped_by = self._stopped_by or "events"
        self._stop_requested.set()
        return True

    async def _storm(self) -> None:
        """The storm: distinct households press, evenly spread over the storm's seconds."""
        count = self.settings.storm_presses
        if count <= 0:
            return
        await self._all_connected_once.wait()
        await self._wait_until(lambda: all(link.online for link in self._links))
        await asyncio.sleep(self.settings.storm_after_s)
        households = self._rng.sample(sorted(self._storm_buttons), count)
        spacing = self.settings.storm_seconds / count
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info(
            "storm: %d presses from %d households over %g s (%.0f/s)",
            count,
            count,
            self.settings.storm_seconds,
            count / self.settings.storm_seconds,
        )
        sent = 0
        while sent < count:
            # Every press whose moment has come: several per wake-up at high rates.
            due = min(count, int((loop.time() - started) / spacing) + 1)
            for household in households[sent:due]:
                self._emit(self._storm_buttons[household], EventKind.EMERGENCY_PRESS, storm=True)
                self._tally.storm_presses += 1
                sent += 1
                if self._reached_event_limit():
                    return
            await asyncio.sleep(max(0.0, started + sent * spacing - loop.time()))
        log.info("storm over: %d presses in %.1f s", sent, loop.time() - started)

    def _generate_one(self) -> None:
        kind = self._rng.choices(self._kinds, self._weights)[0]
        if kind is EventKind.CANCEL and self._recent_presses:
            # A false alarm: the same button cancels its press.
            device = self._recent_presses.pop()
        else:
            device = self._rng.choice(self._senders[kind])
        self._emit(device, kind)

    def _emit(
        self, device: SimulatedDevice, kind: EventKind, *, storm: bool = False
    ) -> OutboxEvent:
        self._sequence += 1
        duplicate = self._rng.random() < self.settings.duplicate_rate
        event = device.record_event(
            kind, ts_ms=self._now_ms(), sequence=self._sequence, duplicate=duplicate, storm=storm
        )
        if kind is EventKind.EMERGENCY_PRESS:
            self._recent_presses.append(device)
        self._tally.events_generated += 1
        self._pending += 1
        self._unsettled += 1
        if self._ground_truth is not None:
            self._ground_truth.event_generated(event, boot_id=self.boot_id)
        self._link_of[device.serial].submit(event)
        return event

    def _acknowledged(self, event: OutboxEvent) -> None:
        if event.acknowledged:
            return
        event.acknowledged = True
        self._pending -= 1
        self._tally.events_acknowledged += 1
        if self._ground_truth is not None:
            self._ground_truth.acknowledged(event, acked_ts_ms=self._now_ms())

    def _settled(self, event: OutboxEvent) -> None:
        if not event.settled:
            return
        if self._device_of[event.serial].outbox.pop(event.event_id, None) is None:
            return
        self._unsettled -= 1
        if self._unsettled == 0:
            self._notify()

    def _duplicate_sent(self, event: OutboxEvent) -> None:
        if event.duplicate_sent:
            return
        event.duplicate_sent = True
        self._tally.duplicates_sent += 1
        if self._ground_truth is not None:
            self._ground_truth.duplicate_sent(event, sent_ts_ms=self._now_ms())

    async def _report_progress(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        total = len(self._devices)
        while not self._all_connected_once.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._all_connected_once.wait()
            connected = sum(len(link.devices) for link in self._links if link.connected_once)
            if connected == 0 and self._tally.connect_failures:
                log.warning(
                    "no device connected yet: %d attempts failed; is %s up?",
                    self._tally.connect_failures,
                    describe(self.settings.brokers),
                )
            elif connected < total:
                log.info(
                    "connected %d/%d devices (%d/%d connections up)",
                    connected,
                    total,
                    sum(1 for link in self._links if link.connected),
                    len(self._links),
                )
        log.info("all %d devices connected in %.1f s", total, loop.time() - started)
        before, then = self.counters(), loop.time()
        while True:
            await asyncio.sleep(self.settings.report_interval_s)
            counters, now = self.counters(), loop.time()
            log.info(progress_line(before, counters, now - then, self.settings.storm_presses))
            before, then = counters, now


def progress_line(
    before: SimulationCounters, after: SimulationCounters, seconds: float, storm_presses: int
) -> str:
    """One progress line: who is online, what the last interval did, the totals."""
    seconds = max(seconds, 1e-9)
    beats = after.heartbeats_sent - before.heartbeats_sent
    generated = after.events_generated - before.events_generated
    acknowledged = after.events_acknowledged - before.events_acknowledged
    line = (
        f"online {after.devices_online}/{after.devices} devices; last {seconds:.0f} s: "
        f"{beats} heartbeats ({beats / seconds:.0f}/s), {generated} events generated "
        f"({generated / seconds:.0f}/s), {acknowledged} acknowledged; in all: "
        f"{after.events_generated} events, {after.events_acknowledged} acknowledged, "
        f"{after.events_pending} pending"
    )
    if storm_presses:
        line += f"; storm {after.storm_presses}/{storm_presses}"
    return f"{line}; {after.reconnects} reconnects"
