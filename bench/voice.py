"""Voice benchmark: from an unaccepted page's deadline to the carer's phone ringing at
the fake Twilio, paced and in a burst, and whether any carer was rung twice for one
step, next to the bare HTTP round trip to the fake measured in the same run.

    python bench/voice.py [--quick]

Starts everything itself: a SQLite database with the demo district in a temporary
directory, a private mosquitto, and the whole server in this process on the wall clock,
with its embedded fake Twilio. The emergency policy is shortened through the
configuration's policies: the ``ring_carer`` step falls due RING_AFTER_S after each
dispatch, and ``unaccepted`` so late that it never runs here. Call buttons press, the
nearest carers are paged by SMS and never answer, and their phones ring.

A ring is timed from its step's due time (the ``ring_carer`` timer's ``due_at``, read back
from the database) to the moment the fake's phone began to ring (``FakeCall.reached``).
A ring's journey: the scheduler claims the timer, the desk decides and commits the ring
with its outbox row, the outbox places the call through twilio-python's async client,
the fake answers 201 and rings (the server asks for no "initiated" callback).
Once a phone has rung, an operator closes the call (the carer is free for the next
alarm) and the carer declines the ring. Progress goes to standard error; the last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dispatch import (
    HOUSEHOLDS,
    OPERATOR,
    PREFIX,
    SEED,
    Buttons,
    DecisionWatch,
    Presses,
    bench_database,
    bring_online,
    figures,
    log_to_file,
    logged_errors,
    milliseconds,
)
from callcenter.app import Running, running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.domain.calls import Outcome, Resolve
from callcenter.engine.accounts import add_operator, issue_token
from callcenter.engine.repository import VOICE
from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.notify.sms import TwilioApi
from callcenter.notify.voice import ANSWER_PATH
from callcenter.store import models as m

RING_STEP = "ring_carer"
# A ring about a page asks its TwiML from here, followed by its outbox row's id.
ANSWER_PREFIX = ANSWER_PATH.split("{", 1)[0]
# Seconds from a dispatch to its ring: short, so that a run is short.
RING_AFTER_S = 1.0
# Longer than any run: no carer is released by the unaccepted step or by a ring that
# times out while the benchmark runs (each would page another carer, another ring).
UNACCEPTED_AFTER_S = 3600.0
RING_TIMEOUT_S = 60
RING_WAIT_S = 30.0
# Carers kept out of the burst, so that its presses all find someone to page.
CARERS_SPARE = 2
TARGET_P99_MS = 1000.0

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench/voice {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How much of each phase a run does."""

    paced_alarms: int
    lanes: int  # alarms under way at once in the paced phase
    burst: int  # at most; fewer when fewer carers are free
    raw_samples: int
    inbound_calls: int
    inbound_interval_s: float
    desk_phones: int = 5

    @classmethod
    def for_run(cls, *, quick: bool) -> Plan:
        if quick:
            return cls(
                paced_alarms=36,
                lanes=6,
                burst=25,
                raw_samples=50,
                inbound_calls=30,
                inbound_interval_s=0.05,
            )
        return cls(
            paced_alarms=200,
            lanes=6,
            burst=40,
            raw_samples=200,
            inbound_calls=150,
            inbound_interval_s=0.1,
        )


def server_config(broker: EmbeddedBroker, database_url: str, workdir: Path) -> Config:
    """The defaults, with the fake Twilio, devices that never go silent, any free port,
    and the emergency policy's ladder cut to a quick ring and a late release."""
    return Config.model_validate(
        {
            "data": {"dir": str(workdir)},
            "database": {"url": database_url},
            "broker": {
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": PREFIX,
                "client_id": "bench-voice",
                # Presses come from one connection for many households: a benchmark of
                # calls, not of who may publish (tests/test_device_logins.py).
                "device_logins": "none",
            },
            "ingest": {"heartbeat_interval_s": 365 * 86400.0},
            "web": {"port": 0},
            "voice": {"ring_timeout_s": RING_TIMEOUT_S},
            "calls": {
                "policies": {
                    "emergency": {
                        "auto_dispatch": True,
                        "steps": [
                            {
                                "name": RING_STEP,
                                "after_s": RING_AFTER_S,
                                "unless": "accepted",
                                "counted_from": "dispatched",
                                "actions": ["ring_carer"],
                            },
                            {
                                "name": "unaccepted",
                                "after_s": UNACCEPTED_AFTER_S,
                                "unless": "accepted",
                                "counted_from": "dispatched",
                                "actions": ["redispatch", "notify_station_lead"],
                            },
                        ],
                    }
                }
            },
        }
    )


