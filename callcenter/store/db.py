"""Engines and sessions for the two supported databases."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import json
import logging
import os
import sys
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, insert, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from callcenter.config import database_kind
from callcenter.store import leases, sqlite_calls

log = logging.getLogger("callcenter.store")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the board read while ingest writes; NORMAL sync is durable across a
    # process crash (the case that matters here) and only risks the last transaction
    # on power loss, which the broker's redelivery then covers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_manual_transactions(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event below open transactions instead of the driver, so a
    # writer can ask for BEGIN IMMEDIATE (SQLAlchemy's documented recipe for aiosqlite).
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    # A transaction that reads and then writes must hold the write lock from its first
    # read: otherwise another writer committing in between makes SQLite refuse the
    # upgrade (SQLITE_BUSY_SNAPSHOT). BEGIN IMMEDIATE is SQLite's "lock the call row".
    immediate = connection.get_execution_options().get(WRITE_LOCKED, False)
    connection.exec_driver_sql(sqlite_calls.BEGIN_WRITING if immediate else "BEGIN")


# Execution option: transactions on this engine take the write lock at once (SQLite).
WRITE_LOCKED = "callcenter_write_locked"


# JSON columns hold JSON: NaN and Infinity (which Python writes by default) are refused
# before they reach the database, where PostgreSQL would refuse them and SQLite keep a
# document nothing else can read.
strict_json = functools.partial(json.dumps, allow_nan=False)

# SQLSTATE classes of a statement refused for what it holds: data exceptions (22:
# invalid JSON, NUL in text, a number out of range) and integrity violations (23).
_REFUSED_CLASSES = frozenset({"22", "23"})


def refused_by_database(error: BaseException) -> bool:
    """Whether ``error`` is the database (or the driver on its behalf) refusing what it
    was given, which no retry will change, rather than being unreachable or busy."""
    if isinstance(error, IntegrityError | DataError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return False
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in _REFUSED_CLASSES
    if isinstance(error, StatementError):  # a value no bind parameter could take
        return True
    return isinstance(error, ValueError | TypeError | OverflowError)


# SQLSTATEs of a database that cannot take the work now, whatever the work: the
# connection failing (class 08), the server shutting down, crashed or starting
# (57P01-57P03), and a read-only transaction (25006): the server reached is a standby,
# as during a failover before the new primary is promoted or once the old one is demoted.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` is the database unreachable, busy, restarting or failing over,
    rather than anything about the work: worth waiting for and trying the same work
    again, never a reason to give up on an event.

    Seen on PostgreSQL during a failover (tests/test_database_failover.py): a statement
    in flight on the killed primary ends in a DBAPIError whose connection is invalidated;
    a new connection while no host is writable is an OSError (the old primary refusing)
    or asyncpg's TargetServerAttributeNotMatched (every host that answered a standby)."""
    if isinstance(error, OSError | TimeoutError):
        return True
    if isinstance(error, OperationalError | InterfaceError):  # SQLite's locks among them
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if isinstance(state, str) and (state[:2] == "08" or state in _UNAVAILABLE_STATES):
        return True
    # Looked up only if asyncpg was loaded: otherwise it cannot have raised it.
    asyncpg = sys.modules.get("asyncpg")
    cause = error.orig.__cause__ if error.orig is not None else None
    return asyncpg is not None and isinstance(
        cause, asyncpg.exceptions.TargetServerAttributeNotMatched
    )


def what_it_said(error: BaseException) -> str:
    """What a database error says, in one line: without the statement and parameters
    SQLAlchemy adds (a dead letter's detail, a log line, a health report)."""
    said = getattr(error, "orig", None) or error
    lines = str(said).splitlines()
    return lines[0][:500] if lines else type(said).__name__


