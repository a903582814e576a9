"""Where SQLite's calls run (store/sqlite_calls.py): on the connection's worker thread,
except while the connection holds the write lock, when they run on the event loop's own
thread, since nothing can then make them wait."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.store.db import WRITE_LOCKED, create_engine
from tests.loop_support import loop_ticks

# Another process: takes SQLite's write lock itself (no write turn), says so, holds it
# for the given seconds and lets go.
_LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a file whose connections answer ``SELECT on_thread()`` with the
    thread that ran the statement."""
    made = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")

    @event.listens_for(made.sync_engine, "connect")
    def thread_function(dbapi_connection: Any, _record: Any) -> None:
        sqlite = dbapi_connection.driver_connection._conn
        sqlite.create_function("on_thread", 0, threading.get_ident)

    async with made.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    yield made
    await made.dispose()


async def on_thread(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT on_thread()"))).scalar_one())


async def test_statements_run_on_the_loop_thread_only_while_the_write_lock_is_held(
    engine: AsyncEngine,
) -> None:
    """Test that a transaction begun to write (BEGIN IMMEDIATE) runs its statements on
    the loop's thread, writes and reads alike, and that a read outside a transaction, a
    transaction begun plainly (even one that writes) and the transactions after a
    commit or a rollback go to the worker thread again."""
    loop_thread = threading.get_ident()
    async with engine.connect() as connection:
        assert await on_thread(connection) != loop_thread
        await connection.commit()

        await connection.execution_options(**{WRITE_LOCKED: True})
        async with connection.begin():
            await connection.execute(text("INSERT INTO notes (body) VALUES ('held')"))
            assert await on_thread(connection) == loop_thread
        transaction = await connection.begin()
        assert await on_thread(connection) == loop_thread
        await transaction.rollback()

        await connection.execution_options(**{WRITE_LOCKED: False})
        assert await on_thread(connection) != loop_thread
        await connection.commit()
        async with connection.begin():
            await connection.execute(text("INSERT INTO notes (body) VALUES ('plain')"))
            assert await on_thread(connection) != loop_thread
        bodies = (await connection.execute(text("SELECT body FROM notes ORDER BY id"))).all()
        assert [b for (b,) in bodies] == ["held", "plain"]


async def test_a_writer_waiting_for_the_lock_waits_off_the_loop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Test that while another process holds SQLite's write lock, a transaction that
    begins to write waits for it on the worker thread (the event loop runs meanwhile),
    then runs on the loop's thread once the lock is its own."""
    locker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCKER,
        str(tmp_path / "calls.db"),
        "1.5",
        stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdout is not None
    assert await asyncio.wait_for(locker.stdout.readline(), 30) == b"locked\n"
    try:
        async with loop_ticks() as ticks, engine.connect() as connection:
            asked = time.monotonic()
            await connection.execution_options(**{WRITE_LOCKED: True})
            async with connection.begin():
                waited = time.monotonic() - asked
                await connection.execute(text("INSERT INTO notes (body) VALUES ('after')"))
                assert await on_thread(connection) == threading.get_ident()
        assert waited > 0.5, f"the transaction began after {waited:.2f} s, inside the lock"
        assert ticks.count >= 10, "the event loop stalled while the writer waited for the lock"
    finally:
        await locker.wait()
