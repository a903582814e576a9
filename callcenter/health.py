"""Is every part of the server getting its work done? For ``/healthz`` and the boards.

An alarm goes through seven parts, and a desk must know when any of them stops:

- ``ingest``: subscribed to the broker, taking messages in and committing them;
- ``database``: answering at all (a read within two seconds);
- ``follower``: the desk following the event log, so each event becomes (part of) a call;
- ``timers``: escalation deadlines firing when due;
- ``outbox``: the relay going through what is due to be sent;
- ``sms``: Twilio taking the texts, dispatch pages above all;
- ``device_commands``: the command link, so a resident hears that help is on the way;

and, because several servers may share the database, two more:

- ``lease``: some server (this one or another) does the desk's once-only work;
- ``peers``: this server hears the others (PostgreSQL), so its boards see what they do.

A part is *stuck* when it has work waiting and is not getting through it: messages in
hand and not committed, no subscription (alarms cannot arrive, so ingest always counts
that), events stored that the follower has not applied, a deadline overdue, outbox
rows due and not taken up, texts failing with texts waiting, commands waiting while the
link is down. Idle is not stuck: a quiet night with no presses is healthy however long
it lasts. Each part says when it last made progress and, when stuck, since when; one
stuck for longer than ``health.stuck_after_s`` fails the server's health (``/healthz``
answers 503) and every board shows a banner until it works again.

Most of what this reads the parts note themselves as they work (ingest's ``IngestStats``,
the relay's ``ChannelProgress``, the command link's ``down_since``); the rest is read
from the database in one short look: the events still to apply, the earliest pending
timer, the outbox's pending rows. The ``Health`` loop looks every two seconds and tells
the boards (the desk's feed) when what fails changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.brokers import BrokerAddress, describe
from callcenter.clock import Clock
from callcenter.engine.feed import Feed, Update
from callcenter.engine.follower import CURSOR
from callcenter.engine.leadership import Leadership
from callcenter.engine.outbox import ChannelProgress, OutboxRelay
from callcenter.engine.peers import NoPeers, Peers
from callcenter.engine.repository import DEVICE_COMMAND, SMS
from callcenter.engine.scheduler import Scheduler
from callcenter.ingest.adopt import Failing, SessionAdoption
from callcenter.ingest.commands import DeviceCommandSender
from callcenter.ingest.process import IngestProcess
from callcenter.ingest.service import Ingest, IngestStats
from callcenter.store import models as m
from callcenter.store.db import what_it_said

log = logging.getLogger("callcenter.health")

# In the order an alarm goes through them.
PARTS = (
    "ingest",
    "database",
    "lease",
    "follower",
    "timers",
    "outbox",
    "sms",
    "device_commands",
    "peers",
)
DATABASE_TIMEOUT_S = 2.0
# How often the loop looks (real time: a stuck part must reach the boards while it lasts).
CHECK_EVERY_S = 2.0
# The database refusing the events of this many devices, with none stored between, is
# refusing everything (one device may be at fault itself: deleted while it spoke).
REFUSED_DEVICES = 2


@dataclass(frozen=True)
class PartHealth:
    """One part as of one look: since when it is stuck (None: it is not), when it last
    made progress (None: not yet, or not known), and what a person should know."""

    name: str
    stuck_since: datetime | None
    progress_at: datetime | None
    detail: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    def age_s(self, now: datetime) -> float | None:
        """Seconds since it became stuck, or else since it last made progress."""
        since = self.stuck_since or self.progress_at
        return None if since is None else round(max(0.0, (now - since).total_seconds()), 1)


@dataclass(frozen=True)
class HealthReport:
    """Every part as of ``at``; ``failing``: those stuck for longer than ``stuck_after``."""

    at: datetime
    stuck_after: timedelta
    parts: tuple[PartHealth, ...]

    @property
    def failing(self) -> tuple[PartHealth, ...]:
        return tuple(
            part
            for part in self.parts
            if part.stuck_since is not None and self.at - part.stuck_since > self.stuck_after
        )

    @property
    def ok(self) -> bool:
        return not self.failing

    def part(self, name: str) -> PartHealth:
        return next(part for part in self.parts if part.name == name)


# --- what the database says ------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """One channel's pending outbox rows: how many, the oldest made, the earliest due."""

    pending: int
    oldest: datetime | None
    next_due: datetime | None