def shown_url(url: str | URL) -> str:
    """``url`` as a log line or the command line may show it: its password hidden,
    whether in the address or in the query (``?password=``, which the driver takes too)."""
    parsed = make_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    inline: bool = False,
    application_name: str = "",
    pool_size: int | None = None,
) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL mode and its directory created.

    SQLite statements go to the connection's worker thread in one trip each, and run on
    the event loop's thread while their transaction holds the write lock (see
    store/sqlite_calls.py). ``inline`` makes every SQLite call on the event loop's own
    thread instead: no trips at all, but a wait for a lock another process holds would
    stall the whole loop. Only for a database file no other process uses, such as the
    simulator's week on virtual time.

    Every transaction begun under a lease's fence checks it first (``leases.FENCE``).
    ``application_name`` names the connections on PostgreSQL: a server's lease holder
    name, by which the others see whether it still has a connection (store/leases.py).
    ``pool_size``: how many connections it keeps open (as many again while all are busy);
    by default 10 on PostgreSQL and SQLAlchemy's 5 on SQLite."""
    sizes: dict[str, Any] = {}
    if pool_size is not None:
        sizes = {"pool_size": pool_size, "max_overflow": pool_size}
    if database_kind(str(url)) == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"async_creator_fn": sqlite_calls.connector(inline=inline)},
            json_serializer=strict_json,
            **sizes,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "connect", _sqlite_manual_transactions)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        event.listen(engine.sync_engine, "begin", leases.check_fence)
        if inline and database:
            _PRIVATE_DATABASES.add(database)
        return engine
    connect_args: dict[str, Any] = {}
    if application_name:
        connect_args["server_settings"] = {"application_name": application_name}
    engine = create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        json_serializer=strict_json,
        connect_args=connect_args,
        **(sizes or {"pool_size": 10}),
    )
    event.listen(engine.sync_engine, "begin", leases.check_fence)
    return engine


def lease_engine(engine: AsyncEngine, application_name: str) -> AsyncEngine:
    """An engine of its own for a lease's upkeep (engine/leadership.py): the same
    database and connection name as ``engine``, one connection kept open (two while a
    renewal given up on is still being ended). Renewals then never wait for a connection
    behind the work's own traffic in ``engine``'s pool (issue 22: in a storm on
    PostgreSQL a renewal queued there until the lease lapsed). A connection that broke
    (the database restarted, failed over) is found by the check on checkout or by the
    statement that failed, and the next use opens another.

    ``engine`` itself where another engine would not reach the same data or must not
    open it: an SQLite database in memory, or one opened ``inline`` (nothing else opens
    it, so no second server leases anything there)."""
    url = engine.url
    if engine.dialect.name == "sqlite" and (
        not url.database or url.database == ":memory:" or url.database in _PRIVATE_DATABASES
    ):
        return engine
    return create_engine(url, application_name=application_name, pool_size=1)


def write_locked(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, whose transactions lock what they read until they commit: rows
    read FOR UPDATE on PostgreSQL, the whole database from the first read on SQLite."""
    return engine.execution_options(**{WRITE_LOCKED: True})


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")


async def lock_names(session: AsyncSession, *names: str) -> None:
    """Hold ``names`` until the session's transaction ends, so transactions that count
    and then act on the same name (a phone, an address) take turns. PostgreSQL:
    transaction-level advisory locks, taken in sorted order so two transactions never
    wait for each other. SQLite: nothing to take, when the session's engine is
    ``write_locked``: its transaction holds the whole database from the first read."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for name in sorted(set(names)):
        await session.execute(_ADVISORY_LOCK, {"name": name})


class _Turn:
    """A process's turn to write: first come, first served, except that a writer asking
    with ``first`` goes before every writer waiting without it. The lease's upkeep asks
    so (engine/leadership.py): it keeps the work alive, and queued behind the work's own
    transactions in a storm it ran out (the work then stopped for seconds)."""

    def __init__(self) -> None:
        self._held = False
        self._first: collections.deque[asyncio.Future[None]] = collections.deque()
        self._others: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, *, first: bool) -> None:
        if not self._held and not self._first and not self._others:
            self._held = True
            return
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._first if first else self._others
        queue.append(waiting)
        try:
            await waiting
        except BaseException:
            if waiting.done() and not waiting.cancelled():
                self.release()  # handed the turn as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have passed it by
                    queue.remove(waiting)
            raise

    def release(self) -> None:
        for queue in (self._first, self._others):
            while queue:
                waiting = queue.popleft()
                if not waiting.done():
                    waiting.set_result(None)  # the turn passes on, still held
                    return
        self._held = False


# One per SQLite database pool (shared by the engine and its write_locked copy).
_WRITE_TURNS: weakref.WeakKeyDictionary[Any, _Turn] = weakref.WeakKeyDictionary()
# Per pool, the open file whose lock orders writers across processes (-1: none, for
# an in-memory database or one no other process opens, or one that could not be opened).
_TURN_FDS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
# Database files opened ``inline``: nothing else opens them (see create_engine).
_PRIVATE_DATABASES: set[str] = set()


