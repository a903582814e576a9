"""Dispatch benchmark: press-to-dispatch-decision latency at baseline and in a 100-call
burst, and timer firing lateness with 10,000 armed timers, next to the bare MQTT round
trip on the same broker in the same run.

    python bench/dispatch.py [--quick] [--database-url postgresql+asyncpg://...]

Starts everything itself: a SQLite database with the demo district in a temporary
directory (or, given ``--database-url``, a database of its own on that PostgreSQL server,
dropped afterwards), a private mosquitto, and the whole server in this process on the
wall clock. A press is timed from just before its QoS 1 publish to the moment the desk
announces the committed decision for that household: a carer "dispatched", or "nobody to
send". A timer's lateness is the time from its due time to the moment the scheduler
claims it. Progress goes to standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import throwaway_database
from callcenter.app import Running, running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import Clock, SystemClock
from callcenter.config import Config
from callcenter.domain.calls import Actor, ActorKind, Outcome, Resolve
from callcenter.domain.events import EventKind, ServerEventKind
from callcenter.engine.feed import Update
from callcenter.ingest.protocol import (
    Channel,
    event_payload,
    heartbeat_payload,
    subscription,
    topic_for,
)
from callcenter.ingest.writer import StoredEvent
from callcenter.store import models as m
from callcenter.store.migrate import upgrade_async
from device_sim.demo_district import seed_demo_district

SEED = 2026
PREFIX = "bench"
# The bare round trip runs on topics of its own, which the server does not subscribe to.
RAW_PREFIX = "bench-raw"
HOUSEHOLDS = 900
BURST = 100
TIMERS_ARMED = 10_000
# The history actions that are a new call's dispatch decision.
DECISIONS = frozenset({"dispatched", "nobody_to_send"})
# A measured timer is the only one of its step on its call, and its escalation cancels
# only that step's timers; the rest of the 10,000 wait hours ahead on another step.
MEASURED_STEP = "not_on_scene"
PARKED_STEP = "emergency_services"
OPERATOR = Actor(ActorKind.OPERATOR, "bench")
DECISION_TIMEOUT_S = 60.0
BUTTON_CONNECTIONS = 4
TARGET_PRESS_P99_MS = 100.0
TARGET_TIMER_P99_MS = 250.0

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench/dispatch {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How much of each phase a run does."""

    presses: int
    press_interval_s: float
    raw_samples: int
    measured_timers: int  # also the number of open calls that hold them
    timer_window_s: float
    raw_interval_s: float = 0.05

    @classmethod
    def for_run(cls, *, quick: bool, press_interval_s: float | None) -> Plan:
        if quick:
            return cls(
                presses=30,
                press_interval_s=press_interval_s or 0.2,
                raw_samples=40,
                measured_timers=200,
                timer_window_s=8.0,
            )
        return cls(
            presses=120,
            press_interval_s=press_interval_s or 0.5,
            raw_samples=200,
            measured_timers=500,
            timer_window_s=20.0,
        )


def milliseconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(name: str, values: Sequence[float]) -> dict[str, float]:
    """``name``'s p50, p99 and max in milliseconds, rounded for the report."""
    return {
        f"{name}_p50_ms": round(statistics.median(values), 2),
        f"{name}_p99_ms": round(percentile(values, 0.99), 2),
        f"{name}_max_ms": round(max(values), 2),
    }


# --- what the benchmark starts ------------------------------------------------------


async def prepare_database(url: str) -> None:
    await upgrade_async(url)
    await seed_demo_district(url, seed=SEED)


def bench_database(workdir: Path, server_url: str | None) -> AbstractAsyncContextManager[str]:
    """A migrated database holding the demo district: a SQLite file in ``workdir``, or a
    new database on ``server_url``'s PostgreSQL server, dropped afterwards (the database
    named in ``server_url`` is only connected to, never changed)."""
    return throwaway_database(workdir, server_url, prepare_database, name="bench")


