"""How SQLAlchemy's aiosqlite dialect reaches SQLite: one trip per statement.

aiosqlite runs each SQLite call on the connection's worker thread and wakes the event
loop with the result. Through its own cursor a statement takes four such trips (make a
cursor, execute, fetch the rows, close the cursor), and under load the waits for those
wake-ups, not SQLite, were most of the server's time. The cursor here makes one: it
executes, reads every row and closes the SQLite cursor in a single call on the thread,
which is what SQLAlchemy's adapter does with the rows anyway (it reads them all
at once for an ordinary, non-streaming cursor).

A connection holding SQLite's write lock (from ``BEGIN IMMEDIATE`` to its commit or
rollback) makes its calls on the event loop's own thread: no trips at all. Nothing it
does then can wait for another connection: in WAL mode readers never hold up a writer,
no other writer can begin, and a commit appends to the log (its automatic checkpoint is
the passive kind, which waits for nobody). Only ``BEGIN IMMEDIATE`` itself may wait, for
whoever holds the lock now, and it waits on the worker thread. What the trips cost in a
storm of presses, and what this saved, is measured in docs/benchmarks.md (storm).

``InlineConnection`` makes every call on the event loop's own thread: no trips even to
begin, but a wait for a lock held by another process stalls the loop, so it is only for
a database file nothing else opens (the simulator's week on virtual time).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import aiosqlite

_Outcome = tuple[Any, int, int | None, list[Any]]

# How a transaction that will write begins: it takes SQLite's write lock at once.
BEGIN_WRITING = "BEGIN IMMEDIATE"


class OneTripCursor:
    """A cursor for SQLAlchemy's aiosqlite adapter; see the module's docstring."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._rows = []

    async def _run(self, run: Callable[[sqlite3.Cursor], object]) -> None:
        conn = self._connection

        def on_thread() -> _Outcome:
            cursor = conn._conn.cursor()
            try:
                run(cursor)
                rows = cursor.fetchall() if cursor.description else []
                # Read after the rows: a RETURNING statement counts them as it goes.
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        outcome: _Outcome = await conn._execute(on_thread)
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def execute(self, sql: str, parameters: Any = ()) -> OneTripCursor:
        await self._run(lambda cursor: cursor.execute(sql, parameters or ()))
        if sql == BEGIN_WRITING:
            self._connection.holds_write_lock = True
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        await self._run(lambda cursor: cursor.executemany(sql, parameters))
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = size if size is not None else self.arraysize
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> Sequence[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []  # its SQLite cursor was closed on the thread already


class OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection, whose cursors make one trip per statement, and none while
    the connection holds SQLite's write lock (see the module's docstring)."""

    # Set by a BEGIN IMMEDIATE that went through; worn off by the end of its transaction.
    holds_write_lock = False

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.holds_write_lock:
            # Read only when no call of this connection is under way on its thread (a
            # connection runs one call at a time): the transaction ends however it ends,
            # a COMMIT, a ROLLBACK or an error SQLite ended it for.
            if self._conn.in_transaction:
                return fn(*args, **kwargs)
            self.holds_write_lock = False
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]


class _AtOnce:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, call = item
        try:
            result = call()
        except BaseException as error:  # handed to whoever awaits, as the thread would
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(OneTripConnection):
    """A connection making its SQLite calls on the event loop's own thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _AtOnce()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start


def connector(*, inline: bool) -> Callable[..., aiosqlite.Connection]:
    """What SQLAlchemy's aiosqlite dialect calls to connect (``async_creator_fn``), with
    the arguments it would have given ``aiosqlite.connect``."""

    def connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
        def open_file() -> sqlite3.Connection:
            # Made on the worker thread, used on the loop's thread too (one at a time).
            kwargs["check_same_thread"] = False
            opened: sqlite3.Connection = sqlite3.connect(database, **kwargs)
            return opened

        connection: aiosqlite.Connection
        if inline:
            connection = InlineConnection(open_file, 64)
        else:
            connection = OneTripConnection(open_file, 64)
            connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own
        return connection

    return connect
