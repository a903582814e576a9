"""Protocol v1: topics and payload parsing (pure, no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import (
    Channel,
    DeadLetterReason,
    DeviceEventMessage,
    HeartbeatMessage,
    PayloadError,
    StatusMessage,
    event_payload,
    heartbeat_payload,
    parse_message,
    parse_topic,
    status_payload,
    topic_for,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PREFIX = "eldercare"


def parse(topic: str, payload: bytes) -> object:
    return parse_message(PREFIX, topic, payload, received_at=NOW)


def test_topic_round_trip() -> None:
    """Test that a topic built by topic_for parses back to the same parts."""
    topic = topic_for(PREFIX, "H0001", "CB-H0001", Channel.EVENT)
    assert topic == "eldercare/v1/H0001/CB-H0001/event"
    parsed = parse_topic(PREFIX, topic)
    assert (parsed.household, parsed.serial, parsed.channel) == ("H0001", "CB-H0001", Channel.EVENT)


@pytest.mark.parametrize(
    "topic",
    [
        "eldercare/v1/H0001/CB-H0001",
        "eldercare/v1/H0001/CB-H0001/event/extra",
        "other/v1/H0001/CB-H0001/event",
        "eldercare/v2/H0001/CB-H0001/event",
        "eldercare/v1/H 1/CB-H0001/event",
        "eldercare/v1/H0001//event",
        "eldercare/v1/H0001/CB-H0001/unknown",
        "eldercare/v1/H0001/CB-H0001/command",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    """Test that every malformed topic is refused as bad_topic."""
    with pytest.raises(PayloadError) as caught:
        parse(topic, event_payload("e1", EventKind.EMERGENCY_PRESS, NOW_MS))
    assert caught.value.reason is DeadLetterReason.BAD_TOPIC
    assert caught.value.topic == topic


def test_event_is_parsed() -> None:
    """Test that a well-formed event becomes a DeviceEventMessage with its fields."""
    message = parse(
        "eldercare/v1/H0001/CB-H0001/event",
        event_payload("boot1-7", EventKind.FALL_DETECTED, NOW_MS, battery=55, data={"g": 3.1}),
    )
    assert isinstance(message, DeviceEventMessage)
    assert message.event_id == "boot1-7"
    assert message.kind is EventKind.FALL_DETECTED
    assert message.device_time == NOW
    assert message.battery == 55
    assert message.data == {"g": 3.1}


def test_heartbeat_and_status_are_parsed() -> None:
    """Test that heartbeats and status messages parse, including a last will with no time."""
    beat = parse("eldercare/v1/H0001/BU-H0001/heartbeat", heartbeat_payload(NOW_MS, battery=90))
    assert isinstance(beat, HeartbeatMessage)
    assert beat.battery == 90
    will = parse("eldercare/v1/H0001/BU-H0001/status", status_payload(False))
    assert isinstance(will, StatusMessage)
    assert will.online is False
    assert will.device_time is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", DeadLetterReason.MALFORMED_JSON),
        (b"\xff\xfe\x00", DeadLetterReason.MALFORMED_JSON),
        (b"[1, 2]", DeadLetterReason.SCHEMA),
        (b'"press"', DeadLetterReason.SCHEMA),
        (json.dumps({"v": 1, "id": "a", "ts": NOW_MS}).encode(), DeadLetterReason.SCHEMA),
        (
            json.dumps({"v": 2, "id": "a", "ts": NOW_MS, "kind": "cancel"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a", "ts": str(NOW_MS), "kind": "cancel"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a b", "ts": NOW_MS, "kind": "cancel"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a", "ts": NOW_MS, "kind": "explode"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a", "ts": NOW_MS, "kind": "cancel", "x": 1}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps(
                {"v": 1, "id": "a", "ts": NOW_MS, "kind": "cancel", "battery": 101}
            ).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a", "ts": 10**20, "kind": "cancel"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps({"v": 1, "id": "a", "ts": -1, "kind": "cancel"}).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            json.dumps(
                {"v": 1, "id": "srv:device_offline:1", "ts": NOW_MS, "kind": "cancel"}
            ).encode(),
            DeadLetterReason.SCHEMA,
        ),
        (
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"x":NaN}}' % NOW_MS,
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"x":-Infinity}}' % NOW_MS,
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"x":1e999}}' % NOW_MS,
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            b"\xef\xbb\xbf" + event_payload("a", EventKind.CANCEL, NOW_MS),
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            event_payload("a", EventKind.CANCEL, NOW_MS).decode().encode("utf-16"),
            DeadLetterReason.MALFORMED_JSON,
        ),
        (
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"x":"\\u0000"}}' % NOW_MS,
            DeadLetterReason.SCHEMA,
        ),
        (
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"\\udc00":1}}' % NOW_MS,
            DeadLetterReason.SCHEMA,
        ),
        (
            event_payload("a", EventKind.CANCEL, NOW_MS, data={"x": [[[[[[[[[1]]]]]]]]]}),
            DeadLetterReason.SCHEMA,
        ),
        (b'{"v":1,"ts":%d,"rssi":-50,"battery":"\\u0000"}' % NOW_MS, DeadLetterReason.SCHEMA),
        (b"{" + b" " * 9000 + b"}", DeadLetterReason.TOO_LARGE),
    ],
)
def test_bad_payloads_are_refused_with_their_reason(
    payload: bytes, reason: DeadLetterReason
) -> None:
    """Test that each kind of bad payload raises PayloadError with the matching reason."""
    with pytest.raises(PayloadError) as caught:
        parse("eldercare/v1/H0001/CB-H0001/event", payload)
    assert caught.value.reason is reason
    assert caught.value.detail


def test_small_clock_skew_is_tolerated() -> None:
    """Test that a device clock a little ahead is accepted as right."""
    message = parse(
        "eldercare/v1/H0001/CB-H0001/event",
        event_payload("a", EventKind.CANCEL, NOW_MS + 60_000),
    )
    assert isinstance(message, DeviceEventMessage)
    assert message.device_time - NOW == timedelta(seconds=60)
    assert message.clock_skew is None


@pytest.mark.parametrize(
    ("ts_ms", "skew"),
    [
        (NOW_MS + 3_600_000, timedelta(hours=1)),  # an hour ahead
        (NOW_MS - 10 * 86_400_000, timedelta(days=-10)),  # ten days behind
        (978_307_200_000, datetime(2001, 1, 1, tzinfo=UTC) - NOW),  # a clock reset to 2001
        (0, datetime(1970, 1, 1, tzinfo=UTC) - NOW),  # a clock that never started
        (NOW_MS - 86_400_000 + 1, None),  # a day late: delivery, not the clock
        (NOW_MS + 300_000, None),  # five minutes ahead: within the tolerance
    ],
)
def test_a_wrong_clock_is_heard_and_its_skew_kept(ts_ms: int, skew: timedelta | None) -> None:
    """Test that an event or heartbeat stamped by a wrong clock is accepted, not refused,
    with its skew against the server; a right clock (or a late delivery) has none."""
    event = parse(
        "eldercare/v1/H0001/CB-H0001/event",
        event_payload("a", EventKind.EMERGENCY_PRESS, ts_ms),
    )
    heartbeat = parse("eldercare/v1/H0001/CB-H0001/heartbeat", heartbeat_payload(ts_ms))
    assert isinstance(event, DeviceEventMessage) and isinstance(heartbeat, HeartbeatMessage)
    assert event.clock_skew == skew
    assert heartbeat.clock_skew == skew


def test_a_status_from_a_wrong_clock_has_no_time() -> None:
    """Test that a status whose time is off counts as having none (it cannot be compared
    with what the server heard), while a right one keeps its time."""
    wrong = parse("eldercare/v1/H0001/CB-H0001/status", status_payload(True, 0))
    right = parse("eldercare/v1/H0001/CB-H0001/status", status_payload(True, NOW_MS))
    assert isinstance(wrong, StatusMessage) and isinstance(right, StatusMessage)
    assert wrong.device_time is None
    assert right.device_time == NOW


def test_what_cannot_be_stored_is_named_in_the_detail() -> None:
    """Test that a refusal says where the trouble is, escaped so the detail itself holds
    no control character."""
    with pytest.raises(PayloadError) as caught:
        parse(
            "eldercare/v1/H0001/CB-H0001/event",
            b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"a\\n":{"b":"\\u0000"}}}' % NOW_MS,
        )
    assert caught.value.detail == "data.a\\n.b: text holds U+0000 (NUL), which cannot be stored"


def _nested_event(levels: int, *, filler: bytes = b"") -> bytes:
    """An event whose data is ``levels`` objects deep (the payload itself one more), with
    ``filler`` among the fields of its data."""
    data = b'{%s"a":' % filler + b'{"a":' * (levels - 2) + b"{}" + b"}" * (levels - 1)
    return b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":%s}' % (NOW_MS, data)


def test_an_events_data_may_nest_eight_levels_and_no_more() -> None:
    """Test the depth limit at its edge, with brackets in strings counting for nothing,
    and with an escape in the payload (which has the payload looked at more closely)."""
    event = "eldercare/v1/H0001/CB-H0001/event"
    for filler in (b"", b'"x":"\\u00e9",'):
        deepest = parse(event, _nested_event(8, filler=filler))
        assert isinstance(deepest, DeviceEventMessage)
        with pytest.raises(PayloadError) as caught:
            parse(event, _nested_event(9, filler=filler))
        assert caught.value.reason is DeadLetterReason.SCHEMA
        assert caught.value.detail.endswith("nested more than 8 levels deep")
    brackets = b'{"v":1,"id":"a","ts":%d,"kind":"cancel","data":{"s":"%s"}}' % (NOW_MS, b"[{" * 20)
    assert isinstance(parse(event, brackets), DeviceEventMessage)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_near_valid = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", True]),
        "id": st.text(max_size=70) | st.just("ok-1"),
        "ts": st.integers(min_value=-5, max_value=2**63) | st.just(NOW_MS),
        "kind": st.sampled_from([*(k.value for k in EventKind), "other", ""]),
    },
    optional={"battery": _json, "data": _json, "rssi": _json, "online": _json, "extra": _json},
)
_topics = st.sampled_from(
    [
        "eldercare/v1/H0001/CB-H0001/event",
        "eldercare/v1/H0001/CB-H0001/heartbeat",
        "eldercare/v1/H0001/CB-H0001/status",
    ]
) | st.text(max_size=60)


@settings(max_examples=400, deadline=None)
@given(
    topic=_topics,
    payload=st.binary(max_size=300)
    | _json.map(lambda v: json.dumps(v).encode())
    | _near_valid.map(lambda v: json.dumps(v).encode()),
)
def test_parser_returns_a_message_or_its_own_error(topic: str, payload: bytes) -> None:
    """Test that for any topic and bytes the parser returns a message or raises PayloadError,
    never anything else."""
    try:
        message = parse(topic, payload)
    except PayloadError as error:
        assert isinstance(error.reason, DeadLetterReason)
        return
    assert isinstance(message, (DeviceEventMessage, HeartbeatMessage, StatusMessage))
