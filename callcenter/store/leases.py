"""Leases in the database: who holds one, taking it over when its holder is gone, and
the fence every transaction of the leased work passes (engine/leadership.py decides when
to take, renew and give up; this module only says how, on each database).

Time is the database's (``clock_timestamp()``) on PostgreSQL, so servers on machines
whose clocks disagree still agree when a lease has lapsed. SQLite lives on one machine:
its leases run on that machine's wall clock.

**The fence.** Work done under a lease runs with ``FENCE`` set (a context variable, so
every task it starts carries it too). Each transaction begun under it reads the lease's
row first and is refused (``LeaseLostError``) unless the epoch is still the one taken. On
PostgreSQL the read is ``FOR KEY SHARE``: a renewal (it changes no key) never waits for
it, but a takeover, which locks the row ``FOR UPDATE``, waits until every fenced
transaction under way has ended, and any begun after the takeover sees the new epoch.
So an old holder that wakes after a pause (SIGSTOP, a network cut) can finish nothing it
began and begin nothing new. On SQLite a writer holds the whole database from its first
read (BEGIN IMMEDIATE); a deferred transaction that read the old epoch is refused the
upgrade to writing once a takeover has committed.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

# Names of the leases there are (migration 0019 makes their rows).
DESK = "desk"


class LeaseLostError(Exception):
    """A transaction of leased work found the lease held by someone else (or taken over
    since): it is refused before it reads or writes anything."""

    # Expected once whenever a server loses the lease: logged in one line (logs.py).
    one_line = True


@dataclass(frozen=True)
class Fence:
    """The lease a piece of work runs under: its name and the epoch its holder took."""

    name: str
    epoch: int


# Set for the tasks of leased work (engine/leadership.py); None everywhere else.
FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("fence", default=None)


def fresh_context() -> contextvars.Context:
    """An empty context for work several callers share (so it logs under none of their
    fields), keeping only the fence: a page sent for leased work is still leased work."""
    context = contextvars.Context()
    fence = FENCE.get()
    if fence is not None:
        context.run(FENCE.set, fence)
    return context


_FENCE_CHECK = {
    "postgresql": text("SELECT epoch FROM leases WHERE name = :name FOR KEY SHARE"),
    "sqlite": text("SELECT epoch FROM leases WHERE name = :name"),
}


def check_fence(connection: Connection) -> None:
    """SQLAlchemy ``begin`` listener (store/db.py): a transaction begun under a fence
    first checks its lease is still held with the same epoch."""
    fence = FENCE.get()
    if fence is None:
        return
    epoch = connection.execute(
        _FENCE_CHECK[connection.dialect.name], {"name": fence.name}
    ).scalar_one_or_none()
    if epoch != fence.epoch:
        raise LeaseLostError(
            f"the {fence.name} lease was taken over (epoch {epoch}, ours {fence.epoch}): "
            "this server no longer does that work"
        )


@dataclass(frozen=True)
class Holding:
    """What a server knows of the lease it holds."""

    name: str
    holder: str
    epoch: int


@dataclass(frozen=True)
class Seen:
    """The lease as a look found it."""

    holder: str
    epoch: int
    lapsed: bool  # its time has run out (or nobody holds it)
    holder_gone: bool  # its holder has no connection to the database left (PostgreSQL)


# SQLite: a server holding a lease also holds an OS lock on a file beside the database
# (``<database>-lease-<name>``), which the kernel lets go the moment the process dies;
# another server that can take the lock knows the holder is gone. Per engine's pool,
# the open file (-1: none, an in-memory database).
_SIGNS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _sign(engine: AsyncEngine, name: str) -> int:
    pool = engine.sync_engine.pool
    fd = _SIGNS.get(pool)
    if fd is None:
        database = engine.url.database
        fd = -1
        if database and database != ":memory:":
            with contextlib.suppress(OSError):
                fd = os.open(
                    f"{database}-lease-{name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                weakref.finalize(pool, os.close, fd)
        _SIGNS[pool] = fd
    return fd


def _hold_sign(engine: AsyncEngine, name: str) -> bool:
    """Take the lease's file lock (SQLite) without waiting; False while another holds it."""
    fd = _sign(engine, name)
    if fd < 0:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def let_go(engine: AsyncEngine, name: str) -> None:
    """This server no longer holds the lease: its file lock goes (SQLite)."""
    if engine.dialect.name == "sqlite":
        fd = _sign(engine, name)
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _wall_now() -> datetime:
    return datetime.now(UTC)


