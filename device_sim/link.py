"""One MQTT connection and the devices that speak through it.

By default every device has its own link (client id = serial, its own last will), as
in the field. For simulations beyond the open-file limit, devices share links.

Each connection attempt uses a new aiomqtt client. paho re-sends its own queue of
unacknowledged messages when a client reconnects; a fresh client per attempt leaves
the devices' outboxes as the only thing that is re-published, once, with the same ids.

Publishes wait for their PUBACK without a timeout: each session listens on its command
topics from the start, and that listener is what notices a lost connection; it ends
the session's TaskGroup, which cancels whatever was still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import socket
from collections.abc import Callable, Iterator, Sequence

import aiomqtt
import paho.mqtt.client as mqtt

from callcenter.brokers import Rotation
from callcenter.ingest.protocol import status_payload
from device_sim.counters import Tally
from device_sim.device import OutboxEvent, SimulatedDevice
from device_sim.settings import SimulationSettings

log = logging.getLogger("device_sim.link")
# paho's own complaints (e.g. "connection reset by peer" when a broker goes away) go
# here; the simulation counts connection losses itself, so the CLI keeps this quiet.
mqtt_log = logging.getLogger("device_sim.mqtt")

# Topics per SUBSCRIBE packet when a shared link subscribes its devices' command topics.
_SUBSCRIBE_CHUNK = 500

# A link's heartbeats falling due within this many seconds go out together (a little
# early; devices are declared offline only after whole intervals without one).
HEARTBEAT_WINDOW_S = 5.0

# What a link treats as "the connection is gone, try again".
_CONNECTION_ERRORS = (aiomqtt.MqttError, OSError)


class _LinkClosingError(Exception):
    """Ends a link's session from inside its TaskGroup for a graceful close."""


