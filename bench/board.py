"""Board feed benchmark: press-to-board latency with 200 open calls and 20 boards
connected over the WebSocket feed, the server's memory per connected board, the
database reads per change, and the offer path (an operator on duty: press to the call
offered on their board, at a pace and in a 100-call burst), next to the raw limits
measured in the same run.

    python bench/board.py [--quick]

Starts everything itself: a SQLite database with the demo district in a temporary
directory, a private mosquitto, and the whole server in this process on the wall clock.
The 20 boards run in a child process (this script with ``--boards``), so that the
server's resident memory is the server's alone; both processes stamp arrivals with the
same wall clock. A press is timed from just before its QoS 1 publish to the moment the
``call`` message for that household has arrived at every board. Progress goes to
standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dispatch import (
    HOUSEHOLDS,
    SEED,
    Buttons,
    RawRoundTrip,
    bench_database,
    bring_online,
    figures,
    log_to_file,
    logged_errors,
    server_config,
)
from callcenter.app import Running, running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.engine.feed import Update
from callcenter.ingest.writer import StoredEvent
from callcenter.store import models as m
from callcenter.web.state import BOARD
from device_sim.demo import ensure_demo_operators

OPEN_CALLS = 200
BOARDS = 20
TARGET_PRESS_TO_BOARD_P99_MS = 250.0
# The offer path (docs/calls.md, "Offers"): press to offered on an operator's board.
TARGET_PRESS_TO_OFFER_P99_MS = 250.0
TARGET_BURST_PRESS_TO_OFFER_P99_MS = 1000.0
OFFER_BURST = 100
WAIT_S = 60.0

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench/board {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    presses: int
    press_interval_s: float
    burst: int
    raw_samples: int
    offer_presses: int
    offer_burst: int = OFFER_BURST

    @classmethod
    def for_run(cls, *, quick: bool) -> Plan:
        if quick:
            return cls(
                presses=30,
                press_interval_s=0.2,
                burst=20,
                raw_samples=20,
                offer_presses=10,
                offer_burst=50,
            )
        return cls(presses=120, press_interval_s=0.5, burst=50, raw_samples=100, offer_presses=60)


def resident_kb() -> int:
    """This process's resident set size (VmRSS in /proc/self/status), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (the benchmark needs Linux)")


# --- the boards, in a child process ------------------------------------------------


async def run_boards(url: str, token: str, count: int, *, offers: bool = False) -> None:
    """Connect ``count`` boards; print one JSON line per first ``call`` message of a
    household on each board ({"b", "h", "t"}), and one per resync; stop at EOF on stdin.
    With ``offers``: per first ``call`` message of a household whose call is offered
    (to one operator or to everyone), with "me": the offer is to this board's operator."""
    headers = {"Authorization": f"Bearer {token}"}
    out = sys.stdout

    def emit(line: dict[str, Any]) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()

    async def watch(n: int, ws: aiohttp.ClientWebSocketResponse, ready: asyncio.Event) -> None:
        seen: set[str] = set()
        async for message in ws:
            at = time.time()
            body = json.loads(message.data)
            kind = body["type"]
            if kind == "snapshot":
                seen |= {c["household"]["code"] for c in body["calls"]}
                ready.set()
            elif kind == "call":
                household = body["call"]["household"]["code"]
                offer = body["call"].get("offer")
                if offers and offer is None:
                    continue
                if household not in seen:
                    seen.add(household)
                    line: dict[str, Any] = {"b": n, "h": household, "t": at}
                    if offers:
                        line["me"] = offer["operator"] is not None
                    emit(line)
            elif kind == "resync":
                emit({"b": n, "resync": True})

    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(url, headers=headers) for _ in range(count)]
        readies = [asyncio.Event() for _ in sockets]
        watchers = [asyncio.create_task(watch(n, ws, readies[n])) for n, ws in enumerate(sockets)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), WAIT_S)
        emit({"ready": count})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        for ws in sockets:
            await ws.close()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


