"""Per-phone lanes: each phone's (or device's) due rows go out one after another, in
order, while different phones go side by side.

``lanes`` groups a pass's due rows by phone; ``Turns`` gives each phone one turn at a
time, shared by a pass's lanes and by the pages handed over by their decision; ``Marks``
lets a lane go on to its next row while the last one is marked sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, NamedTuple

# Texts (and device commands) out to their provider at the same time (config:
# calls.outbox_lanes): each waits on the network, and in a storm the pages must not queue
# behind each other's waits. Each phone's texts still go one after another, in order.
LANES = 16


class Due(NamedTuple):
    """A row found due by the relay's pass, as read before it is claimed."""

    id: int
    channel: str
    address: str
    paged: bool  # a dispatch page (its guard names a carer)
    in_doubt: bool


def lanes(due: Sequence[Due]) -> dict[tuple[str, str], list[Due]]:
    """``due`` by channel and address, each lane's rows in the order given."""
    found: dict[tuple[str, str], list[Due]] = {}
    for row in due:
        found.setdefault((row.channel, row.address), []).append(row)
    return found


class Turns:
    """One turn at a time per phone (or device): its texts go out one after another, in
    the order they took their turn, whichever way they came (a page handed over by its
    decision, a drain's lane)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # and how many want it

    def busy(self, address: str) -> bool:
        """Whether something has, or waits for, ``address``'s turn."""
        return address in self._locks

    @contextlib.asynccontextmanager
    async def of(self, address: str) -> AsyncIterator[None]:
        """Hold ``address``'s turn, after those who asked for it before."""
        lock, wanting = self._locks.get(address, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[address] = (lock, wanting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, wanting = self._locks[address]
            if wanting == 1:
                del self._locks[address]
            else:
                self._locks[address] = (lock, wanting - 1)


class Marks:
    """Sent rows being marked sent in the background: a lane goes on to its next row
    meanwhile (the row was claimed before the send, so it is not due again, and a crash
    before the mark leaves it in doubt, to be checked with the provider)."""

    def __init__(self) -> None:
        self._writing: set[asyncio.Task[None]] = set()
        self._of: dict[int, asyncio.Task[None]] = {}  # the same, by row id

    def __bool__(self) -> bool:
        return bool(self._writing)

    def start(self, row: int, mark: Coroutine[Any, Any, None]) -> None:
        """Write row ``row``'s mark (``mark``) in the background."""
        marking = asyncio.create_task(mark)
        self._writing.add(marking)
        self._of[row] = marking
        marking.add_done_callback(functools.partial(self._done, row))

    def _done(self, row: int, marking: asyncio.Task[None]) -> None:
        if self._of.get(row) is marking:
            del self._of[row]
        # A mark that failed stays until ``written`` reports it (rather than vanishing).
        if marking.cancelled() or marking.exception() is None:
            self._writing.discard(marking)

    async def of(self, row: int) -> None:
        """Wait until row ``row`` is no longer being marked sent. A row due again while
        its mark is still being written (a page handed over whose send outlasted its
        claim) must not be claimed as if it had never gone out."""
        marking = self._of.get(row)
        if marking is not None:
            await asyncio.wait([marking])

    async def settled(self) -> None:
        """Wait until every mark being written now is written or failed (its error is
        left for ``written`` to report)."""
        if self._writing:
            await asyncio.wait(list(self._writing))

    async def written(self) -> list[BaseException]:
        """Wait for the marks still being written; the errors among them and among the
        marks that failed since the last look."""
        marks = list(self._writing)
        done = await asyncio.gather(*marks, return_exceptions=True)
        self._writing.difference_update(marks)
        return [e for e in done if isinstance(e, BaseException)]
