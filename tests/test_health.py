"""/healthz against the whole server: every part of an alarm's way reported with its age;
stuck only when it has work waiting and gets nowhere (idle is healthy); 503 naming the
part once it has been stuck longer than health.stuck_after_s, and 200 again once it
works. Each stuck part is made so for real: a write transaction held open from another
connection, a database refusing every insert, the broker stopped, Twilio failing every
send; and the pure judgement of each part is checked on its own in tables."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import make_url

from callcenter.app import running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.engine.outbox import ChannelProgress, SendError
from callcenter.health import (
    PARTS,
    HealthReport,
    PartHealth,
    Queue,
    Stored,
    follower_health,
    ingest_health,
    outbox_health,
    sms_health,
    timers_health,
    with_adoption,
)
from callcenter.ingest.adopt import Failing
from callcenter.ingest.service import IngestStats
from tests.api_support import Api, Reply
from tests.desk_support import desk_config
from tests.fixtures.database import asyncpg_dsn
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually, publish_events, reported_count

STUCK_AFTER = timedelta(seconds=30)  # the default of health.stuck_after_s


# --- making parts stuck for real ---------------------------------------------------


@contextlib.asynccontextmanager
async def holding_a_write(url: str, rows: str) -> AsyncIterator[None]:
    """A write transaction held open from another connection for the block: on SQLite it
    holds the database's write lock (every writer waits for it), on PostgreSQL the rows
    that the query ``rows`` selects, FOR UPDATE."""
    if url.startswith("sqlite"):
        blocker = sqlite3.connect(
            make_url(url).database or "", isolation_level=None, check_same_thread=False
        )
        # On a thread: the server's own writers run on this event loop.
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        try:
            yield
        finally:
            await asyncio.to_thread(blocker.execute, "ROLLBACK")
            blocker.close()
        return
    connection = await asyncpg.connect(asyncpg_dsn(url))
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(f"{rows} FOR UPDATE")
        yield
    finally:
        await transaction.rollback()
        await connection.close()


async def _run_sql(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):

        def run() -> None:
            connection = sqlite3.connect(make_url(url).database or "", isolation_level=None)
            try:
                for statement in statements:
                    connection.execute(statement)
            finally:
                connection.close()

        await asyncio.to_thread(run)
        return
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def refusing_every_insert(url: str, tables: tuple[str, ...]) -> AsyncIterator[None]:
    """For the block, the database refuses every row inserted into ``tables``, as a full
    disk would: a trigger that fails each time it runs (on PostgreSQL it raises
    disk_full; on SQLite it calls a function that does not exist, which SQLite reports
    as an operational error, the kind a full disk gives too)."""
    if url.startswith("sqlite"):
        made = [
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            "BEGIN SELECT refuse_every_row(); END"
            for table in tables
        ]
        dropped = [f"DROP TRIGGER refuse_{table}" for table in tables]
    else:
        made = [
            "CREATE FUNCTION refuse_every_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$",
            *(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_every_row()"
                for table in tables
            ),
        ]
        dropped = [
            *(f"DROP TRIGGER refuse_{table} ON {table}" for table in tables),
            "DROP FUNCTION refuse_every_row()",
        ]
    await _run_sql(url, *made)
    try:
        yield
    finally:
        await _run_sql(url, *dropped)


# --- reading health ------------------------------------------------------------------


async def health(api: Api) -> Reply:
    return await api.get("/healthz", who=None)


async def healthy(api: Api) -> Reply:
    """The report once the server is healthy (it may take a moment after starting)."""

    async def ok() -> bool:
        return (await health(api)).status == 200

    await eventually(ok, what="/healthz to answer 200")
    return await health(api)


async def stuck(api: Api, part: str, within_s: float = 20.0) -> dict[str, Any]:
    """The report once ``part`` is stuck (still 200: not yet for long enough)."""
    found: list[dict[str, Any]] = []

    async def seen() -> bool:
        reply = await health(api)
        found[:] = [reply.body]
        return reply.body["parts"][part]["stuck_since"] is not None

    await eventually(seen, within_s=within_s, what=f"{part} reported stuck")
    return found[0]


async def failing_once_too_long(api: Api) -> Reply:
    """The report after the server's clock has moved on past health.stuck_after_s."""
    api.clock.advance(STUCK_AFTER + timedelta(seconds=1))
    return await health(api)


# --- the whole server --------------------------------------------------------------


