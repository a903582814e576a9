"""Clocks: the engine, ingest and timers read time only through one of these.

Waiting is part of the clock too, so that on a ``ManualClock`` a scheduler sleeping until
an escalation is due wakes when the test moves time forward, not after real minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    """Something that tells the current time as an aware UTC datetime, and can wait."""

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime, interrupt: asyncio.Event | None = None) -> None:
        """Return at ``when`` or as soon as ``interrupt`` is set, whichever is first."""
        ...


async def _wait(interrupt: asyncio.Event | None, seconds: float) -> None:
    if interrupt is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(interrupt.wait(), seconds)


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, interrupt: asyncio.Event | None = None) -> None:
        await _wait(interrupt, max(0.0, (when - self.now()).total_seconds()))


class ManualClock:
    """A clock that moves only when told to; for tests and simulations on virtual time."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start
        self._moved: asyncio.Event | None = None

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward, waking whoever sleeps until a time now passed."""
        if delta < timedelta(0):
            raise ValueError("a clock does not go backwards")
        self._now += delta
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def sleep_until(self, when: datetime, interrupt: asyncio.Event | None = None) -> None:
        while self._now < when and not (interrupt is not None and interrupt.is_set()):
            if self._moved is None:
                self._moved = asyncio.Event()
            moved = asyncio.ensure_future(self._moved.wait())
            waiters: set[asyncio.Future[Any]] = {moved}
            if interrupt is not None:
                waiters.add(asyncio.ensure_future(interrupt.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
