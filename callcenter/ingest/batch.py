"""Deciding what one batch of MQTT messages does to the store: a pure function.

``plan_batch`` turns received messages into the rows to write (events, dead letters)
and the new state of the devices they touched, without doing any I/O. The caller
writes the plan in one transaction, then acknowledges the messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from callcenter.domain.events import ServerEventKind
from callcenter.ingest.protocol import (
    DeadLetterReason,
    DeviceEventMessage,
    HeartbeatMessage,
    PayloadError,
    StatusMessage,
    is_command_topic,
    parse_message,
    printable,
    server_event_id,
)
from callcenter.ingest.registry import DeviceRegistry, DeviceState, evolve


@dataclass(frozen=True)
class Received:
    """One MQTT message as it came off the wire."""

    topic: str
    payload: bytes
    retained: bool = False


@dataclass(frozen=True)
class Limits:
    """Bounds on what ingest accepts."""

    topic_prefix: str
    max_payload_bytes: int = 8192
    max_clock_skew: timedelta = timedelta(minutes=5)
    max_clock_lag: timedelta = timedelta(days=1)


# A device's last_seen_at in the database is refreshed at most this often when nothing
# else about it changed: under load every event and heartbeat would otherwise rewrite
# its device row. The exact time stays in memory, where offline detection reads it.
LIVENESS_WRITE_INTERVAL = timedelta(seconds=10)
# A device whose clock is wrong raises a fault at most this often: every message of its
# would otherwise add to the fault's call.
CLOCK_FAULT_EVERY = timedelta(hours=24)


@dataclass(frozen=True)
class LivenessChange:
    """A device going online or offline in a batch. Several servers sharing the broker's
    subscription each hear only some of a device's messages, so what one server's memory
    says may be behind: the writer makes the change only where the database still has
    the device the other way, and drops its event where it does not (another server made
    the change first)."""

    device_id: int
    online: bool
    # Its device_online / device_offline row in the plan's events (None: the batch logged
    # that moment already, e.g. online, offline and online again at once).
    event: dict[str, Any] | None
    # Declared offline for silence: only if nobody has heard it since this moment.
    unheard_since: datetime | None = None


@dataclass
class BatchPlan:
    """Everything one batch writes, in the order the messages arrived."""

    events: list[dict[str, Any]] = field(default_factory=list)
    # Events whose id an earlier event of this batch had, with other content: the
    # writer records them as conflicts (see EventWriter).
    reused: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    # New state of every device the batch touched (for the in-memory registry)...
    devices: dict[str, DeviceState] = field(default_factory=dict)
    # ...and the subset whose row must be written (its liveness; the online flag only
    # through ``liveness``).
    device_rows: list[DeviceState] = field(default_factory=list)
    # Every change of a device's online flag, in the order they came.
    liveness: list[LivenessChange] = field(default_factory=list)
    heartbeats: int = 0
    statuses: int = 0
    duplicates_in_batch: int = 0
    # The server's own device commands, heard back on the catch-all subscription.
    own_commands: int = 0


def dead_letter_row(
    message: Received, reason: DeadLetterReason, detail: str, now: datetime, keep: int
) -> dict[str, Any]:
    """The dead_letters row for a refused message, its payload kept up to ``keep`` bytes;
    its text escaped, so that a database takes whatever the device sent."""
    return {
        "received_at": now,
        "topic": printable(message.topic, 512)[:512],
        "reason": reason.value,
        "detail": printable(detail),
        "payload_size": len(message.payload),
        "payload": message.payload[:keep],
    }


def _event_row(
    device: DeviceState,
    event_id: str,
    kind: str,
    device_time: datetime,
    now: datetime,
    data: dict[str, Any],
    clock_skew: timedelta | None = None,
) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "household_id": device.household_id,
        "event_id": event_id,
        "kind": kind,
        "device_time": device_time,
        "received_at": now,
        "data": data,
        "clock_skew_s": None if clock_skew is None else clock_skew.total_seconds(),
    }


def same_content(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two event rows say the same thing (a redelivery), whatever their ids."""
    return bool(
        first["kind"] == second["kind"]
        and first["device_time"] == second["device_time"]
        and first["data"] == second["data"]
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def plan_batch(
    messages: list[Received], registry: DeviceRegistry, now: datetime, limits: Limits
) -> BatchPlan:
    """Decide the rows and device states for a batch; never raises for bad input."""
    plan = BatchPlan()
    seen: dict[tuple[int, str], dict[str, Any]] = {}

    def current(serial: str) -> DeviceState | None:
        return plan.devices.get(serial) or registry.get(serial)

    def transition(device: DeviceState, online: bool, reason: str) -> DeviceState:
        kind = ServerEventKind.DEVICE_ONLINE if online else ServerEventKind.DEVICE_OFFLINE
        # The id is derived from the moment, so a redelivered status cannot log twice.
        event_id = server_event_id(kind, str(_ms(now)))
        row: dict[str, Any] | None = None
        if (device.device_id, event_id) not in seen:
            row = _event_row(device, event_id, kind.value, now, now, {"reason": reason})
            seen[device.device_id, event_id] = row
            plan.events.append(row)
        plan.liveness.append(LivenessChange(device.device_id, online, row))
        return evolve(device, online=online)

    def clock_wrong(device: DeviceState, device_time: datetime, skew: timedelta) -> DeviceState:
        reported = device.clock_reported_at
        if reported is not None and now - reported < CLOCK_FAULT_EVERY:
            return device
        kind = ServerEventKind.DEVICE_CLOCK_WRONG
        data = {
            "skew_s": round(skew.total_seconds(), 3),
            "device_time": device_time.isoformat(),
            "limit_s": (
                limits.max_clock_skew if skew > timedelta(0) else limits.max_clock_lag
            ).total_seconds(),
        }
        plan.events.append(
            _event_row(device, server_event_id(kind, str(_ms(now))), kind.value, now, now, data)
        )
        return evolve(device, clock_reported_at=now)

    for message in messages:
        if is_command_topic(limits.topic_prefix, message.topic):
            plan.own_commands += 1
            continue
        try:
            parsed = parse_message(
                limits.topic_prefix,
                message.topic,
                message.payload,
                received_at=now,
                max_payload_bytes=limits.max_payload_bytes,
                max_clock_skew=limits.max_clock_skew,
                max_clock_lag=limits.max_clock_lag,
            )
        except PayloadError as error:
            plan.dead_letters.append(
                dead_letter_row(message, error.reason, error.detail, now, limits.max_payload_bytes)
            )
            continue

        device = current(parsed.topic.serial)
        if device is None:
            plan.dead_letters.append(
                dead_letter_row(
                    message,
                    DeadLetterReason.UNKNOWN_DEVICE,
                    f"no device with serial {parsed.topic.serial!r} is registered",
                    now,
                    limits.max_payload_bytes,
                )
            )
            continue
        if device.household_code != parsed.topic.household:
            plan.dead_letters.append(
                dead_letter_row(
                    message,
                    DeadLetterReason.HOUSEHOLD_MISMATCH,
                    f"device {device.serial} belongs to household {device.household_code}, "
                    f"not {parsed.topic.household}",
                    now,
                    limits.max_payload_bytes,
                )
            )
            continue

        if isinstance(parsed, DeviceEventMessage):
            key = (device.device_id, parsed.event_id)
            row = _event_row(
                device,
                parsed.event_id,
                parsed.kind.value,
                parsed.device_time,
                now,
                parsed.data,
                parsed.clock_skew,
            )
            first = seen.get(key)
            if first is None:
                seen[key] = row
                plan.events.append(row)
            elif same_content(first, row):
                plan.duplicates_in_batch += 1
            else:
                plan.reused.append(row)
            if parsed.clock_skew is not None:
                device = clock_wrong(device, parsed.device_time, parsed.clock_skew)
            if not device.online:
                device = transition(device, True, "event")
            device = evolve(
                device,
                last_seen_at=now,
                battery_pct=parsed.battery if parsed.battery is not None else device.battery_pct,
            )
        elif isinstance(parsed, HeartbeatMessage):
            plan.heartbeats += 1
            if parsed.clock_skew is not None:
                device = clock_wrong(device, parsed.device_time, parsed.clock_skew)
            if not device.online:
                device = transition(device, True, "heartbeat")
            device = evolve(
                device,
                last_seen_at=now,
                battery_pct=parsed.battery if parsed.battery is not None else device.battery_pct,
                rssi_dbm=parsed.rssi if parsed.rssi is not None else device.rssi_dbm,
            )
        else:
            assert isinstance(parsed, StatusMessage)
            plan.statuses += 1
            device = _apply_status(device, parsed, message.retained, transition, now)
        plan.devices[device.serial] = device
    _choose_device_rows(plan, registry)
    return plan


def _choose_device_rows(plan: BatchPlan, registry: DeviceRegistry) -> None:
    for serial, state in plan.devices.items():
        before = registry.get(serial)
        changed = (
            before is None
            or state.online != before.online
            or state.battery_pct != before.battery_pct
        )
        stale = state.last_seen_at is not None and (
            state.stored_seen_at is None
            or state.last_seen_at - state.stored_seen_at >= LIVENESS_WRITE_INTERVAL
        )
        if changed or stale:
            written = evolve(state, stored_seen_at=state.last_seen_at)
            plan.devices[serial] = written
            plan.device_rows.append(written)


def _apply_status(
    device: DeviceState,
    status: StatusMessage,
    retained: bool,
    transition: Callable[[DeviceState, bool, str], DeviceState],
    now: datetime,
) -> DeviceState:
    if status.online:
        # A retained "online" replayed on subscribe may be older than what we know
        # (the device may have gone silent since); only a fresh one counts.
        stale = retained and (
            status.device_time is None
            or (device.last_seen_at is not None and status.device_time <= device.last_seen_at)
        )
        if stale:
            return device
        if not device.online:
            device = transition(device, True, "status")
        return evolve(device, last_seen_at=now)
    if device.online:
        return transition(
            device, False, "last_will" if retained or status.device_time is None else "status"
        )
    return device


def find_silent(
    registry: DeviceRegistry, now: datetime, silence: timedelta, listening_since: datetime
) -> list[DeviceState]:
    """Online devices not heard from for ``silence``, counting only time we were listening."""
    cutoff = now - silence
    if listening_since > cutoff:
        return []
    return [
        d
        for d in registry.all()
        if d.online and (d.last_seen_at is None or d.last_seen_at < cutoff)
    ]


def plan_silent_offline(silent: list[DeviceState], now: datetime, silence: timedelta) -> BatchPlan:
    """Offline events and states for devices whose heartbeats stopped."""
    plan = BatchPlan()
    for device in silent:
        last = device.last_seen_at.isoformat() if device.last_seen_at else None
        row = _event_row(
            device,
            server_event_id(ServerEventKind.DEVICE_OFFLINE, str(_ms(now))),
            ServerEventKind.DEVICE_OFFLINE.value,
            now,
            now,
            {
                "reason": "heartbeats_missed",
                "last_seen_at": last,
                "silence_s": silence.total_seconds(),
            },
        )
        plan.events.append(row)
        plan.liveness.append(
            LivenessChange(device.device_id, False, row, unheard_since=now - silence)
        )
        offline = evolve(device, online=False, stored_seen_at=device.last_seen_at)
        plan.devices[device.serial] = offline
        plan.device_rows.append(offline)
    return plan
