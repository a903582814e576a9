"""What a device sends cannot stop intake: payloads the database would refuse, on both
databases, by hand and generated (issue 17 A)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import make_url

from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.domain.events import EventKind
from callcenter.ingest.batch import BatchPlan, Received
from callcenter.ingest.protocol import Channel, DeadLetterReason, event_payload
from callcenter.ingest.protocol import topic_for as v1_topic
from callcenter.ingest.service import Ingest
from callcenter.ingest.writer import EventWriter
from callcenter.store.db import create_engine, refused_by_database
from callcenter.store.models import (
    DeadLetter,
    Device,
    DeviceEvent,
    RegistryVersion,
    registry_version,
)
from tests.ingest_support import eventually, ingest_config, running_ingest

PREFIX = "eldercare"
# One refused message may cost a few quick retries; an outage-style wait would not fit.
WITHIN_S = 10.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _event_topic(household: str, serial: str) -> str:
    return v1_topic(PREFIX, household, serial, Channel.EVENT)


def _press(event_id: str) -> Received:
    """A valid emergency press from household H0002's call button."""
    return Received(
        _event_topic("H0002", "CB-H0002"),
        event_payload(event_id, EventKind.EMERGENCY_PRESS, _now_ms()),
    )


# Each of these was taken by the parser and then refused by PostgreSQL (invalid json,
# NUL in text), which ingest took for an outage and retried for ever.
_ODD = {
    "nan": b'{"v":1,"id":"p1","ts":%d,"kind":"fall_detected","data":{"confidence":NaN}}',
    "infinity": b'{"v":1,"id":"p2","ts":%d,"kind":"fall_detected","data":{"g":Infinity}}',
    "minus_infinity": b'{"v":1,"id":"p3","ts":%d,"kind":"fall_detected","data":{"g":-Infinity}}',
    "overflow": b'{"v":1,"id":"p4","ts":%d,"kind":"fall_detected","data":{"g":1e400}}',
    "nul_in_value": b'{"v":1,"id":"p5","ts":%d,"kind":"fall_detected","data":{"n":"a\\u0000b"}}',
    "nul_in_key": b'{"v":1,"id":"p6","ts":%d,"kind":"fall_detected","data":{"a\\u0000":1}}',
    "nul_in_unknown_field": b'{"v":1,"id":"p7","ts":%d,"kind":"cancel","x\\u0000y":1}',
    "lone_surrogate": b'{"v":1,"id":"p8","ts":%d,"kind":"fall_detected","data":{"s":"\\ud800"}}',
    "bom": b'\xef\xbb\xbf{"v":1,"id":"p9","ts":%d,"kind":"emergency_press"}',
}


@contextlib.asynccontextmanager
async def _ingest(database_url: str) -> AsyncIterator[Ingest]:
    """Ingest with no broker, handed messages directly (``Ingest.take``)."""
    config = ingest_config(host="127.0.0.1", port=1, prefix=PREFIX)
    engine = create_engine(database_url)
    try:
        yield Ingest(config, engine, SystemClock(), brokers=config.broker.addresses)
    finally:
        await engine.dispose()


async def _stored(database_url: str, event_id: str) -> bool:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                select(DeviceEvent.id)
                .join(Device, Device.id == DeviceEvent.device_id)
                .where(Device.serial == "CB-H0002", DeviceEvent.event_id == event_id)
            )
            return found is not None
    finally:
        await engine.dispose()


async def _letters(database_url: str) -> list[tuple[str, str]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(DeadLetter.reason, DeadLetter.detail).order_by(DeadLetter.id)
            )
            return [(reason, detail) for reason, detail in rows]
    finally:
        await engine.dispose()


async def test_odd_payloads_are_dead_letters_and_the_next_press_is_stored(
    seeded_database_url: str,
) -> None:
    """Test that NaN, Infinity, NUL, lone surrogates and a BOM are each refused by the
    parser with a reason a person can read, and a valid press from another household
    after each is stored at once, on both databases."""
    async with _ingest(seeded_database_url) as ingest:
        for name, template in _ODD.items():
            odd = Received(_event_topic("H0001", "CB-H0001"), template % _now_ms())
            async with asyncio.timeout(WITHIN_S):
                await ingest.take([odd, _press(f"after-{name}")])
            assert await _stored(seeded_database_url, f"after-{name}"), name
    letters = await _letters(seeded_database_url)
    assert len(letters) == len(_ODD)
    for (reason, detail), name in zip(letters, _ODD, strict=True):
        assert reason in {DeadLetterReason.MALFORMED_JSON, DeadLetterReason.SCHEMA}, name
        assert "\x00" not in detail, name
    details = dict(zip(_ODD, (detail for _, detail in letters), strict=True))
    assert "NaN" in details["nan"]
    assert "Infinity" in details["infinity"]
    assert "U+0000" in details["nul_in_value"] and "data.n" in details["nul_in_value"]
    assert "byte order mark" in details["bom"]