async def test_a_quiet_night_is_healthy(api: Api) -> None:
    """Test that a server with nothing to do stays healthy however long nothing happens:
    every part is reported, none stuck, and the age of the last progress grows."""
    reply = await healthy(api)
    assert list(reply.body["parts"]) == list(PARTS)
    assert reply.body["stuck_after_s"] == STUCK_AFTER.total_seconds()
    # One call in the evening, closed; then nothing all night.
    call_id = await api.press("H0001")
    reply = await api.post(f"/api/calls/{call_id}/cancel", {"reason": "duplicate"}, who="zhao.min")
    assert reply.status == 200, reply.body

    async def all_sent() -> bool:
        return (await health(api)).body["parts"]["outbox"]["pending"] == 0

    await eventually(all_sent, what="the call's texts and command sent")
    api.clock.advance(timedelta(hours=8))

    reply = await health(api)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "ok" and reply.body["failing"] == []
    parts = reply.body["parts"]
    for name, part in parts.items():
        assert part["ok"] and part["stuck_since"] is None, (name, part)
    assert parts["ingest"]["connected"] is True
    assert parts["ingest"]["age_s"] >= 8 * 3600  # since the press was stored
    assert parts["follower"]["lag"] == 0
    assert parts["database"]["latency_ms"] >= 0


async def test_a_flood_of_requests_shares_looks_at_the_database(api: Api) -> None:
    """Test that /healthz, which needs no sign-in, costs the database a look or two however
    many ask at once: 100 requests at the same moment all get an answer (as of a moment
    after they asked) from a handful of looks."""
    await healthy(api)
    looks: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.strip() == "SELECT 1":
            looks.append(statement)

    engine = api.server.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        replies = await asyncio.gather(*(health(api) for _ in range(100)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [reply.status for reply in replies] == [200] * 100
    assert 1 <= len(looks) <= 5, f"{len(looks)} looks for 100 requests"


@pytest.mark.parametrize("hold_up", ["write_held_open", "every_insert_refused"])
async def test_ingest_held_up_by_the_database_fails_health_and_recovers(
    api: Api, seeded_database_url: str, hold_up: str
) -> None:
    """Test that a press ingest cannot store (a write transaction held open from another
    connection; the database refusing every insert) makes ingest stuck at once, that
    /healthz still answers 200 until it has been so for health.stuck_after_s, then 503
    naming ingest alone, with the messages held, and 200 again once the database takes
    the press, which then opens its call."""
    await healthy(api)
    holding = (
        holding_a_write(seeded_database_url, "SELECT id FROM devices WHERE serial = 'CB-H0001'")
        if hold_up == "write_held_open"
        else refusing_every_insert(seeded_database_url, ("device_events", "dead_letters"))
    )
    async with holding:
        await publish_events(
            api.broker.host, api.broker.port, api.prefix, [("H0001", "CB-H0001", "held-1")]
        )
        body = await stuck(api, "ingest")
        assert body["status"] == "ok", body
        ingest = body["parts"]["ingest"]
        assert ingest["ok"] and ingest["holding"] == 1
        assert "1 message(s) taken in and not yet stored" in ingest["detail"]

        reply = await failing_once_too_long(api)
        assert reply.status == 503, reply.body
        assert reply.body["failing"] == ["ingest"]
        ingest = reply.body["parts"]["ingest"]
        assert not ingest["ok"] and ingest["age_s"] > STUCK_AFTER.total_seconds()
        if hold_up == "every_insert_refused":

            async def said() -> bool:
                detail = (await health(api)).body["parts"]["ingest"]["detail"]
                return "the database refuses or does not answer" in detail

            await eventually(said, what="the database's refusal in the detail")

    await healthy(api)
    assert await reported_count(seeded_database_url) == 1


async def test_a_database_refusing_every_event_fails_health(
    api: Api, seeded_database_url: str
) -> None:
    """Test that a database refusing every event for what it holds (an integrity error,
    which ingest takes as the row's fault and keeps as a store_rejected dead letter, so
    that one device cannot hold back the others) is not healthy: once the events of two
    devices are refused with none stored between, ingest is stuck, and 503 after
    health.stuck_after_s; storing an event again clears it."""
    await healthy(api)
    if seeded_database_url.startswith("sqlite"):
        made = [
            "CREATE TRIGGER refuse_events BEFORE INSERT ON device_events "
            "BEGIN SELECT RAISE(ABORT, 'refused by a broken constraint'); END"
        ]
        dropped = ["DROP TRIGGER refuse_events"]
    else:
        made = [
            "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'refused by a broken constraint' "
            "USING ERRCODE = 'check_violation'; END $$",
            "CREATE TRIGGER refuse_events BEFORE INSERT ON device_events "
            "FOR EACH ROW EXECUTE FUNCTION refuse_events()",
        ]
        dropped = ["DROP TRIGGER refuse_events ON device_events", "DROP FUNCTION refuse_events()"]
    await _run_sql(seeded_database_url, *made)
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0001", "CB-H0001", "refused-1")]
    )

    async def rejected(devices: int) -> bool:
        stats = api.server.ingest.stats
        return stats.dead_letters["store_rejected"] >= devices

    await eventually(lambda: rejected(1), what="the first press refused")
    assert (await health(api)).body["parts"]["ingest"]["stuck_since"] is None
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0002", "CB-H0002", "refused-2")]
    )
    await eventually(lambda: rejected(2), what="the second press refused")
    body = await stuck(api, "ingest")
    assert "refuses the events of 2 devices" in body["parts"]["ingest"]["detail"]
    reply = await failing_once_too_long(api)
    assert reply.status == 503 and reply.body["failing"] == ["ingest"], reply.body

    await _run_sql(seeded_database_url, *dropped)
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0003", "CB-H0003", "stored-3")]
    )
    await healthy(api)