# --- rings --------------------------------------------------------------------------


def outbox_id(call: FakeCall) -> int:
    """The outbox row a ring was placed for: its answer URL ends with the row's id."""
    return int(call.url.rstrip("/").rsplit("/", 1)[1])


class Rings:
    """Follows every call the server places at the fake and hands each ring, once the
    phone rings, to the alarm waiting for it."""

    def __init__(self, server: Running, fake: FakeTwilio) -> None:
        self._server = server
        self._fake = fake
        self._by_call: defaultdict[int, asyncio.Future[FakeCall]] = defaultdict(
            asyncio.get_running_loop().create_future
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def rung(self, call_id: int) -> asyncio.Future[FakeCall]:
        """The first ring about that alarm call, once the phone rings (whichever of the
        ring and the alarm's wait for it comes first)."""
        return self._by_call[call_id]

    async def follow(self) -> None:
        """Until cancelled: each call placed, watched until it rings."""
        while True:
            with contextlib.suppress(TimeoutError):
                call = await self._fake.next_call(timeout=3600)
                if ANSWER_PREFIX not in call.url:  # not a ring about a page
                    continue
                task = asyncio.create_task(self._rung(call), name=f"bench.ring.{call.sid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _rung(self, call: FakeCall) -> None:
        async with self._server.engine.connect() as connection:
            call_id = await connection.scalar(
                select(m.OutboxItem.call_id).where(m.OutboxItem.id == outbox_id(call))
            )
        with contextlib.suppress(LookupError, TimeoutError):
            await self._fake.wait_for_status(call.sid, "ringing", timeout=RING_WAIT_S)
        if call_id is not None and not self._by_call[call_id].done():
            self._by_call[call_id].set_result(call)


class Alarms:
    """Presses call buttons; each carer paged ignores the text and is rung."""

    def __init__(self, server: Running, fake: FakeTwilio, presses: Presses, rings: Rings):
        self._server = server
        self._fake = fake
        self._presses = presses
        self._rings = rings
        self.unrung = 0  # alarms whose carer's phone did not ring within RING_WAIT_S

    async def alarm(self, household: str, event_id: str) -> None:
        """One press; once the paged carer's phone rang, the call is closed and the carer
        declines the ring (after the close, so nobody else is paged for it)."""
        decided = await self._presses.press(household, event_id)
        ring: FakeCall | None = None
        if decided.decision == "dispatched":
            try:
                ring = await asyncio.wait_for(
                    asyncio.shield(self._rings.rung(decided.call_id)), RING_AFTER_S + RING_WAIT_S
                )
            except TimeoutError:
                self.unrung += 1
        await self._server.desk.command(
            decided.call_id, Resolve(OPERATOR, Outcome.FALSE_ALARM, reason="bench: rung")
        )
        if ring is not None:
            with contextlib.suppress(ValueError):  # it ended meanwhile
                await self._fake.hang_up(ring.sid)

    async def paced(self, households: Sequence[str], lanes: int) -> None:
        """``lanes`` alarms under way at a time, each from another household."""
        queue = list(enumerate(households))

        async def lane() -> None:
            while queue:
                n, household = queue.pop(0)
                await self.alarm(household, f"paced-{n}")

        async with asyncio.TaskGroup() as group:
            for _ in range(lanes):
                group.create_task(lane())

    async def burst(self, households: Sequence[str]) -> None:
        """Every household presses at once: their rings fall due together."""
        await asyncio.gather(*(self.alarm(h, f"burst-{n}") for n, h in enumerate(households)))


# --- what the rings measured --------------------------------------------------------


# Whom a ring was for: the alarm call and the carer (ids).
Owner = tuple[int | None, int | None]


@dataclass(frozen=True)
class RingRun:
    """The rings of one phase, read back once it is over."""

    deadline_to_ring_ms: list[float]
    # Where that time went: the scheduler's claim of the step's timer, then the decision,
    # its commit and the outbox's create request reaching the fake, then the fake
    # answering it until the phone rings.
    due_to_fired_ms: list[float]
    fired_to_placed_ms: list[float]
    placed_to_ringing_ms: list[float]
    steps: int  # ring_carer timers that fired
    unrung_steps: int  # of which no phone rang
    rung_twice: int  # phone calls beyond one for a (call, carer, step)


async def fired_ring_steps(server: Running, call_ids: set[int]) -> list[m.Timer]:
    async with server.engine.connect() as connection:
        rows = await connection.execute(
            select(m.Timer).where(
                m.Timer.step == RING_STEP,
                m.Timer.state == m.TimerState.FIRED,
                m.Timer.call_id.in_(call_ids),
            )
        )
        return [m.Timer(**row._mapping) for row in rows]


async def placed_rings(server: Running, fake: FakeTwilio) -> dict[Owner, list[FakeCall]]:
    """The calls the fake placed for voice outbox rows, by (alarm call, carer)."""
    async with server.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(m.OutboxItem.id, m.OutboxItem.call_id, m.OutboxItem.guard).where(
                    m.OutboxItem.channel == VOICE
                )
            )
        ).all()
    owners = {row.id: (row.call_id, row.guard.get("carer_id")) for row in rows}
    placed: dict[Owner, list[FakeCall]] = defaultdict(list)
    for call in fake.voice_calls():
        if call.direction == "outbound-api" and ANSWER_PREFIX in call.url:
            placed[owners[outbox_id(call)]].append(call)
    return placed


