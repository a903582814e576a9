"""Load spread benchmark: the same press storms against one `callcenter serve` and then
two on one PostgreSQL and one mosquitto; what each server ingests through the shared
subscription, how fast the once-only work (held by one of them) decides, and the raw
limit of a bare subscriber on the same broker, in one run.

    python bench/spread.py [--quick] [--database-url postgresql+asyncpg://...]

Starts everything itself, with bench/failover.py's parts: a database of its own on the
PostgreSQL server of ``--database-url`` (migrated, the demo district seeded and in
service, dropped afterwards), a private mosquitto, a fake Twilio in this process, and
the servers, each ``callcenter serve`` in a child process with its own client id and
``cluster.instance``, in one shared subscription group. First a bare paho subscriber
drains a backlog from the broker (the raw limit). Then, with one server and again with
two, two storms, each from households that have not pressed before:

- **paced**: ``--rate`` presses a second, for 30 s (3 s with ``--quick``);
- **flat out**: as fast as bench/publisher.py publishes them (QoS 1, its own process).

Each press is timed from its device time (the publisher's clock when it handed the press
to paho) to its storing, to its call's first dispatch decision (the call history's time),
and to the dispatch going out (the carer's page reaching the fake Twilio, or the decision
when nobody could be sent). Each server's share is what its ``/healthz`` says it stored.
Between storms the operator closes the calls that have a carer, so every storm finds the
same carers free. The emergency policy's steps are set far off (each the default's 120
times), so no escalation timer falls due during the run and each storm's work is its own
presses. Progress goes to standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.failover_cluster import (
    PREFIX,
    Cluster,
    Member,
    Operator,
    Press,
    cluster,
    cluster_parser,
    leader_among,
    progress,
    run_to_the_end,
    through,
)
from bench.failover_figures import Outcome, calls_doubled, pages_doubled, settle
from bench.ingest import raw_subscriber_rate
from bench.storm import CpuShares, cpu_ticks, figures
from callcenter.domain.call_types import CallType
from callcenter.domain.policy import DEFAULT_POLICIES
from callcenter.fake_twilio import FakeTwilio

PUBLISHER = Path(__file__).with_name("publisher.py")
TAG = "sp"
CPU_FIELDS = ("ru_utime", "ru_stime")


def far_off_policy(times: int = 120) -> str:
    """The emergency policy as TOML: the default one (docs/configuration.md) with each
    step ``times`` later. A press that finds no carer free still runs its first step at
    once, as by default, and no timer falls due during the run, where the calls left open
    would fire theirs into later storms."""
    policy = DEFAULT_POLICIES[CallType.EMERGENCY]
    steps = "".join(
        "[[calls.policies.emergency.steps]]\n"
        f"name = {json.dumps(step.name)}\n"
        f"after_s = {step.after_s * times}\n"
        f"counted_from = {json.dumps(step.counted_from.value)}\n"
        f"unless = {json.dumps(step.unless.value)}\n"
        f"actions = {json.dumps([action.value for action in step.actions])}\n"
        for step in policy.steps
    )
    return (
        "\n[calls.policies.emergency]\n"
        f"auto_dispatch = {json.dumps(policy.auto_dispatch)}\n"
        f"carers_required = {policy.carers_required}\n"
        f"{steps}"
    )


@dataclass(frozen=True)
class Plan:
    """How much each storm does."""

    # Each storm's presses, each from a household of its own: flat out, and paced at
    # ``rate`` a second (below what one server decided here even with the machine's other
    # work taking most of both cores: the latency of a steady load).
    presses: int
    paced_presses: int
    rate: float
    # Carers in the district; about a quarter are on shift. Each storm pages that many
    # and finds nobody for the rest, as a storm in service would.
    carers: int
    raw_backlog: int
    settle_s: float
    calm_s: float  # after a server starts, before the storms: its start-up work done

    @classmethod
    def for_run(cls, *, quick: bool, presses: int | None, rate: float | None) -> Plan:
        rate = rate or 20.0
        if quick:
            return cls(presses or 200, int(rate * 3), rate, 120, 5_000, 30.0, 0.5)
        return cls(presses or 2_000, int(rate * 30), rate, 400, 20_000, 120.0, 3.0)

    def storms(self) -> list[tuple[str, int, float]]:
        """Each storm with one server: its name, presses and rate (0: flat out)."""
        return [("paced", self.paced_presses, self.rate), ("flat_out", self.presses, 0.0)]

    @property
    def households(self) -> int:
        return 2 * (self.presses + self.paced_presses)


# --- the figures (pure) ---------------------------------------------------------------------


def per_second(count: int, first_s: float, last_s: float) -> float | None:
    """``count`` over the time from ``first_s`` to ``last_s``; None without a span."""
    span = last_s - first_s
    return round(count / span, 1) if count and span > 0 else None


def storm_figures(
    event_ids: Sequence[str], found: Mapping[str, Outcome], stored_by: Mapping[str, int]
) -> dict[str, Any]:
    """One storm's figures from what became of its presses (``found``, by event id, of
    those published: ``event_ids``) and how many events each server stored meanwhile.

    Rates run from the storm's first press to its last press (published), its last event
    stored (ingest) and its last dispatch decision (the once-only work). Press to dispatch
    ends at the carer's page reaching Twilio, or at the decision when nobody was sent."""
    kept = [found[e] for e in event_ids if e in found]
    # (pressed, stored, decided, out) of each stored press; the last two None until then.
    times: list[tuple[float, float, float | None, float | None]] = []
    for o in kept:
        if o.stored_at is None or o.device_time is None:
            continue
        out = o.paged_at if o.action == "dispatched" else o.decided_at
        times.append((o.device_time, o.stored_at, o.decided_at, out))
    first = min((t[0] for t in times), default=0.0)

    def last(column: int) -> float:
        return max((t[column] or 0.0 for t in times), default=0.0)

    def since_press_ms(column: int) -> list[float]:
        return [(end - t[0]) * 1000 for t in times if (end := t[column]) is not None]

    decided = [t for t in times if t[2] is not None]
    total = sum(stored_by.values())
    actions = Counter(o.action for o in kept if o.decided_at is not None)
    return {
        "presses": len(event_ids),
        "events_stored": len(times),
        "events_lost": len(event_ids) - len(kept),
        "events_doubled": sum(o.copies > 1 for o in kept),
        "presses_undecided": len(times) - len(decided),
        "pages_not_out": sum(t[3] is None for t in decided),
        "published_per_s": per_second(len(times), first, last(0)),
        "stored_per_s": per_second(len(times), first, last(1)),
        "decided_per_s": per_second(len(decided), first, last(2)),
        "ingested_by": dict(stored_by),
        "ingest_share": {
            name: round(count / total, 3) if total else None for name, count in stored_by.items()
        },
        "dispatched": actions["dispatched"],
        "nobody_to_send": actions["nobody_to_send"],
        **figures("press_to_stored", since_press_ms(1)),
        **figures("press_to_decision", since_press_ms(2)),
        **figures("press_to_dispatch", since_press_ms(3)),
    }