async def look(engine: AsyncEngine, name: str) -> Seen:
    """The lease now, without taking any lock."""
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            row = (
                await connection.execute(
                    text(
                        "SELECT holder, epoch, expires_at <= clock_timestamp() AS lapsed, "
                        "holder <> '' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity "
                        "WHERE application_name = leases.holder) AS gone "
                        "FROM leases WHERE name = :name"
                    ),
                    {"name": name},
                )
            ).one()
            return Seen(row.holder, row.epoch, row.lapsed or row.holder == "", row.gone)
        row = (
            await connection.execute(
                text("SELECT holder, epoch, expires_at FROM leases WHERE name = :name"),
                {"name": name},
            )
        ).one()
        expires = _as_utc(row.expires_at)
        lapsed = row.holder == "" or expires <= _wall_now()
        gone = False
        if not lapsed and _hold_sign(engine, name):
            gone = True  # nobody holds the file: the holder's process is gone
            let_go(engine, name)
        return Seen(row.holder, row.epoch, lapsed, gone)


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def take(
    engine: AsyncEngine, name: str, holder: str, ttl: timedelta, *, seen: Seen
) -> Holding | None:
    """Take the lease over from ``seen`` (lapsed, or its holder gone): one more on its
    epoch, held by ``holder`` for ``ttl``. None when someone else was quicker (the row
    is no longer what ``seen`` found). On PostgreSQL the row is locked first, which
    waits for every fenced transaction of the old holder under way to end (at most
    ``lock_timeout``; see ``end_stuck``)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("SET LOCAL lock_timeout = '2s'"))
            locked = (
                await connection.execute(
                    text("SELECT holder, epoch FROM leases WHERE name = :name FOR UPDATE"),
                    {"name": name},
                )
            ).one()
            if (locked.holder, locked.epoch) != (seen.holder, seen.epoch):
                return None
            changed = await connection.execute(
                text(
                    "UPDATE leases SET holder = :holder, epoch = epoch + 1, "
                    "expires_at = clock_timestamp() + make_interval(secs => :ttl), "
                    "taken_at = clock_timestamp() "
                    "WHERE name = :name AND epoch = :epoch RETURNING epoch"
                ),
                {"holder": holder, "ttl": ttl.total_seconds(), "name": name, "epoch": seen.epoch},
            )
        else:
            if not _hold_sign(engine, name):
                return None
            now = _wall_now()
            changed = await connection.execute(
                text(
                    "UPDATE leases SET holder = :holder, epoch = epoch + 1, "
                    "expires_at = :until, taken_at = :now "
                    "WHERE name = :name AND epoch = :epoch AND holder = :was "
                    "RETURNING epoch"
                ),
                {
                    "holder": holder,
                    "until": now + ttl,
                    "now": now,
                    "name": name,
                    "epoch": seen.epoch,
                    "was": seen.holder,
                },
            )
        epoch = changed.scalar_one_or_none()
    if epoch is None:
        let_go(engine, name)
        return None
    return Holding(name, holder, int(epoch))


async def renew(engine: AsyncEngine, holding: Holding, ttl: timedelta) -> bool:
    """Hold the lease ``ttl`` longer; False when it is no longer ours (taken over)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            changed = await connection.execute(
                text(
                    "UPDATE leases "
                    "SET expires_at = clock_timestamp() + make_interval(secs => :ttl) "
                    "WHERE name = :name AND holder = :holder AND epoch = :epoch"
                ),
                {
                    "ttl": ttl.total_seconds(),
                    "name": holding.name,
                    "holder": holding.holder,
                    "epoch": holding.epoch,
                },
            )
        else:
            changed = await connection.execute(
                text(
                    "UPDATE leases SET expires_at = :until "
                    "WHERE name = :name AND holder = :holder AND epoch = :epoch"
                ),
                {
                    "until": _wall_now() + ttl,
                    "name": holding.name,
                    "holder": holding.holder,
                    "epoch": holding.epoch,
                },
            )
    return changed.rowcount == 1


async def release(engine: AsyncEngine, holding: Holding) -> bool:
    """Give the lease up at once (a clean stop), so the next server need not wait for it
    to lapse. Its epoch stays: the next holder's is one more."""
    async with engine.begin() as connection:
        changed = await connection.execute(
            text(
                "UPDATE leases SET holder = '', expires_at = :past "
                "WHERE name = :name AND holder = :holder AND epoch = :epoch"
            ),
            {
                "past": datetime(1970, 1, 1, tzinfo=UTC),
                "name": holding.name,
                "holder": holding.holder,
                "epoch": holding.epoch,
            },
        )
    return changed.rowcount == 1


async def end_stuck(engine: AsyncEngine, holder: str) -> int:
    """PostgreSQL: end the connections of an old holder that are inside a transaction
    (paused mid-transaction, they hold the lease's row and a takeover would wait for them
    for ever). Its other connections are left alone. Returns how many were ended."""
    if engine.dialect.name != "postgresql" or not holder:
        return 0
    async with engine.connect() as connection:
        ended = await connection.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :holder AND pid <> pg_backend_pid() "
                "AND xact_start IS NOT NULL"
            ),
            {"holder": holder},
        )
        count = int(ended.scalar_one())
        await connection.commit()
    return count
