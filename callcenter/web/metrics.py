"""``GET /metrics``: the call centre's numbers in Prometheus text format.

Counters are this process's since it started (Prometheus handles restarts); gauges that
live in the database (open calls, outbox backlog, follower lag) are read at scrape time,
with /healthz's look at the database (``health.stored_on``) and the open calls besides.
Each app has its own registry, so two servers in one process (tests) never mix numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from callcenter.domain.calls import OPEN_STATES
from callcenter.engine import repository
from callcenter.health import PARTS, stored_on
from callcenter.ingest.protocol import DeadLetterReason
from callcenter.store import models as m
from callcenter.web.contract import Access, Reply, contract
from callcenter.web.state import METRICS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.broker_refusals import RefusalWatch
    from callcenter.clock import Clock
    from callcenter.engine.follower import EventFollower
    from callcenter.engine.outbox import OutboxRelay
    from callcenter.engine.scheduler import Scheduler
    from callcenter.engine.watchdog import Watchdog
    from callcenter.health import Health
    from callcenter.ingest.process import IngestProcess
    from callcenter.ingest.service import Ingest

routes = web.RouteTableDef()

_DATABASE_TIMEOUT_S = 5.0
# Timer lateness runs from milliseconds (healthy) to minutes (a stuck scheduler).
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_CHANNELS = (repository.SMS, repository.DEVICE_COMMAND)


@dataclass
class _FromDatabase:
    """The gauges read from the database at scrape time."""

    open_calls: dict[str, int] = field(default_factory=dict)
    outbox_backlog: dict[str, int] = field(default_factory=dict)
    outbox_oldest_s: float = 0.0
    follower_lag: int = 0


@dataclass(frozen=True)
class Counted:
    """The server's parts whose counters and state the metrics report."""

    ingest: Ingest | IngestProcess
    follower: EventFollower
    scheduler: Scheduler
    relay: OutboxRelay
    watchdog: Watchdog
    health: Health
    # The embedded broker's refused publishes; None when they are not watched.
    refusals: RefusalWatch | None = None


async def _read_database(engine: AsyncEngine, clock: Clock) -> _FromDatabase:
    now = clock.now()
    async with asyncio.timeout(_DATABASE_TIMEOUT_S), engine.connect() as connection:
        stored = await stored_on(connection)
        open_calls = (
            await connection.execute(
                select(m.Call.state, func.count())
                .where(m.Call.closed_at.is_(None))
                .group_by(m.Call.state)
            )
        ).all()
    oldest = min((q.oldest for q in stored.outbox.values() if q.oldest is not None), default=None)
    return _FromDatabase(
        open_calls={str(state): int(n) for state, n in open_calls},
        outbox_backlog={channel: queue.pending for channel, queue in stored.outbox.items()},
        outbox_oldest_s=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        follower_lag=stored.waiting,
    )