@dataclass(frozen=True)
class Stored:
    """What one look at the database found."""

    latency_ms: float
    latest_event: int
    # The newest event the desk has applied, and when it last applied one.
    cursor: int
    cursor_moved_at: datetime | None
    # How many stored events it has still to apply, and when the oldest was received.
    waiting: int
    first_waiting_at: datetime | None
    next_timer: datetime | None
    outbox: Mapping[str, Queue]


_events = m.Base.metadata.tables["device_events"]
_outbox = m.Base.metadata.tables["outbox"]
_unapplied = m.Base.metadata.tables["unapplied_events"]


async def read_stored(engine: AsyncEngine) -> Stored:
    """The database's side of health, in one connection (raises when it does not answer);
    its latency includes getting the connection."""
    started = time.perf_counter()
    async with engine.connect() as connection:
        stored = await stored_on(connection)
    return replace(stored, latency_ms=round((time.perf_counter() - started) * 1000, 1))


async def stored_on(connection: AsyncConnection) -> Stored:
    """What one look at the database finds, read on ``connection`` (its latency from the
    first read to the last); /metrics reads its gauges with it."""
    started = time.perf_counter()
    await connection.execute(text("SELECT 1"))
    latest = await connection.scalar(select(func.max(_events.c.id)))
    cursor = (
        await connection.execute(
            select(m.Cursor.position, m.Cursor.updated_at).where(m.Cursor.name == CURSOR)
        )
    ).one_or_none()
    position = int(cursor.position) if cursor is not None else 0
    waiting = int(await connection.scalar(select(func.count()).select_from(_unapplied)) or 0)
    first_waiting_at = (
        await connection.scalar(
            select(_events.c.received_at)
            .join(_unapplied, _unapplied.c.id == _events.c.id)
            .order_by(_unapplied.c.id)
            .limit(1)
        )
        if waiting
        else None
    )
    next_timer = await connection.scalar(
        select(func.min(m.Timer.due_at)).where(m.Timer.state == m.TimerState.PENDING)
    )
    queues = await connection.execute(
        select(
            _outbox.c.channel,
            func.count(),
            func.min(_outbox.c.created_at),
            func.min(_outbox.c.next_attempt_at),
        )
        .where(_outbox.c.state == m.OutboxState.PENDING.value)
        .group_by(_outbox.c.channel)
    )
    outbox = {channel: Queue(int(pending), oldest, due) for channel, pending, oldest, due in queues}
    return Stored(
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        latest_event=int(latest or 0),
        cursor=position,
        cursor_moved_at=cursor.updated_at if cursor is not None else None,
        waiting=waiting,
        first_waiting_at=first_waiting_at,
        next_timer=next_timer,
        outbox=outbox,
    )


# --- each part, from its facts (pure) --------------------------------------------


def _earliest(causes: list[tuple[datetime, str]]) -> datetime | None:
    return min((since for since, _ in causes), default=None)


def ingest_health(
    stats: IngestStats, *, brokers: str, silent_since: datetime | None = None
) -> PartHealth:
    """Ingest: stuck while not subscribed, while holding messages it has not committed,
    while the database refuses it, or (in its own process) while it says nothing.
    ``brokers``: the brokers it tries, in words (``brokers.describe``)."""
    causes: list[tuple[datetime, str]] = []
    if stats.link_down_since is not None:
        causes.append((stats.link_down_since, f"not subscribed to {brokers}: no alarm comes in"))
    if stats.holding_since is not None:
        causes.append(
            (stats.holding_since, f"{stats.holding} message(s) taken in and not yet stored")
        )
    if stats.database_failing_since is not None:
        causes.append(
            (
                stats.database_failing_since,
                f"the database refuses or does not answer: {stats.database_error or '?'}",
            )
        )
    if stats.rejecting_since is not None and stats.rejecting_devices >= REFUSED_DEVICES:
        causes.append(
            (
                stats.rejecting_since,
                f"the database refuses the events of {stats.rejecting_devices} devices and "
                "has stored none since (store_rejected dead letters)",
            )
        )
    if silent_since is not None:
        causes.append((silent_since, "the ingest process has stopped reporting"))
    if causes:
        detail = "; ".join(why for _, why in sorted(causes, key=lambda cause: cause[0]))
    elif stats.received_at is None:
        detail = f"subscribed to the broker {stats.broker or '?'}; no message yet"
    else:
        detail = f"subscribed to the broker {stats.broker or '?'}; storing what comes in"
    return PartHealth(
        "ingest",
        _earliest(causes),
        stats.committed_at,
        detail,
        {
            "connected": stats.link_down_since is None,
            "broker": stats.broker or None,
            "received_at": stats.received_at,
            "committed_at": stats.committed_at,
            "holding": stats.holding,
            "events_stored": stats.events_stored,
            "store_retries": stats.store_retries,
            "reconnects": stats.reconnects,
        },
    )