@dataclass
class Arrivals:
    """Which boards have been sent the card of each household, and when."""

    boards: int
    at: dict[str, dict[int, float]] = field(default_factory=dict)
    complete: dict[str, asyncio.Event] = field(default_factory=dict)
    resyncs: int = 0
    # Offers (a board watching them): households whose call was offered to its operator.
    to_me: set[str] = field(default_factory=set)

    def expect(self, household: str) -> asyncio.Event:
        return self.complete.setdefault(household, asyncio.Event())

    def note(self, line: dict[str, Any]) -> None:
        if line.get("resync"):
            self.resyncs += 1
            return
        household = line["h"]
        if line.get("me"):
            self.to_me.add(household)
        arrived = self.at.setdefault(household, {})
        arrived.setdefault(line["b"], line["t"])
        if len(arrived) == self.boards:
            self.expect(household).set()


@contextlib.asynccontextmanager
async def boards_connected(
    url: str, token: str, count: int, *, offers: bool = False
) -> AsyncIterator[Arrivals]:
    """The child process with ``count`` boards connected and their snapshots received
    (``offers``: watching for calls offered, see ``run_boards``)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--offer-boards" if offers else "--boards",
        url,
        token,
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    arrivals = Arrivals(count)
    ready = asyncio.Event()
    stdout = child.stdout

    async def read() -> None:
        while line := await stdout.readline():
            body = json.loads(line)
            if "ready" in body:
                ready.set()
            else:
                arrivals.note(body)

    reader = asyncio.create_task(read(), name="bench.boards")
    try:
        await asyncio.wait_for(ready.wait(), WAIT_S)
        yield arrivals
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


# --- presses -----------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One press, in milliseconds from just before its publish."""

    commit_ms: float  # until ingest committed the event (the raw limit of the server)
    feed_ms: float  # until the desk announced the committed call on its feed
    board_ms: list[float]  # until each board had the card
    slowest_board_ms: float  # until every board had it


class PressWatch:
    """Matches ingest's commits and the desk's announcements to presses."""

    def __init__(self) -> None:
        self.committed: dict[str, asyncio.Future[float]] = {}
        self.announced: dict[str, asyncio.Future[float]] = {}
        self.call_updates = 0

    def expect(self, household: str, event_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.committed[event_id] = loop.create_future()
        self.announced[household] = loop.create_future()

    async def on_events(self, events: list[StoredEvent]) -> None:
        now = time.time()
        for event in events:
            waiting = self.committed.get(event.event_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(now)

    async def follow(self, updates: asyncio.Queue[Update | None]) -> None:
        while True:
            update = await updates.get()
            if update is None or update.kind != "call":
                continue
            self.call_updates += 1
            waiting = self.announced.get(update.detail["household"])
            if waiting is not None and not waiting.done():
                waiting.set_result(update.at.timestamp())


async def press(
    buttons: Buttons, watch: PressWatch, arrivals: Arrivals, household: str, event_id: str
) -> Timed:
    watch.expect(household, event_id)
    everywhere = arrivals.expect(household)
    sent = time.time()
    await buttons.press(household, event_id)
    async with asyncio.timeout(WAIT_S):
        committed, announced = await asyncio.gather(
            watch.committed[event_id], watch.announced[household]
        )
        await everywhere.wait()
    board_ms = [(t - sent) * 1000 for t in arrivals.at[household].values()]
    return Timed((committed - sent) * 1000, (announced - sent) * 1000, board_ms, max(board_ms))


async def paced(
    buttons: Buttons,
    watch: PressWatch,
    arrivals: Arrivals,
    households: Sequence[str],
    interval_s: float,
    tag: str,
) -> list[Timed]:
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        tasks = []
        next_at = loop.time()
        for n, household in enumerate(households):
            tasks.append(
                group.create_task(press(buttons, watch, arrivals, household, f"{tag}-{n}"))
            )
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    return [task.result() for task in tasks]


# --- the run -----------------------------------------------------------------------


async def open_call_count(server: Running) -> int:
    async with server.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(m.Call).where(m.Call.closed_at.is_(None))
        )
    return int(count or 0)


async def open_calls(server: Running, buttons: Buttons, households: Sequence[str]) -> None:
    """Every one of ``households`` presses once; wait until all their calls are open."""
    for n, household in enumerate(households):
        await buttons.press(household, f"open-{n}")
    deadline = time.monotonic() + WAIT_S
    while await open_call_count(server) < len(households):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(households)} calls did not open within {WAIT_S:.0f} s")
        await asyncio.sleep(0.2)