async def test_odd_payload_over_the_broker_does_not_hold_back_other_households(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test the attack as it was made: a NaN fall on one household's event topic, then
    presses from others; the presses are stored within seconds, on both databases."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    async with running_ingest(config, seeded_database_url) as ingest:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(
                v1_topic(topic_prefix, "H0001", "CB-H0001", Channel.EVENT),
                b'{"v":1,"id":"p1","ts":%d,"kind":"fall_detected","data":{"confidence":NaN}}'
                % _now_ms(),
                qos=1,
            )
            for n in range(3, 8):
                await client.publish(
                    v1_topic(topic_prefix, f"H{n:04d}", f"CB-H{n:04d}", Channel.EVENT),
                    event_payload(f"press-{n}", EventKind.EMERGENCY_PRESS, _now_ms()),
                    qos=1,
                )

        async def presses_stored() -> bool:
            return ingest.stats.events_stored >= 5

        await eventually(presses_stored, within_s=WITHIN_S, what="the five presses stored")
        assert ingest.stats.store_retries == 0
        assert ingest.stats.dead_letters[DeadLetterReason.MALFORMED_JSON] == 1


# --- generated payloads ------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "a\x00", "\ud800", "\udfff", "\u2028", "\ufeff", "é"])
)
_documents = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def _encoded(document: object) -> bytes:
    # Python's json writes NaN and Infinity and keeps lone surrogates as \\u escapes: what
    # a careless device firmware might send.
    return json.dumps(document).encode()


_events = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "id": st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
        "ts": st.integers(min_value=0, max_value=4_102_444_800_000),
        "kind": st.sampled_from([kind.value for kind in EventKind]),
    },
    optional={"data": st.dictionaries(st.text(max_size=6), _documents, max_size=4)},
)
_payloads = (
    _events.map(_encoded)
    | _documents.map(_encoded)
    | st.binary(max_size=60)
    | st.dictionaries(st.text(max_size=6), _documents, max_size=5).map(
        lambda extra: _encoded({"v": 1, "id": "x1", "ts": 0, "kind": "cancel", **extra})
    )
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=_payloads, channel=st.sampled_from(list(Channel)))
async def test_after_any_payload_a_following_valid_press_is_stored(
    seeded_database_url: str, payload: bytes, channel: Channel
) -> None:
    """Test that whatever a device of one household sends, a valid press from another
    household right behind it (in the same batch) is stored, on both databases."""
    marker = f"gen-{time.monotonic_ns()}"
    async with _ingest(seeded_database_url) as ingest:
        odd = Received(v1_topic(PREFIX, "H0001", "CB-H0001", channel), payload)
        async with asyncio.timeout(WITHIN_S):
            await ingest.take([odd, _press(marker)])
        assert ingest.stats.store_retries == 0
    assert await _stored(seeded_database_url, marker)


# --- what the database refuses -----------------------------------------------------


async def test_a_row_the_database_refuses_is_a_store_rejected_dead_letter(
    seeded_database_url: str,
) -> None:
    """Test that a message the database refuses while it is otherwise healthy (here: its
    device was deleted after ingest read the registry, in the second before ingest asks
    whether the register changed: the registry's version is put back to stand for it)
    becomes a ``store_rejected`` dead letter with the database's words, is not retried as
    an outage, and the press behind it from another household is stored, on both
    databases."""
    async with _ingest(seeded_database_url) as ingest:
        await ingest.load_registry()
        engine = create_engine(seeded_database_url)
        async with engine.begin() as connection:
            version = await registry_version(connection)
            await connection.execute(delete(Device).where(Device.serial == "CB-H0001"))
            await connection.execute(
                update(RegistryVersion).where(RegistryVersion.id == 1).values(version=version)
            )
        await engine.dispose()
        gone = Received(
            _event_topic("H0001", "CB-H0001"),
            event_payload("gone-1", EventKind.EMERGENCY_PRESS, _now_ms()),
        )
        async with asyncio.timeout(WITHIN_S):
            await ingest.take([gone, _press("behind-the-refused")])
        assert ingest.stats.store_retries == 0
        assert ingest.stats.dead_letters[DeadLetterReason.STORE_REJECTED] == 1
    assert await _stored(seeded_database_url, "behind-the-refused")
    [(reason, detail)] = await _letters(seeded_database_url)
    assert reason == DeadLetterReason.STORE_REJECTED
    assert detail.startswith("the database refused it: ")
    assert "foreign key" in detail.lower()


