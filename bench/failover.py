"""Failover benchmark: several `callcenter serve` processes on one PostgreSQL, the one
doing the desk's once-only work SIGKILLed again and again under a steady stream of
presses; how long each takeover takes, what it does to press-to-dispatch, and whether
anything is lost or doubled, next to one server alone in the same run.

    python bench/failover.py [--quick] [--database-url postgresql+asyncpg://...]

Starts everything itself: a database of its own on the PostgreSQL server of
``--database-url`` (migrated, the demo district seeded and in service, dropped
afterwards, also when stopped by SIGTERM or Ctrl-C), a private mosquitto, a fake Twilio
in this process that every server texts through, and the servers, each ``callcenter
serve`` in a child process with its own client id, ``cluster.instance`` and port, in
one shared subscription group. An operator closes each call once its carer is paged,
through any live server's API, so carers come free again and no call escalates.

1. **One server alone.** Presses at a steady rate, each from another household.
2. **The cluster.** The other servers join. Presses keep coming at the same rate, and the
   server holding the desk's lease is SIGKILLed, ``--kills`` times. Each killed server is
   started again at once, as its supervisor would, and comes back as a standby; the next
   kill waits until it is back.

A press is timed from just before its QoS 1 publish to its call's first dispatch
decision in the desk's call history (a carer dispatched, or nobody to send), and to the
carer's page arriving at the fake Twilio. A takeover is timed from the kill to another
server's ``/healthz`` saying it holds the lease. Its window runs from the kill to a few
seconds past the takeover: the presses made in it, and those made before the kill and
not through by then. They are told apart by where they went: to a live server, or held
in the killed server's broker session until it was back. mosquitto keeps sharing a
shared subscription's messages out to a member whose persistent session outlives its
connection, so about one press in N made while one of N servers is down waits for that
server's restart, not only the presses it had in hand (docs/benchmarks.md, "Failover").
Events lost are presses the broker acknowledged that are not in ``device_events`` once
the run has settled; pages doubled are the same text to the same number twice at the
fake Twilio. ``--workdir`` keeps the servers' logs and every press's times. Progress
goes to standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.failover_cluster import (
    TAG,
    Member,
    Operator,
    Stream,
    Takeover,
    cluster,
    cluster_parser,
    kill_the_leader,
    leader_among,
    progress,
    run_to_the_end,
)
from bench.failover_figures import (
    calls_doubled,
    pages_doubled,
    report,
    settle,
    texts_waiting,
    write_presses,
)
from callcenter.broker import EmbeddedBroker
from callcenter.fake_twilio import FakeTwilio

TARGET_TAKEOVER_S = 5.0


@dataclass(frozen=True)
class Plan:
    """How much each phase does."""

    households: int  # each press comes from one of its own, so raises a call of its own
    # Enough that the carers on shift now (about a quarter: one shift of three, less the
    # leads) are never all busy, even when a restarted server brings its held presses
    # at once: each press pages a carer, before a takeover and during it alike; and that
    # few of them reach sms.recipient_limit (5 texts a minute: a page and a stand-down a
    # call), past which their stand-down texts are held back a while.
    carers: int
    single_presses: int
    kills: int
    # Presses a second, in both phases: a busy desk's steady load, well below what one
    # server decides (at 5 a second on this shared machine the operator's closing and the
    # pages' stand-down texts kept the desk busy enough to stall for a second at times).
    rate: float
    after_s: float  # how long past a takeover its window lasts
    gap_s: float  # steady pressing, all servers up, before each kill
    settle_s: float

    @classmethod
    def for_run(cls, *, quick: bool, kills: int | None, rate: float | None) -> Plan:
        if quick:
            return cls(400, 240, 20, kills or 3, rate or 4.0, after_s=2.0, gap_s=0.5, settle_s=20.0)
        return cls(2000, 1200, 200, kills or 10, rate or 2.0, after_s=3.0, gap_s=3.0, settle_s=60.0)


# --- the run ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_background(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], name: str
) -> AsyncIterator[asyncio.Task[None]]:
    """``work(done)`` as a task for the block. At the block's end ``done`` is set and the
    task finishes what it is doing (its failure raised here); left by an error or a
    cancellation, the block cancels it."""
    done = asyncio.Event()
    task = asyncio.create_task(work(done), name=name)
    try:
        yield task
        done.set()
        await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cluster_phase(
    plan: Plan, members: Sequence[Member], stream: Stream, http: aiohttp.ClientSession
) -> list[Takeover]:
    """Presses all along; each kill once every server is up and ``gap_s`` has passed
    since the last window closed."""
    takeovers: list[Takeover] = []

    async def pressing(done: asyncio.Event) -> None:
        await stream.run("cluster", plan.rate, until=done)

    async with in_background(pressing, "bench.presses") as presses:
        for kill in range(plan.kills):
            await asyncio.sleep(plan.gap_s)
            if presses.done():
                presses.result()  # the stream failed: say why
            progress(f"kill {kill + 1} of {plan.kills}")
            takeover = await kill_the_leader(members, http)
            takeovers.append(takeover)
            await asyncio.sleep(max(0.0, takeover.taken_at + plan.after_s - time.time()))
    return takeovers


async def measure(
    plan: Plan,
    members: Sequence[Member],
    engine: AsyncEngine,
    fake: FakeTwilio,
    broker: EmbeddedBroker,
    workdir: Path | None,
) -> dict[str, Any]:
    households = [f"H{n:04d}" for n in range(1, plan.households + 1)]
    random.Random(TAG).shuffle(households)
    first, *others = members
    # The call buttons' connection (MQTT 3.1.1, paho's default), Nagle off as devices do.
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    buttons = aiomqtt.Client(
        broker.host, broker.port, identifier="failover-buttons", socket_options=nodelay
    )
    async with buttons, aiohttp.ClientSession() as http:
        stream = Stream(buttons, households)
        operator = await Operator.signed_up(engine, members, http)
        progress(f"starting server {first.name} alone")
        await first.start()
        await leader_among([first], http)
        async with in_background(functools.partial(operator.run, engine), "bench.operator"):
            progress(f"one server: {plan.single_presses} presses, {plan.rate:g} a second")
            await stream.run("single", plan.rate, count=plan.single_presses)
            await settle(engine, fake, stream.presses, plan.settle_s)
            progress(f"starting {', '.join(m.name for m in others)}")
            await asyncio.gather(*(member.start() for member in others))
            progress(
                f"the cluster: presses at {plan.rate:g} a second, {plan.kills} kills of the leader"
            )
            takeovers = await cluster_phase(plan, members, stream, http)
            progress("waiting for every press to be stored, decided and paged")
            found = await settle(engine, fake, stream.presses, plan.settle_s)
        # The stand-down texts of the last calls closed go out too.
        await settle(engine, fake, (), plan.settle_s)
        _, epoch = await leader_among(members, http)
    if workdir is not None:
        write_presses(workdir / "presses.jsonl", stream.presses, found)
        (workdir / "takeovers.jsonl").write_text(
            "".join(json.dumps(vars(t)) + "\n" for t in takeovers)
        )
    doubled = pages_doubled(fake)
    for to, body in doubled[:3]:
        progress(f"texted twice to {to}: {body[:80]!r}")
    result = report(
        plan.after_s,
        stream.presses,
        found,
        takeovers,
        await calls_doubled(engine, [p.household for p in stream.presses]),
        len(doubled),
    )
    return result | {
        "press_rate_per_s": plan.rate,
        "texts_held_for_the_recipient_limit": len(await texts_waiting(engine, due=False)),
        "final_epoch": epoch,
        "texts_sent": len(fake.messages),
        "calls_closed_by_the_operator": len(operator.closed),
    }


async def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    async with cluster(
        "failover",
        args.workdir,
        args.database_url,
        plan.households,
        plan.carers,
        "abc"[: args.servers],
    ) as ground:
        result = await measure(
            plan, ground.members, ground.engine, ground.fake, ground.broker, args.workdir
        )
    errors = ground.errors
    for line in errors[:5]:
        progress(f"server logged: {line}")
    result |= {
        "servers": args.servers,
        "server_errors_logged": len(errors),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        # The run shares its cores with whatever else the machine does: it shows here.
        "load_average_at_start": load_at_start,
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "targets_met": {
            "takeover_under_5_s": result["takeover_max_s"] is not None
            and result["takeover_max_s"] < TARGET_TAKEOVER_S,
            "nothing_lost_or_doubled": result["events_lost"] == 0
            and result["events_doubled"] == 0
            and result["calls_doubled"] == 0
            and result["pages_doubled"] == 0,
        },
    }
    return result


def main() -> None:
    parser = cluster_parser(
        __doc__,
        quick="3 kills; under 30 s on a quiet machine",
        workdir="the servers' logs, and presses.jsonl (every press, when it was made, "
        "stored, decided and paged)",
    )
    parser.add_argument(
        "--servers", type=int, choices=(2, 3), default=2, help="how many servers (default 2)"
    )
    parser.add_argument("--kills", type=int, help="default 10; 3 with --quick")
    parser.add_argument("--rate", type=float, help="presses a second (default 2; 4 with --quick)")
    args = parser.parse_args()
    plan = Plan.for_run(quick=args.quick, kills=args.kills, rate=args.rate)
    run_to_the_end(parser, args, lambda: run(args, plan))


if __name__ == "__main__":
    main()
