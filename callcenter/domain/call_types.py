"""The kinds of call, how urgent each is, and which device events raise them."""

from __future__ import annotations

import enum


class CallType(enum.StrEnum):
    """Why a call was raised."""

    EMERGENCY = "emergency"
    FALL = "fall"
    SERVICE_REQUEST = "service_request"  # pager request: help wanted, not an emergency
    DEVICE_OFFLINE = "device_offline"
    LOW_BATTERY = "low_battery"
    # The device's clock is wrong: its alarms still count, but its times cannot be trusted.
    DEVICE_CLOCK = "device_clock"


# 1 is the most urgent; the board sorts by this, then by presses, then by age.
PRIORITY: dict[CallType, int] = {
    CallType.EMERGENCY: 1,
    CallType.FALL: 1,
    CallType.SERVICE_REQUEST: 2,
    CallType.DEVICE_OFFLINE: 3,
    CallType.LOW_BATTERY: 3,
    CallType.DEVICE_CLOCK: 3,
}

# Calls a person raised; repeated presses of any of these attach to one open call.
ALARM_TYPES = frozenset({CallType.EMERGENCY, CallType.FALL, CallType.SERVICE_REQUEST})

# Device event kind (docs/protocol.md) -> the call it raises.
RAISED_BY: dict[str, CallType] = {
    "emergency_press": CallType.EMERGENCY,
    "fall_detected": CallType.FALL,
    "service_request": CallType.SERVICE_REQUEST,
    "device_offline": CallType.DEVICE_OFFLINE,
    "low_battery": CallType.LOW_BATTERY,
    "device_clock_wrong": CallType.DEVICE_CLOCK,
}


# Device event kind -> (the open calls it is a note on, the note's name in their history).
NOTED_ON: dict[str, tuple[frozenset[CallType], str]] = {
    "device_online": (frozenset({CallType.DEVICE_OFFLINE}), "device_back_online"),
    # The device sent an event id it had used before for something else (docs/ingest.md).
    "event_id_reused": (ALARM_TYPES, "event_id_reused"),
}


def raises_alarm(kind: str) -> bool:
    """Whether a device event of ``kind`` raises a call a person asked for (an alarm)."""
    return RAISED_BY.get(kind) in ALARM_TYPES