def server_config(broker: EmbeddedBroker, database_url: str, workdir: Path) -> Config:
    """The server's configuration: the defaults, except that devices never go silent (the
    buttons heart-beat only once) and the operator API takes any free port."""
    return Config.model_validate(
        {
            "data": {"dir": str(workdir)},
            "database": {"url": database_url},
            "broker": {
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": PREFIX,
                "client_id": "bench-dispatch",
                # Presses are published from one connection for many households: a
                # benchmark of dispatch, not of who may publish (tests/test_device_logins.py).
                "device_logins": "none",
            },
            "ingest": {"heartbeat_interval_s": 365 * 86400.0},
            "web": {"port": 0},
        }
    )


def log_to_file(path: Path) -> None:
    """The server logs at INFO as in service, to a file rather than over the progress."""
    logging.basicConfig(
        filename=path, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def logged_errors(path: Path) -> list[str]:
    """The ERROR lines the server logged: a run that logged any deserves a look."""
    return [line for line in path.read_text().splitlines() if " ERROR " in line]


# --- presses ------------------------------------------------------------------------


class Buttons:
    """The district's call buttons, publishing through a few shared MQTT connections."""

    def __init__(self, clients: Sequence[aiomqtt.Client]) -> None:
        self._turns = itertools.cycle(clients)

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, broker: EmbeddedBroker) -> AsyncIterator[Buttons]:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    aiomqtt.Client(
                        broker.host,
                        broker.port,
                        identifier=f"bench-buttons-{n}",
                        protocol=aiomqtt.ProtocolVersion.V311,
                        # A burst must not queue behind paho's default window of 20.
                        max_inflight_messages=BURST * 2,
                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                    )
                )
                for n in range(BUTTON_CONNECTIONS)
            ]
            yield cls(clients)

    async def heartbeat(self, household: str) -> None:
        """The button's once-a-minute sign of life (QoS 0, as devices send it)."""
        await next(self._turns).publish(
            topic_for(PREFIX, household, f"CB-{household}", Channel.HEARTBEAT),
            heartbeat_payload(int(time.time() * 1000), battery=80),
            qos=0,
        )

    async def press(self, household: str, event_id: str, *, prefix: str = PREFIX) -> None:
        """An emergency press at QoS 1; returns once the broker has acknowledged it."""
        await next(self._turns).publish(
            topic_for(prefix, household, f"CB-{household}", Channel.EVENT),
            event_payload(event_id, EventKind.EMERGENCY_PRESS, int(time.time() * 1000)),
            qos=1,
        )


class Awaited:
    """What a press waits for: ingest's commit of its event and the desk's decision."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.committed: asyncio.Future[datetime] = loop.create_future()
        self.decided: asyncio.Future[Update] = loop.create_future()


class DecisionWatch:
    """Matches ingest's commits and the desk's announcements to the presses behind them."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_event: dict[str, Awaited] = {}
        self._by_household: dict[str, Awaited] = {}

    def expect(self, household: str, event_id: str) -> Awaited:
        if household in self._by_household:
            raise ValueError(f"already waiting for a decision on {household}")
        awaited = Awaited()
        self._by_event[event_id] = self._by_household[household] = awaited
        return awaited

    async def on_events(self, events: list[StoredEvent]) -> None:
        """Ingest listener: note when each awaited event was committed."""
        now = self._clock.now()
        for event in events:
            awaited = self._by_event.pop(event.event_id, None)
            if awaited is not None:
                awaited.committed.set_result(now)

    async def follow(self, updates: asyncio.Queue[Update | None]) -> None:
        """Hand each dispatch decision to the press waiting for it, until cancelled."""
        while True:
            update = await updates.get()
            if update is None:
                raise RuntimeError("the benchmark fell behind the desk's feed")
            if update.kind != "call" or not DECISIONS & set(update.detail["actions"]):
                continue
            awaited = self._by_household.pop(update.detail["household"], None)
            if awaited is not None:
                awaited.decided.set_result(update)


@dataclass(frozen=True)
class Decided:
    """One press and the desk's decision on it, timed from just before the publish."""

    call_id: int
    decision: str  # one of DECISIONS
    commit_ms: float  # until ingest committed the event
    decided_ms: float  # until the desk announced the committed decision