# --- the run ------------------------------------------------------------------------------


async def stored_counts(members: Sequence[Member], http: aiohttp.ClientSession) -> dict[str, int]:
    """Events each running server's ingest has stored since it started (its /healthz)."""
    counts: dict[str, int] = {}
    for member in members:
        async with http.get(
            f"{member.url}/healthz", timeout=aiohttp.ClientTimeout(total=10)
        ) as reply:
            body = await reply.json(content_type=None)
        counts[member.name] = int(body["parts"]["ingest"]["events_stored"])
    return counts


async def database_backends(engine: AsyncEngine) -> list[int]:
    """The PostgreSQL processes serving the run's database (the servers' connections)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return [int(pid) for (pid,) in rows]


def machine_busy_ticks() -> int:
    """CPU time the whole machine has spent busy (not idle nor waiting), in ticks."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


async def storm(
    plan: Plan,
    block: int,
    first_household: int,
    presses: int,
    rate: float,
    members: Sequence[Member],
    ground: Cluster,
    http: aiohttp.ClientSession,
) -> dict[str, Any]:
    """The ``block``-th storm: ``presses`` presses from households from the
    ``first_household``-th on, ``rate`` a second (0: flat out); its figures once every
    press is decided and no text due waits."""
    run = f"{TAG}-{block}"
    event_ids = [f"{run}-{n}" for n in range(presses)]
    engine, fake, broker = ground.engine, ground.fake, ground.broker
    before = await stored_counts(members, http)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PUBLISHER),
        *("--host", broker.host, "--port", str(broker.port), "--prefix", PREFIX),
        *("--count", str(presses), "--households", str(presses)),
        *("--first-household", str(first_household), "--rate", str(rate), "--run", run),
    )
    processes = {member.name: member.process.pid for member in members if member.process}
    processes |= {"broker": broker.pid or 0, "bench": os.getpid()}
    cpu = CpuShares(processes)
    postgres_before = {pid: cpu_ticks(pid) for pid in await database_backends(engine)}
    busy_before, cpu_started = machine_busy_ticks(), asyncio.get_running_loop().time()
    cpu.start()
    if await publisher.wait() != 0:
        progress(f"the publisher of {run} failed (exit {publisher.returncode})")
    # The publisher, gone by the end: what this process's children used (it alone ends).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    publisher_s = sum(getattr(children, f) - getattr(children_before, f) for f in CPU_FIELDS)
    made = [Press(event_id, "", run, acked=True) for event_id in event_ids]
    found = await settle(engine, fake, made, plan.settle_s, tag=run)
    cpu.stop()
    elapsed_ticks = (asyncio.get_running_loop().time() - cpu_started) * os.sysconf("SC_CLK_TCK")
    busy = (machine_busy_ticks() - busy_before) / elapsed_ticks
    # The backends there now (a connection opened meanwhile counts from its start; one
    # closed meanwhile is missed: the servers' pools keep theirs).
    postgres = sum(
        cpu_ticks(pid) - postgres_before.get(pid, 0) for pid in await database_backends(engine)
    )
    after = await stored_counts(members, http)
    result = storm_figures(
        event_ids, found, {name: after[name] - before.get(name, 0) for name in after}
    )
    ours = cpu.shares | {
        "publisher": round(publisher_s * os.sysconf("SC_CLK_TCK") / elapsed_ticks, 2),
        "postgres": round(postgres / elapsed_ticks, 2),
    }
    # What else ran on the machine meanwhile: other work on a shared machine shows here.
    others = round(max(0.0, busy - sum(ours.values())), 2)
    result["cpu_cores"] = ours | {"others": others, "machine": round(busy, 2)}
    # CPU time each server and PostgreSQL spent per press: what the work costs, whatever
    # share of the cores the machine's other work left the run.
    window_s = elapsed_ticks / os.sysconf("SC_CLK_TCK")
    result["cpu_ms_per_press"] = {
        name: round(cores * window_s * 1000 / presses, 2)
        for name, cores in ours.items()
        if name in {member.name for member in members} | {"postgres"}
    }
    result["window_s"] = round(window_s, 2)
    result["publisher_exit"] = publisher.returncode
    return result