async def offered(buttons: Buttons, arrivals: Arrivals, household: str, event_id: str) -> float:
    """Press; milliseconds until the operator's board had the call offered."""
    there = arrivals.expect(household)
    sent = time.time()
    await buttons.press(household, event_id)
    async with asyncio.timeout(WAIT_S):
        await there.wait()
    return (min(arrivals.at[household].values()) - sent) * 1000


async def call_of(http: aiohttp.ClientSession, household: str) -> int:
    async with http.get("/api/calls", params={"household": household}) as reply:
        calls = (await reply.json())["calls"]
    return int(calls[0]["id"])


async def measure_offers(
    server: Running, buttons: Buttons, token: str, households: Sequence[str], plan: Plan
) -> dict[str, Any]:
    """The offer path: the demo operator on duty with one board; presses one after
    another, each offered to them (they take it and close it as entered in error, so
    they are free for the next), then a burst at once (the first offered to them, the
    rest, nobody being free, to everyone). Timed from just before the publish to the
    call's first ``call`` message with an offer on their board."""
    headers = {"Authorization": f"Bearer {token}"}
    paced_households = households[: plan.offer_presses]
    burst_households = households[plan.offer_presses :]
    url = server.web_url + "/api/board/feed"
    async with aiohttp.ClientSession(base_url=server.web_url, headers=headers) as http:
        async with http.post("/api/desk/duty", json={"duty": "on_duty"}) as reply:
            assert reply.status == 200, await reply.text()
        async with boards_connected(url, token, 1, offers=True) as arrivals:
            baseline = []
            for n, household in enumerate(paced_households):
                baseline.append(await offered(buttons, arrivals, household, f"offer-{n}"))
                call_id = await call_of(http, household)
                async with http.post(f"/api/calls/{call_id}/acknowledge", json={}) as reply:
                    assert reply.status == 200, await reply.text()
                body = {"reason": "entered_in_error"}
                async with http.post(f"/api/calls/{call_id}/cancel", json=body) as reply:
                    assert reply.status == 200, await reply.text()
                await asyncio.sleep(plan.press_interval_s)
            to_me = len(arrivals.to_me)
            progress(f"offer burst: {len(burst_households)} presses at once")
            burst = await asyncio.gather(
                *(
                    offered(buttons, arrivals, household, f"offer-burst-{n}")
                    for n, household in enumerate(burst_households)
                )
            )
            burst_to_me = len(arrivals.to_me) - to_me
    return {
        **figures("press_to_offer", baseline),
        **figures("burst_press_to_offer", burst),
        "offer_presses": len(baseline),
        "offers_to_the_operator": to_me,
        "burst_offer_presses": len(burst),
        "burst_offers_to_the_operator": burst_to_me,
        "burst_offers_to_everyone": len(burst) - burst_to_me,
    }


def shared_reads(server: Running) -> int:
    """Call reads the server's boards' shared data has made so far."""
    return server.web.app[BOARD].call_reads if server.web is not None else 0


