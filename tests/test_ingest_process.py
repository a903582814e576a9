"""Ingest in a process of its own (``ingest.own_process``): presses still become calls
at once, a child that dies is started again, and no child outlives its server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from callcenter.app import Running, running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.domain.calls import Actor, ActorKind, Cancel, CancelReason
from callcenter.domain.events import EventKind
from callcenter.ingest.process import (
    IngestProcess,
    report_line,
    stats_document,
    stats_from,
    stored_report,
)
from callcenter.ingest.service import IngestStats
from callcenter.ingest.writer import StoredEvent
from callcenter.store import models as m
from tests.desk_support import base_unit, count, desk_config, scalar
from tests.ingest_support import eventually, publish_events
from tests.server_support import server_process, write_config

# Long enough that a call opening within the test's wait proves the child's prompt
# crossed the pipe: the engine's own look at the log would come far too late.
_NO_POLLING = 120.0


def _config(broker: EmbeddedBroker, prefix: str, database_url: str) -> Config:
    base = desk_config(
        host=broker.host,
        port=broker.port,
        prefix=prefix,
        database_url=database_url,
        event_poll_s=_NO_POLLING,
    )
    return base.model_copy(update={"ingest": base.ingest.model_copy(update={"own_process": True})})


async def _kill_child(server: Running) -> int:
    """SIGKILL the server's ingest process once it is connected; its pid, once the
    server has noticed."""
    assert isinstance(server.ingest, IngestProcess)
    await asyncio.wait_for(server.ingest.connected.wait(), 30)
    child = server.ingest.pid
    assert child is not None
    os.kill(child, signal.SIGKILL)

    async def gone() -> bool:
        return not server.ingest.connected.is_set()

    await eventually(gone, within_s=10, what="the server noticed the child died")
    return child


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that ended but was not yet reaped is a zombie: not alive either.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_press_becomes_a_call_through_the_child_and_the_child_ends_with_the_server(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with ingest in its own process the press is stored by the child, the
    engine is prompted across the pipe (polling is off), health and counters come from
    the child, and stopping the server stops the child."""
    config = _config(broker, topic_prefix, seeded_database_url)
    async with running_server(config, SystemClock()) as server:
        assert isinstance(server.ingest, IngestProcess)
        await asyncio.wait_for(server.ingest.connected.wait(), 30)
        child = server.ingest.pid
        assert child is not None and child != os.getpid() and _alive(child)

        pressed = time.monotonic()
        await publish_events(
            broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "press-1")]
        )

        async def decided() -> bool:
            return await count(server, m.Call) == 1

        await eventually(decided, within_s=20, what="the press opened a call")
        assert time.monotonic() - pressed < _NO_POLLING / 2

        async def counted() -> bool:
            return server.ingest.stats.events_stored >= 1

        await eventually(counted, within_s=10, what="the child's counters reached the server")
        assert server.ingest.stats.dead_letters == {}
    assert not server.ingest.connected.is_set()
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.1)
    assert not _alive(child), "the ingest process outlived the server"


async def test_a_child_that_dies_is_started_again_and_nothing_is_lost(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that SIGKILL on the ingest process brings a new one, and presses made while
    none was running become calls once it is back (the broker kept them)."""
    config = _config(broker, topic_prefix, seeded_database_url)
    async with running_server(config, SystemClock()) as server:
        first = await _kill_child(server)
        await publish_events(
            broker.host,
            broker.port,
            topic_prefix,
            [("H0001", "CB-H0001", "press-1"), ("H0002", "CB-H0002", "press-2")],
        )

        async def back() -> bool:
            return server.ingest.connected.is_set() and server.ingest.pid != first

        await eventually(back, within_s=30, what="a new ingest process connected")
        assert server.ingest.starts == 2

        async def both() -> bool:
            return await count(server, m.Call) == 2

        await eventually(both, within_s=20, what="both presses became calls")
        async with server.engine.connect() as connection:
            stored = await connection.scalar(
                select(func.count())
                .select_from(m.DeviceEvent)
                .where(m.DeviceEvent.kind == "emergency_press")
            )
        assert stored == 2


async def test_both_links_come_back_after_a_broker_restart(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that after the broker restarts, the ingest child reconnects by itself (the
    same child: nothing had to restart it) and a press made then becomes a call, and the
    server's command link reconnects too: the device is told the call is closed."""
    config = _config(broker, topic_prefix, seeded_database_url)
    async with running_server(config, SystemClock()) as server:
        assert isinstance(server.ingest, IngestProcess)
        await asyncio.wait_for(server.ingest.connected.wait(), 30)
        await broker.stop()

        async def lost() -> bool:
            return not server.ingest.connected.is_set()

        await eventually(lost, within_s=10, what="the child to notice the broker went")
        await broker.start()
        await asyncio.wait_for(server.ingest.connected.wait(), 30)
        assert server.ingest.starts == 1
        async with base_unit(broker, topic_prefix, "H0001") as device:
            await publish_events(
                broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "press-1")]
            )

            async def decided() -> bool:
                return await count(server, m.Call) == 1

            await eventually(decided, within_s=20, what="the press after the restart")
            call_id = int(await scalar(server, select(m.Call.id)))
            await server.desk.command(
                call_id, Cancel(Actor(ActorKind.OPERATOR, "li.na"), CancelReason.DUPLICATE)
            )
            async with asyncio.timeout(15):
                message = await anext(aiter(device.messages))
        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert (payload["command"], payload["call"]) == ("call_closed", call_id)


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_the_child_stops_when_the_server_is_killed(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that a server killed outright (SIGKILL, no clean-up of its own) leaves no
    ingest process behind: the child sees its input close and stops."""
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=seeded_database_url,
        broker=broker,
        prefix=topic_prefix,
        extra="[ingest]\nown_process = true\n",
    )
    async with server_process(config_file) as server:
        started = await server.wait_for_line(r"ingest process (\d+) started")
        child = int(started.group(1))
        await server.wait_for_line("ingest subscribed")
        assert _alive(child)
        server.send(signal.SIGKILL)
        await server.wait()
        for _ in range(100):
            if not _alive(child):
                break
            await asyncio.sleep(0.1)
        assert not _alive(child), "the ingest process outlived a killed server"
        await server.wait_for_line("the server closed the pipe: stopping")


async def test_a_child_given_no_handshake_ends_quietly() -> None:
    """Test that a child whose server went away before the handshake just ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter.ingest.process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(b""), 30)
    assert process.returncode == 0, err.decode()
    assert out == b""