def with_adoption(part: PartHealth, failing: Sequence[Failing], released: int) -> PartHealth:
    """Ingest's health with the sessions of gone servers (ingest/adopt.py) this server
    takes in: stuck too while one of them could not be taken in, since its server's
    share of the alarms waits in the broker meanwhile."""
    facts = {
        **part.facts,
        "gone_sessions_taken_in": released,
        "gone_sessions_failing": [
            {
                "server": f.server,
                "client_id": f.client_id,
                "since": f.since,
                "error": f.error,
                "next_try_in_s": f.next_try_in_s,
            }
            for f in failing
        ],
    }
    if not failing:
        return replace(part, facts=facts)
    first = min(failing, key=lambda f: f.since)
    why = (
        f"the broker session of gone server {first.server} ({first.client_id or '?'}) "
        f"holds its share of the alarms and could not be taken in ({first.error}); "
        f"trying again in {first.next_try_in_s:g} s"
    )
    if part.stuck_since is not None and part.stuck_since <= first.since:
        return replace(part, detail=f"{part.detail}; {why}", facts=facts)
    detail = why if part.stuck_since is None else f"{why}; {part.detail}"
    return replace(part, stuck_since=first.since, detail=detail, facts=facts)


def database_health(
    stored: Stored | None, failing_since: datetime | None, error: str
) -> PartHealth:
    """The database: stuck while it does not answer a short read."""
    if stored is not None:
        return PartHealth("database", None, None, "answering", {"latency_ms": stored.latency_ms})
    return PartHealth(
        "database", failing_since, None, f"not answering: {error}", {"latency_ms": None}
    )


def follower_health(stored: Stored) -> PartHealth:
    """The desk following the log: stuck while an event waits to be applied and none
    has been applied since that event came (or since the last one was, in a backlog)."""
    lag = stored.waiting
    facts = {"cursor": stored.cursor, "latest_event": stored.latest_event, "lag": lag}
    if lag == 0:
        return PartHealth("follower", None, stored.cursor_moved_at, "every event is applied", facts)
    moments = [t for t in (stored.first_waiting_at, stored.cursor_moved_at) if t is not None]
    return PartHealth(
        "follower",
        max(moments) if moments else None,
        stored.cursor_moved_at,
        f"{lag} event(s) waiting to become calls",
        facts,
    )


def timers_health(stored: Stored, now: datetime, *, last_cycle_at: datetime | None) -> PartHealth:
    """Escalation timers: stuck while a deadline is due and has not fired."""
    due = stored.next_timer
    facts = {"next_due": due, "last_cycle_at": last_cycle_at}
    if due is None or due > now:
        return PartHealth("timers", None, last_cycle_at, "no deadline overdue", facts)
    return PartHealth("timers", due, last_cycle_at, "a deadline is due and has not fired", facts)


def outbox_health(
    stored: Stored, now: datetime, *, channels: list[str], drained_at: datetime | None
) -> PartHealth:
    """The relay: stuck while a row is due and not taken up (a failed send is put off to
    its next attempt, so sending that fails shows under its channel, not here)."""
    due = [
        queue.next_due
        for channel, queue in stored.outbox.items()
        if channel in channels and queue.next_due is not None and queue.next_due <= now
    ]
    waiting = sum(q.pending for c, q in stored.outbox.items() if c in channels)
    facts = {"pending": waiting, "drained_at": drained_at}
    if not due:
        return PartHealth("outbox", None, drained_at, "nothing due is left waiting", facts)
    return PartHealth("outbox", min(due), drained_at, "rows are due and not being sent", facts)


def sms_health(progress: ChannelProgress | None, queue: Queue | None, *, known: bool) -> PartHealth:
    """Texts: stuck while every attempt fails and texts wait (``known``: whether the
    outbox could be read; if not, they are taken to wait)."""
    progress = progress or ChannelProgress()
    pending = queue.pending if queue is not None else 0
    facts = {"pending": pending if known else None, "answered_at": progress.answered_at}
    if progress.failing_since is None:
        return PartHealth("sms", None, progress.answered_at, "Twilio takes the texts", facts)
    if known and pending == 0:
        return PartHealth(
            "sms",
            None,
            progress.answered_at,
            f"the last attempt failed ({progress.error}); no text is waiting",
            facts,
        )
    return PartHealth(
        "sms",
        progress.failing_since,
        progress.answered_at,
        f"every attempt fails: {progress.error}",
        facts,
    )


