"""PostgreSQL failover: a primary with a synchronous streaming replica, the primary
killed, the replica promoted. Whatever the primary acknowledged is on the replica, and
`callcenter serve`, given both hosts, reconnects to the new primary and goes on: every
press the broker took is stored once and raises its call.

The clusters are the test's own (tests/pg_cluster.py), made with the PostgreSQL server
binaries on this machine; without them the tests skip, saying what is missing. The
production form, with a failover manager, is docs/operations.md's "The database tier".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import func, select, text

from callcenter.broker import EmbeddedBroker
from callcenter.store import models as m
from callcenter.store.db import create_engine, database_unavailable
from device_sim.demo_district import seed_demo_district
from device_sim.district import household_code
from tests.api_support import token_of, write_test_operators
from tests.ingest_support import (
    count_rows,
    eventually,
    publish_events,
    reported_count,
    stored_event_keys,
)
from tests.pg_cluster import SynchronousPair, synchronous_pair, unavailable
from tests.server_support import run_cli, server_process, write_config

_MISSING = unavailable()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

HOUSEHOLDS = 150  # one press each: 150 alarms, so 150 calls
# From the kill to the promotion: long enough for every part of the server to meet the
# missing primary (a failover manager takes longer still: docs/operations.md).
_OUTAGE_S = 1.0


@pytest.fixture
def pair() -> Iterator[SynchronousPair]:
    """A primary and its synchronous replica, both running, for this test alone."""
    with synchronous_pair() as running:
        yield running


async def test_a_commit_is_acknowledged_only_once_the_replica_has_it(
    pair: SynchronousPair,
) -> None:
    """Test that the primary answers a COMMIT only after the replica has the
    transaction: with the replica's WAL receiver stopped the COMMIT waits, and it
    returns once the receiver goes on. This is what makes the failover below lose
    nothing; with asynchronous replication the COMMIT would return at once."""
    pair.primary.sql("CREATE TABLE acknowledged (n int)")
    receiver = int(pair.replica.sql("SELECT pid FROM pg_stat_wal_receiver"))
    connection = await asyncpg.connect(pair.primary.dsn())
    try:
        os.kill(receiver, signal.SIGSTOP)
        try:
            commit = asyncio.ensure_future(
                connection.execute("INSERT INTO acknowledged VALUES (1)")
            )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(commit), 1.0)
        finally:
            os.kill(receiver, signal.SIGCONT)
        assert await asyncio.wait_for(commit, 10) == "INSERT 0 1"
    finally:
        await connection.close()


async def test_every_commit_acknowledged_before_the_kill_is_on_the_promoted_replica(
    pair: SynchronousPair,
) -> None:
    """Test that four writers committing one row at a time, with the primary killed
    among them, find on the promoted replica every row whose COMMIT the primary
    acknowledged; and nothing else but the one row each writer had in flight (in
    doubt: the replica may have it or not, and the writer was told neither)."""
    pair.primary.sql("CREATE TABLE acknowledged (writer int, n int, PRIMARY KEY (writer, n))")
    acknowledged: set[tuple[int, int]] = set()
    in_flight: set[tuple[int, int]] = set()

    async def write(writer: int) -> None:
        connection = await asyncpg.connect(pair.primary.dsn())
        n = 0
        try:
            while True:
                in_flight.add((writer, n))
                await connection.execute("INSERT INTO acknowledged VALUES ($1, $2)", writer, n)
                in_flight.discard((writer, n))
                acknowledged.add((writer, n))
                n += 1
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
            return  # the primary is gone; what is in flight stays in doubt
        finally:
            connection.terminate()

    writers = [asyncio.create_task(write(w)) for w in range(4)]

    async def enough() -> bool:
        return len(acknowledged) >= 400

    await eventually(enough, within_s=30, what="400 acknowledged commits")
    await asyncio.to_thread(pair.primary.kill)
    await asyncio.wait_for(asyncio.gather(*writers), 10)
    await asyncio.to_thread(pair.promote)

    promoted = await asyncpg.connect(pair.replica.dsn())
    try:
        rows = {(r["writer"], r["n"]) for r in await promoted.fetch("SELECT * FROM acknowledged")}
    finally:
        await promoted.close()
    assert acknowledged - rows == set(), "commits acknowledged by the primary were lost"
    assert rows - acknowledged <= in_flight
    assert len(in_flight) <= 4


async def _error_of(url: str, statement: str) -> Exception:
    """What the server's engine raises running ``statement`` in a transaction on ``url``."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    except Exception as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement!r} went through on {url}")


