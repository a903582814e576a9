"""plan_batch and offline detection: pure decisions, no broker or database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from callcenter.domain.events import EventKind
from callcenter.ingest.batch import (
    LIVENESS_WRITE_INTERVAL,
    Limits,
    Received,
    find_silent,
    plan_batch,
    plan_silent_offline,
)
from callcenter.ingest.protocol import event_payload, heartbeat_payload, status_payload
from callcenter.ingest.registry import DeviceRegistry, DeviceState, evolve

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LIMITS = Limits(topic_prefix="eldercare")


def device(
    serial: str = "CB-H0001",
    household: str = "H0001",
    *,
    online: bool = True,
    last_seen: datetime | None = NOW - timedelta(seconds=30),
) -> DeviceState:
    return DeviceState(
        device_id=1 if serial.startswith("CB") else 2,
        serial=serial,
        household_id=1,
        household_code=household,
        online=online,
        last_seen_at=last_seen,
        battery_pct=80,
    )


def registry(*devices: DeviceState) -> DeviceRegistry:
    return DeviceRegistry(devices or [device(), device("BU-H0001")])


def event(event_id: str, *, serial: str = "CB-H0001", household: str = "H0001") -> Received:
    return Received(
        f"eldercare/v1/{household}/{serial}/event",
        event_payload(event_id, EventKind.EMERGENCY_PRESS, NOW_MS, battery=70),
    )


def test_events_become_rows_in_order_and_update_liveness() -> None:
    """Test that events become rows in arrival order and refresh last seen and battery."""
    plan = plan_batch([event("a"), event("b")], registry(), NOW, LIMITS)
    assert [r["event_id"] for r in plan.events] == ["a", "b"]
    assert plan.events[0]["kind"] == "emergency_press"
    assert plan.devices["CB-H0001"].last_seen_at == NOW
    assert plan.devices["CB-H0001"].battery_pct == 70
    assert plan.dead_letters == []


def test_the_same_event_twice_in_a_batch_is_planned_once() -> None:
    """Test that a duplicate inside one batch is written once and counted."""
    plan = plan_batch([event("a"), event("a")], registry(), NOW, LIMITS)
    assert len(plan.events) == 1
    assert plan.duplicates_in_batch == 1


def test_unknown_device_and_household_mismatch_are_dead_lettered() -> None:
    """Test that an unregistered serial and a device claiming another household are refused."""
    plan = plan_batch(
        [event("a", serial="CB-H9999", household="H9999"), event("b", household="H0002")],
        registry(),
        NOW,
        LIMITS,
    )
    assert [d["reason"] for d in plan.dead_letters] == ["unknown_device", "household_mismatch"]
    assert "H0001" in plan.dead_letters[1]["detail"]
    assert plan.events == []


def test_the_servers_own_device_commands_are_passed_over() -> None:
    """Test that commands the server published, heard back on the catch-all subscription,
    are counted and neither stored nor dead-lettered, while a malformed topic still is."""
    command = Received(
        "eldercare/v1/H0001/BU-H0001/command",
        b'{"v": 1, "id": "cmd-7", "ts": 1, "command": "call_closed", "call": 7}',
    )
    stray = Received("eldercare/v1/H0001/BU-H0001/commands", b"{}")
    plan = plan_batch([command, event("a"), stray], registry(), NOW, LIMITS)
    assert plan.own_commands == 1
    assert [r["event_id"] for r in plan.events] == ["a"]
    assert [d["reason"] for d in plan.dead_letters] == ["bad_topic"]


def test_bad_payload_keeps_the_bytes_for_the_dead_letter() -> None:
    """Test that a malformed message is kept with its bytes and size."""
    plan = plan_batch(
        [Received("eldercare/v1/H0001/CB-H0001/event", b"{oops")], registry(), NOW, LIMITS
    )
    (letter,) = plan.dead_letters
    assert letter["reason"] == "malformed_json"
    assert letter["payload"] == b"{oops"
    assert letter["payload_size"] == 5


def test_oversized_payload_is_truncated_in_the_dead_letter() -> None:
    """Test that a payload over the limit is stored truncated, with its real size."""
    big = b"x" * 20_000
    plan = plan_batch([Received("eldercare/v1/H0001/CB-H0001/event", big)], registry(), NOW, LIMITS)
    (letter,) = plan.dead_letters
    assert letter["reason"] == "too_large"
    assert letter["payload_size"] == 20_000
    assert len(letter["payload"]) == LIMITS.max_payload_bytes


def test_heartbeats_update_liveness_without_logging_events() -> None:
    """Test that a heartbeat from an online device writes no event, only liveness."""
    beat = Received("eldercare/v1/H0001/BU-H0001/heartbeat", heartbeat_payload(NOW_MS, battery=64))
    plan = plan_batch([beat], registry(), NOW, LIMITS)
    assert plan.events == []
    assert plan.heartbeats == 1
    assert plan.devices["BU-H0001"].battery_pct == 64
    assert plan.devices["BU-H0001"].last_seen_at == NOW


def test_heartbeat_from_an_offline_device_brings_it_online_with_an_event() -> None:
    """Test that a device known offline that sends a heartbeat is logged as back online."""
    beat = Received("eldercare/v1/H0001/BU-H0001/heartbeat", heartbeat_payload(NOW_MS))
    plan = plan_batch([beat], registry(device("BU-H0001", online=False)), NOW, LIMITS)
    (row,) = plan.events
    assert row["kind"] == "device_online"
    assert row["data"] == {"reason": "heartbeat"}
    assert plan.devices["BU-H0001"].online


def test_last_will_takes_an_online_device_offline_once() -> None:
    """Test that an offline status logs device_offline once, even if delivered twice."""
    will = Received("eldercare/v1/H0001/BU-H0001/status", status_payload(False), retained=True)
    plan = plan_batch([will, will], registry(), NOW, LIMITS)
    assert [r["kind"] for r in plan.events] == ["device_offline"]
    assert plan.events[0]["data"] == {"reason": "last_will"}
    assert not plan.devices["BU-H0001"].online


def test_stale_retained_online_status_is_ignored() -> None:
    """Test that a retained 'online' older than what we know does not revive a device."""
    known = device("BU-H0001", online=False, last_seen=NOW - timedelta(minutes=5))
    old = Received(
        "eldercare/v1/H0001/BU-H0001/status",
        status_payload(True, NOW_MS - 3_600_000),
        retained=True,
    )
    plan = plan_batch([old], registry(known), NOW, LIMITS)
    assert plan.events == []
    assert not plan.devices["BU-H0001"].online
    fresh = Received("eldercare/v1/H0001/BU-H0001/status", status_payload(True, NOW_MS))
    plan = plan_batch([fresh], registry(known), NOW, LIMITS)
    assert [r["kind"] for r in plan.events] == ["device_online"]


def test_silence_is_counted_only_while_listening() -> None:
    """Test that silent devices are found only after we have listened for the whole window."""
    quiet = device(last_seen=NOW - timedelta(minutes=10))
    recent = device("BU-H0001", last_seen=NOW - timedelta(seconds=10))
    window = timedelta(minutes=3)
    assert find_silent(registry(quiet, recent), NOW, window, NOW - timedelta(minutes=1)) == []
    silent = find_silent(registry(quiet, recent), NOW, window, NOW - timedelta(minutes=30))
    assert [d.serial for d in silent] == ["CB-H0001"]
    plan = plan_silent_offline(silent, NOW, window)
    assert plan.events[0]["kind"] == "device_offline"
    assert plan.events[0]["data"]["reason"] == "heartbeats_missed"
    assert not plan.devices["CB-H0001"].online


def test_device_rows_are_rewritten_only_on_change_or_every_few_seconds() -> None:
    """Test that a busy device's row is not rewritten by every message: only when its
    state changes or its stored last-seen time is LIVENESS_WRITE_INTERVAL old."""
    fresh = replace(device("BU-H0001"), stored_seen_at=NOW - timedelta(seconds=2))
    beat = Received("eldercare/v1/H0001/BU-H0001/heartbeat", heartbeat_payload(NOW_MS, battery=80))
    quiet = plan_batch([beat], registry(fresh), NOW, LIMITS)
    assert quiet.device_rows == []
    assert quiet.devices["BU-H0001"].last_seen_at == NOW  # memory has the exact time

    stale = replace(fresh, stored_seen_at=NOW - LIVENESS_WRITE_INTERVAL)
    (row,) = plan_batch([beat], registry(stale), NOW, LIMITS).device_rows
    assert row.stored_seen_at == NOW

    weaker = Received(
        "eldercare/v1/H0001/BU-H0001/heartbeat", heartbeat_payload(NOW_MS, battery=79)
    )
    (row,) = plan_batch([weaker], registry(fresh), NOW, LIMITS).device_rows
    assert row.battery_pct == 79


def test_a_device_state_evolves_as_dataclasses_replace_would() -> None:
    """Test that ingest's quick copy of a device's state is replace()'s, leaves the
    original as it was, and refuses a field the state does not have."""
    before = device(online=False)
    changes = {"online": True, "last_seen_at": NOW, "battery_pct": 12, "rssi_dbm": -70}
    after = evolve(before, **changes)
    assert after == replace(before, **changes)
    assert after is not before and before == device(online=False)
    with pytest.raises(TypeError):
        evolve(before, last_seen=NOW)
