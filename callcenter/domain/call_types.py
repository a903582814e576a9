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


# 1 is the most urgent; the board sorts by this, then by presses, then by age.
PRIORITY: dict[CallType, int] = {
    CallType.EMERGENCY: 1,
    CallType.FALL: 1,
    CallType.SERVICE_REQUEST: 2,
    CallType.DEVICE_OFFLINE: 3,
    CallType.LOW_BATTERY: 3,
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
}
