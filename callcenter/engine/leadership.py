"""Which server does the desk's once-only work, when several share one database.

Every server ingests, serves the boards and the API, and takes Twilio's webhooks. The
work that must happen once (following the event log, firing timers, the outbox relay,
the watchdog and offline detection, the weekly welfare list, moving offers on, deleting
old recordings) is done by the one server holding the lease "desk" (store/leases.py).

- **Holding.** The holder renews the lease every third of its time to live. If it cannot
  (the database unreachable, or someone took the lease over), it stops the work when the
  lease runs out by its own monotonic clock, which is never later than the database's
  view of it, so two servers never both think they hold it. The lease is looked at,
  taken, renewed and given up on a connection of its own (``db.lease_engine``), never
  one of the work's pool, so a storm that keeps every pooled connection busy does not
  make the renewal wait until the lease lapses.
- **Taking over.** The others look every ``poll_s``. They take the lease when it has
  lapsed, or at once when its holder has no connection to the database left (a killed
  server's connections close with it; PostgreSQL). A clean stop gives the lease up, so
  the next server takes it straight away.
- **Fencing.** The work runs with the lease's epoch as its fence: each of its
  transactions checks the epoch first and is refused once the lease is someone else's.
  A holder paused past its lease (SIGSTOP) that wakes up can change nothing; the taker
  ends such a holder's connections that sit inside a transaction, which would otherwise
  keep the lease's row locked.

What a takeover finds is what a restart finds: events not yet applied, timers due, pages
claimed and not settled (looked for at the provider before they are sent again). The
work's own rules (an event claimed once, timers claimed once, the call's row lock) keep
it right whoever does it; the lease keeps it to one server, so it is done at full speed
and not fought over.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.clock import Clock
from callcenter.store import leases
from callcenter.store.db import database_unavailable, lease_engine, what_it_said, write_turn

log = logging.getLogger("callcenter.leadership")


class Work(Protocol):
    """A part of the once-only work: runs until stopped, and can run again after."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def reset(self) -> None: ...


def holder_name(instance: str) -> str:
    """This process's name as a lease holder and as its database connections'
    application_name: the instance, its process id and a nonce (a server restarted
    with the same process id is still someone else). PostgreSQL keeps 63 bytes."""
    tail = f":{os.getpid()}:{secrets.token_hex(3)}"
    head = f"callcenter:{instance}".encode()[: 63 - len(tail)].decode(errors="ignore")
    return head + tail


@dataclass(frozen=True)
class Term:
    """One spell of holding the lease."""

    epoch: int
    since: datetime  # on the server's clock
    took_s: float  # from finding the lease free to the work started


