"""The device payload parser under a fuzzing budget (slow marker; a fixed count in CI).

Payloads are valid ones spliced with the tokens that once reached the database (NaN,
Infinity, NUL and surrogate escapes, a BOM, deep nesting, huge numbers), together with
arbitrary bytes. Whatever comes in, the parser returns a message a database can keep,
or refuses it with a reason and a detail that can itself be kept.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter.ingest.protocol import (
    DeadLetterReason,
    DeviceEventMessage,
    HeartbeatMessage,
    PayloadError,
    StatusMessage,
    parse_message,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PREFIX = "eldercare"
EXAMPLES = 6000
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

_VALID = [
    b'{"v":1,"id":"e1","ts":%d,"kind":"emergency_press","battery":80}' % NOW_MS,
    b'{"v":1,"id":"e2","ts":%d,"kind":"fall_detected","data":{"confidence":0.9,"axes":[1,2]}}'
    % NOW_MS,
    b'{"v":1,"ts":%d,"battery":55,"rssi":-60}' % NOW_MS,
    b'{"v":1,"online":true,"ts":%d}' % NOW_MS,
]
_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1" * 5000,
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'{"\\u0000":1}',
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xff\xfe",
    b"[" * 40 + b"]" * 40,
    b'{"a":' * 12 + b"1" + b"}" * 12,
    b'"\\n\\r\\t\\u001b[31m"',
    b"null",
    b'"srv:device_offline:1"',
    b"9223372036854775808",
    b"-0",
    b"1.5e308",
]
_TOPICS = [
    "eldercare/v1/H0001/CB-H0001/event",
    "eldercare/v1/H0001/CB-H0001/heartbeat",
    "eldercare/v1/H0001/CB-H0001/status",
    "eldercare/v1/H0001/CB-H0001/command",
    "eldercare/v1/H\x00/CB-H0001/event",
    "eldercare/v1/H0001/CB-H0001/event\n",
]


@st.composite
def _spliced(draw: st.DrawFn) -> bytes:
    """A valid payload with tokens put in at drawn places, or bytes cut out."""
    payload = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(payload)))
        if draw(st.booleans()):
            payload[at:at] = draw(st.sampled_from(_TOKENS))
        else:
            payload[at : at + draw(st.integers(1, 6))] = b""
    return bytes(payload)


@st.composite
def _replaced(draw: st.DrawFn) -> bytes:
    """A valid payload with one of its values (by position in the text) replaced."""
    payload = draw(st.sampled_from(_VALID))
    values = [m.span() for m in re.finditer(rb"(?<=:)[^,{}\[\]]+", payload)]
    start, end = draw(st.sampled_from(values))
    return payload[:start] + draw(st.sampled_from(_TOKENS)) + payload[end:]


def _storable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return _UNSTORABLE_TEXT.search(value) is None
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    topic=st.sampled_from(_TOPICS) | st.text(max_size=40),
    payload=_spliced() | _replaced() | st.binary(max_size=200),
)
def test_the_parser_gives_only_storable_messages_or_storable_refusals(
    topic: str, payload: bytes
) -> None:
    """Test that every message the parser accepts can be stored as JSON by either
    database (finite numbers, no NUL, no lone surrogate), and every refusal carries one
    of the reasons and a detail with no control character in it."""
    try:
        message = parse_message(PREFIX, topic, payload, received_at=NOW)
    except PayloadError as error:
        assert isinstance(error.reason, DeadLetterReason)
        assert error.detail and _CONTROL.search(error.detail) is None
        return
    assert isinstance(message, DeviceEventMessage | HeartbeatMessage | StatusMessage)
    if isinstance(message, DeviceEventMessage):
        assert _storable(message.data) and _storable(message.event_id)
        json.dumps(message.data, allow_nan=False)
        assert not message.event_id.startswith("srv:")
