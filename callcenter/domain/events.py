"""Device events: their kinds, the call each raises or is a note on, and which of a
household's open calls an event belongs to.

The kinds are the protocol's words (docs/protocol.md): ingest reads them off the wire,
the desk applies what ``route`` decides, the simulator sends them. Routing is pure: an
event and the household's open calls in, what to do with it out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callcenter.domain.call_types import ALARM_TYPES, CallType
from callcenter.domain.calls import DeviceCancel, DeviceNote, Press


class EventKind(enum.StrEnum):
    """Events a device reports on its event channel."""

    EMERGENCY_PRESS = "emergency_press"
    SERVICE_REQUEST = "service_request"
    CANCEL = "cancel"
    FALL_DETECTED = "fall_detected"
    LOW_BATTERY = "low_battery"
    # A door sensor: the household's door opened (the carer let in, or the resident out).
    DOOR_OPENED = "door_opened"


class ServerEventKind(enum.StrEnum):
    """Events the server itself writes into a device's log."""

    DEVICE_ONLINE = "device_online"
    DEVICE_OFFLINE = "device_offline"
    # The device's clock is off by more than ingest allows (one a day at most per device).
    DEVICE_CLOCK_WRONG = "device_clock_wrong"
    # The device sent an event id it had used before for something else.
    EVENT_ID_REUSED = "event_id_reused"


# Every kind an event in a device's log may have.
LoggedKind = EventKind | ServerEventKind

# Event kind -> the call it raises.
RAISED_BY: Mapping[LoggedKind, CallType] = {
    EventKind.EMERGENCY_PRESS: CallType.EMERGENCY,
    EventKind.FALL_DETECTED: CallType.FALL,
    EventKind.SERVICE_REQUEST: CallType.SERVICE_REQUEST,
    ServerEventKind.DEVICE_OFFLINE: CallType.DEVICE_OFFLINE,
    EventKind.LOW_BATTERY: CallType.LOW_BATTERY,
    ServerEventKind.DEVICE_CLOCK_WRONG: CallType.DEVICE_CLOCK,
}

# Event kind -> the open calls it cancels (the resident's "never mind").
CANCELS: Mapping[LoggedKind, frozenset[CallType]] = {
    EventKind.CANCEL: ALARM_TYPES,
}

# Event kind -> (the open calls it is a note on, the note's name in their history).
NOTED_ON: Mapping[LoggedKind, tuple[frozenset[CallType], str]] = {
    ServerEventKind.DEVICE_ONLINE: (frozenset({CallType.DEVICE_OFFLINE}), "device_back_online"),
    # The device sent an event id it had used before for something else (docs/ingest.md).
    ServerEventKind.EVENT_ID_REUSED: (ALARM_TYPES, "event_id_reused"),
    # While help is on its way the operator sees the door open; at other times it is
    # nobody's business.
    EventKind.DOOR_OPENED: (ALARM_TYPES, "door_opened"),
}


def logged_kind(text: str) -> LoggedKind | None:
    """The kind a logged event's ``kind`` column names, or None for one we do not know."""
    for kinds in (EventKind, ServerEventKind):
        try:
            return kinds(text)
        except ValueError:
            continue
    return None


def raises_alarm(kind: str) -> bool:
    """Whether a device event of ``kind`` raises a call a person asked for (an alarm)."""
    known = logged_kind(kind)
    return known is not None and RAISED_BY.get(known) in ALARM_TYPES


@dataclass(frozen=True)
class OpenNew:
    """The event raises a call and none of its kind is open: open one."""

    call_type: CallType


@dataclass(frozen=True)
class ApplyTo:
    """The event belongs to the open call ``call_id``: apply ``command`` to it."""

    call_id: int
    command: Press | DeviceCancel | DeviceNote


@dataclass(frozen=True)
class Ignore:
    """Nothing to do; ``why`` says so for the log (``warn``: it should not happen)."""

    why: str
    warn: bool = False


Route = OpenNew | ApplyTo | Ignore


def route(
    kind: str,
    device: str,
    data: Mapping[str, Any],
    open_calls: Sequence[tuple[int, CallType]],
) -> Route:
    """Where one device event goes, given the household's open calls (most urgent
    first): a press on a matching open call, a new call, a cancel or note on the open
    call it concerns, or nothing. Presses of any alarm attach to the open alarm call."""
    known = logged_kind(kind)
    raised = RAISED_BY.get(known) if known is not None else None
    if raised is not None:
        family = ALARM_TYPES if raised in ALARM_TYPES else frozenset({raised})
        target = _first_of(open_calls, family)
        if target is None:
            return OpenNew(raised)
        return ApplyTo(target, Press(raised, device))
    cancelled = CANCELS.get(known) if known is not None else None
    if cancelled is not None:
        target = _first_of(open_calls, cancelled)
        if target is None:
            return Ignore(f"{kind} from {device} with no open call; nothing to do")
        return ApplyTo(target, DeviceCancel(device))
    noted = NOTED_ON.get(known) if known is not None else None
    if noted is not None:
        on, what = noted
        target = _first_of(open_calls, on)
        if target is None:
            return Ignore(f"{kind} from {device} with no open call to note it on")
        return ApplyTo(target, DeviceNote(device, what, dict(data)))
    return Ignore(f"event kind {kind!r} raises no call", warn=True)


def _first_of(open_calls: Sequence[tuple[int, CallType]], types: frozenset[CallType]) -> int | None:
    return next((call_id for call_id, call_type in open_calls if call_type in types), None)