async def free_the_carers(
    operator: Operator, engine: AsyncEngine, fake: FakeTwilio, plan: Plan
) -> int:
    """Close every open call with a carer paged (their stand-down texts sent too), so the
    next storm finds the same carers free; the calls nobody was sent to stay open."""
    paged = await through(engine, nobody=False)
    for start in range(0, len(paged), 8):
        await asyncio.gather(*(operator.close(call_id) for call_id in paged[start : start + 8]))
    await settle(engine, fake, (), plan.settle_s, tag=TAG)
    return len(paged)


async def measure(plan: Plan, ground: Cluster) -> list[dict[str, Any]]:
    """The storms, with one server and then two; each one's figures."""
    members, engine, fake = ground.members, ground.engine, ground.fake
    storms: list[dict[str, Any]] = []
    first_household = 1
    async with aiohttp.ClientSession() as http:
        operator = await Operator.signed_up(engine, members, http)
        for count in (1, 2):
            running = members[:count]
            joining = [member for member in running if not member.alive]
            progress(f"starting server {', '.join(member.name for member in joining)}")
            await asyncio.gather(*(member.start() for member in joining))
            leader, _ = await leader_among(running, http)
            await asyncio.sleep(plan.calm_s)
            for shape, presses, rate in plan.storms():
                how = f"{rate:g} a second" if rate else "flat out"
                progress(f"{count} server(s), {presses} presses {how}")
                got = await storm(
                    plan, len(storms), first_household, presses, rate, running, ground, http
                )
                first_household += presses
                progress(
                    f"  stored {got['stored_per_s']}/s (shares {got['ingest_share']}), "
                    f"decided {got['decided_per_s']}/s, press to dispatch p50 "
                    f"{got['press_to_dispatch_p50_ms']} ms, p99 "
                    f"{got['press_to_dispatch_p99_ms']} ms, lost {got['events_lost']}; "
                    f"cores {got['cpu_cores']}"
                )
                storms.append({"servers": count, "storm": shape, "rate": rate} | got)
                storms[-1]["leader"] = leader.name
                if len(storms) < 2 * len(plan.storms()):
                    closed = await free_the_carers(operator, engine, fake, plan)
                    progress(f"  closed the {closed} calls with a carer")
            still, _ = await leader_among(running, http)
            if still is not leader:
                progress(f"the lease moved from {leader.name} to {still.name} during the storms")
    return storms