async def measure(server: Running, broker: EmbeddedBroker, plan: Plan) -> dict[str, Any]:
    rng = random.Random(SEED)
    offer_count = plan.offer_presses + plan.offer_burst
    households = rng.sample(
        [f"H{n:04d}" for n in range(1, HOUSEHOLDS + 1)],
        OPEN_CALLS + plan.presses + plan.burst + offer_count,
    )
    standing, pressed = households[:OPEN_CALLS], households[OPEN_CALLS:-offer_count]
    to_offer = households[-offer_count:]
    token = await ensure_demo_operators(server.engine, server.clock.now())
    watch = PressWatch()
    server.ingest.on_events(watch.on_events)
    async with Buttons.connected(broker) as buttons, server.desk.feed.subscribe() as updates:
        follower = asyncio.create_task(watch.follow(updates), name="bench.watch")
        try:
            progress(f"bringing {len(pressed) + len(to_offer)} call buttons to be pressed online")
            await bring_online(server, buttons, [*pressed, *to_offer])
            progress(f"opening {OPEN_CALLS} calls")
            await open_calls(server, buttons, standing)
            progress(f"raw MQTT round trip: {plan.raw_samples} paced, then 100 at once")
            raw, raw_burst = await RawRoundTrip(buttons, server.clock).measure(
                broker, plan.raw_samples, 0.05
            )
            url = server.web_url + "/api/board/feed"
            # A first round of boards, connected and dropped, leaves the allocator the
            # room their snapshots take while being sent: the second round's growth is
            # then what a connected board keeps, not a one-off peak.
            progress(f"warming up: {BOARDS} boards connect and leave")
            async with boards_connected(url, token, BOARDS):
                pass
            await asyncio.sleep(0.5)
            gc.collect()
            before_kb = resident_kb()
            progress(f"connecting {BOARDS} boards (VmRSS {before_kb} kB)")
            async with boards_connected(url, token, BOARDS) as arrivals:
                await asyncio.sleep(0.5)
                gc.collect()
                after_kb = resident_kb()
                progress(f"boards connected (VmRSS {after_kb} kB)")
                reads_before, updates_before = shared_reads(server), watch.call_updates
                progress(f"{plan.presses} presses, one every {plan.press_interval_s} s")
                baseline = await paced(
                    buttons,
                    watch,
                    arrivals,
                    pressed[: plan.presses],
                    plan.press_interval_s,
                    "press",
                )
                progress(f"burst: {plan.burst} presses at once")
                burst = await paced(buttons, watch, arrivals, pressed[plan.presses :], 0.0, "burst")
                await asyncio.sleep(0.5)  # the last changes' reads
                reads = shared_reads(server) - reads_before
                updates_seen = watch.call_updates - updates_before
                resyncs = arrivals.resyncs
            progress(f"offers: {plan.offer_presses} presses offered to an operator on duty")
            offers = await measure_offers(server, buttons, token, to_offer, plan)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    return {
        **figures("press_to_board", [t.slowest_board_ms for t in baseline]),
        **figures("press_to_board_each", [ms for t in baseline for ms in t.board_ms]),
        **figures("press_to_feed", [t.feed_ms for t in baseline]),
        **figures("press_to_commit", [t.commit_ms for t in baseline]),
        **figures("burst_press_to_board", [t.slowest_board_ms for t in burst]),
        **figures("burst_press_to_feed", [t.feed_ms for t in burst]),
        **offers,
        **figures("raw_mqtt", raw),
        **figures("raw_mqtt_burst", raw_burst),
        "memory_per_board_kb": round((after_kb - before_kb) / BOARDS, 1),
        "memory_method": "server VmRSS (/proc/self/status) with the boards connected minus "
        "before, divided by their number, after a warm-up round; boards run in a child process",
        "server_rss_before_boards_kb": before_kb,
        "server_rss_with_boards_kb": after_kb,
        "call_updates_during_presses": updates_seen,
        "call_reads_during_presses": reads,
        "call_reads_per_update": round(reads / updates_seen, 3) if updates_seen else None,
        "resyncs": resyncs,
        "open_calls_at_start": OPEN_CALLS,
        "boards": BOARDS,
        "presses": len(baseline),
        "press_interval_s": plan.press_interval_s,
        "burst_presses": len(burst),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument(
        "--boards", nargs=3, metavar=("URL", "TOKEN", "COUNT"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--offer-boards", nargs=3, metavar=("URL", "TOKEN", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.boards or args.offer_boards:
        url, token, count = args.boards or args.offer_boards
        await run_boards(url, token, int(count), offers=bool(args.offer_boards))
        return
    plan = Plan.for_run(quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
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
    result |= {
        "server_errors_logged": len(errors),
        "database": "sqlite",
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "targets_met": {
            "press_to_board_p99": result["press_to_board_p99_ms"] < TARGET_PRESS_TO_BOARD_P99_MS,
            "press_to_offer_p99": result["press_to_offer_p99_ms"] < TARGET_PRESS_TO_OFFER_P99_MS,
            "burst_press_to_offer_p99": result["burst_press_to_offer_p99_ms"]
            < TARGET_BURST_PRESS_TO_OFFER_P99_MS,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