def test_counters_cross_the_pipe_unchanged() -> None:
    """Test that the counters and progress times a child reports (health needs the
    times) read back as they were through a JSON line, and that a field the server does
    not know (a newer child) is ignored rather than fatal."""
    moment = datetime(2026, 11, 23, 2, 0, 1, 250000, tzinfo=UTC)
    stats = IngestStats(
        messages=7,
        events_stored=3,
        heartbeats=4,
        batches=2,
        received_at=moment,
        holding=5,
        holding_since=moment,
        database_failing_since=moment,
        database_error="database is locked",
    )
    stats.dead_letters["schema"] += 2
    document = json.loads(report_line({"stats": stats_document(stats)}))["stats"]
    assert stats_from(document) == stats
    assert stats_from({**document, "something_new": 1}) == stats


@pytest.mark.sqlite_only("one database is enough for the pipe")
async def test_a_backlog_committed_in_one_big_batch_crosses_the_pipe(
    broker: EmbeddedBroker,
    topic_prefix: str,
    seeded_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that thousands of events committed together (a backlog the broker held
    while no ingest ran) reach the engine's prompt as one report, longer than asyncio's
    default line limit of 64 kB, and the server's side keeps running."""
    config = _config(broker, topic_prefix, seeded_database_url)
    config = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"max_batch": 10_000})}
    )
    async with running_server(config, SystemClock()) as server:
        sizes: list[int] = []  # of each report, in bytes as the child wrote it

        async def note(stored: list[StoredEvent]) -> None:
            sizes.append(len(report_line(stored_report(stored))))

        server.ingest.on_events(note)
        # The next child starts once the whole backlog waits at the broker, and its first
        # write waits for a lock held here while its inbox fills: otherwise it takes the
        # events as they come, in batches often too small to test with.
        await asyncio.wait_for(server.ingest.connected.wait(), 30)  # the first child is up
        published = asyncio.Event()
        start_child = server.ingest._run_child

        async def on_the_whole_backlog() -> int | None:
            await published.wait()
            return await start_child()

        monkeypatch.setattr(server.ingest, "_run_child", on_the_whole_backlog)
        await _kill_child(server)
        # Long ids (64 characters, the most allowed) make long reports.
        events = [("H0001", "CB-H0001", f"low-battery-{n:05d}".ljust(64, "x")) for n in range(4000)]
        await publish_events(
            broker.host, broker.port, topic_prefix, events, kind=EventKind.LOW_BATTERY
        )
        writes = sqlite3.connect(make_url(seeded_database_url).database or "", isolation_level=None)
        try:
            writes.execute("BEGIN IMMEDIATE")
            published.set()
            await asyncio.sleep(2.0)
        finally:
            writes.execute("ROLLBACK")
            writes.close()

        async def all_told() -> bool:
            return server.ingest.stats.events_stored >= len(events)

        await eventually(all_told, within_s=60, what="every event stored by the new child")
        assert max(sizes) > 64 * 1024, f"no report long enough to test with: {sizes[:20]}"
        assert server.ingest.connected.is_set() and server.ingest.starts == 2