def commands_health(
    link: DeviceCommandSender | None,
    progress: ChannelProgress | None,
    queue: Queue | None,
    *,
    known: bool,
) -> PartHealth:
    """Device commands: stuck while commands wait and the link is down, or while every
    publish fails."""
    progress = progress or ChannelProgress()
    pending = queue.pending if queue is not None else 0
    waiting = pending > 0 or not known
    connected = link is None or link.connected
    facts = {
        "connected": connected,
        "broker": None if link is None or link.broker is None else str(link.broker),
        "pending": pending if known else None,
        "answered_at": progress.answered_at,
    }
    if not connected and link is not None:
        down = link.down_since
        if not waiting:
            return PartHealth(
                "device_commands",
                None,
                progress.answered_at,
                "not connected to the broker; no command is waiting",
                facts,
            )
        moments = [t for t in (down, queue.oldest if queue is not None else None) if t]
        return PartHealth(
            "device_commands",
            max(moments) if moments else None,
            progress.answered_at,
            f"{pending} command(s) waiting and the link to the broker is down",
            facts,
        )
    if progress.failing_since is not None and waiting:
        return PartHealth(
            "device_commands",
            progress.failing_since,
            progress.answered_at,
            f"every publish fails: {progress.error}",
            facts,
        )
    return PartHealth("device_commands", None, progress.answered_at, "commands go out", facts)


def _unknown(name: str) -> PartHealth:
    return PartHealth(name, None, None, "unknown: the database is not answering")


# --- the watcher -------------------------------------------------------------------


def lease_health(leadership: Leadership | None) -> PartHealth:
    """The desk's lease: stuck while no server has been seen holding it (nobody follows
    the log, fires timers or sends: alarms would wait for whichever comes back)."""
    if leadership is None:
        return PartHealth("lease", None, None, "this server does the desk's work itself")
    term = leadership.term
    facts = {
        "holder": leadership.seen_holder or None,
        "this_server": leadership.holder,
        "leading": term is not None,
        "epoch": term.epoch if term else None,
        "terms": leadership.terms,
    }
    if term is not None:
        detail = f"this server does the desk's once-only work (epoch {term.epoch})"
        return PartHealth("lease", None, term.since, detail, facts)
    if leadership.seen_holder:
        detail = f"{leadership.seen_holder} does the desk's once-only work"
        return PartHealth("lease", None, None, detail, facts)
    said = f" ({leadership.last_error})" if leadership.last_error else ""
    return PartHealth(
        "lease",
        leadership.unheld_since,
        None,
        "no server does the desk's once-only work: alarms are not followed, timers do not "
        f"fire, nothing is sent{said}",
        facts,
    )


def peers_health(peers: Peers | NoPeers) -> PartHealth:
    """The link to the other servers: stuck while it is down, since this server's boards
    then miss what the others decide."""
    facts = {"connected": peers.connected, "sent": peers.sent, "heard": peers.heard}
    if isinstance(peers, NoPeers):
        return PartHealth("peers", None, None, "alone on its database (SQLite)", facts)
    if peers.connected:
        return PartHealth("peers", None, None, "hears the other servers", facts)
    return PartHealth(
        "peers",
        peers.down_since,
        None,
        "cannot hear the other servers: this server's boards miss what they decide "
        f"({peers.last_error or 'connecting'})",
        facts,
    )


