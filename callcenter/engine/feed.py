"""Live updates for whoever watches the desk (the board, tests, benchmarks).

The database is the record; the feed only says "look again, this changed", so a watcher
that missed an update re-reads the call and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Update:
    """Something changed: a call (``call_id``) or the desk as a whole (alarms)."""

    kind: str  # "call" | "alarm" | "health" | "operators" (duty, boards, offers)
    at: datetime
    call_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Feed:
    """Fan-out of updates to subscribers, each with a bounded queue of its own."""

    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Update | None]] = set()

    def publish(self, update: Update) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                # A watcher this far behind must re-read everything; tell it so.
                queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait(update)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Update | None]]:
        """A queue of updates; ``None`` in it means "you fell behind, re-read"."""
        queue: asyncio.Queue[Update | None] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