async def test_what_a_failover_raises_is_told_from_a_fault_in_the_work(
    pair: SynchronousPair,
) -> None:
    """Test that each error the server's engine meets in a failover is the database
    unavailable (store.db.database_unavailable), which ingest and the call engine wait
    out and retry, never setting an event aside for it: a statement in flight on the
    killed primary, a new connection while the old primary refuses, a URL whose every
    host is a standby, a write on a standby. A row the database refuses is not."""
    pair.primary.sql("CREATE TABLE once (n int PRIMARY KEY)")
    pair.primary.sql("INSERT INTO once VALUES (1)")
    refused = await _error_of(pair.url("postgres"), "INSERT INTO once VALUES (1)")
    standby = f"127.0.0.1:{pair.replica.port}"
    standbys_only = (
        f"postgresql+asyncpg://postgres@/postgres?host={standby}&host={standby}"
        "&target_session_attrs=read-write"
    )
    no_writable_host = await _error_of(standbys_only, "SELECT 1")
    read_only = await _error_of(
        f"postgresql+asyncpg://postgres@{standby}/postgres", "CREATE TABLE nowhere (n int)"
    )
    in_flight = asyncio.create_task(_error_of(pair.url("postgres"), "SELECT pg_sleep(30)"))

    async def sleeping() -> bool:
        return (
            pair.primary.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            )
            == "1"
        )

    await eventually(sleeping, within_s=10, what="the statement in flight")
    await asyncio.to_thread(pair.primary.kill)
    cut_off = await asyncio.wait_for(in_flight, 10)
    refusing = await _error_of(pair.url("postgres"), "SELECT 1")

    assert not database_unavailable(refused), refused
    for error in (no_writable_host, read_only, cut_off, refusing):
        assert database_unavailable(error), repr(error)


async def _paced_presses(broker: EmbeddedBroker, prefix: str, codes: list[str]) -> None:
    """Each household's call button pressed once, five households every 100 ms: a stream
    the failover lands in the middle of. Each publish waits for the broker's PUBACK, so
    every press sent is one the broker took."""
    for start in range(0, len(codes), 5):
        chunk = codes[start : start + 5]
        await publish_events(
            broker.host, broker.port, prefix, [(c, f"CB-{c}", f"press-{c}") for c in chunk]
        )
        await asyncio.sleep(0.1)


async def _calls_opened_by(url: str, event_ids: list[str]) -> dict[str, int]:
    """For each of ``event_ids`` (devices' own ids) that opened a call, how many."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(m.DeviceEvent.event_id, func.count(m.Call.id))
                .join(m.Call, m.Call.event_id == m.DeviceEvent.id)
                .where(m.DeviceEvent.event_id.in_(event_ids))
                .group_by(m.DeviceEvent.event_id)
            )
            return {event_id: calls for event_id, calls in rows}
    finally:
        await engine.dispose()


async def _add_operators(url: str) -> None:
    engine = create_engine(url)
    try:
        await write_test_operators(engine)
    finally:
        await engine.dispose()


async def _board_status(base: str) -> tuple[int, str | None]:
    """The board's snapshot as an operator asks for it: HTTP status and error code."""
    headers = {"Authorization": f"Bearer {token_of('li.na')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/board", headers=headers) as response,
    ):
        body = await response.json()
        return response.status, body.get("error")