class Leadership:
    """Holds the desk's lease when it can and runs the once-only work while it does."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        holder: str,
        work: dict[str, Work],
        ttl_s: float = 3.0,
        poll_s: float = 0.5,
        name: str = leases.DESK,
    ) -> None:
        # The lease's own engine (the work uses ``engine``: its fence is checked there).
        self._engine = lease_engine(engine, holder)
        self._owns_engine = self._engine is not engine
        # On SQLite a change to the lease is a write like any other and waits for the
        # work's writers' turn (db.write_turn): left to SQLite's own locking it polls,
        # and lost to a storm's writers until the lease lapsed. It goes before the
        # writers waiting, though: behind a storm's queue of them it lapsed too, and the
        # work it keeps stopped. Nothing on PostgreSQL.
        self._work_engine = engine
        self._clock = clock
        self.holder = holder
        self._work = dict(work)
        self._ttl = timedelta(seconds=ttl_s)
        self._poll_s = poll_s
        self._name = name
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._holding: leases.Holding | None = None
        self.term: Term | None = None
        self.terms = 0  # how many times this server took the lease
        # Who holds the lease as this server last saw it ("" nobody), and since when
        # nobody has been seen holding it, for /healthz.
        self.seen_holder = ""
        self.unheld_since: datetime | None = None
        self.last_error = ""
        self._listeners: list[Callable[[bool], None]] = []
        # Set while this server does the work (for whoever must wait for it to start).
        self.leading_now = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.term is not None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` whenever this server takes or gives up the work."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Look at the lease now (another server said it gave it up)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._holding is None:
                    await self._try_to_take()
                    if self._holding is None:  # taken: its upkeep starts now, not later
                        await self._pause(self._poll_s)
                else:
                    await self._hold()
        finally:
            try:
                await self._step_down(release=True)
            finally:
                if self._owns_engine:
                    await self._engine.dispose()

    # --- not holding: look, and take a lease that is free ----------------------------

    async def _try_to_take(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            seen = await leases.look(self._engine, self._name)
        except Exception as error:
            await self._failed("looking at the lease", error)
            return
        self.seen_holder = "" if seen.lapsed or seen.holder_gone else seen.holder
        if self.seen_holder:
            self.unheld_since = None
        elif self.unheld_since is None:
            self.unheld_since = self._clock.now()
        if not (seen.lapsed or seen.holder_gone):
            return
        found = loop.time()
        try:
            async with write_turn(self._work_engine, first=True):
                holding = await leases.take(
                    self._engine, self._name, self.holder, self._ttl, seen=seen
                )
        except Exception as error:
            if seen.holder and _lock_timed_out(error):
                ended = await leases.end_stuck(self._engine, seen.holder)
                log.warning(
                    "the desk's lease is still locked by %s (paused inside a transaction?): "
                    "ended %d of its connections; trying again",
                    seen.holder,
                    ended,
                )
            else:
                await self._failed("taking the lease over", error)
            return
        if holding is None:
            return
        self._holding = holding
        self._renewed_at = loop.time()
        self._start_work(holding)
        took = loop.time() - found
        self.term = Term(holding.epoch, self._clock.now(), took)
        self.terms += 1
        self.seen_holder, self.unheld_since, self.last_error = self.holder, None, ""
        log.warning(
            "this server now does the desk's once-only work (lease epoch %d, from %s, %s): %s",
            holding.epoch,
            seen.holder or "nobody",
            "its holder had gone" if seen.holder_gone and not seen.lapsed else "lapsed",
            ", ".join(self._work),
        )
        self._tell(True)

    # --- holding: renew, and step down when it cannot be kept -------------------------

    async def _hold(self) -> None:
        assert self._holding is not None
        loop = asyncio.get_running_loop()
        ttl_s = self._ttl.total_seconds()
        # By the time the lease could run out in the database (it was renewed for ttl
        # from a moment after ``_renewed_at``), the work here has stopped.
        deadline = self._renewed_at + ttl_s * 0.8
        await self._pause(min(ttl_s / 3, max(0.0, deadline - loop.time())))
        if self._stopping.is_set():
            return
        self._check_work()
        if loop.time() >= deadline:
            log.error(
                "cannot renew the desk's lease (%s): stopping the once-only work before "
                "it runs out; another server takes it over",
                self.last_error or "no answer in time",
            )
            await self._step_down(release=False)
            return
        asked = loop.time()
        try:
            kept = await asyncio.wait_for(self._renew(), timeout=max(0.05, deadline - asked))
        except Exception as error:
            await self._failed("renewing the lease", error)
            return
        if kept:
            self._renewed_at, self.last_error = asked, ""
            return
        log.error(
            "the desk's lease was taken over by another server: stopping the once-only "
            "work here (epoch %d)",
            self._holding.epoch,
        )
        await self._step_down(release=False)

    def _check_work(self) -> None:
        """A part of the work that ended by itself failed: that fails the server, as it
        did when the parts ran on their own."""
        for name, task in self._tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"the desk's {name} failed") from task.exception()

    def _start_work(self, holding: leases.Holding) -> None:
        context = contextvars.copy_context()
        context.run(leases.FENCE.set, leases.Fence(holding.name, holding.epoch))
        for name, part in self._work.items():
            part.reset()
            self._tasks[name] = asyncio.create_task(
                part.run(), name=f"callcenter.{name}", context=context
            )

    async def _step_down(self, *, release: bool) -> None:
        holding, self._holding = self._holding, None
        if holding is None:
            return
        self.term = None
        for part in self._work.values():
            part.stop()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                log.error("the desk's %s did not stop within 30 s; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        leases.let_go(self._engine, holding.name)
        if release:
            with contextlib.suppress(Exception):
                async with write_turn(self._work_engine, first=True):
                    released = await leases.release(self._engine, holding)
                if released:
                    log.info("gave the desk's lease up (epoch %d)", holding.epoch)
        self._tell(False)

    # --- helpers -------------------------------------------------------------------------

    async def _renew(self) -> bool:
        assert self._holding is not None
        async with write_turn(self._work_engine, first=True):
            return await leases.renew(self._engine, self._holding, self._ttl)

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _failed(self, doing: str, error: Exception) -> None:
        said = f"{doing}: {what_it_said(error)}"
        if said != self.last_error:
            log.warning("desk lease: %s", said)
        self.last_error = said
        if self._renew_on_new_connection(error):
            # The lease's connection may be broken, hung, or on a server that is now a
            # standby (a failover): the next try opens a new one, to whichever host is
            # writable then.
            with contextlib.suppress(Exception):
                await self._engine.dispose()

    def _renew_on_new_connection(self, error: Exception) -> bool:
        """PostgreSQL only: on SQLite the lease's file lock lives with the engine's pool
        (store/leases.py), and a new pool would let it go while the lease is held."""
        return (
            self._owns_engine
            and self._engine.dialect.name == "postgresql"
            and database_unavailable(error)
        )

    def _tell(self, leading: bool) -> None:
        if leading:
            self.leading_now.set()
        else:
            self.leading_now.clear()
        for listener in self._listeners:
            try:
                listener(leading)
            except Exception:
                log.exception("a listener to the desk's lease failed")


def _lock_timed_out(error: BaseException) -> bool:
    """PostgreSQL's lock_not_available (55P03): the lease's row stayed locked."""
    said = getattr(error, "orig", None)
    state = getattr(said, "sqlstate", None) or getattr(
        getattr(said, "__cause__", None), "sqlstate", None
    )
    return state == "55P03" or "lock timeout" in str(error)