async def _error_of(work: Callable[[], Awaitable[object]]) -> BaseException:
    try:
        await work()
    except Exception as error:
        return error
    raise AssertionError("expected the database to fail")


async def test_the_database_refusing_a_row_is_told_from_the_database_failing(
    database_url: str, database_backend: str
) -> None:
    """Test that ``refused_by_database`` says "refused" for real errors of a row the
    database will never take (non-finite JSON, a missing device, invalid JSON text) and
    "failing" for a database that cannot be reached (PostgreSQL) or is locked by another
    writer (SQLite)."""
    engine = create_engine(database_url)
    writer = EventWriter(engine)
    now = datetime.now(UTC)

    def plan_of(device_id: int, data: dict[str, Any]) -> BatchPlan:
        row = {
            "device_id": device_id,
            "household_id": 1,
            "event_id": "e1",
            "kind": "fall_detected",
            "device_time": now,
            "received_at": now,
            "data": data,
            "clock_skew_s": None,
        }
        return BatchPlan(events=[row])

    async def invalid_json_text() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT CAST('{\"a\": NaN}' AS json)"))

    try:
        refused = [
            await _error_of(lambda: writer.write(plan_of(1, {"g": math.nan}))),
            await _error_of(lambda: writer.write(plan_of(999_999, {}))),
        ]
        if database_backend == "postgresql":
            refused.append(await _error_of(invalid_json_text))
    finally:
        await engine.dispose()
    for error in refused:
        assert refused_by_database(error), repr(error)

    if database_backend == "postgresql":
        # Nothing listens on port 1.
        gone = create_engine(make_url(database_url).set(port=1).render_as_string(False))

        async def fail() -> None:
            async with gone.connect() as connection:
                await connection.execute(text("SELECT 1"))

        try:
            failing = await _error_of(fail)
        finally:
            await gone.dispose()
    else:
        # Another connection holds the write lock, and this one will not wait for it.
        blocker = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        locked = create_engine(database_url)

        async def fail() -> None:
            async with locked.connect() as connection:
                await connection.exec_driver_sql("PRAGMA busy_timeout = 0")
                await connection.execute(text("DELETE FROM dead_letters"))

        try:
            failing = await _error_of(fail)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
            await locked.dispose()
    assert not refused_by_database(failing), repr(failing)


async def test_a_connection_killed_mid_write_is_an_outage_not_a_refusal(
    seeded_database_url: str, database_backend: str
) -> None:
    """Test that when PostgreSQL ends ingest's connection in the middle of a write (as a
    server restart or an administrator does), ingest retries the press and stores it:
    no store_rejected dead letter, for a fault that is not the message's. (SQLite's
    counterpart, a locked database, is test_ingest.py's outage test.)"""
    if database_backend != "postgresql":
        pytest.skip("SQLite has no server connection to end; see test_ingest.py's outage")
    engine = create_engine(seeded_database_url)
    async with engine.begin() as connection:
        # The first insert into the log ends its own connection; later ones go through.
        for statement in (
            "CREATE SEQUENCE kills",
            "CREATE FUNCTION end_my_connection() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF nextval('kills') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
            "END IF; RETURN NEW; END $$",
            "CREATE TRIGGER end_connection BEFORE INSERT ON device_events "
            "FOR EACH ROW EXECUTE FUNCTION end_my_connection()",
        ):
            await connection.execute(text(statement))
    await engine.dispose()
    async with _ingest(seeded_database_url) as ingest:
        async with asyncio.timeout(WITHIN_S):
            await ingest.take([_press("through-a-restart")])
        assert ingest.stats.store_retries >= 1
        assert not ingest.stats.dead_letters
    assert await _stored(seeded_database_url, "through-a-restart")
    assert await _letters(seeded_database_url) == []