class Presses:
    """Presses call buttons and times the desk's decisions."""

    def __init__(self, server: Running, buttons: Buttons, watch: DecisionWatch) -> None:
        self._server = server
        self._buttons = buttons
        self._watch = watch

    async def press(self, household: str, event_id: str) -> Decided:
        """One emergency press, timed until its commit and its dispatch decision."""
        awaited = self._watch.expect(household, event_id)
        pressed_at = self._server.clock.now()
        await self._buttons.press(household, event_id)
        try:
            async with asyncio.timeout(DECISION_TIMEOUT_S):
                committed_at, update = await asyncio.gather(awaited.committed, awaited.decided)
        except TimeoutError:
            raise RuntimeError(
                f"no dispatch decision on {household} within {DECISION_TIMEOUT_S:.0f} s"
            ) from None
        assert update.call_id is not None
        return Decided(
            update.call_id,
            "dispatched" if "dispatched" in update.detail["actions"] else "nobody_to_send",
            milliseconds(committed_at, pressed_at),
            milliseconds(update.at, pressed_at),
        )

    async def press_and_resolve(self, household: str, event_id: str) -> Decided:
        """A press whose call an operator then closes, freeing its carer for the next."""
        decided = await self.press(household, event_id)
        await self._server.desk.command(
            decided.call_id, Resolve(OPERATOR, Outcome.FALSE_ALARM, reason="bench: closed at once")
        )
        return decided

    async def baseline(self, households: Sequence[str], interval_s: float) -> list[Decided]:
        """One press every ``interval_s``, each from another household, each call closed
        by an operator once decided (a quiet district: carers stay available)."""
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            tasks = []
            next_at = loop.time()
            for n, household in enumerate(households):
                tasks.append(group.create_task(self.press_and_resolve(household, f"base-{n}")))
                next_at += interval_s
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        return [task.result() for task in tasks]

    async def burst(self, households: Sequence[str], tag: str) -> list[Decided]:
        """Every household presses at once; the calls stay open."""
        presses = (self.press(household, f"{tag}-{n}") for n, household in enumerate(households))
        return list(await asyncio.gather(*presses))


async def bring_online(server: Running, buttons: Buttons, households: Sequence[str]) -> None:
    """Each of these call buttons heart-beats once, as it does every minute in service,
    and the desk reads the "device online" events that follow: a press is then only a press."""
    for household in households:
        await buttons.heartbeat(household)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        async with server.engine.connect() as connection:
            online, last = (
                await connection.execute(
                    select(
                        func.count().filter(m.DeviceEvent.kind == ServerEventKind.DEVICE_ONLINE),
                        func.max(m.DeviceEvent.id),
                    )
                )
            ).one()
        if online >= len(households) and await server.follower.position() >= last:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the call buttons' heartbeats did not all reach the desk within 60 s")


# --- the raw limit ------------------------------------------------------------------


class RawRoundTrip:
    """The bare limit: a press's publish, through the same broker, to a plain aiomqtt
    subscriber in this process that parses the payload and does nothing else."""

    def __init__(self, buttons: Buttons, clock: Clock) -> None:
        self._buttons = buttons
        self._clock = clock
        self._arrivals: dict[str, asyncio.Future[datetime]] = {}

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            body = json.loads(message.payload)
            self._arrivals.pop(body["id"]).set_result(self._clock.now())

    async def _trip(self, n: int) -> float:
        event_id = f"raw-{n}"
        arrived: asyncio.Future[datetime] = asyncio.get_running_loop().create_future()
        self._arrivals[event_id] = arrived
        sent_at = self._clock.now()
        await self._buttons.press(f"H{n % HOUSEHOLDS + 1:04d}", event_id, prefix=RAW_PREFIX)
        return milliseconds(await asyncio.wait_for(arrived, 10), sent_at)

    async def measure(
        self, broker: EmbeddedBroker, samples: int, interval_s: float
    ) -> tuple[list[float], list[float]]:
        """Round trips (ms) paced ``interval_s`` apart, then BURST of them at once."""
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="bench-raw",
            protocol=aiomqtt.ProtocolVersion.V311,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        async with client:
            await client.subscribe(subscription(RAW_PREFIX), qos=1)
            receiver = asyncio.create_task(self._receive(client), name="bench.raw")
            try:
                paced = []
                for n in range(samples):
                    paced.append(await self._trip(n))
                    await asyncio.sleep(interval_s)
                burst = await asyncio.gather(*(self._trip(samples + n) for n in range(BURST)))
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
        return paced, list(burst)


# --- timers -------------------------------------------------------------------------


