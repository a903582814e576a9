"""Taking in what a gone server's broker session holds (several servers, PostgreSQL).

Every server ingests through the shared subscription on a persistent session of its
own (``broker.client_id``). mosquitto shares the subscription's messages out among its
members' sessions, connected or not (mosquitto issue #1747): a server that dies and
does not come back leaves about one press in N (N servers) queued in its session, with
whatever it had received and not acknowledged, until a client connects with its client
id. The server doing the desk's once-only work is that client:

- **Knowing the sessions.** Each server says, every few seconds on the servers' channel
  (engine/peers.py, ``session``), the client id its ingest holds, the topic it
  subscribes to and the broker it is on. The latest server to say a client id is the
  one that holds it.
- **Knowing one is gone.** A server is gone when it has not been heard for
  ``GONE_AFTER_S`` and no connection to the database is left under its name
  (``application_name``, as the desk's lease judges its holder: store/leases.py). A
  server that restarts is someone else (a new name) and says its client id again, so
  its session is never taken from it while it has a connection to the database.
- **Adopting.** It connects with that client id, without a clean session: the broker
  resumes the session and sends what it holds, in flight and queued. It unsubscribes
  the session from the shared topic at once, so the broker hands it no new share, and
  stores each batch exactly as ingest does (the same parsing, the same ``EventWriter``:
  ``Ingest.take``), acknowledging it only after the commit. Once nothing has come for
  ``QUIET_S`` with nothing in hand, the session is drained: it disconnects, leaving
  the session empty and subscribed to nothing. A server that comes back subscribes
  again as it connects (ingest does at every connection) and gets its share again.
- **A server alive after all** (cut off from the database, so silent and without
  connections, but still on the broker) reconnects when its session is taken and takes
  it back. The adoption that loses its connection gives up; it is tried again only
  after ``RETRY_FIRST_S``, doubling up to ``RETRY_MAX_S``, and only while the server is
  still gone. Nothing is lost or doubled either way: a message is acknowledged only
  after its commit, whoever holds the session receives again what was not, and the
  event log keeps one copy of each (device, event id).

Only the sessions of servers heard while this one ran are known. SQLite keeps one
server: nothing to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.brokers import BrokerAddress
from callcenter.clock import Clock
from callcenter.config import Config
from callcenter.ingest.mqtt import AckAfterCommit, ingest_client
from callcenter.ingest.service import EventListener, Ingest, as_received
from callcenter.store.db import what_it_said

log = logging.getLogger("callcenter.ingest.adopt")

# What each server repeats on the servers' channel (engine/peers.py).
NOTICE = "session"
# A server not heard for this long (three of its repeated notices missed), with no
# connection to the database left, is gone.
GONE_AFTER_S = 15.0
# How often the holder looks for servers that are gone.
LOOK_EVERY_S = 2.0
# An adopted session that has sent nothing for this long, with nothing in hand, is
# drained: the broker sends what a session holds as soon as it is resumed, and the
# next queued message as soon as one in flight is acknowledged.
QUIET_S = 2.0
# After an adoption lost its connection (its server took the session back), the wait
# before trying again, doubling each time up to the most.
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0
# How long the broker may take to answer the unsubscribe.
_UNSUBSCRIBE_TIMEOUT_S = 60.0


@dataclass
class Session:
    """A broker session as a server last said it holds it."""

    client_id: str
    holder: str  # the server that said so: its name, as its database connections have it
    topic: str  # the topic filter it subscribes to
    broker: str  # the broker it was on ("host:port"; "" while it was not subscribed)
    heard: float  # when, by this process's monotonic clock


@dataclass
class _Retry:
    at: float
    wait_s: float


@dataclass(frozen=True)
class Failing:
    """A gone server whose session could not be taken in: its share of the alarms waits
    in the broker meanwhile."""

    server: str
    client_id: str
    since: datetime  # the first adoption that failed
    error: str
    next_try_in_s: float


class SessionAdoption:
    """Hears the servers' sessions; while this server does the desk's once-only work,
    takes in what the session of a gone server holds, then releases it."""

    def __init__(
        self,
        config: Config,
        engine: AsyncEngine,
        clock: Clock,
        *,
        brokers: Sequence[BrokerAddress],
    ) -> None:
        self._config = config
        self._engine = engine
        self._clock = clock
        self._brokers = tuple(brokers)
        self._sessions: dict[str, Session] = {}  # by client id
        self._released: set[str] = set()  # servers whose session was drained
        self._retries: dict[str, _Retry] = {}  # by server
        self._clashes: set[str] = set()  # servers seen using this server's own client id
        # Gone servers whose session could not be taken in: since when, and why.
        self._failing: dict[str, tuple[datetime, str]] = {}
        self._listeners: list[EventListener] = []
        self._stopping = asyncio.Event()

    def on_events(self, listener: EventListener) -> None:
        """Call ``listener`` with each committed batch of new events, as ingest does."""
        self._listeners.append(listener)

    def heard(self, notice: dict[str, Any]) -> None:
        """A ``session`` notice from another server."""
        holder, client_id, topic = notice.get("from"), notice.get("client_id"), notice.get("topic")
        broker = notice.get("broker")
        if not (isinstance(holder, str) and isinstance(client_id, str) and isinstance(topic, str)):
            return
        if not (holder and client_id and topic):
            return
        if client_id == self._config.broker.client_id:
            if holder not in self._clashes:
                self._clashes.add(holder)
                log.error(
                    "server %s uses this server's broker client id %r: each server needs "
                    "its own, or they take the session from each other",
                    holder,
                    client_id,
                )
            return
        known = self._sessions.get(client_id)
        if known is None or known.holder != holder:
            log.info("server %s holds the broker session %s", holder, client_id)
        where = broker if isinstance(broker, str) else ""
        self._sessions[client_id] = Session(client_id, holder, topic, where, time.monotonic())

    def stop(self) -> None:
        self._stopping.set()
        # No longer this server's to take in: the next holder tries, and says so.
        self._failing.clear()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    @property
    def released(self) -> int:
        """How many gone servers' sessions were taken in and released."""
        return len(self._released)

    def failing(self) -> list[Failing]:
        """The gone servers whose session could not be taken in yet (for /healthz)."""
        now = time.monotonic()
        found = []
        for server, (since, error) in sorted(self._failing.items()):
            client_id = next(
                (s.client_id for s in self._sessions.values() if s.holder == server), ""
            )
            retry = self._retries.get(server)
            left = 0.0 if retry is None else max(0.0, retry.at - now)
            found.append(Failing(server, client_id, since, error, round(left, 1)))
        return found

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                for session in await self.gone():
                    if self._stopping.is_set():
                        break
                    await self._adopt(session)
            except (DBAPIError, OSError, TimeoutError) as error:
                log.warning("cannot look for servers that are gone (%s)", what_it_said(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LOOK_EVERY_S)

    async def gone(self) -> list[Session]:
        """The sessions whose server is gone and that are still to be taken in."""
        now = time.monotonic()
        heard = {s.holder for s in self._sessions.values() if now - s.heard < GONE_AFTER_S}
        silent = [
            session
            for session in self._sessions.values()
            if now - session.heard >= GONE_AFTER_S
            and session.holder not in self._released
            and now >= self._retries.get(session.holder, _Retry(0.0, 0.0)).at
        ]
        if not silent and not self._failing:
            return []
        async with self._engine.connect() as connection:
            connected = set(
                (
                    await connection.execute(
                        text(
                            "SELECT DISTINCT application_name FROM pg_stat_activity "
                            "WHERE application_name = ANY(:names)"
                        ),
                        {"names": sorted({s.holder for s in silent} | set(self._failing))},
                    )
                ).scalars()
            )
        # A server whose session could not be taken in and that is heard again, or has a
        # connection again, was alive after all: nothing of it waits for this one.
        for server in (heard | connected) & set(self._failing):
            self._failing.pop(server, None)
            self._retries.pop(server, None)
            log.info("server %s is back; its broker session is its own again", server)
        return [session for session in silent if session.holder not in connected]

    def _broker_for(self, session: Session) -> BrokerAddress:
        """The broker the session was on, if it is one of ours; else our first."""
        for broker in self._brokers:
            if str(broker) == session.broker:
                return broker
        return self._brokers[0]

    async def _adopt(self, session: Session) -> None:
        broker = self._broker_for(session)
        own = self._config.broker.model_copy(update={"client_id": session.client_id})
        client = ingest_client(own, host=broker.host, port=broker.port)
        store = Ingest(self._config, self._engine, self._clock, brokers=self._brokers)
        for listener in self._listeners:
            store.on_events(listener)
        silent_s = time.monotonic() - session.heard
        log.warning(
            "server %s is gone (not heard for %.0f s, no database connection): adopting its "
            "broker session %s on %s to take in what it holds",
            session.holder,
            silent_s,
            session.client_id,
            broker,
        )
        taken = [0, 0]  # messages, new events
        try:
            async with client:
                await client.unsubscribe(session.topic, timeout=_UNSUBSCRIBE_TIMEOUT_S)
                log.info(
                    "adopted session %s: unsubscribed from %s; taking in what it holds",
                    session.client_id,
                    session.topic,
                )
                drained = await self._drain(client, store, taken)
        except aiomqtt.MqttError as error:
            retry = self._retries.get(session.holder)
            wait_s = RETRY_FIRST_S if retry is None else min(retry.wait_s * 2, RETRY_MAX_S)
            self._retries[session.holder] = _Retry(time.monotonic() + wait_s, wait_s)
            since = self._failing.get(session.holder, (self._clock.now(), ""))[0]
            self._failing[session.holder] = (since, str(error)[:300])
            log.warning(
                "lost the adopted session %s after %d messages (%s): its server may be alive "
                "and have taken it back, or the broker went; trying again in %.0f s if it "
                "is still gone",
                session.client_id,
                taken[0],
                error,
                wait_s,
            )
            return
        if not drained:
            log.warning(
                "stopped taking in the session %s after %d messages (%d new events): "
                "this server no longer does the desk's once-only work",
                session.client_id,
                taken[0],
                taken[1],
            )
            return
        self._released.add(session.holder)
        self._retries.pop(session.holder, None)
        self._failing.pop(session.holder, None)
        log.warning(
            "released the broker session %s of server %s: it held %d messages (%d new "
            "events stored); it is subscribed to nothing, so the broker queues nothing more "
            "for it",
            session.client_id,
            session.holder,
            taken[0],
            taken[1],
        )

    async def _drain(self, client: aiomqtt.Client, store: Ingest, taken: list[int]) -> bool:
        """Store and acknowledge what the session sends until it has been quiet for
        QUIET_S with nothing in hand (True), or this server stops the work (False)."""
        session = AckAfterCommit(client)
        while not self._stopping.is_set():
            batch = await session.next_batch_within(self._config.ingest.max_batch, QUIET_S)
            if not batch:
                return True
            stored = await store.take([as_received(m) for m in batch])
            session.acknowledge(batch)
            taken[0] += len(batch)
            taken[1] += len(stored)
        return False