async def test_timers_held_up_fail_health_and_recover(api: Api, seeded_database_url: str) -> None:
    """Test that an escalation deadline that cannot fire (its call held by a write
    transaction open elsewhere) makes the timers stuck from its due time, fails /healthz
    naming timers once that is longer than health.stuck_after_s, and that the deadline
    fires and health recovers once the transaction ends."""
    call_id = await api.press("H0001")
    await healthy(api)
    async with holding_a_write(seeded_database_url, f"SELECT id FROM calls WHERE id = {call_id}"):
        api.clock.advance(timedelta(seconds=31))  # "unacknowledged" falls due at 30 s
        body = await stuck(api, "timers")
        assert body["parts"]["timers"]["stuck_since"] == "2026-11-23T02:00:30.000Z"
        reply = await failing_once_too_long(api)
        assert reply.status == 503, reply.body
        assert reply.body["failing"] == ["timers"]
    await healthy(api)

    async def fired() -> bool:
        return api.server.scheduler.fired >= 1

    await eventually(fired, what="the deadline fired")


async def test_the_broker_stopped_fails_ingest_and_commands_that_wait(
    api: Api, broker: EmbeddedBroker
) -> None:
    """Test that with the broker stopped, ingest is stuck at once (no alarm can come in)
    while the command link, with nothing to send, is down but not stuck; that a command
    decided then makes it stuck; that both fail /healthz after health.stuck_after_s; and
    that both recover when the broker is back (the command then reaches the broker)."""
    call_id = await api.press("H0006")
    await healthy(api)
    await broker.stop()
    body = await stuck(api, "ingest")
    commands = body["parts"]["device_commands"]
    assert "not subscribed to the broker" in body["parts"]["ingest"]["detail"]

    async def link_down() -> bool:
        part = (await health(api)).body["parts"]["device_commands"]
        return part["connected"] is False

    await eventually(link_down, what="the command link noticed")
    commands = (await health(api)).body["parts"]["device_commands"]
    assert commands["stuck_since"] is None and commands["pending"] == 0, commands

    reply = await api.post(
        f"/api/calls/{call_id}/cancel", {"reason": "entered_in_error"}, who="zhao.min"
    )
    assert reply.status == 200, reply.body
    body = await stuck(api, "device_commands")
    assert body["parts"]["device_commands"]["pending"] == 1

    reply = await failing_once_too_long(api)
    assert reply.status == 503, reply.body
    # The outbox may say so too: the command is a row due and not taken up while the link
    # is down (the relay puts it off between tries, so it shows there only some of the
    # time); the SMS and the rest of the server are not failing.
    failing = reply.body["failing"]
    assert failing[0] == "ingest" and "device_commands" in failing, failing
    assert set(failing) <= {"ingest", "device_commands", "outbox"}, failing
    stuck_for = {
        sample.labels["part"]: sample.value
        for family in text_string_to_metric_families((await api.get("/metrics", who=None)).body)
        if family.name == "callcenter_stuck_seconds"
        for sample in family.samples
    }
    assert set(stuck_for) == set(PARTS)
    assert stuck_for["ingest"] > STUCK_AFTER.total_seconds() and stuck_for["sms"] == 0

    await broker.start()
    await healthy(api)

    async def sent() -> bool:
        commands = (await health(api)).body["parts"]["device_commands"]
        return commands["pending"] == 0 and commands["connected"] is True

    await eventually(sent, what="the waiting command sent")