@contextlib.asynccontextmanager
async def write_turn(engine: AsyncEngine, *, first: bool = False) -> AsyncIterator[None]:
    """Wrap a write transaction on ``engine``: on SQLite, writers begin one after
    another in the order they asked. Left to SQLite, a writer waiting for the lock polls
    with growing sleeps and can lose every time to one that commits and begins again
    back to back (seen: the outbox starved by a storm of decisions, the event loop idle
    while writers slept; and ingest in its own process starved by the call engine, its
    writes waiting four fifths of the time while presses queued at the broker).

    Within a process the order is an asyncio lock. Between processes it is an OS lock
    on a file beside the database (``<database>-write-turn``): a writer waiting for it
    sleeps in the kernel and is woken the moment it is free, instead of polling. The
    turn only orders writers; SQLite's own locking still keeps them apart, so a file
    that cannot be opened costs fairness, never data. On PostgreSQL, rows are locked as
    needed: nothing to wait for here.

    ``first``: go before the process's writers already waiting (``_Turn``); only for
    short writes that must not wait behind the others, such as the lease's upkeep."""
    if engine.dialect.name != "sqlite":
        yield
        return
    pool = engine.sync_engine.pool
    turn = _WRITE_TURNS.get(pool)
    if turn is None:
        turn = _WRITE_TURNS[pool] = _Turn()
    await turn.acquire(first=first)
    try:
        fd = _turn_fd(engine, pool)
        if fd < 0:
            yield
            return
        await _lock_file(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        turn.release()


@contextlib.asynccontextmanager
async def locked_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A transaction that reads and then writes (a sign-in counted and recorded, a
    household's read and its audit row): it locks what it reads (``write_locked``) and
    begins in turn with the server's other writers (``write_turn``), so on SQLite it is
    never refused the upgrade nor left to wait out the busy timeout in a burst. Loaded
    objects stay usable after it commits."""
    async with (
        write_turn(engine),
        AsyncSession(write_locked(engine), expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


def _turn_fd(engine: AsyncEngine, pool: Any) -> int:
    fd = _TURN_FDS.get(pool)
    if fd is None:
        database = engine.url.database
        fd = -1
        if database and database != ":memory:" and database not in _PRIVATE_DATABASES:
            path = f"{database}-write-turn"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                weakref.finalize(pool, os.close, fd)
            except OSError as error:
                log.warning(
                    "cannot open %s (%s): writers from other processes are not kept in "
                    "turn with this one's (SQLite still keeps them apart)",
                    path,
                    error,
                )
        _TURN_FDS[pool] = fd
    return fd


async def _lock_file(fd: int) -> None:
    """The file's lock: at once when free, else waited for on a worker thread."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiting = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(waiting)
    except BaseException:
        # Given up while the thread still waits (cancelled): what it gets, it gives back.
        def give_back(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None:
                fcntl.flock(fd, fcntl.LOCK_UN)

        waiting.add_done_callback(give_back)
        raise


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


# Rows turned into objects between two looks at the event loop: reading a district of
# 50,000 households, or the devices of 100,000, is about a second of building, which
# must not stall alarms.
SLICE = 2000
_Row = TypeVar("_Row")


async def in_slices(rows: Iterable[_Row]) -> AsyncIterator[_Row]:
    """The rows (of a result), letting the event loop run every ``SLICE`` of them."""
    for n, row in enumerate(rows):
        if n and n % SLICE == 0:
            await asyncio.sleep(0)
        yield row


# Rows a write statement takes at once. On SQLite a transaction holding the write lock
# runs its statements on the event loop's own thread (store/sqlite_calls.py): slices keep
# each stall short, and the loop serves the board and reads between them.
WRITE_SLICE = 1000


async def execute_in_slices(
    writer: AsyncSession | AsyncConnection, statement: Any, rows: Sequence[dict[str, Any]]
) -> None:
    """Execute ``statement`` for ``rows``, a slice at a time."""
    for start in range(0, len(rows), WRITE_SLICE):
        await writer.execute(statement, rows[start : start + WRITE_SLICE])
        await asyncio.sleep(0)


async def insert_rows(
    writer: AsyncSession | AsyncConnection, model: Any, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` into ``model``'s table as one statement a slice.

    Asking for the keys back is what makes SQLAlchemy write many rows a statement on
    asyncpg (its "insertmanyvalues"); without it each row is a statement of its own, and
    on the registry's tables each statement runs the registry's version trigger
    (migration 0008): as many updates of its one row in one transaction, each slower
    than the last, as PostgreSQL walks the row's versions. 18,000 devices in a register
    import took a minute; the storm's district of 50,000 households did not finish
    seeding in 13 minutes, where it now takes seconds."""
    keys = model.__table__.primary_key.columns
    await execute_in_slices(writer, insert(model).returning(*keys), rows)
