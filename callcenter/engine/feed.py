"""Live updates for whoever watches the desk (the board, tests, benchmarks).

The database is the record; the feed only says "look again, this changed", so a watcher
that missed an update re-reads the call and loses nothing.

With several servers on one database, what one server's desk publishes goes to the
others too (``outward``, engine/peers.py), and what they publish arrives here through
``deliver``: a board on any server sees every change. A server's own health stays its
own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
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

    def to_notice(self) -> dict[str, Any]:
        """As another server is told it (plain JSON)."""
        return {
            "update": self.kind,
            "at": self.at.isoformat(),
            "call_id": self.call_id,
            "detail": self.detail,
        }

    @classmethod
    def from_notice(cls, notice: dict[str, Any]) -> Update:
        """An update another server's desk published (``to_notice``); ValueError if
        the notice is not one."""
        try:
            call_id = notice.get("call_id")
            detail = notice.get("detail") or {}
            if not isinstance(detail, dict) or not (call_id is None or isinstance(call_id, int)):
                raise ValueError("not an update")
            return cls(str(notice["update"]), datetime.fromisoformat(notice["at"]), call_id, detail)
        except (KeyError, TypeError) as error:
            raise ValueError(f"not an update: {error}") from error


# Updates that are this server's own business: its health is what it sees itself.
LOCAL_KINDS = frozenset({"health"})


class Feed:
    """Fan-out of updates to subscribers, each with a bounded queue of its own."""

    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Update | None]] = set()
        # Told every update published here that the other servers' boards need too.
        self.outward: Callable[[Update], None] | None = None

    def publish(self, update: Update) -> None:
        """An update from this server: to its watchers, and to the other servers."""
        self.deliver(update)
        if self.outward is not None and update.kind not in LOCAL_KINDS:
            self.outward(update)

    def deliver(self, update: Update) -> None:
        """An update to this server's watchers (made here, or by another server)."""
        for queue in list(self._subscribers):
            if queue.full():
                # A watcher this far behind must re-read everything; tell it so.
                queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait(update)

    def resync(self) -> None:
        """Every watcher must read everything again (updates may have been missed)."""
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    queue.get_nowait()
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Update | None]]:
        """A queue of updates; ``None`` in it means "you fell behind, re-read"."""
        queue: asyncio.Queue[Update | None] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