@dataclass(frozen=True)
class TimerRun:
    armed: int  # pending timers in the table once armed
    lateness_ms: list[float]
    unfired: int  # measured timers still pending when the benchmark gave up waiting


async def pending_timers(engine: AsyncEngine, ids: Sequence[int] | None = None) -> int:
    """How many timers (of ``ids``, if given) are pending."""
    query = select(func.count()).select_from(m.Timer).where(m.Timer.state == m.TimerState.PENDING)
    if ids is not None:
        query = query.where(m.Timer.id.in_(ids))
    async with engine.connect() as connection:
        return int(await connection.scalar(query) or 0)


async def open_calls(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.scalars(
            select(m.Call.id).where(m.Call.closed_at.is_(None)).order_by(m.Call.id)
        )
        return list(rows.all())


def timer_row(call_id: int, step: str, due_at: datetime) -> dict[str, Any]:
    return {"call_id": call_id, "step": step, "due_at": due_at, "state": m.TimerState.PENDING}


async def arm_timers(
    engine: AsyncEngine, calls: Sequence[int], now: datetime, window_s: float, rng: random.Random
) -> list[int]:
    """In one transaction, top the pending timers up to TIMERS_ARMED: one measured timer
    per call, due at a random moment of the ``window_s`` seconds after a 1 s lead, the
    rest parked 1 to 24 hours ahead. Returns the measured timers' ids."""
    measured = [
        timer_row(call, MEASURED_STEP, now + timedelta(seconds=1 + rng.uniform(0, window_s)))
        for call in calls
    ]
    parked = [
        timer_row(calls[n % len(calls)], PARKED_STEP, now + timedelta(hours=rng.uniform(1, 24)))
        for n in range(TIMERS_ARMED - await pending_timers(engine) - len(measured))
    ]
    async with engine.begin() as connection:
        ids = await connection.scalars(insert(m.Timer).returning(m.Timer.id), measured)
        measured_ids = list(ids.all())
        await connection.execute(insert(m.Timer), parked)
    return measured_ids


async def wait_fired(engine: AsyncEngine, ids: Sequence[int], deadline: float) -> int:
    """Wait until none of ``ids`` is pending, or the loop time ``deadline``; how many are."""
    loop = asyncio.get_running_loop()
    while True:
        left = await pending_timers(engine, ids)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.5)


async def timer_lateness(
    server: Running, calls: Sequence[int], window_s: float, rng: random.Random
) -> TimerRun:
    """Arm the timers, let the scheduler fire the measured ones, and read their lateness
    (due at ``due_at``, claimed at ``fired_at``) back from the table."""
    ids = await arm_timers(server.engine, calls, server.clock.now(), window_s, rng)
    server.desk.timers_changed.set()  # the scheduler re-reads its next deadline
    armed = await pending_timers(server.engine)
    progress(f"{armed} timers pending; {len(ids)} measured ones due over {window_s:.0f} s")
    unfired = await wait_fired(
        server.engine, ids, asyncio.get_running_loop().time() + 1 + window_s + 30
    )
    async with server.engine.connect() as connection:
        rows = await connection.execute(
            select(m.Timer.due_at, m.Timer.fired_at).where(
                m.Timer.id.in_(ids), m.Timer.state == m.TimerState.FIRED
            )
        )
        lateness = [milliseconds(fired, due) for due, fired in rows.all() if fired is not None]
    return TimerRun(armed, lateness, unfired)


# --- the run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phases:
    """What the press phases measured."""

    raw: list[float]
    raw_burst: list[float]
    baseline: list[Decided]
    burst: list[Decided]


