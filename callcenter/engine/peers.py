"""The other servers on the same database, reached through PostgreSQL's LISTEN/NOTIFY.

Several servers share one PostgreSQL. Each keeps one connection that listens on the
channel ``callcenter`` and says on it, in order, what the others must know at once:

- ``feed``: its desk published an update (a call changed, an alarm, operators); the
  others hand it to their own boards, as if their desk had made it;
- ``events``: its ingest committed device events; the follower looks at the log now;
- ``timers``: its desk armed a timer (with the earliest due); the scheduler sleeps no
  later than that;
- ``outbox``: its desk or API wrote outbox rows; the relay looks now;
- ``lease``: it gave the desk's lease up; the others look at the lease now;
- ``boards``: the operators with a board on it (at every change, and every
  ``REPEAT_S`` while it lives); the others count those boards when offering calls;
- ``gap``: its connection came back after a loss (or it had to drop notices); the
  others' boards read everything again;
- ``hello``: it has just connected; the others say what they repeat (``repeat``) at
  once, so a server that starts knows the others' facts within moments, not ``REPEAT_S``;
- ``session``: the broker session its ingest holds (client id, shared topic, broker),
  repeated; the holder adopts the session of a server that is gone (ingest/adopt.py).

Only the server doing the desk's once-only work acts on ``events``, ``timers`` and
``outbox`` (the others' loops are not running and the prompt waits for nobody). The
database stays the record: a notice only says "look again", so one that is lost costs
a delay, never data. Each part still looks at the database on its own now and then, and
a server whose connection was lost tells its boards to read everything again (as a
board does after a gap in its own feed) and its parts to look at once.

Notices are sent in batches (one round trip for all that are waiting) and at most
``MAX_NOTICE`` bytes each (PostgreSQL's limit is 8000).

SQLite has no such channel; a server on SQLite is the only one (``NoPeers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.clock import Clock
from callcenter.store.db import what_it_said

log = logging.getLogger("callcenter.peers")

CHANNEL = "callcenter"
MAX_NOTICE = 7900
# Notices held while the connection is down; past this they are dropped, and the
# others are told to read everything again when it is back.
MAX_WAITING = 10_000
# The listening connection is asked whether it is alive this often (a half-open TCP
# connection does not say so by itself).
PING_S = 5.0
# What a server says again and again while it lives (``repeat``), this often.
REPEAT_S = 5.0

Listener = Callable[[dict[str, Any]], None]


class NoPeers:
    """A server alone (SQLite): nobody to tell, nobody to hear."""

    connected = True
    down_since: datetime | None = None
    sent = 0
    heard = 0

    def tell(self, kind: str, **facts: Any) -> None:
        pass

    def listen(self, kind: str, listener: Listener) -> None:
        pass

    def on_gap(self, listener: Callable[[], None]) -> None:
        pass

    def repeat(self, kind: str, facts: Callable[[], dict[str, Any]]) -> None:
        pass

    async def run(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Peers:
    """One listening connection to PostgreSQL, shared by every part of this server."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, *, me: str, reconnect_max_s: float = 5.0
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.me = me
        self._reconnect_max_s = reconnect_max_s
        self._listeners: dict[str, list[Listener]] = {}
        self._gap_listeners: list[Callable[[], None]] = []
        self._repeated: dict[str, Callable[[], dict[str, Any]]] = {}
        self._waiting: list[str] = []
        self._dropped = False
        # Another server said hello: say what is repeated now, not at the next turn.
        self._repeat_now = False
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lost = asyncio.Event()
        self.connected = False
        self.down_since: datetime | None = None  # None while connected
        self.sent = 0
        self.heard = 0
        self.last_error = ""

    def tell(self, kind: str, **facts: Any) -> None:
        """Say ``kind`` to the other servers, after whatever was said before it."""
        payload = json.dumps({"from": self.me, "kind": kind, **facts}, default=str)
        if len(payload.encode()) > MAX_NOTICE:
            log.warning(
                "a %s notice of %d bytes is too long to send; sent as a gap", kind, len(payload)
            )
            payload = json.dumps({"from": self.me, "kind": "gap"})
        if len(self._waiting) >= MAX_WAITING:
            self._dropped = True
            return
        self._waiting.append(payload)
        self._ready.set()

    def listen(self, kind: str, listener: Listener) -> None:
        """Call ``listener(notice)`` for each ``kind`` notice another server sends."""
        self._listeners.setdefault(kind, []).append(listener)

    def on_gap(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when notices may have been missed (the connection was
        lost, or a server said it lost some of its own)."""
        self._gap_listeners.append(listener)

    def repeat(self, kind: str, facts: Callable[[], dict[str, Any]]) -> None:
        """Say ``kind`` with ``facts()`` every REPEAT_S while connected (and when the
        connection comes back): a fact the others must not keep once this server is
        gone, such as which boards are open on it."""
        self._repeated[kind] = facts

    def stop(self) -> None:
        self._stopping.set()
        self._ready.set()
        self._lost.set()

    async def run(self) -> None:
        wait_s = 0.2
        first = True
        self.down_since = self._clock.now()  # until the first connection
        while not self._stopping.is_set():
            try:
                async with self._engine.connect() as connection:
                    await self._serve(connection, first)
                    first = False
                    wait_s = 0.2
            except Exception as error:
                said = what_it_said(error)
                if said != self.last_error:
                    log.warning("the link to the other servers is down (%s); reconnecting", said)
                self.last_error = said
            if self.connected:
                self.connected = False
            if self.down_since is None:
                self.down_since = self._clock.now()
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait_s)
            wait_s = min(wait_s * 2, self._reconnect_max_s)

    async def _serve(self, connection: AsyncConnection, first: bool) -> None:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        self._lost.clear()

        def heard(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            self._heard(payload)

        def ended(_connection: Any) -> None:
            self._lost.set()

        await driver.add_listener(CHANNEL, heard)
        driver.add_termination_listener(ended)
        try:
            self.connected, self.down_since, self.last_error = True, None, ""
            if not first:
                log.warning("the link to the other servers is back; boards read everything again")
                # What was said meanwhile may be lost, both ways.
                self._gap()
                self.tell("gap")
            else:
                log.info("listening to the other servers on %r", CHANNEL)
            self.tell("hello")
            loop = asyncio.get_running_loop()
            repeated_at = -REPEAT_S
            while not self._stopping.is_set() and not self._lost.is_set():
                if self._repeat_now or loop.time() - repeated_at >= REPEAT_S:
                    repeated_at, self._repeat_now = loop.time(), False
                    for kind, facts in self._repeated.items():
                        self.tell(kind, **facts())
                await self._send(driver)
                self._ready.clear()
                if self._waiting:
                    continue
                ready = asyncio.ensure_future(self._ready.wait())
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    await asyncio.wait(
                        {ready, lost},
                        timeout=min(PING_S, REPEAT_S),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    ready.cancel()
                    lost.cancel()
                if not ready.done() and not lost.done():
                    await asyncio.wait_for(driver.fetchval("SELECT 1"), PING_S)
            if not self._stopping.is_set():
                raise ConnectionError("the listening connection ended")
        finally:
            with contextlib.suppress(Exception):
                driver.remove_termination_listener(ended)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.remove_listener(CHANNEL, heard), 1.0)

    async def _send(self, driver: Any) -> None:
        if self._dropped:
            self._dropped = False
            self._waiting.append(json.dumps({"from": self.me, "kind": "gap"}))
        if not self._waiting:
            return
        batch = self._waiting[:500]
        await asyncio.wait_for(
            driver.execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload", CHANNEL, batch
            ),
            PING_S,
        )
        del self._waiting[: len(batch)]
        self.sent += len(batch)

    def _heard(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            kind = notice["kind"]
            if notice.get("from") == self.me:
                return
        except (ValueError, KeyError, TypeError):
            log.warning("an unreadable notice from another server: %.200r", payload)
            return
        self.heard += 1
        if kind == "gap":
            self._gap()
            return
        if kind == "hello":
            self._repeat_now = True
            self._ready.set()
            return
        for listener in self._listeners.get(kind, ()):
            try:
                listener(notice)
            except Exception:
                log.exception("acting on a %s notice from %s failed", kind, notice.get("from"))

    def _gap(self) -> None:
        for listener in self._gap_listeners:
            try:
                listener()
            except Exception:
                log.exception("acting on a gap in the notices failed")