class Health:
    """Looks at every part on request (``check``) and, while it runs, every
    CHECK_EVERY_S: logs what starts and stops failing and tells the boards."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        ingest: Ingest | IngestProcess,
        brokers: Sequence[BrokerAddress],
        scheduler: Scheduler,
        relay: OutboxRelay,
        commands: DeviceCommandSender | None,
        feed: Feed,
        stuck_after_s: float,
        leadership: Leadership | None = None,
        peers: Peers | NoPeers | None = None,
        adoption: SessionAdoption | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._ingest = ingest
        self._brokers = describe(brokers)
        self._scheduler = scheduler
        self._relay = relay
        self._commands = commands
        self._feed = feed
        self._leadership = leadership
        self._peers = peers if peers is not None else NoPeers()
        self._adoption = adoption
        self.stuck_after = timedelta(seconds=stuck_after_s)
        self._stopping = asyncio.Event()
        # Noticed by looking, not noted by the part itself: since when.
        self._database_failing_since: datetime | None = None
        self.latest: HealthReport | None = None
        # The look under way that has not yet read the clock: whoever asks meanwhile
        # (the loop, any number of /healthz requests, which need no sign-in) shares it,
        # so a flood of requests costs the database a look or two at a time, and every
        # answer is still as of a moment after it was asked.
        self._looking: asyncio.Future[HealthReport] | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Look every CHECK_EVERY_S of real time until stop(): parts get stuck and come
        back in real time (a broker restarts) whatever the server's clock says."""
        while not self._stopping.is_set():
            await self._look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), CHECK_EVERY_S)

    async def _look(self) -> None:
        try:
            await self.check()
        except Exception:  # a fault here must not stop the looking
            log.exception("looking at the server's health failed")

    async def check(self) -> HealthReport:
        """Every part as of now (or as of the look under way when asked); remembered as
        ``latest``, and what fails told."""
        looking = self._looking
        if looking is None or looking.done():
            looking = self._looking = asyncio.ensure_future(self._check())
        return await asyncio.shield(looking)

    async def _check(self) -> HealthReport:
        stored: Stored | None = None
        error = ""
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                stored = await read_stored(self._engine)
        except (TimeoutError, OperationalError, DBAPIError, OSError) as failure:
            error = (
                f"no answer within {DATABASE_TIMEOUT_S:g} s"
                if isinstance(failure, TimeoutError)
                else what_it_said(failure)
            )[:300]
        # The report is as of now: whoever asks from here on needs a look of their own.
        self._looking = None
        now = self._clock.now()
        if stored is None:
            self._database_failing_since = self._database_failing_since or now
        else:
            self._database_failing_since = None
        parts = self._parts(stored, error, now)
        report = HealthReport(now, self.stuck_after, parts)
        before, self.latest = self.latest, report
        self._tell(before, report)
        return report

    def _parts(self, stored: Stored | None, error: str, now: datetime) -> tuple[PartHealth, ...]:
        ingest = self._ingest
        # Ingest in this process has nothing to report across a pipe, so never falls silent.
        silent = ingest.silent_since(now)
        ingest_part = ingest_health(ingest.stats, brokers=self._brokers, silent_since=silent)
        if self._adoption is not None:
            adoption = self._adoption
            ingest_part = with_adoption(ingest_part, adoption.failing(), adoption.released)
        found = {
            "ingest": ingest_part,
            "database": database_health(stored, self._database_failing_since, error),
            "lease": lease_health(self._leadership),
            "peers": peers_health(self._peers),
            "sms": sms_health(
                self._relay.progress.get(SMS),
                stored.outbox.get(SMS) if stored else None,
                known=stored is not None,
            ),
            "device_commands": commands_health(
                self._commands,
                self._relay.progress.get(DEVICE_COMMAND),
                stored.outbox.get(DEVICE_COMMAND) if stored else None,
                known=stored is not None,
            ),
        }
        if stored is None:
            found |= {name: _unknown(name) for name in ("follower", "timers", "outbox")}
        else:
            found["follower"] = follower_health(stored)
            found["timers"] = timers_health(
                stored, now, last_cycle_at=self._scheduler.last_cycle_at
            )
            found["outbox"] = outbox_health(
                stored, now, channels=self._relay.channels, drained_at=self._relay.drained_at
            )
        return tuple(found[name] for name in PARTS)

    def _tell(self, last: HealthReport | None, report: HealthReport) -> None:
        """Log and publish what fails, when that changed since the ``last`` look."""
        failing = report.failing
        told = [] if last is None else [(part.name, part.stuck_since) for part in last.failing]
        if [(part.name, part.stuck_since) for part in failing] == told:
            return
        before = {name for name, _ in told}
        now_failing = {part.name for part in failing}
        for part in failing:
            if part.name not in before:
                log.error(
                    "HEALTH %s stuck since %s (%.0f s, longer than health.stuck_after_s = %g): %s",
                    part.name,
                    part.stuck_since.isoformat() if part.stuck_since else "?",
                    part.age_s(report.at) or 0.0,
                    self.stuck_after.total_seconds(),
                    part.detail,
                )
        for name in sorted(before - now_failing):
            log.warning("HEALTH %s is working again", name)
        self._feed.publish(Update("health", report.at, None, {"report": report}))