async def _healthz(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as response:
        return response.status


@pytest.mark.parametrize("own_process", [False, True], ids=["ingest-in-server", "ingest-process"])
async def test_primary_killed_and_replica_promoted_under_load_loses_nothing(
    pair: SynchronousPair,
    broker: EmbeddedBroker,
    topic_prefix: str,
    tmp_path: Path,
    own_process: bool,
) -> None:
    """Test that `callcenter serve` on a URL naming both hosts (target_session_attrs=
    read-write), with the primary killed and the replica promoted in the middle of a
    stream of presses, reconnects to the new primary and goes on: every press the
    broker took is stored exactly once, each raised its call, nothing was set aside as
    a dead letter, and /healthz is back to 200. With ingest in the server and in a
    process of its own (each holds its own pool on the database)."""
    pair.create_database("callcenter")
    url = pair.url("callcenter")
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=url,
        broker=broker,
        prefix=topic_prefix,
        extra=f"[ingest]\nown_process = {'true' if own_process else 'false'}\n",
    )
    upgraded = await run_cli(config_file, "db", "upgrade")
    assert upgraded.code == 0, upgraded.err
    await seed_demo_district(url, households=HOUSEHOLDS)
    await _add_operators(url)
    codes = [household_code(n) for n in range(1, HOUSEHOLDS + 1)]
    press_ids = [f"press-{c}" for c in codes]

    async with server_process(config_file) as server:
        base = (await server.wait_for_line(r"operator API (http://\S+)")).group(1)
        await server.wait_for_line("ingest subscribed")
        stream = asyncio.create_task(_paced_presses(broker, topic_prefix, codes))

        async def some_stored() -> bool:
            return await reported_count(url) >= HOUSEHOLDS // 4

        await eventually(some_stored, within_s=30, what="a quarter of the presses stored")
        started = time.monotonic()
        await asyncio.to_thread(pair.primary.kill)
        # No writable host until the promotion: the board is told so, not failed.
        assert await _board_status(base) == (503, "unavailable")
        await asyncio.sleep(max(0.0, _OUTAGE_S - (time.monotonic() - started)))
        await asyncio.to_thread(pair.promote)
        promoted_s = time.monotonic() - started
        assert not stream.done(), "the stream ended before the failover: nothing was tested"
        at_promotion = await reported_count(url)

        async def storing_again() -> bool:
            return await reported_count(url) > at_promotion

        await eventually(storing_again, within_s=30, what="presses stored on the new primary")
        resumed_s = time.monotonic() - started - promoted_s
        await asyncio.wait_for(stream, 60)

        async def all_stored() -> bool:
            return await reported_count(url) >= HOUSEHOLDS

        await eventually(all_stored, within_s=60, what=f"{HOUSEHOLDS} presses stored")

        async def every_call_raised() -> bool:
            return len(await _calls_opened_by(url, press_ids)) == HOUSEHOLDS

        await eventually(every_call_raised, within_s=60, what=f"{HOUSEHOLDS} calls opened")
        recovered_s = time.monotonic() - started

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                return await _healthz(base) == 200
            return False

        await eventually(healthy, within_s=30, what="/healthz to answer 200")
        assert await _board_status(base) == (200, None)
        print(
            f"primary killed; promoted after {promoted_s:.1f} s; storing again "
            f"{resumed_s:.1f} s after that; every call raised {recovered_s:.1f} s after the kill"
        )
        assert any("database unavailable" in line for line in server.lines), (
            "the server never noticed the primary go: the failover missed the stream"
        )
        server.send(signal.SIGTERM)
        assert await server.wait() == 0, "\n".join(server.lines[-40:])

    stored = await stored_event_keys(url)
    assert sorted(stored) == sorted((f"CB-{c}", f"press-{c}") for c in codes)
    assert set((await _calls_opened_by(url, press_ids)).values()) == {1}
    assert await count_rows(url, m.DeadLetter) == 0
    assert not await asyncio.to_thread(pair.replica.in_recovery)