async def read_rings(server: Running, fake: FakeTwilio, call_ids: set[int]) -> RingRun:
    """Each fired ring_carer step matched with the phone calls placed for its call and
    carer (the policy has one such step, so (call, carer) names the step)."""
    steps = await fired_ring_steps(server, call_ids)
    placed = await placed_rings(server, fake)
    per_step: Counter[Owner] = Counter((timer.call_id, timer.carer_id) for timer in steps)
    latencies: list[float] = []
    fired: list[float] = []
    placing: list[float] = []
    ringing: list[float] = []
    unrung = 0
    for timer in steps:
        rings = [
            c for c in placed.get((timer.call_id, timer.carer_id), []) if "ringing" in c.reached
        ]
        if not rings:
            unrung += 1
            continue
        ring = rings[0]
        latencies.append(milliseconds(ring.reached["ringing"], timer.due_at))
        assert timer.fired_at is not None
        fired.append(milliseconds(timer.fired_at, timer.due_at))
        placing.append(milliseconds(ring.date_created, timer.fired_at))
        ringing.append(milliseconds(ring.reached["ringing"], ring.date_created))
    rung_twice = sum(
        max(0, len(calls) - per_step[key]) for key, calls in placed.items() if key[0] in call_ids
    )
    return RingRun(latencies, fired, placing, ringing, len(steps), unrung, rung_twice)


# --- inbound calls -----------------------------------------------------------------


async def desk_on_duty(server: Running, count: int) -> list[str]:
    """``count`` operators with phones, each put on duty through the API as signing in
    to the board does; their phones."""
    phones = [f"+8613900{n:06d}" for n in range(1, count + 1)]
    now = server.clock.now()
    async with aiohttp.ClientSession(base_url=server.web_url) as http:
        for n, phone in enumerate(phones, 1):
            username = f"bench.desk{n}"
            await add_operator(server.engine, username, name=f"Desk {n}", now=now, phone=phone)
            token = await issue_token(server.engine, username)
            headers = {"Authorization": f"Bearer {token}"}
            body = {"duty": "on_duty"}
            async with http.post("/api/desk/duty", json=body, headers=headers) as reply:
                assert reply.status == 200, await reply.text()
    return phones


