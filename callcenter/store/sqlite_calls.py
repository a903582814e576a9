"""How SQLAlchemy's aiosqlite dialect reaches SQLite: one trip per statement.

aiosqlite runs each SQLite call on the connection's worker thread and wakes the event
loop with the result. Through its own cursor a statement takes four such trips (make a
cursor, execute, fetch the rows, close the cursor), and under load the waits for those
wake-ups, not SQLite, were most of the server's time (a storm of presses: the event loop
idle three fifths of the time, the worker threads idle too). The cursor here makes one:
it executes, reads every row and closes the SQLite cursor in a single call on the
thread, which is what SQLAlchemy's adapter does with the rows anyway (it reads them all
at once for an ordinary, non-streaming cursor).

``InlineConnection`` makes its calls on the event loop's own thread instead: no trips at
all, but a wait for a lock held by another process stalls the loop, so it is only for a
database file nothing else opens (the simulator's week on virtual time).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import aiosqlite

_Outcome = tuple[Any, int, int | None, list[Any]]


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

        outcome: _Outcome = await conn._execute(on_thread)  # type: ignore[no-untyped-call]
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def execute(self, sql: str, parameters: Any = ()) -> OneTripCursor:
        await self._run(lambda cursor: cursor.execute(sql, parameters or ()))
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
    """aiosqlite's connection, whose cursors make one trip per statement."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)


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
