"""The desk's lease: one server at a time does the once-only work, a server that has gone
is taken over, and a transaction of work under a lease taken over since is refused
(store/leases.py, engine/leadership.py). On both databases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.clock import SystemClock
from callcenter.engine.leadership import Leadership, holder_name
from callcenter.store import leases
from callcenter.store.db import create_engine, write_locked, write_turn

pytestmark = pytest.mark.asyncio


class Counted:
    """A part of the once-only work that counts its runs and where it ran (the fence)."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self.runs = 0
        self.stops = 0
        self.running = False
        self.fences: list[leases.Fence | None] = []

    async def run(self) -> None:
        self.runs += 1
        self.running = True
        self.fences.append(leases.FENCE.get())
        try:
            await self._stopping.wait()
        finally:
            self.running = False
            self.stops += 1

    def stop(self) -> None:
        self._stopping.set()

    def reset(self) -> None:
        self._stopping.clear()


@contextlib.asynccontextmanager
async def engine_as(url: str, holder: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, application_name=holder)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def leading(leadership: Leadership) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(leadership.run())
    try:
        yield task
    finally:
        leadership.stop()
        await task


async def until(condition: object, within: float = 10.0) -> float:
    """Wait for ``condition()``; how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():  # type: ignore[operator]
        assert loop.time() - start < within, "not in time"
        await asyncio.sleep(0.02)
    return loop.time() - start


async def lapse(engine: AsyncEngine) -> None:
    """Make the lease run out now (as if its holder stopped renewing long ago)."""
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE leases SET expires_at = :past WHERE name = 'desk'"),
            {"past": datetime(2000, 1, 1, tzinfo=UTC)},
        )


async def test_one_server_does_the_work_and_the_next_takes_over_when_it_stops(
    database_url: str,
) -> None:
    first_name, second_name = holder_name("a"), holder_name("b")
    async with (
        engine_as(database_url, first_name) as first,
        engine_as(database_url, second_name) as second,
    ):
        work_a, work_b = Counted(), Counted()
        a = Leadership(first, SystemClock(), holder=first_name, work={"w": work_a}, poll_s=0.05)
        b = Leadership(second, SystemClock(), holder=second_name, work={"w": work_b}, poll_s=0.05)
        async with leading(a) as task_a:
            await until(lambda: a.leading)
            async with leading(b):
                await asyncio.sleep(0.5)
                assert work_a.running and not work_b.running and not b.leading
                assert b.seen_holder == first_name
                epoch = a.term.epoch if a.term else -1
                assert work_a.fences == [leases.Fence("desk", epoch)]
                a.stop()
                await task_a
                assert not work_a.running
                took = await until(lambda: b.leading, within=3.0)
                assert took < 1.0, "a lease given up is taken at once"
                assert b.term is not None and b.term.epoch == epoch + 1
                assert work_b.fences == [leases.Fence("desk", epoch + 1)]


async def test_a_transaction_under_a_lease_taken_over_since_is_refused(database_url: str) -> None:
    async with engine_as(database_url, holder_name("old")) as engine:
        seen = await leases.look(engine, leases.DESK)
        old = await leases.take(engine, leases.DESK, "old", timedelta(seconds=30), seen=seen)
        assert old is not None
        token = leases.FENCE.set(leases.Fence(leases.DESK, old.epoch))
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO cursors (name, position, updated_at) "
                        "VALUES ('lease-test', 7, :now)"
                    ),
                    {"now": datetime.now(UTC)},
                )
            await lapse(engine)
            seen = await leases.look(engine, leases.DESK)
            assert seen.lapsed
            new = await leases.take(engine, leases.DESK, "new", timedelta(seconds=30), seen=seen)
            assert new is not None and new.epoch == old.epoch + 1
            with pytest.raises(leases.LeaseLostError, match="taken over"):
                async with engine.begin() as connection:
                    await connection.execute(
                        text("UPDATE cursors SET position = 8 WHERE name = 'lease-test'")
                    )
        finally:
            leases.FENCE.reset(token)
        # The lease's own upkeep is not fenced work: the old holder learns it lost it.
        assert not await leases.renew(engine, old, timedelta(seconds=30))
        # Outside the fence (an operator's request, ingest) nothing is checked.
        async with engine.connect() as connection:
            position = await connection.scalar(
                text("SELECT position FROM cursors WHERE name = 'lease-test'")
            )
        assert position == 7


async def test_a_holder_that_finds_its_lease_taken_stops_its_work(database_url: str) -> None:
    name = holder_name("a")
    async with engine_as(database_url, name) as engine:
        work = Counted()
        a = Leadership(engine, SystemClock(), holder=name, work={"w": work}, ttl_s=1.0)
        async with leading(a):
            await until(lambda: a.leading)
            assert a.term is not None
            first_epoch = a.term.epoch
            # Someone took the lease over while this one was away (as a paused server
            # finds on waking): at its next renewal it stops the work.
            # (On SQLite the holder's file lock keeps anyone in another process from
            # taking it while it lives, so the takeover is written here directly.)
            async with engine.begin() as connection:
                taken = await connection.execute(
                    text(
                        "UPDATE leases SET holder = 'thief', epoch = epoch + 1, "
                        "expires_at = :until WHERE name = 'desk' AND holder = :holder"
                    ),
                    {"until": datetime.now(UTC) + timedelta(seconds=30), "holder": name},
                )
            assert taken.rowcount == 1
            # At its next renewal (a third of a second), or once its 1 s lease is past
            # while the database keeps it waiting: not in seconds on a loaded machine.
            await until(lambda: work.stops >= 1, within=15.0)
            # The thief is no server that lives (no connection, no file lock), so this one
            # may take the lease over from it again: under a new epoch, past the thief's.
            assert a.term is None or a.term.epoch > first_epoch + 1, a.term


async def test_a_killed_holder_is_taken_over_before_its_lease_runs_out(database_url: str) -> None:
    """The holder's process ends without giving the lease up: its connections (on
    PostgreSQL) or its file lock (SQLite) go with it, and the next server takes over
    at its next look rather than after the lease's time."""
    dead_name, next_name = holder_name("dead"), holder_name("next")
    async with engine_as(database_url, dead_name) as dead:
        seen = await leases.look(dead, leases.DESK)
        taken = await leases.take(dead, leases.DESK, dead_name, timedelta(seconds=60), seen=seen)
        assert taken is not None
        async with engine_as(database_url, holder_name("onlooker")) as onlooker:
            seen = await leases.look(onlooker, leases.DESK)
        assert not seen.lapsed and not seen.holder_gone, "alive, it is not taken over"
        await dead.dispose()  # its connections close, as a killed process's do
        leases.let_go(dead, leases.DESK)  # and its file lock goes, as the kernel's would
    async with engine_as(database_url, next_name) as engine:
        work = Counted()
        b = Leadership(engine, SystemClock(), holder=next_name, work={"w": work}, poll_s=0.05)
        async with leading(b):
            took = await until(lambda: b.leading, within=5.0)
            assert took < 2.0, f"took {took:.1f} s, the lease had 60 s to run"


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_takeover_ends_a_paused_holders_open_transaction(database_url: str) -> None:
    """A holder paused inside a fenced transaction keeps the lease's row locked: the
    taker's lock times out, it ends that holder's connections inside a transaction, and
    takes over at its next try; the paused transaction can then commit nothing."""
    old_name = holder_name("paused")
    async with engine_as(database_url, old_name) as old_engine:
        seen = await leases.look(old_engine, leases.DESK)
        old = await leases.take(old_engine, leases.DESK, old_name, timedelta(seconds=1), seen=seen)
        assert old is not None
        token = leases.FENCE.set(leases.Fence(leases.DESK, old.epoch))
        connection = await old_engine.connect()
        try:
            transaction = await connection.begin()
            await connection.execute(text("UPDATE cursors SET position = 99 WHERE name = 'x'"))
        finally:
            leases.FENCE.reset(token)
        # ... and then the holder is paused: its lease runs out.
        await asyncio.sleep(1.1)
        new_name = holder_name("taker")
        async with engine_as(database_url, new_name) as engine:
            work = Counted()
            b = Leadership(engine, SystemClock(), holder=new_name, work={"w": work}, poll_s=0.1)
            async with leading(b):
                await until(lambda: b.leading, within=10.0)
        with pytest.raises(DBAPIError):
            await transaction.commit()
        with contextlib.suppress(Exception):
            await connection.close()


