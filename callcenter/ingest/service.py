"""The ingest service: MQTT in, event log out, acknowledged only after commit.

One loop owns the connection. It takes a batch of whatever messages are waiting,
plans it (pure), writes it in one transaction, acknowledges the batch in order, then
tells listeners (the call engine) about the new events. A lost broker means the next
broker configured, and a jittered backoff once each has failed in turn (brokers.py); a
lost database means retry the same batch, unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter import logs
from callcenter.brokers import BrokerAddress, Rotation
from callcenter.clock import Clock
from callcenter.config import Config
from callcenter.ingest.batch import (
    BatchPlan,
    Limits,
    Received,
    dead_letter_row,
    find_silent,
    plan_batch,
    plan_silent_offline,
)
from callcenter.ingest.mqtt import AckAfterCommit, backoff_delays, ingest_client
from callcenter.ingest.protocol import (
    DeadLetterReason,
    PayloadError,
    is_device_name,
    parse_topic,
    subscription,
)
from callcenter.ingest.registry import DeviceRegistry, load_devices
from callcenter.ingest.writer import EventWriter, StoredEvent, Written
from callcenter.store.db import refused_by_database, what_it_said
from callcenter.store.models import registry_version

log = logging.getLogger("callcenter.ingest")

EventListener = Callable[[list[StoredEvent]], Awaitable[None]]

# Unknown serials are looked up in the database at most this often each, so a rogue
# device cannot turn every message into a query.
_UNKNOWN_RECHECK_S = 30.0
# How often ingest, while messages come, asks whether the register changed (one small
# query), so a device added, moved or retired is known within about a second.
_REGISTRY_CHECK_S = 1.0
# A resumed session delivers its whole backlog before the SUBACK; after a long outage
# that can be minutes of messages.
_SUBSCRIBE_TIMEOUT_S = 600.0


@dataclass
class IngestStats:
    """Counters for logs, /metrics and benchmarks; and, for /healthz, when ingest last
    made progress and since when it has been held up (times by ingest's clock)."""

    messages: int = 0
    events_stored: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    statuses: int = 0
    own_commands: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    store_retries: int = 0
    # Events whose id the device had used before for something else (event_conflicts).
    conflicts: int = 0
    reconnects: int = 0
    devices_declared_offline: int = 0
    # Not subscribed to the broker since (from the start until the first subscription).
    link_down_since: datetime | None = None
    # The broker subscribed on now ("host:port"); empty while not subscribed.
    broker: str = ""
    received_at: datetime | None = None  # the last batch of messages taken in
    committed_at: datetime | None = None  # the last write that went through
    # Messages taken in and not yet committed (nor acknowledged), and since when.
    holding: int = 0
    holding_since: datetime | None = None
    # The database refusing or not answering ingest since, and what it said last.
    database_failing_since: datetime | None = None
    database_error: str = ""
    # Events the database refused (store_rejected) since it last stored one: since when,
    # and from how many devices. One device can be at fault (deleted meanwhile); several
    # with nothing stored between is the database refusing everything.
    rejecting_since: datetime | None = None
    rejecting_devices: int = 0


def ingest_topic(config: Config) -> str:
    """The topic filter ingest subscribes to: every v1 device topic, shared among the
    servers of ``broker.shared_group`` when there is one."""
    topic = subscription(config.broker.topic_prefix)
    if config.broker.shared_group:
        topic = f"$share/{config.broker.shared_group}/{topic}"
    return topic


def as_received(message: MQTTMessage) -> Received:
    """A message from the broker (paho's, as the ingest client queues them) as ingest
    plans it."""
    return Received(message.topic, bytes(message.payload), bool(message.retain))


class Ingest:
    """Subscribes to every v1 device topic and keeps the event log."""

    def __init__(
        self,
        config: Config,
        engine: AsyncEngine,
        clock: Clock,
        *,
        brokers: Sequence[BrokerAddress],
    ) -> None:
        self._config = config
        self._engine = engine
        self._clock = clock
        self._brokers = tuple(brokers)
        self._writer = EventWriter(engine)
        self._registry = DeviceRegistry()
        self._registry_loaded = False
        self._limits = Limits(
            topic_prefix=config.broker.topic_prefix,
            max_payload_bytes=config.ingest.max_payload_bytes,
            max_clock_skew=timedelta(seconds=config.ingest.max_clock_skew_s),
            max_clock_lag=timedelta(seconds=config.ingest.max_clock_lag_s),
        )
        self._silence = timedelta(
            seconds=config.ingest.heartbeat_interval_s * config.ingest.offline_after_missed
        )
        self._listeners: list[EventListener] = []
        self._stopping = asyncio.Event()
        self._unknown_checked: dict[str, float] = {}
        self._listening_since: datetime | None = None
        self._next_housekeeping = 0.0
        self._next_registry_reload = 0.0
        self._next_registry_check = 0.0
        # The district registry's version when the devices were last read (None: unknown).
        self._registry_version: int | None = None
        self.stats = IngestStats(link_down_since=clock.now())
        # The topics whose events the database refused since it last stored one.
        self._rejecting: set[str] = set()
        self.connected = asyncio.Event()

    @property
    def registry(self) -> DeviceRegistry:
        return self._registry

    def on_events(self, listener: EventListener) -> None:
        """Call ``listener`` with each committed batch of new events."""
        self._listeners.append(listener)

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, and disconnect."""
        self._stopping.set()

    def silent_since(self, now: datetime) -> datetime | None:
        """Never: ingest in this process cannot stop reporting (see IngestProcess)."""
        return None

    async def run(self) -> None:
        """Run until stop(): connect, consume, reconnect on loss."""
        await self.load_registry()
        cap_s = self._config.broker.reconnect_max_s
        brokers = Rotation(self._brokers, lambda: backoff_delays(cap_s=cap_s))
        topic = ingest_topic(self._config)
        while not self._stopping.is_set():
            broker = brokers.current
            client = ingest_client(self._config.broker, host=broker.host, port=broker.port)
            try:
                async with client:
                    brokers.connected()
                    subscribing = self._subscribe(client, topic, broker)
                    await self._consume(AckAfterCommit(client), subscribing)
            except aiomqtt.MqttError as error:
                self.connected.clear()
                self._listening_since = None
                self.stats.link_down_since = self.stats.link_down_since or self._clock.now()
                self.stats.broker = ""
                if self._stopping.is_set():
                    break
                self.stats.reconnects += 1
                wait = brokers.failed()
                log.warning("broker %s unavailable (%s); %s", broker, error, brokers.next_try(wait))
                await self._sleep_unless_stopping(wait)
        self.connected.clear()
        self.stats.broker = ""
        self.stats.link_down_since = self.stats.link_down_since or self._clock.now()
        log.info("ingest stopped: %s", self.stats)

    async def _subscribe(self, client: aiomqtt.Client, topic: str, broker: BrokerAddress) -> None:
        # On a resumed session the broker sends the whole backlog before the SUBACK, so
        # this may take as long as the backlog takes to arrive: consuming runs meanwhile
        # (see _consume), and the wait is bounded only by a generous timeout.
        await client.subscribe(topic, qos=1, timeout=_SUBSCRIBE_TIMEOUT_S)
        self._listening_since = self._clock.now()
        self.connected.set()
        self.stats.link_down_since = None
        self.stats.broker = str(broker)
        log.info("ingest subscribed to %s on %s", topic, broker)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _consume(self, session: AckAfterCommit, subscribing: Awaitable[None]) -> None:
        stop = asyncio.create_task(self._stopping.wait(), name="callcenter.ingest.stop")
        subscribe = asyncio.ensure_future(subscribing)
        pending: asyncio.Task[list[MQTTMessage]] | None = None
        try:
            while True:
                if pending is None:
                    # Never cancelled while waiting for housekeeping: a cancelled read
                    # could drop a message it had already taken off the queue.
                    pending = asyncio.create_task(
                        session.next_batch(self._config.ingest.max_batch),
                        name="callcenter.ingest.read",
                    )
                timeout = max(0.0, self._next_housekeeping - time.monotonic())
                waiting: set[asyncio.Future[Any]] = {pending, stop}
                if not subscribe.done():
                    waiting.add(subscribe)
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if subscribe in done:
                    subscribe.result()  # a failed subscription ends this connection
                if pending in done:
                    batch, pending = pending.result(), None  # raises MqttError on loss
                    stored = await self._ingest(batch)
                    session.acknowledge(batch)
                    await self._notify(stored)
                if stop in done:
                    return
                if time.monotonic() >= self._next_housekeeping:
                    await self._housekeeping()
        finally:
            stop.cancel()
            subscribe.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await subscribe
            if pending is not None:
                # Whatever it holds was never acknowledged; the broker will redeliver.
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await pending

    async def take(self, received: list[Received]) -> list[StoredEvent]:
        """Store messages that did not come through this ingest's own subscription (the
        simulator on virtual time hands them over directly), exactly as if they had, and
        tell the listeners; the events that were new."""
        if not self._registry_loaded:
            await self.load_registry()
        stored = await self._store(received)
        await self._notify(stored)
        return stored

    async def _ingest(self, batch: list[MQTTMessage]) -> list[StoredEvent]:
        """Plan and commit one batch; return the events that were new."""
        return await self._store([as_received(m) for m in batch])

    async def _store(self, received: list[Received]) -> list[StoredEvent]:
        self._holding(received)
        await self._follow_register()
        await self._resolve_unknown(received)
        plan = plan_batch(received, self._registry, self._clock.now(), self._limits)
        stored = await self._commit(plan, received)
        self.stats.holding, self.stats.holding_since = 0, None
        self.stats.messages += len(received)
        self.stats.batches += 1
        self.stats.heartbeats += plan.heartbeats
        self.stats.statuses += plan.statuses
        self.stats.own_commands += plan.own_commands
        return stored

    async def _notify(self, stored: list[StoredEvent]) -> None:
        # After the acknowledgement: the log, not this call, is the record. A listener
        # that fails must not hold the batch unacknowledged, or its redelivery would be
        # de-duplicated and reach no listener at all.
        if not stored:
            return
        for listener in self._listeners:
            try:
                await listener(stored)
            except Exception:
                log.exception("event listener %r failed on %d new events", listener, len(stored))

    async def _commit(self, plan: BatchPlan, received: list[Received]) -> list[StoredEvent]:
        """Write the plan, retrying while the database is unreachable; never gives up.

        A batch the database refuses for something in it is written message by message,
        so one device's message can hold back no other household's events."""
        delays = backoff_delays(first_s=0.2, cap_s=10.0)
        while True:
            try:
                written = await self._writer.write(plan)
            except Exception as error:
                if refused_by_database(error):
                    log.error(
                        "batch of %d refused by the database (%s); writing its messages one by one",
                        len(received),
                        what_it_said(error),
                    )
                    return await self._commit_one_by_one(received)
                await self._database_unavailable(error, len(received), next(delays))
                continue
            self._account(plan, written)
            return written.events

    async def _database_unavailable(self, error: Exception, held: int, wait: float) -> None:
        """Wait ``wait`` seconds after a failed write, if the database is what failed."""
        if not isinstance(error, DBAPIError | OSError | TimeoutError):
            raise error  # a fault of ours, not the database's: let it be seen
        self.stats.store_retries += 1
        self._database_failed(error)
        log.error(
            "database unavailable (%s); %d messages held unacknowledged, retry in %.1f s",
            what_it_said(error),
            held,
            wait,
        )
        await asyncio.sleep(wait)

    async def _commit_one_by_one(self, received: list[Received]) -> list[StoredEvent]:
        if not received:
            # A plan of the server's own (devices gone silent) has no messages to split.
            log.error("the database refused the offline events for silent devices; skipped")
            return []
        stored: list[StoredEvent] = []
        for message in received:
            stored.extend(await self._commit_alone(message))
        return stored

    async def _commit_alone(self, message: Received) -> list[StoredEvent]:
        """Write one message; if the database refuses it, keep it as a ``store_rejected``
        dead letter instead (without its payload if even that is refused)."""
        plan = plan_batch([message], self._registry, self._clock.now(), self._limits)
        fallbacks = iter((True, False))  # the dead letter with its payload, then without
        delays = backoff_delays(first_s=0.2, cap_s=10.0)
        while True:
            try:
                written = await self._writer.write(plan)
            except Exception as error:
                keep_payload = next(fallbacks, None) if refused_by_database(error) else None
                if keep_payload is None:
                    await self._database_unavailable(error, 1, next(delays))
                else:
                    plan = self._rejected(message, error, keep_payload=keep_payload)
                continue
            self._account(plan, written)
            return written.events

    def _rejected(self, message: Received, error: Exception, *, keep_payload: bool) -> BatchPlan:
        """The plan that keeps ``message`` as a dead letter the database refused."""
        detail = f"the database refused it: {what_it_said(error)}"
        if not keep_payload:
            detail += f"; so did its dead letter, kept without its {len(message.payload)} bytes"
        row = dead_letter_row(
            message if keep_payload else Received(message.topic, b""),
            DeadLetterReason.STORE_REJECTED,
            detail,
            self._clock.now(),
            self._limits.max_payload_bytes,
        )
        return BatchPlan(dead_letters=[{**row, "payload_size": len(message.payload)}])

    def _account(self, plan: BatchPlan, written: Written) -> None:
        self._database_answered(committed=True)
        self._note_rejections(plan, written)
        self._registry.update(plan.devices.values())
        self.stats.events_stored += len(written.events)
        self.stats.duplicates += written.duplicates
        self.stats.conflicts += written.conflicts
        for row in plan.dead_letters:
            self.stats.dead_letters[row["reason"]] += 1
            with logs.bound(household=self._household_named(row["topic"])):
                log.warning("dead letter %s on %s: %s", row["reason"], row["topic"], row["detail"])

    def _household_named(self, topic: str) -> str | None:
        """The household a device topic names (whoever sent it), for the log."""
        try:
            return parse_topic(self._limits.topic_prefix, topic).household
        except PayloadError:
            return None

    def _note_rejections(self, plan: BatchPlan, written: Written) -> None:
        """Keep count, for /healthz, of the devices whose events the database refused
        since it last stored one."""
        if written.events:
            self._rejecting.clear()
            self.stats.rejecting_since, self.stats.rejecting_devices = None, 0
        rejected = [
            row for row in plan.dead_letters if row["reason"] == DeadLetterReason.STORE_REJECTED
        ]
        if not rejected:
            return
        # A device's events come on one topic; a hundred tell enough.
        for row in rejected[: max(0, 100 - len(self._rejecting))]:
            self._rejecting.add(row["topic"])
        self.stats.rejecting_since = self.stats.rejecting_since or self._clock.now()
        self.stats.rejecting_devices = len(self._rejecting)

    def _holding(self, received: list[Received]) -> None:
        """Note, for /healthz, the messages taken in and not yet committed."""
        now = self._clock.now()
        self.stats.received_at = now
        self.stats.holding, self.stats.holding_since = len(received), now

    def _database_failed(self, error: Exception) -> None:
        """Note, for /healthz, that the database refused or did not answer (its first
        line only: the whole error, with its statement, is in the log)."""
        self.stats.database_failing_since = self.stats.database_failing_since or self._clock.now()
        self.stats.database_error = what_it_said(error)[:300]

    def _database_answered(self, *, committed: bool = False) -> None:
        if committed:
            self.stats.committed_at = self._clock.now()
        self.stats.database_failing_since = None
        self.stats.database_error = ""

    def register_changed(self) -> None:
        """A change to the register was just committed in this process: ask before the
        next batch, so no message after it is read by the old devices."""
        self._next_registry_check = 0.0

    async def _follow_register(self) -> None:
        """Read the devices again when the register changed since they were read (a
        device added, moved or retired through the API, an import, plain SQL), asking at
        most every _REGISTRY_CHECK_S while messages come: a moved device's messages are
        taken under its new household, and a retired one's refused, at once rather than
        at the next housekeeping. A failed look waits for the next batch; the batch's own
        commit reports a database that does not answer."""
        now = time.monotonic()
        if now < self._next_registry_check or self._registry_version is None:
            return
        self._next_registry_check = now + _REGISTRY_CHECK_S
        try:
            async with self._engine.connect() as connection:
                version = await registry_version(connection)
        except (OperationalError, DBAPIError, OSError) as error:
            log.warning("cannot read the registry version (%s); the next batch asks again", error)
            return
        if version != self._registry_version:
            log.info("the register changed (version %s); reading the devices again", version)
            await self.load_registry()
            self._unknown_checked.clear()

    async def _resolve_unknown(self, received: list[Received]) -> None:
        """Look up serials we do not know yet: a device may have been registered just now."""
        prefix = self._limits.topic_prefix
        now = time.monotonic()
        wanted = set()
        for message in received:
            # Split, not parsed: this runs for every message, and nearly every serial is
            # known; only an unknown one is checked to be a name a device could have.
            parts = message.topic.split("/")
            if len(parts) != 5 or parts[0] != prefix or self._registry.get(parts[3]) is not None:
                continue
            serial = parts[3]
            checked = self._unknown_checked.get(serial, -_UNKNOWN_RECHECK_S)
            if is_device_name(serial) and now - checked >= _UNKNOWN_RECHECK_S:
                wanted.add(serial)
                self._unknown_checked[serial] = now
        if not wanted:
            return
        delays = backoff_delays(first_s=0.2, cap_s=10.0)
        while True:
            try:
                async with self._engine.connect() as connection:
                    found = await load_devices(connection, wanted)
                self._database_answered()
                break
            except (OperationalError, DBAPIError, OSError) as error:
                # Deciding "unknown device" on a failed lookup would dead-letter a real
                # alarm from a newly registered device; wait for the database instead.
                self._database_failed(error)
                wait = next(delays)
                log.error(
                    "cannot look up devices %s (%s); retry in %.1f s", sorted(wanted), error, wait
                )
                await asyncio.sleep(wait)
        self._registry.update(found)
        for device in found:
            self._unknown_checked.pop(device.serial, None)

    async def load_registry(self) -> None:
        """Read every device from the database (retrying until it answers)."""
        delays = backoff_delays(first_s=0.5, cap_s=10.0)
        while True:
            try:
                async with self._engine.connect() as connection:
                    # The version first: a change made during the read moves it past this.
                    version = await registry_version(connection)
                    devices = await load_devices(connection)
            except (OperationalError, DBAPIError, OSError) as error:
                self._database_failed(error)
                wait = next(delays)
                log.error("cannot read the device registry (%s); retry in %.1f s", error, wait)
                await asyncio.sleep(wait)
                continue
            self._database_answered()
            self._registry = DeviceRegistry(devices)
            self._registry_loaded = True
            self._registry_version = version
            self._next_registry_reload = time.monotonic() + self._config.ingest.registry_refresh_s
            log.info("device registry loaded: %d devices", len(self._registry))
            return

    async def _registry_stale(self) -> bool:
        """Whether the devices must be read again. A lone ingest writes every device's
        liveness itself, so only a change to the registry (a device added, moved or
        removed: the district's registry version) is news. Instances sharing the
        subscription (``broker.shared_group``) each hear only some devices, and read
        everything again to learn what the others heard. Reading 100,000 devices again
        every ``ingest.registry_refresh_s`` had kept two copies of them in memory."""
        if self._config.broker.shared_group or self._registry_version is None:
            return True
        try:
            async with self._engine.connect() as connection:
                return await registry_version(connection) != self._registry_version
        except (OperationalError, DBAPIError, OSError) as error:
            log.warning("cannot read the registry version (%s); reading the devices", error)
            return True

    async def _housekeeping(self) -> None:
        """Declare silent devices offline; pick up registry changes."""
        interval = min(self._config.ingest.heartbeat_interval_s / 2, 15.0)
        self._next_housekeeping = time.monotonic() + interval
        # Forget unknown serials once they may be looked up again, so a stream of
        # made-up serials cannot grow this map without bound.
        expired = time.monotonic() - _UNKNOWN_RECHECK_S
        self._unknown_checked = {
            serial: at for serial, at in self._unknown_checked.items() if at > expired
        }
        if self._listening_since is not None:
            now = self._clock.now()
            silent = find_silent(self._registry, now, self._silence, self._listening_since)
            if silent:
                plan = plan_silent_offline(silent, now, self._silence)
                stored = await self._commit(plan, [])
                # Only those still online and unheard in the database: another server
                # sharing the subscription may have heard one since, or declared it.
                declared = {event.device_id for event in stored}
                serials = [d.serial for d in silent if d.device_id in declared]
                self.stats.devices_declared_offline += len(serials)
                if serials:
                    log.warning(
                        "%d device(s) silent for %.0f s declared offline: %s",
                        len(serials),
                        self._silence.total_seconds(),
                        ", ".join(serials[:10]),
                    )
                if len(serials) < len(silent):
                    log.info(
                        "%d device(s) silent here were heard by another server or declared "
                        "offline by it already",
                        len(silent) - len(serials),
                    )
                await self._notify(stored)
        if time.monotonic() >= self._next_registry_reload:
            if await self._registry_stale():
                await self.load_registry()
            else:
                self._next_registry_reload = (
                    time.monotonic() + self._config.ingest.registry_refresh_s
                )
