"""Device protocol v1: topic layout and payloads (docs/protocol.md is the reference).

Topics are ``{prefix}/v1/{household}/{serial}/{channel}``. A later protocol version
lives beside this one under ``{prefix}/v2/...`` so old and new devices can coexist.

Parsing is a pure function: bytes in, a ``DeviceMessage`` out, or a ``PayloadError``
that says why, so the message can be dead-lettered with its reason.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from callcenter.domain.events import EventKind, ServerEventKind
from callcenter.domain.register import is_topic_name
from callcenter.text import one_line

VERSION = 1
VERSION_LEVEL = f"v{VERSION}"

_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Event ids the server gives the events it writes into a device's log.
SERVER_ID_PREFIX = "srv:"
# Device clocks in milliseconds since the epoch; anything past 2100 is nonsense.
_MAX_TS_MS = 4_102_444_800_000
# How deep an event's ``data`` may nest: kind-specific details are a few flat fields, and
# a database refuses (PostgreSQL) or slows on far deeper documents.
MAX_DATA_DEPTH = 8
# Text no database may be asked to keep: NUL (PostgreSQL refuses it in text and JSON) and
# lone UTF-16 surrogates (not Unicode at all; only a \u escape makes one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Channel(enum.StrEnum):
    """The last topic level: what kind of message travels on it."""

    EVENT = "event"  # device -> server, QoS 1: things that happened
    HEARTBEAT = "heartbeat"  # device -> server, QoS 0: liveness and battery
    STATUS = "status"  # device -> server, QoS 1 retained, also the last will
    COMMAND = "command"  # server -> device, QoS 1: prompts such as "help is on the way"


# By name, looked up without the enum's call (this runs for every message).
_CHANNELS = {channel.value: channel for channel in Channel}


def server_event_id(kind: ServerEventKind, suffix: str) -> str:
    """The id of an event the server writes into a device's log."""
    return f"{SERVER_ID_PREFIX}{kind.value}:{suffix}"