class DeviceLink:
    """A connection to the broker for one device (or a share of the district)."""

    def __init__(
        self,
        *,
        client_id: str,
        devices: Sequence[SimulatedDevice],
        will: aiomqtt.Will,
        settings: SimulationSettings,
        tally: Tally,
        connect_gate: asyncio.Semaphore,
        closing: asyncio.Event,
        rng: random.Random,
        now_ms: Callable[[], int],
        on_acknowledged: Callable[[OutboxEvent], None],
        on_duplicate_sent: Callable[[OutboxEvent], None],
        on_settled: Callable[[OutboxEvent], None],
        on_online_changed: Callable[[], None],
    ) -> None:
        self.client_id = client_id
        self.devices = list(devices)
        self._by_serial = {device.serial: device for device in self.devices}
        self._will = will
        self._settings = settings
        self._tally = tally
        self._connect_gate = connect_gate
        self._closing = closing
        self._rng = rng
        self._now_ms = now_ms
        self._on_acknowledged = on_acknowledged
        self._on_duplicate_sent = on_duplicate_sent
        self._on_settled = on_settled
        self._on_online_changed = on_online_changed
        # True while connected with the online status published: events flow.
        self.online = False
        self.connected_once = False
        self._queue: asyncio.Queue[OutboxEvent] | None = None
        self._client: aiomqtt.Client | None = None
        self._offline_until = 0.0
        self._went_online_last_session = False
        # The brokers in turn, as a device's firmware should: on to the next when one
        # refuses or drops it, the backoff once each has failed.
        self._brokers = Rotation(settings.brokers, self._delays)
        self._power_cut = False

    @property
    def connected(self) -> bool:
        """True while an MQTT connection is up (online statuses may still be going out)."""
        return self._client is not None

    def submit(self, event: OutboxEvent) -> None:
        """Publish a new event now if the link is online; else it waits in the outbox."""
        if self._queue is not None:
            self._queue.put_nowait(event)

    def cut(self, offline_for_s: float) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the last will)
        and stay away for ``offline_for_s`` seconds, like a power cut."""
        self._offline_until = asyncio.get_running_loop().time() + offline_for_s
        self._power_cut = True
        client = self._client
        if client is None:
            return
        # aiomqtt has no public way to drop a connection abruptly; paho's socket does.
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def run(self) -> None:
        """Stay connected until the simulation closes: on to the next broker when the
        connection fails, with backoff once every broker has failed in turn."""
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            offline_for = self._offline_until - loop.time()
            if offline_for > 0:
                await self._sleep_unless_closing(offline_for)
                continue
            if self._power_cut:  # power back: it starts from the first broker it knows
                self._power_cut = False
                self._brokers.start_over()
            try:
                await self._session()
                return
            except* _CONNECTION_ERRORS as group:
                log.debug(
                    "%s: connection to %s ended: %s",
                    self.client_id,
                    self._brokers.current,
                    group.exceptions[0],
                )
            if self._went_online_last_session:
                self._tally.connection_losses += 1
            else:
                self._tally.connect_failures += 1
            await self._sleep_unless_closing(self._brokers.failed())

    def _delays(self) -> Iterator[float]:
        # Jittered so that a district which lost its broker does not return in lockstep.
        for failures in itertools.count():
            ceiling = min(
                self._settings.backoff_max_s, self._settings.backoff_initial_s * 2.0**failures
            )
            yield ceiling * self._rng.uniform(0.5, 1.0)

    async def _sleep_unless_closing(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    def _new_client(self) -> aiomqtt.Client:
        broker = self._brokers.current
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=self.client_id,
            # A device's own login (client id = serial = user name), when it has one.
            username=self.client_id if self.client_id in self._settings.logins else None,
            password=self._settings.logins.get(self.client_id),
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            will=self._will,
            keepalive=self._settings.keepalive_s,
            timeout=self._settings.timeout_s,
            logger=mqtt_log,
            # As device firmware should: an alarm is one small packet, send it at once
            # rather than let Nagle's algorithm hold it for the previous one's ACK.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # Publishes in flight are expected here; aiomqtt warns above its threshold.
        client.pending_calls_threshold = self._settings.max_inflight_per_connection + 16
        return client

    async def _session(self) -> None:
        self._went_online_last_session = False
        client = self._new_client()
        async with contextlib.AsyncExitStack() as stack:
            async with self._connect_gate:
                await stack.enter_async_context(client)
            self._client = client
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        name = f"device_sim.link.{self.client_id}"
                        # Listening from the start is what notices a lost connection, so
                        # that no publish below waits for a PUBACK that cannot come.
                        tg.create_task(self._listen(client), name=f"{name}.commands")
                        tg.create_task(self._await_closing(), name=f"{name}.closing")
                        tg.create_task(self._serve(client, tg), name=f"{name}.serve")
                except* _LinkClosingError:
                    pass
                # A graceful goodbye says so explicitly; the last will is for abrupt ends.
                # (The simulation bounds how long closing may take, for all links.)
                self._go_offline()
                try:
                    await self._announce(client, online=False)
                except* _CONNECTION_ERRORS as group:
                    log.warning(
                        "%s: could not publish offline status: %s",
                        self.client_id,
                        group.exceptions[0],
                    )
            finally:
                self._client = None
                self._go_offline()

    async def _serve(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        """Subscribe, announce the devices online, then start events and heartbeats."""
        await self._subscribe_commands(client)
        await self._announce(client, online=True)
        queue = self._go_online()
        name = f"device_sim.link.{self.client_id}"
        tg.create_task(self._send_events(client, queue, tg), name=f"{name}.events")
        if self._settings.heartbeat_interval_s > 0:
            tg.create_task(self._send_heartbeats(client), name=f"{name}.heartbeats")

    def _go_offline(self) -> None:
        self._queue = None
        if self.online:
            self.online = False
            self._on_online_changed()

    def _go_online(self) -> asyncio.Queue[OutboxEvent]:
        # No await between the outbox snapshot and installing the queue: an event
        # generated meanwhile is either in the snapshot or submitted to the queue.
        queue: asyncio.Queue[OutboxEvent] = asyncio.Queue()
        backlog = [event for device in self.devices for event in device.outbox.values()]
        for event in sorted(backlog, key=lambda event: event.sequence):
            queue.put_nowait(event)
        self._queue = queue
        self._brokers.connected()
        if self.connected_once:
            self._tally.reconnects += 1
        self.connected_once = True
        self._went_online_last_session = True
        self.online = True
        self._on_online_changed()
        return queue

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        topics = [(device.command_topic, 1) for device in self.devices]
        for start in range(0, len(topics), _SUBSCRIBE_CHUNK):
            await client.subscribe(topics[start : start + _SUBSCRIBE_CHUNK])

    async def _announce(self, client: aiomqtt.Client, *, online: bool) -> None:
        """Publish every device's retained status, a bounded number at a time."""
        chunk = self._settings.max_inflight_per_connection
        for start in range(0, len(self.devices), chunk):
            async with asyncio.TaskGroup() as tg:
                for device in self.devices[start : start + chunk]:
                    tg.create_task(
                        self._publish_status(client, device, online=online),
                        name=f"device_sim.status.{device.serial}",
                    )

    async def _publish_status(
        self, client: aiomqtt.Client, device: SimulatedDevice, *, online: bool
    ) -> None:
        payload = status_payload(online, self._now_ms())
        await client.publish(device.status_topic, payload, qos=1, retain=True, timeout=math.inf)
        self._tally.statuses_sent += 1

    async def _listen(self, client: aiomqtt.Client) -> None:
        # Raises MqttError when the connection drops: that is how a session ends.
        async for message in client.messages:
            self._tally.commands_received += 1
            log.debug("%s: command on %s: %r", self.client_id, message.topic, message.payload)

    async def _send_events(
        self,
        client: aiomqtt.Client,
        queue: asyncio.Queue[OutboxEvent],
        tg: asyncio.TaskGroup,
    ) -> None:
        inflight = asyncio.Semaphore(self._settings.max_inflight_per_connection)
        while True:
            event = await queue.get()
            if event.event_id not in self._by_serial[event.serial].outbox:
                continue
            await inflight.acquire()
            tg.create_task(
                self._publish_event(client, event, inflight),
                name=f"device_sim.event.{event.event_id}",
            )

    async def _publish_event(
        self, client: aiomqtt.Client, event: OutboxEvent, inflight: asyncio.Semaphore
    ) -> None:
        # The event stays in the outbox until settled: a lost connection ends the
        # session (and this task), and the next session publishes it again.
        try:
            if not event.acknowledged:
                if event.attempts:
                    self._tally.republished += 1
                event.attempts += 1
                await client.publish(event.topic, event.payload, qos=1, timeout=math.inf)
                self._on_acknowledged(event)
            if event.duplicate and not event.duplicate_sent:
                await client.publish(event.topic, event.payload, qos=1, timeout=math.inf)
                self._on_duplicate_sent(event)
            self._on_settled(event)
        finally:
            inflight.release()

    async def _send_heartbeats(self, client: aiomqtt.Client) -> None:
        """Each device's heartbeat every interval, at its own phase.

        The heartbeats falling due within the next ``HEARTBEAT_WINDOW_S`` go out
        together, a little early, and straight through paho: at QoS 0 nothing comes
        back to wait for, and aiomqtt's way (a wait and two loop turns per message)
        cost the simulator more than the heartbeats themselves. Together, they share
        one turn of the event loop and one wake-up of the connection's writer."""
        loop = asyncio.get_running_loop()
        interval = self._settings.heartbeat_interval_s
        window = min(HEARTBEAT_WINDOW_S, interval / 10)
        start = loop.time()
        schedule = [
            (start + device.heartbeat_phase % interval, index)
            for index, device in enumerate(self.devices)
        ]
        heapq.heapify(schedule)
        paho = client._client  # aiomqtt has no publish that does not wait
        while True:
            delay = schedule[0][0] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            until = loop.time() + window
            now_ms = self._now_ms()
            while schedule[0][0] <= until:
                due, index = schedule[0]
                heapq.heapreplace(schedule, (due + interval, index))
                device = self.devices[index]
                sent = paho.publish(device.heartbeat_topic, device.heartbeat(now_ms), qos=0)
                if sent.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise aiomqtt.MqttCodeError(sent.rc, "could not publish a heartbeat")
                self._tally.heartbeats_sent += 1

    async def _await_closing(self) -> None:
        await self._closing.wait()
        raise _LinkClosingError