class _DeskCollector(Collector):
    """Yields the server's counters and the last database reading as metric families."""

    def __init__(self, parts: Counted) -> None:
        self._parts = parts
        self.database: _FromDatabase | None = None
        self.database_seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        parts = self._parts
        stats = parts.ingest.stats
        yield _counter("events_stored", "device events stored in the log", stats.events_stored)
        yield _counter(
            "events_duplicate", "redelivered device events recognised and not stored twice",
            stats.duplicates,
        )  # fmt: skip
        dead = CounterMetricFamily(
            "callcenter_dead_letters", "messages set aside as dead letters", labels=["reason"]
        )
        counts = {
            reason.value: stats.dead_letters.get(reason.value, 0) for reason in DeadLetterReason
        }
        counts[DeadLetterReason.ENGINE_FAILED.value] += parts.follower.events_failed
        for reason, count in sorted(counts.items()):
            dead.add_metric([reason], count)
        yield dead
        yield _counter(
            "events_applied", "device events the call engine has applied",
            parts.follower.events_applied,
        )  # fmt: skip
        yield _counter("timers_fired", "escalation timers fired", parts.scheduler.fired)
        outbox = CounterMetricFamily(
            "callcenter_outbox_settled", "outbox rows settled, by result", labels=["result"]
        )
        outbox.add_metric(["sent"], parts.relay.sent)
        outbox.add_metric(["skipped"], parts.relay.skipped)
        outbox.add_metric(["failed"], parts.relay.failed)
        yield outbox
        if parts.refusals is not None:
            yield _counter(
                "broker_refused_publishes",
                "publishes the embedded broker refused: a device on a topic not its own",
                parts.refusals.count,
            )
        yield _gauge(
            "broker_connected", "1 while ingest is subscribed to the broker",
            1 if parts.ingest.connected.is_set() else 0,
        )  # fmt: skip
        report = parts.watchdog.report
        yield _gauge(
            "stations_without_free_carer",
            "stations with nobody free on shift (as of the watchdog's last check)",
            len(report.stations_without_free_carer),
        )
        yield _gauge(
            "overdue_deadlines",
            "open calls' deadlines overdue (as of the watchdog's last check)",
            len(report.overdue),
        )
        yield self._stuck()
        yield from self._database_families()

    def _stuck(self) -> Metric:
        stuck = GaugeMetricFamily(
            "callcenter_stuck_seconds",
            "how long each part of the server has had work waiting without getting through "
            "it, 0 when it has not (as of the server's last look, every 2 s)",
            labels=["part"],
        )
        latest = self._parts.health.latest
        for name in PARTS:
            part = latest.part(name) if latest is not None else None
            since = part.stuck_since if part is not None else None
            age = 0.0 if since is None or latest is None else (latest.at - since).total_seconds()
            stuck.add_metric([name], max(0.0, age))
        return stuck

    def _database_families(self) -> Iterable[Metric]:
        database = self.database
        yield _gauge(
            "database_up", "1 if the database answered this scrape", 0 if database is None else 1
        )
        if database is None:
            return
        yield _gauge(
            "database_scrape_seconds", "time to read the gauges below", self.database_seconds
        )
        calls = GaugeMetricFamily("callcenter_open_calls", "open calls, by state", labels=["state"])
        for state in sorted(OPEN_STATES):
            calls.add_metric([state.value], database.open_calls.get(state.value, 0))
        yield calls
        backlog = GaugeMetricFamily(
            "callcenter_outbox_backlog", "outbox rows waiting to be sent, by channel",
            labels=["channel"],
        )  # fmt: skip
        for channel in sorted({*_CHANNELS, *database.outbox_backlog}):
            backlog.add_metric([channel], database.outbox_backlog.get(channel, 0))
        yield backlog
        yield _gauge(
            "outbox_oldest_pending_seconds", "age of the oldest row still waiting to be sent",
            database.outbox_oldest_s,
        )  # fmt: skip
        yield _gauge(
            "follower_lag_events", "device events in the log the call engine has not applied",
            database.follower_lag,
        )  # fmt: skip


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"callcenter_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"callcenter_{name}", documentation, value=value)


class Metrics:
    """One server's metrics registry."""

    def __init__(self, engine: AsyncEngine, clock: Clock, parts: Counted) -> None:
        self._engine = engine
        self._clock = clock
        self.registry = CollectorRegistry()
        self._desk = _DeskCollector(parts)
        self.registry.register(self._desk)
        self._lateness = Histogram(
            "callcenter_timer_lateness_seconds",
            "how long after its due time each escalation timer fired",
            buckets=_LATENESS_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        parts.scheduler.lateness_observers.append(self._lateness.observe)

    async def render(self) -> bytes:
        """The text exposition, with database gauges read now."""
        started = time.perf_counter()
        try:
            self._desk.database = await _read_database(self._engine, self._clock)
        except (TimeoutError, OperationalError, DBAPIError, OSError):
            self._desk.database = None
        self._desk.database_seconds = time.perf_counter() - started
        return generate_latest(self.registry)


@routes.get("/metrics")
@contract(
    access=Access.PUBLIC,
    answers={200: Reply("Prometheus text format", media="text/plain")},
    tag="operations",
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: counters since this process started, gauges read now."""
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