async def press_phases(
    server: Running, broker: EmbeddedBroker, plan: Plan, households: Sequence[str]
) -> Phases:
    """The raw round trip, the baseline and the burst; then the open calls that will
    hold the measured timers."""
    watch = DecisionWatch(server.clock)
    server.ingest.on_events(watch.on_events)
    async with Buttons.connected(broker) as buttons, server.desk.feed.subscribe() as updates:
        follower = asyncio.create_task(watch.follow(updates), name="bench.watch")
        try:
            progress(f"bringing the {len(households)} call buttons to be pressed online")
            await bring_online(server, buttons, households)
            progress(f"raw MQTT round trip: {plan.raw_samples} paced, then {BURST} at once")
            raw, raw_burst = await RawRoundTrip(buttons, server.clock).measure(
                broker, plan.raw_samples, plan.raw_interval_s
            )
            presses = Presses(server, buttons, watch)
            progress(f"baseline: {plan.presses} presses, one every {plan.press_interval_s} s")
            baseline = await presses.baseline(households[: plan.presses], plan.press_interval_s)
            progress(f"burst: {BURST} presses at once")
            burst_end = plan.presses + BURST
            burst = await presses.burst(households[plan.presses : burst_end], "burst")
            hosts = plan.measured_timers - BURST
            progress(f"opening {hosts} more calls to hold the measured timers")
            await presses.burst(households[burst_end : burst_end + hosts], "host")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    return Phases(raw, raw_burst, baseline, burst)


def outcomes(name: str, decided: Sequence[Decided]) -> dict[str, int]:
    return {
        f"{name}_{kind}": sum(d.decision == kind for d in decided) for kind in sorted(DECISIONS)
    }


async def measure(server: Running, broker: EmbeddedBroker, plan: Plan) -> dict[str, Any]:
    """Every phase against the running server; the report's figures."""
    rng = random.Random(SEED)
    # Each household presses once: its call is closed (baseline) or holds a timer.
    households = rng.sample(
        [f"H{n:04d}" for n in range(1, HOUSEHOLDS + 1)], plan.presses + plan.measured_timers
    )
    free = [c for c in await server.desk.carer_snapshots() if c.state.value == "free"]
    progress(f"{len(free)} carers free on shift now")
    phases = await press_phases(server, broker, plan, households)
    calls = await open_calls(server.engine)
    timers = await timer_lateness(server, calls, plan.timer_window_s, rng)
    if timers.unfired:
        progress(f"{timers.unfired} measured timers still pending 30 s after their window")
    return {
        **figures("press_to_dispatch", [d.decided_ms for d in phases.baseline]),
        **figures("press_to_commit", [d.commit_ms for d in phases.baseline]),
        **figures("burst_press_to_dispatch", [d.decided_ms for d in phases.burst]),
        **figures("burst_press_to_commit", [d.commit_ms for d in phases.burst]),
        **figures("timer_lateness", timers.lateness_ms),
        **figures("raw_mqtt", phases.raw),
        **figures("raw_mqtt_burst", phases.raw_burst),
        **outcomes("baseline", phases.baseline),
        **outcomes("burst", phases.burst),
        "timers_armed": timers.armed,
        "timers_measured": len(timers.lateness_ms) + timers.unfired,
        "timers_unfired": timers.unfired,
        "timer_window_s": plan.timer_window_s,
        "carers_free_at_start": len(free),
        "presses": len(phases.baseline),
        "press_interval_s": plan.press_interval_s,
        "burst_presses": len(phases.burst),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to run on (postgresql+asyncpg://...): the benchmark "
        "creates a database of its own there and drops it afterwards. Default: SQLite",
    )
    parser.add_argument(
        "--press-interval",
        type=float,
        help="seconds between baseline presses (default 0.5; 0.2 with --quick)",
    )
    args = parser.parse_args()
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a PostgreSQL URL; SQLite is the default")
    plan = Plan.for_run(quick=args.quick, press_interval_s=args.press_interval)

    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        workdir = Path(tmp)
        server_log = workdir / "server.log"
        log_to_file(server_log)
        progress("creating the database and the demo district")
        async with (
            bench_database(workdir, args.database_url) as database_url,
            EmbeddedBroker(workdir / "mosquitto") as broker,
        ):
            progress("starting the server")
            config = server_config(broker, database_url, workdir)
            async with running_server(config, SystemClock()) as server:
                await asyncio.wait_for(server.ingest.connected.wait(), 30)
                result = await measure(server, broker, plan)
        errors = logged_errors(server_log)
    for line in errors[:5]:
        progress(f"server logged: {line}")
    result |= {
        "server_errors_logged": len(errors),
        "database": "postgresql" if args.database_url else "sqlite",
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "targets_met": {
            "press_to_dispatch_p99": result["press_to_dispatch_p99_ms"] < TARGET_PRESS_P99_MS,
            "timer_lateness_p99": result["timer_lateness_p99_ms"] < TARGET_TIMER_P99_MS,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