async def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    async with cluster(
        "spread",
        args.workdir,
        args.database_url,
        plan.households,
        plan.carers,
        "ab",
        more=far_off_policy(),
    ) as ground:
        broker, fake, engine = ground.broker, ground.fake, ground.engine
        progress(f"bare subscriber draining {plan.raw_backlog} queued messages")
        raw = await raw_subscriber_rate(broker, plan.raw_backlog)
        progress(f"bare subscriber: {raw:,.0f} messages/s")
        storms = await measure(plan, ground)
        doubled = pages_doubled(fake)
        households = [f"H{n:04d}" for n in range(1, plan.households + 1)]
        doubled_calls = await calls_doubled(engine, households)
        texts_sent = len(fake.messages)
    errors = ground.errors
    for line in errors[:5]:
        progress(f"server logged: {line}")
    for to, body in doubled[:3]:
        progress(f"texted twice to {to}: {body[:80]!r}")
    by = {(s["servers"], s["storm"]): s for s in storms}
    return {
        "storms": storms,
        "raw_subscriber_per_s": round(raw),
        "events_lost": sum(s["events_lost"] for s in storms),
        "events_doubled": sum(s["events_doubled"] for s in storms),
        "calls_doubled": doubled_calls,
        "pages_doubled": len(doubled),
        "texts_sent": texts_sent,
        # The flat-out storms' throughput, two servers against one.
        "stored_per_s_2_over_1": ratio(by, "stored_per_s"),
        "decided_per_s_2_over_1": ratio(by, "decided_per_s"),
        "flat_out_presses": plan.presses,
        "paced_presses": plan.paced_presses,
        "paced_rate": plan.rate,
        "households": plan.households,
        "carers": plan.carers,
        "server_errors_logged": len(errors),
        "database": "postgresql",
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }


def ratio(by: Mapping[tuple[int, str], Mapping[str, Any]], key: str) -> float | None:
    """The flat-out storm's ``key`` with two servers over with one."""
    one, two = by[(1, "flat_out")].get(key), by[(2, "flat_out")].get(key)
    return round(two / one, 2) if one and two else None


def main() -> None:
    parser = cluster_parser(
        __doc__, quick="fewer presses: about 30 s on a quiet machine", workdir="the servers' logs"
    )
    parser.add_argument(
        "--presses", type=int, help="the flat-out storms' presses (default 2,000; 200 quick)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="the paced storms' presses a second (default 20), for 30 s (3 s quick)",
    )
    args = parser.parse_args()
    plan = Plan.for_run(quick=args.quick, presses=args.presses, rate=args.rate)
    run_to_the_end(parser, args, lambda: run(args, plan))


if __name__ == "__main__":
    main()