async def test_texts_that_all_fail_fail_health_and_recover(api: Api) -> None:
    """Test that when Twilio fails every send, SMS is stuck from the first failure, fails
    /healthz after health.stuck_after_s (naming sms alone: the outbox itself keeps going
    through its rows), and recovers with the first text Twilio takes again."""
    twilio = fake_of(api.server)
    twilio.fail_next(status=500, code=20500, times=1000)
    await api.press("H0001")  # the nearest carer is paged at once
    body = await stuck(api, "sms")
    sms = body["parts"]["sms"]
    assert body["status"] == "ok" and sms["pending"] >= 1
    assert "Twilio had a fault" in sms["detail"]

    reply = await failing_once_too_long(api)
    assert reply.status == 503, reply.body
    assert reply.body["failing"] == ["sms"]

    twilio.stop_failing()
    api.clock.advance(timedelta(minutes=5))  # the next attempt falls due
    await healthy(api)
    assert (await health(api)).body["parts"]["sms"]["answered_at"] is not None


async def test_ingest_in_its_own_process_reports_being_held_up(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with ingest in a child process (ingest.own_process) what holds it up
    crosses the pipe: a write held open makes /healthz fail naming ingest once it lasts
    longer than health.stuck_after_s (1 s here, on the real clock), and it recovers."""
    base = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    config = base.model_copy(
        update={
            "ingest": base.ingest.model_copy(update={"own_process": True}),
            "health": base.health.model_copy(update={"stuck_after_s": 1.0}),
        }
    )
    async with running_server(config, SystemClock()) as server:
        await asyncio.wait_for(server.ingest.connected.wait(), 30)
        assert (await server.health.check()).ok
        async with holding_a_write(
            seeded_database_url, "SELECT id FROM devices WHERE serial = 'CB-H0002'"
        ):
            await publish_events(
                broker.host, broker.port, topic_prefix, [("H0002", "CB-H0002", "held-1")]
            )
            failing: list[str] = []

            async def named() -> bool:
                report = await server.health.check()
                failing[:] = [part.name for part in report.failing]
                return bool(failing)

            await eventually(named, what="health to fail")
            assert failing == ["ingest"]
            report = await server.health.check()
            assert report.part("ingest").facts["holding"] == 1

        async def recovered() -> bool:
            return (await server.health.check()).ok

        await eventually(recovered, what="health to recover")


# --- each part's judgement, on its own ---------------------------------------------

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _stored(**values: Any) -> Stored:
    base: dict[str, Any] = {
        "latency_ms": 1.0,
        "latest_event": 10,
        "cursor": 10,
        "cursor_moved_at": _at(0),
        "waiting": 0,
        "first_waiting_at": None,
        "next_timer": None,
        "outbox": {},
    }
    return Stored(**(base | values))


@pytest.mark.parametrize(
    ("stats", "stuck_since"),
    [
        (IngestStats(committed_at=_at(0)), None),  # idle: nothing in hand
        (IngestStats(link_down_since=_at(5)), _at(5)),  # no alarm can come in
        (IngestStats(holding=3, holding_since=_at(7)), _at(7)),
        (IngestStats(database_failing_since=_at(9), database_error="locked"), _at(9)),
        # One device's events refused (deleted while it spoke): that device's fault...
        (IngestStats(rejecting_since=_at(11), rejecting_devices=1), None),
        # ...two devices' and none stored between: the database refuses everything.
        (IngestStats(rejecting_since=_at(11), rejecting_devices=2), _at(11)),
        (  # the earliest cause counts
            IngestStats(link_down_since=_at(20), holding=1, holding_since=_at(4)),
            _at(4),
        ),
    ],
)
def test_ingest_is_stuck_only_with_messages_in_hand_or_no_subscription(
    stats: IngestStats, stuck_since: datetime | None
) -> None:
    """Test that ingest is stuck from the earliest of: no subscription, messages held,
    the database refusing; and never merely for being idle."""
    part = ingest_health(stats, brokers="the broker b:1883")
    assert part.stuck_since == stuck_since


@pytest.mark.parametrize(
    ("stats", "failing_since", "stuck_since"),
    [
        (IngestStats(), None, None),
        (IngestStats(), _at(30), _at(30)),
        # Already stuck earlier for its own reason: the earlier time stands.
        (IngestStats(link_down_since=_at(10)), _at(30), _at(10)),
        (IngestStats(link_down_since=_at(40)), _at(30), _at(30)),
    ],
)
def test_ingest_is_stuck_too_while_a_gone_servers_session_cannot_be_taken_in(
    stats: IngestStats, failing_since: datetime | None, stuck_since: datetime | None
) -> None:
    """Test that the sessions of gone servers this server takes in (ingest/adopt.py)
    are in ingest's facts, and that one that could not be taken in makes ingest stuck
    from when it first failed (its server's share of the alarms waits in the broker),
    saying whose it is and when it is tried again."""
    failing = (
        []
        if failing_since is None
        else [Failing("callcenter:b:7:ab12cd", "desk-b", failing_since, "refused", 30.0)]
    )
    part = with_adoption(ingest_health(stats, brokers="the broker b:1883"), failing, 2)
    assert part.stuck_since == stuck_since
    assert part.facts["gone_sessions_taken_in"] == 2
    assert len(part.facts["gone_sessions_failing"]) == len(failing)
    assert ("callcenter:b:7:ab12cd" in part.detail) == bool(failing)
    assert part.facts["events_stored"] == 0  # ingest's own facts kept


@pytest.mark.parametrize(
    ("stored", "stuck_since"),
    [
        (_stored(), None),  # nothing waiting, however long ago the cursor moved
        # Waiting since 02:00:50, the cursor stood still since 02:00:00: stuck since 50.
        (_stored(latest_event=12, waiting=2, first_waiting_at=_at(50)), _at(50)),
        # A backlog being worked through: the cursor moved at 70, after the event came.
        (
            _stored(latest_event=99, waiting=89, first_waiting_at=_at(50), cursor_moved_at=_at(70)),
            _at(70),
        ),
        # An event stored late, below the cursor (another server paused before its
        # commit), still waits: what counts is what is unapplied, not where the cursor is.
        (_stored(latest_event=10, waiting=1, first_waiting_at=_at(50)), _at(50)),
    ],
)
def test_the_follower_is_stuck_only_while_events_wait_and_its_cursor_stands_still(
    stored: Stored, stuck_since: datetime | None
) -> None:
    """Test that the desk following the log is stuck from the later of: the first waiting
    event's arrival, the cursor's last move."""
    assert follower_health(stored).stuck_since == stuck_since


def test_timers_and_outbox_are_stuck_from_what_is_due() -> None:
    """Test that a deadline still to come and rows still to come are not stuck, and that
    overdue ones are stuck from their due time (only the relay's channels count)."""
    now = _at(100)
    assert timers_health(_stored(next_timer=_at(101)), now, last_cycle_at=None).stuck_since is None
    assert timers_health(_stored(next_timer=_at(40)), now, last_cycle_at=None).stuck_since == _at(
        40
    )
    later = {"sms": Queue(2, _at(0), _at(160))}
    due = {"sms": Queue(2, _at(0), _at(60)), "fax": Queue(1, _at(0), _at(10))}
    assert (
        outbox_health(_stored(outbox=later), now, channels=["sms"], drained_at=None).stuck_since
        is None
    )
    assert outbox_health(
        _stored(outbox=due), now, channels=["sms"], drained_at=None
    ).stuck_since == _at(60)


def test_texts_are_stuck_only_while_they_fail_and_wait() -> None:
    """Test that failing sends with texts waiting are stuck from the first failure; that a
    refusal for good (a bad number) means Twilio answers; and that failures with nothing
    waiting (or not known to wait) are judged as they should be."""
    progress = ChannelProgress()
    progress.note(_at(1), SendError("Twilio had a fault"))
    progress.note(_at(6), SendError("Twilio had a fault"))
    waiting = Queue(1, _at(0), _at(20))
    assert sms_health(progress, waiting, known=True).stuck_since == _at(1)
    assert sms_health(progress, None, known=True).stuck_since is None  # nothing waits
    assert sms_health(progress, None, known=False).stuck_since == _at(1)  # may wait
    progress.note(_at(9), SendError("not a valid number", permanent=True))
    assert progress.failing_since is None and progress.answered_at == _at(9)
    assert sms_health(progress, waiting, known=True).stuck_since is None


def test_a_part_fails_only_once_stuck_for_longer_than_the_set_time() -> None:
    """Test that a report fails only the parts stuck for longer than stuck_after."""
    parts = (
        PartHealth("ingest", _at(0), None, ""),
        PartHealth("sms", _at(75), None, ""),
        PartHealth("timers", None, _at(0), ""),
    )
    report = HealthReport(_at(100), STUCK_AFTER, parts)
    assert [part.name for part in report.failing] == ["ingest"]
    assert not report.ok
    assert report.part("timers").age_s(report.at) == 100.0
