"""The kinds of call and how urgent each is (which device events raise them:
domain/events.py)."""

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
    # Someone rang the centre's number (docs/voice.md, "Inbound calls"): a person waits on
    # the line, so it is as urgent as an alarm; from a number not in the register it
    # belongs to no household.
    VOICE = "voice"


# 1 is the most urgent; the board sorts by this, then by presses, then by age.
PRIORITY: dict[CallType, int] = {
    CallType.EMERGENCY: 1,
    CallType.FALL: 1,
    CallType.SERVICE_REQUEST: 2,
    CallType.DEVICE_OFFLINE: 3,
    CallType.LOW_BATTERY: 3,
    CallType.DEVICE_CLOCK: 3,
    CallType.VOICE: 1,
}

# Calls a person raised; repeated presses of any of these attach to one open call.
ALARM_TYPES = frozenset({CallType.EMERGENCY, CallType.FALL, CallType.SERVICE_REQUEST})

# Calls that cannot end without an operator having owned them: a carer's "done" on one
# nobody at the desk ever took leaves it open, awaiting an operator's review.
REVIEWED_TYPES = frozenset({CallType.EMERGENCY, CallType.FALL})