async def test_the_lease_is_renewed_while_the_work_holds_every_pooled_connection(
    database_url: str,
) -> None:
    """Issue 22: in a storm the work keeps every connection of its pool busy. The lease
    is renewed on a connection of its own, so the holder keeps it and its work goes on;
    renewals taken from the work's pool waited there until the holder stepped down."""
    name = holder_name("busy")
    # The work's pool: two connections kept, two more while busy.
    engine = create_engine(database_url, application_name=name, pool_size=2)
    held: list[AsyncConnection] = []
    try:
        work = Counted()
        a = Leadership(engine, SystemClock(), holder=name, work={"w": work}, ttl_s=2.0)
        async with leading(a):
            await until(lambda: a.leading)
            assert a.term is not None
            epoch = a.term.epoch
            # Every connection the pool has, each inside a transaction of the work (the
            # fence read first, FOR KEY SHARE on PostgreSQL), held for over two lease times.
            token = leases.FENCE.set(leases.Fence(leases.DESK, epoch))
            try:
                for _ in range(4):
                    connection = await engine.connect()
                    held.append(connection)
                    await connection.begin()
                    await connection.execute(text("SELECT count(*) FROM cursors"))
            finally:
                leases.FENCE.reset(token)
            assert engine.sync_engine.pool.checkedout() == 4  # type: ignore[attr-defined]
            await asyncio.sleep(5.0)
            assert a.leading and work.running, "the holder stepped down"
            assert a.terms == 1 and work.runs == 1
            async with engine_as(database_url, holder_name("onlooker")) as onlooker:
                seen = await leases.look(onlooker, leases.DESK)
            # Renewed: a 2 s lease taken over 5 s ago has not run out.
            assert (seen.holder, seen.epoch, seen.lapsed) == (name, epoch, False)
            for connection in held:
                await connection.rollback()
    finally:
        for connection in held:
            with contextlib.suppress(Exception):
                await connection.close()
        await engine.dispose()


