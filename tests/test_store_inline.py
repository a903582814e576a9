"""SQLite engines: the one whose calls run on the event loop's own thread (``inline``),
as the simulator's week uses for its private database, must behave as the ordinary one;
and a process's writers take turns in the order they asked, the lease's upkeep first
(``write_turn``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.store import models as m
from callcenter.store.db import create_engine, write_locked, write_turn
from callcenter.store.migrate import upgrade_async


async def test_the_inline_engine_commits_rolls_back_and_refuses_as_the_threaded_one(
    tmp_path: Path,
) -> None:
    """Test that on the inline engine a commit is seen by the ordinary engine, a rolled
    back write is not, a unique index refuses a double with IntegrityError, a write
    transaction takes SQLite's lock at once, and no call leaves the loop's thread."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}"
    await upgrade_async(url)
    inline = create_engine(url, inline=True)
    threaded = create_engine(url)
    threads: set[int] = set()
    event.listen(
        inline.sync_engine,
        "before_cursor_execute",
        lambda *_: threads.add(threading.get_ident()),
    )
    station = {
        "code": "S01",
        "name": "一站",
        "address": "路 1 号",
        "lat": 31.2,
        "lon": 121.4,
        "phone": "+8613800000000",
    }
    try:
        async with write_locked(inline).begin() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            # Only read so far, yet the lock is held: nobody else may start writing.
            probe = sqlite3.connect(tmp_path / "inline.db", timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            probe.close()
            await connection.execute(insert(m.Station).values(station))
        with pytest.raises(RuntimeError):
            async with inline.begin() as connection:
                await connection.execute(insert(m.Station).values(station | {"code": "S02"}))
                raise RuntimeError("changed my mind")
        with pytest.raises(IntegrityError):
            async with inline.begin() as connection:
                await connection.execute(insert(m.Station).values(station))
        async with threaded.connect() as connection:
            codes = (await connection.scalars(select(m.Station.code))).all()
        async with inline.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(m.Station))
    finally:
        await inline.dispose()
        await threaded.dispose()
    assert (mode, codes, count) == ("wal", ["S01"], 1)
    assert threads == {threading.get_ident()}


@pytest.mark.parametrize("inline", [False, True], ids=["threaded", "inline"])
async def test_writers_take_turns_in_the_order_they_asked(tmp_path: Path, inline: bool) -> None:
    """Test that while one writer holds its turn, the writers that asked after it begin
    one at a time and in the order they asked, each committing its row, on the engine
    and on its write-locked copy alike."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}"
    engine = create_engine(url, inline=inline)
    locked = write_locked(engine)
    order: list[int] = []
    inside = 0
    most_inside = 0

    async def writer(n: int, on: AsyncEngine) -> None:
        nonlocal inside, most_inside
        async with write_turn(on), on.begin() as connection:
            inside += 1
            most_inside = max(most_inside, inside)
            order.append(n)
            await connection.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.01)
            inside -= 1

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (n INTEGER)"))
        async with write_turn(engine):
            waiting = []
            for n in range(6):
                waiting.append(asyncio.create_task(writer(n, locked if n % 2 else engine)))
                await asyncio.sleep(0)  # each asks before the next is created
            await asyncio.sleep(0.05)
            assert order == []  # nobody began while the turn was held
        await asyncio.gather(*waiting)
        async with engine.connect() as connection:
            stored = (await connection.scalars(text("SELECT n FROM t ORDER BY rowid"))).all()
    finally:
        await engine.dispose()
    assert order == stored == list(range(6))
    assert most_inside == 1


async def test_a_statement_is_one_trip_to_the_sqlite_thread(tmp_path: Path) -> None:
    """Test that a query and an insert each take one trip to the connection's worker
    thread (aiosqlite's own cursor takes four: cursor, execute, rows, close), with the
    rows, the row count and the new row's id all there afterwards."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    trips: list[object] = []
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            raw = await connection.get_raw_connection()
            worker = raw.driver_connection
            queue = worker._tx

            class Counting:
                def put_nowait(self, item: object) -> None:
                    trips.append(item)
                    queue.put_nowait(item)

            worker._tx = Counting()
            inserted = await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b')"))
            after_insert = len(trips)
            found = (await connection.execute(text("SELECT v FROM t ORDER BY id"))).all()
            after_select = len(trips)
            worker._tx = queue
    finally:
        await engine.dispose()
    assert (inserted.rowcount, inserted.lastrowid) == (2, 2)
    assert [row.v for row in found] == ["a", "b"]
    assert (after_insert, after_select - after_insert) == (1, 1)


async def test_a_writer_asking_first_goes_before_those_waiting_and_a_cancelled_one_passes_on(
    tmp_path: Path,
) -> None:
    """Test that a writer asking for the turn with ``first`` (the lease's upkeep) begins
    before the writers already waiting, who then go in the order they asked; and that a
    waiter cancelled just as the turn came to it passes the turn on rather than keeping
    it for ever."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}")
    order: list[str] = []

    async def writer(name: str, *, first: bool = False) -> None:
        async with write_turn(engine, first=first):
            order.append(name)
            await asyncio.sleep(0.01)

    try:
        async with write_turn(engine):
            waiting = []
            for name in ("a", "b", "c"):
                waiting.append(asyncio.create_task(writer(name)))
                await asyncio.sleep(0)
            waiting.append(asyncio.create_task(writer("lease", first=True)))
            await asyncio.sleep(0.02)
            assert order == []
        await asyncio.gather(*waiting)
        assert order == ["lease", "a", "b", "c"]

        order.clear()
        async with write_turn(engine):
            doomed = asyncio.create_task(writer("doomed"))
            await asyncio.sleep(0)
            after = asyncio.create_task(writer("after"))
            await asyncio.sleep(0)
        # The turn has just been handed to "doomed"; it is cancelled before it runs.
        doomed.cancel()
        await asyncio.wait_for(after, 5)
        assert order == ["after"]
        assert doomed.cancelled()
        async with asyncio.timeout(5):
            async with write_turn(engine):
                pass  # the turn is free again
    finally:
        await engine.dispose()