async def household_callers(server: Running, count: int) -> list[str]:
    """Numbers the register knows (a household's unit, landline or mobile)."""
    async with server.engine.connect() as connection:
        numbers = await connection.scalars(
            select(m.HouseholdPhone.number).distinct().order_by(m.HouseholdPhone.number)
        )
        return list(numbers.all())[:count]


async def all_ringing(fake: FakeTwilio, sid: str, phones: int) -> datetime:
    """When the last of the desk's phones began to ring for the call ``sid``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RING_WAIT_S
    while loop.time() < deadline:
        legs = [c for c in fake.voice_calls() if c.parent_sid == sid and "ringing" in c.reached]
        if len(legs) >= phones:
            return max(leg.reached["ringing"] for leg in legs)
        await asyncio.sleep(0.005)
    raise TimeoutError(f"not every desk phone rang for {sid} within {RING_WAIT_S:.0f} s")


async def inbound_rings(server: Running, fake: FakeTwilio, plan: Plan) -> list[float]:
    """Households call the centre one after another; each call is timed from
    ``ring_centre`` to the last desk phone ringing, then the caller hangs up."""
    phones = await desk_on_duty(server, plan.desk_phones)
    callers = await household_callers(server, plan.inbound_calls)
    progress(f"inbound: {len(callers)} calls, each ringing {len(phones)} desk phones")
    latencies = []
    for caller in callers:
        started = server.clock.now()
        sid = await fake.ring_centre(caller)
        latencies.append(milliseconds(await all_ringing(fake, sid, len(phones)), started))
        with contextlib.suppress(ValueError):  # it ended meanwhile
            await fake.hang_up(sid)
        await asyncio.sleep(plan.inbound_interval_s)
    return latencies


# --- the raw limit ------------------------------------------------------------------


async def bare_http(
    server: Running, fake: FakeTwilio, sid: str, samples: int
) -> dict[str, list[float]]:
    """The bare round trips to the fake: a call resource fetched through twilio-python's
    async client (the path the server's rings take), and a plain aiohttp GET of it."""
    account = server.sms_account
    url = f"{fake.base_url.rstrip('/')}/2010-04-01/Accounts/{account.account_sid}/Calls/{sid}.json"
    twilio_ms: list[float] = []
    plain_ms: list[float] = []
    auth = {"Authorization": aiohttp.encode_basic_auth(account.account_sid, account.auth_token)}
    async with TwilioApi(account) as api, aiohttp.ClientSession(headers=auth) as http:
        client = api.client()
        for _ in range(samples):
            started = time.perf_counter()
            await client.calls(sid).fetch_async()
            twilio_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            async with http.get(url) as response:
                response.raise_for_status()
                await response.read()
            plain_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
    return {"bare_http": twilio_ms, "bare_aiohttp": plain_ms}


# --- the run ------------------------------------------------------------------------


async def open_and_closed_calls(server: Running) -> set[int]:
    async with server.engine.connect() as connection:
        return set((await connection.scalars(select(m.Call.id))).all())


async def measure(server: Running, broker: EmbeddedBroker, plan: Plan) -> dict[str, Any]:
    """Every phase against the running server; the report's figures."""
    fake = server.fake_twilio
    assert fake is not None, "the benchmark runs on the server's own fake Twilio"
    free = [c for c in await server.desk.carer_snapshots() if c.state.value == "free"]
    burst_size = min(plan.burst, len(free) - CARERS_SPARE)
    lanes = min(plan.lanes, len(free) - CARERS_SPARE)
    progress(f"{len(free)} carers free on shift now; {lanes} lanes, a burst of {burst_size}")
    rng = random.Random(SEED)
    households = rng.sample(
        [f"H{n:04d}" for n in range(1, HOUSEHOLDS + 1)], plan.paced_alarms + burst_size
    )
    watch = DecisionWatch(server.clock)
    server.ingest.on_events(watch.on_events)
    rings = Rings(server, fake)
    async with Buttons.connected(broker) as buttons, server.desk.feed.subscribe() as updates:
        tasks = [
            asyncio.create_task(watch.follow(updates), name="bench.watch"),
            asyncio.create_task(rings.follow(), name="bench.rings"),
        ]
        try:
            progress(f"bringing the {len(households)} call buttons to be pressed online")
            await bring_online(server, buttons, households)
            alarms = Alarms(server, fake, Presses(server, buttons, watch), rings)
            progress(f"paced: {plan.paced_alarms} alarms, {lanes} at a time")
            before = await open_and_closed_calls(server)
            await alarms.paced(households[: plan.paced_alarms], lanes)
            paced_calls = await open_and_closed_calls(server) - before
            progress(f"burst: {burst_size} alarms at once")
            await alarms.burst(households[plan.paced_alarms :])
            burst_calls = await open_and_closed_calls(server) - before - paced_calls
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    paced = await read_rings(server, fake, paced_calls)
    burst = await read_rings(server, fake, burst_calls)
    some_ring = next(c for c in fake.voice_calls() if c.direction == "outbound-api")
    inbound: list[float] | None = None
    if fake.voice_url:
        inbound = await inbound_rings(server, fake, plan)
    else:
        progress("inbound: skipped, the server takes no calls to its number")
    progress(f"bare HTTP round trips to the fake: {plan.raw_samples} of each")
    raw = await bare_http(server, fake, some_ring.sid, plan.raw_samples)
    every = paced.deadline_to_ring_ms + burst.deadline_to_ring_ms
    return {
        **figures("page_deadline_to_ring", every),
        **figures("paced_page_deadline_to_ring", paced.deadline_to_ring_ms),
        **figures("burst_page_deadline_to_ring", burst.deadline_to_ring_ms),
        **figures("ring_due_to_fired", paced.due_to_fired_ms + burst.due_to_fired_ms),
        **figures("ring_fired_to_placed", paced.fired_to_placed_ms + burst.fired_to_placed_ms),
        **figures(
            "ring_placed_to_ringing", paced.placed_to_ringing_ms + burst.placed_to_ringing_ms
        ),
        **(
            figures("inbound_to_all_operators_ringing", inbound)
            if inbound
            else {f"inbound_to_all_operators_ringing_{q}_ms": None for q in ("p50", "p99", "max")}
        ),
        **figures("bare_http", raw["bare_http"]),
        **figures("bare_aiohttp", raw["bare_aiohttp"]),
        "carers_rung_twice": paced.rung_twice + burst.rung_twice,
        "ring_steps": paced.steps + burst.steps,
        "ring_steps_unrung": paced.unrung_steps + burst.unrung_steps,
        "alarms_unrung": alarms.unrung,
        "paced_alarms": plan.paced_alarms,
        "paced_lanes": lanes,
        "burst_alarms": burst_size,
        "carers_free_at_start": len(free),
        "ring_after_s": RING_AFTER_S,
        "inbound_calls": len(inbound or []),
        "desk_phones": plan.desk_phones if inbound else 0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    args = parser.parse_args()
    plan = Plan.for_run(quick=args.quick)

    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp:
        workdir = Path(tmp)
        server_log = workdir / "server.log"
        log_to_file(server_log)
        progress("creating the database and the demo district")
        async with (
            bench_database(workdir, None) as database_url,
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
    p99s = {
        name: result[f"{name}_ms"]
        for name in (
            "page_deadline_to_ring_p99",
            "inbound_to_all_operators_ringing_p99",
            "bare_http_p99",
        )
        if result[f"{name}_ms"] is not None
    }
    result |= {
        "server_errors_logged": len(errors),
        "database": "sqlite",
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "targets_met": {
            **{name: value < TARGET_P99_MS for name, value in p99s.items()},
            "carers_rung_twice": result["carers_rung_twice"] == 0,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
