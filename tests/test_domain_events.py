"""Routing a device event to one of the household's open calls, or a new one."""

from __future__ import annotations

import pytest

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import DeviceCancel, DeviceNote, Press
from callcenter.domain.events import (
    ApplyTo,
    EventKind,
    Ignore,
    OpenNew,
    Route,
    ServerEventKind,
    raises_alarm,
    route,
)

_ALARM_OPEN = [(7, CallType.EMERGENCY)]
_OFFLINE_OPEN = [(9, CallType.DEVICE_OFFLINE), (7, CallType.FALL)]
_BACK = DeviceNote("CB-1", "device_back_online", {"x": 1})
_REUSED = DeviceNote("CB-1", "event_id_reused", {"x": 1})
_DOOR = DeviceNote("CB-1", "door_opened", {"x": 1})


@pytest.mark.parametrize(
    ("kind", "open_calls", "expected"),
    [
        ("emergency_press", [], OpenNew(CallType.EMERGENCY)),
        ("emergency_press", _ALARM_OPEN, ApplyTo(7, Press(CallType.EMERGENCY, "CB-1"))),
        ("fall_detected", _ALARM_OPEN, ApplyTo(7, Press(CallType.FALL, "CB-1"))),
        ("service_request", _OFFLINE_OPEN, ApplyTo(7, Press(CallType.SERVICE_REQUEST, "CB-1"))),
        ("low_battery", _ALARM_OPEN, OpenNew(CallType.LOW_BATTERY)),
        ("device_offline", _OFFLINE_OPEN, ApplyTo(9, Press(CallType.DEVICE_OFFLINE, "CB-1"))),
        ("device_clock_wrong", [], OpenNew(CallType.DEVICE_CLOCK)),
        ("cancel", _OFFLINE_OPEN, ApplyTo(7, DeviceCancel("CB-1"))),
        (
            "cancel",
            [(9, CallType.DEVICE_OFFLINE)],
            Ignore("cancel from CB-1 with no open call; nothing to do"),
        ),
        ("device_online", _OFFLINE_OPEN, ApplyTo(9, _BACK)),
        ("event_id_reused", _OFFLINE_OPEN, ApplyTo(7, _REUSED)),
        ("device_online", [], Ignore("device_online from CB-1 with no open call to note it on")),
        ("door_opened", _OFFLINE_OPEN, ApplyTo(7, _DOOR)),
        ("door_opened", [], Ignore("door_opened from CB-1 with no open call to note it on")),
        ("door_bell", _ALARM_OPEN, Ignore("event kind 'door_bell' raises no call", warn=True)),
    ],
)
def test_route(kind: str, open_calls: list[tuple[int, CallType]], expected: Route) -> None:
    """Test that an event goes to the open call it concerns, a new call, or nowhere."""
    assert route(kind, "CB-1", {"x": 1}, open_calls) == expected


def test_every_kind_a_device_sends_is_routed() -> None:
    """Test that no kind of the protocol, the device's or the server's, raises no call."""
    for kind in [*EventKind, *ServerEventKind]:
        where = route(kind.value, "CB-1", {}, _OFFLINE_OPEN)
        assert not (isinstance(where, Ignore) and where.warn), kind


def test_alarms_are_the_presses_people_make() -> None:
    """Test that presses, falls and service requests raise alarms and nothing else does."""
    alarms = {kind.value for kind in [*EventKind, *ServerEventKind] if raises_alarm(kind.value)}
    assert alarms == {"emergency_press", "fall_detected", "service_request"}
    assert not raises_alarm("door_bell")