@pytest.mark.parametrize(
    ("writers", "each_s"), [(4, 0.05), (8, 0.25)], ids=["short-writes", "a-long-queue"]
)
async def test_the_lease_is_renewed_while_writers_follow_each_other_without_a_pause(
    database_url: str, writers: int, each_s: float
) -> None:
    """Test that the holder keeps its lease through a storm of write transactions that
    follow each other back to back for over two lease times: four writers of 50 ms, and
    eight of 250 ms (a queue of them longer than the lease's margin). On SQLite every
    change to the lease is a write too: it waits its turn with the work's writers
    (db.write_turn); left to SQLite's locking, it polled and lost to them until the
    holder stepped down; queued behind eight of them, it lapsed; it goes first."""
    name = holder_name("storm")
    engine = create_engine(database_url, application_name=name)
    locked = write_locked(engine)
    try:
        work = Counted()
        a = Leadership(engine, SystemClock(), holder=name, work={"w": work})
        async with leading(a):
            await until(lambda: a.leading)
            assert a.term is not None
            token = leases.FENCE.set(leases.Fence(leases.DESK, a.term.epoch))
            try:
                loop = asyncio.get_running_loop()
                end = loop.time() + 7.0

                async def writer(n: int) -> int:
                    written = 0
                    while loop.time() < end:
                        async with write_turn(locked), locked.begin() as connection:
                            await connection.execute(
                                text(
                                    "UPDATE cursors SET updated_at = :now "
                                    "WHERE name = 'call_engine'"
                                ),
                                {"now": datetime.now(UTC)},
                            )
                            await asyncio.sleep(each_s)  # a batch of decisions
                        written += 1
                    return written

                written = await asyncio.gather(*(writer(n) for n in range(writers)))
            finally:
                leases.FENCE.reset(token)
            assert sum(written) > 7.0 / each_s / 2, "the writers wrote"
            assert a.leading and work.running, "the holder stepped down"
            assert a.terms == 1 and work.runs == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_the_lease_connection_comes_back_after_it_was_cut(database_url: str) -> None:
    """The database ends the holder's connections (a restart, a failover): the next
    renewal opens a new one and the holder keeps the lease. Once stopped, the lease's
    connection is closed with the rest."""
    name = holder_name("cut")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    async with engine_as(database_url, holder_name("onlooker")) as onlooker:
        async with engine_as(database_url, name) as engine:
            work = Counted()
            a = Leadership(engine, SystemClock(), holder=name, work={"w": work}, ttl_s=2.0)
            async with leading(a):
                await until(lambda: a.leading)
                for _ in range(2):
                    async with onlooker.connect() as connection:
                        ended = await connection.scalar(
                            text(
                                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                                "FROM pg_stat_activity WHERE application_name = :name"
                            ),
                            {"name": name},
                        )
                    assert ended, "the holder had a connection open"
                    await asyncio.sleep(2.5)
                    assert a.leading and a.terms == 1 and work.runs == 1
                    assert a.last_error == ""
        # The work's engine is disposed; the lease's went when the leadership stopped.

        async def connections() -> int:
            async with onlooker.connect() as connection:
                return int(await connection.scalar(count, {"name": name}) or 0)

        loop = asyncio.get_running_loop()
        start = loop.time()
        while await connections():
            assert loop.time() - start < 10.0, "a connection of the holder stayed open"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_holder_whose_lease_connection_reached_a_standby_takes_the_lease_again(
    database_url: str,
) -> None:
    """A failover can leave the lease's connection on a server that only reads (a
    standby, a demoted primary). The holder cannot renew and stops the work; the failed
    renewal drops that connection, so once a writable server answers, a new connection
    reaches it and the lease is taken again. (Here new connections are made read-only
    by the database's default, then writable again.)"""
    database = make_url(database_url).database
    name = holder_name("standby")
    async with (
        engine_as(database_url, holder_name("onlooker")) as onlooker,
        engine_as(database_url, name) as engine,
    ):

        async def default_read_only(on: bool) -> None:
            async with onlooker.connect() as connection:
                await connection.execute(
                    text(
                        f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'
                        if on
                        else f'ALTER DATABASE "{database}" RESET default_transaction_read_only'
                    )
                )
                await connection.commit()

        work = Counted()
        a = Leadership(engine, SystemClock(), holder=name, work={"w": work}, ttl_s=2.0)
        async with leading(a):
            await until(lambda: a.leading)
            await default_read_only(True)
            try:
                async with onlooker.connect() as connection:
                    await connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": name},
                    )
                await until(lambda: not a.leading, within=15.0)
                # Its tries to take the lease back are refused: read-only.
                await until(lambda: "read-only" in a.last_error, within=15.0)
            finally:
                await default_read_only(False)
            await until(lambda: a.leading, within=15.0)
            assert a.terms == 2 and work.runs == 2