class DeadLetterReason(enum.StrEnum):
    """Why a message was not accepted; stored with every dead letter."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    SCHEMA = "schema"
    UNKNOWN_DEVICE = "unknown_device"
    HOUSEHOLD_MISMATCH = "household_mismatch"
    STORE_REJECTED = "store_rejected"
    # Stored, but the call engine could not act on it (a bug): kept for a person to see.
    ENGINE_FAILED = "engine_failed"


def printable(text: str, limit: int = 2000) -> str:
    """``text`` cut at ``limit`` and escaped as log lines are (``text.one_line``: control
    characters, NUL, lone surrogates), so that what a device sent can be shown, logged
    and stored as it is."""
    return one_line(text[:limit])


class PayloadError(Exception):
    """A message that cannot be accepted; carries the topic, reason and a readable detail."""

    def __init__(self, *, topic: str, reason: DeadLetterReason, detail: str) -> None:
        self.topic = topic
        self.reason = reason
        self.detail = printable(detail)
        super().__init__(f"{reason.value}: {self.detail} (topic {printable(topic)!r})")


@dataclass(frozen=True)
class Topic:
    """Where a message came from, as the topic names it."""

    household: str
    serial: str
    channel: Channel


def is_device_name(text: str) -> bool:
    """Whether ``text`` may be a household code or serial (a topic level of a device's);
    the register's rule (domain/register.py), so what it accepts, ingest reads."""
    return is_topic_name(text)


def topic_for(prefix: str, household: str, serial: str, channel: Channel) -> str:
    """The v1 topic for one device's channel."""
    return f"{prefix}/{VERSION_LEVEL}/{household}/{serial}/{channel.value}"


def subscription(prefix: str) -> str:
    """One filter for every v1 message, well-formed or not, so nothing escapes ingest."""
    return f"{prefix}/{VERSION_LEVEL}/#"


def is_command_topic(prefix: str, topic: str) -> bool:
    """True for a v1 command topic: the server's own prompts to devices, which ingest's
    catch-all subscription hears again (MQTT 3.1.1 has no "not my own messages")."""
    parts = topic.split("/")
    return (
        len(parts) == 5
        and parts[0] == prefix
        and parts[1] == VERSION_LEVEL
        and parts[4] == Channel.COMMAND.value
    )


def parse_topic(prefix: str, topic: str) -> Topic:
    """Split a v1 topic; raise PayloadError(bad_topic) for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != prefix or parts[1] != VERSION_LEVEL:
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.BAD_TOPIC,
            detail=f"expected {prefix}/{VERSION_LEVEL}/<household>/<serial>/<channel>",
        )
    _, _, household, serial, channel = parts
    if not is_device_name(household) or not is_device_name(serial):
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.BAD_TOPIC,
            detail="household and serial must be 1-64 of A-Z a-z 0-9 _ -",
        )
    kind = _CHANNELS.get(channel)
    if kind is None:
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.BAD_TOPIC,
            detail=f"unknown channel {channel!r}; expected one of "
            + ", ".join(c.value for c in Channel),
        )
    if kind is Channel.COMMAND:
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.BAD_TOPIC,
            detail="the command channel is for the server to publish, not devices",
        )
    return Topic(household, serial, kind)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]
    ts: StrictInt = Field(ge=0, le=_MAX_TS_MS)


class _EventPayload(_Payload):
    id: str = Field(pattern=_EVENT_ID.pattern)
    # A device may send only its own kinds (the server writes ServerEventKind itself).
    kind: EventKind = Field(strict=False)
    battery: StrictInt | None = Field(default=None, ge=0, le=100)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _not_the_servers(cls, value: str) -> str:
        # The server writes its own events into a device's log under these ids; a device
        # taking one could keep the server's event (its going offline, say) out.
        if value.startswith(SERVER_ID_PREFIX):
            raise ValueError(f"ids starting with {SERVER_ID_PREFIX!r} are the server's own")
        return value


class _HeartbeatPayload(_Payload):
    battery: StrictInt | None = Field(default=None, ge=0, le=100)
    rssi: StrictInt | None = Field(default=None, ge=-200, le=0)


class _StatusPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]
    online: StrictBool
    # A last will is written at connect time, so its timestamp may be old or absent.
    ts: StrictInt | None = Field(default=None, ge=0, le=_MAX_TS_MS)


_MODELS: dict[Channel, type[BaseModel]] = {
    Channel.EVENT: _EventPayload,
    Channel.HEARTBEAT: _HeartbeatPayload,
    Channel.STATUS: _StatusPayload,
}


@dataclass(frozen=True)
class DeviceEventMessage:
    """Something that happened at a device, to be written to the event log."""

    topic: Topic
    event_id: str
    kind: EventKind
    device_time: datetime
    battery: int | None
    data: dict[str, Any] = field(default_factory=dict)
    # Device time minus server time, when the device's clock is off by more than ingest
    # allows (``clock_verdict``); None when it is right.
    clock_skew: timedelta | None = None


@dataclass(frozen=True)
class HeartbeatMessage:
    """A device saying it is alive."""

    topic: Topic
    device_time: datetime
    battery: int | None
    rssi: int | None
    clock_skew: timedelta | None = None


@dataclass(frozen=True)
class StatusMessage:
    """A device's retained online/offline state; offline is usually its last will."""

    topic: Topic
    online: bool
    # None when absent, or when the device's clock is off (it cannot be compared then).
    device_time: datetime | None


DeviceMessage = DeviceEventMessage | HeartbeatMessage | StatusMessage


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _schema_detail(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(payload)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class _NotJsonError(ValueError):
    """A token Python's json reads but JSON does not have (NaN, Infinity, overflow)."""


def _refuse_constant(name: str) -> float:
    raise _NotJsonError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJsonError(f"{text} is out of range for a number")
    return value


# What json.loads(text, parse_constant=..., parse_float=...) would make for each call.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def _decode(topic: str, payload: bytes) -> Any:
    """The JSON document in ``payload``: UTF-8 without a byte order mark, numbers finite."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.MALFORMED_JSON,
            detail=f"not UTF-8: byte {exc.start} is {payload[exc.start : exc.start + 1]!r}",
        ) from None
    if text.startswith("\ufeff"):
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.MALFORMED_JSON,
            detail="starts with a byte order mark (BOM); payloads are UTF-8 without one",
        )
    try:
        return _JSON.decode(text)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and _NotJsonError are both ValueErrors.
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.MALFORMED_JSON,
            detail=f"not JSON: {str(exc)[:200]}",
        ) from None


def _unstorable(value: Any, where: str, depth: int) -> str | None:
    """Why ``value`` (found at ``where``) cannot be kept as it is, or None."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        what = "U+0000 (NUL)" if found.group() == "\x00" else "a lone surrogate"
        return f"{where or '(payload)'}: text holds {what}, which cannot be stored"
    if isinstance(value, dict | list):
        if depth > MAX_DATA_DEPTH:
            return f"{where}: nested more than {MAX_DATA_DEPTH} levels deep"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _UNSTORABLE.search(key):
                return _unstorable(key, f"{where or '(payload)'} field name", depth)
            why = _unstorable(item, here, depth + 1)
            if why is not None:
                return why
    return None


def clock_verdict(
    device_time: datetime, received_at: datetime, *, ahead: timedelta, behind: timedelta
) -> timedelta | None:
    """How far the device's clock is off, when it is more than ``ahead`` ahead of the
    server or more than ``behind`` behind it; None when it is right.

    An event may arrive late (a device keeps it until the broker takes it), so only a time
    further back than any delivery should take counts as a wrong clock."""
    skew = device_time - received_at
    return skew if skew > ahead or -skew > behind else None


def parse_message(
    prefix: str,
    topic: str,
    payload: bytes,
    *,
    received_at: datetime,
    max_payload_bytes: int = 8192,
    max_clock_skew: timedelta = timedelta(minutes=5),
    max_clock_lag: timedelta = timedelta(days=1),
) -> DeviceMessage:
    """Turn one MQTT message into a DeviceMessage, or raise PayloadError saying why not.

    A device whose clock is wrong is still heard: its message comes back with
    ``clock_skew`` set (docs/protocol.md, "Timestamps")."""
    where = parse_topic(prefix, topic)
    if len(payload) > max_payload_bytes:
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.TOO_LARGE,
            detail=f"{len(payload)} bytes, limit {max_payload_bytes}",
        )
    document = _decode(topic, payload)
    if not isinstance(document, dict):
        raise PayloadError(
            topic=topic,
            reason=DeadLetterReason.SCHEMA,
            detail=f"payload must be a JSON object, got {type(document).__name__}",
        )
    # Only an escape can put NUL or a surrogate in a string (JSON refuses a raw NUL,
    # UTF-8 a raw surrogate), and only an event's data may nest, as deep as it has
    # brackets: most messages skip the walk.
    if b"\\u" in payload or (
        where.channel is Channel.EVENT
        and payload.count(b"{") + payload.count(b"[") > MAX_DATA_DEPTH + 1
    ):
        why = _unstorable(document, "", 0)
        if why is not None:
            raise PayloadError(topic=topic, reason=DeadLetterReason.SCHEMA, detail=why)
    try:
        body = _MODELS[where.channel].model_validate(document)
    except ValidationError as exc:
        raise PayloadError(
            topic=topic, reason=DeadLetterReason.SCHEMA, detail=_schema_detail(exc)
        ) from None

    device_time = _from_ms(body.ts) if body.ts is not None else None  # type: ignore[attr-defined]
    skew = (
        clock_verdict(device_time, received_at, ahead=max_clock_skew, behind=max_clock_lag)
        if device_time is not None
        else None
    )
    if isinstance(body, _EventPayload):
        assert device_time is not None
        return DeviceEventMessage(
            topic=where,
            event_id=body.id,
            kind=EventKind(body.kind),
            device_time=device_time,
            battery=body.battery,
            data=body.data,
            clock_skew=skew,
        )
    if isinstance(body, _HeartbeatPayload):
        assert device_time is not None
        return HeartbeatMessage(
            topic=where,
            device_time=device_time,
            battery=body.battery,
            rssi=body.rssi,
            clock_skew=skew,
        )
    assert isinstance(body, _StatusPayload)
    return StatusMessage(
        topic=where, online=body.online, device_time=device_time if skew is None else None
    )


def event_payload(
    event_id: str,
    kind: EventKind,
    ts_ms: int,
    *,
    battery: int | None = None,
    data: dict[str, Any] | None = None,
) -> bytes:
    """Encode an event the way a v1 device does."""
    body: dict[str, Any] = {"v": VERSION, "id": event_id, "ts": ts_ms, "kind": kind.value}
    if battery is not None:
        body["battery"] = battery
    if data:
        body["data"] = data
    return json.dumps(body, separators=(",", ":")).encode()


def heartbeat_payload(ts_ms: int, *, battery: int | None = None, rssi: int | None = None) -> bytes:
    """Encode a v1 heartbeat."""
    body: dict[str, Any] = {"v": VERSION, "ts": ts_ms}
    if battery is not None:
        body["battery"] = battery
    if rssi is not None:
        body["rssi"] = rssi
    return json.dumps(body, separators=(",", ":")).encode()


def status_payload(online: bool, ts_ms: int | None = None) -> bytes:
    """Encode a v1 status (online, or the offline last will)."""
    body: dict[str, Any] = {"v": VERSION, "online": online}
    if ts_ms is not None:
        body["ts"] = ts_ms
    return json.dumps(body, separators=(",", ":")).encode()
