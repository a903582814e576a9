"""Watching the event loop: whether it kept running while a test's code waited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Ticks:
    """How many times the loop woke a sleeper every ``every_s`` seconds."""

    every_s: float
    count: int = 0


@contextlib.asynccontextmanager
async def loop_ticks(every_s: float = 0.05) -> AsyncIterator[Ticks]:
    """Counts the loop's turns while the block runs: a loop stalled by a blocking call
    counts none meanwhile."""
    ticks = Ticks(every_s)

    async def tick() -> None:
        while True:
            await asyncio.sleep(every_s)
            ticks.count += 1

    ticking = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
