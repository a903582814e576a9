"""A simulated week on virtual time: how long a week of the 900-household district takes
to run, and what the call centre made of it.

    python bench/week.py [--quick] [--days D] [--seeds 3] [--no-voice]

Starts everything itself: per run a SQLite database in a temporary directory (on
/dev/shm when there is one) with the demo district, a local fake Twilio, and the server's
parts driven on a ManualClock (see device_sim/week.py). ``--quick`` runs the first three
days once (seed 2026), to finish within half a minute; the full benchmark runs the whole
week for ``--seeds`` different seeds (different weeks of the same district) and reports
the median time. ``--days`` sets the length for either. The centre places phone calls as
configured by default (carers rung about pages, families when help is late, operators
ringing the household of every emergency and fall, all through the fake Twilio on the
virtual clock); ``--no-voice`` runs the same weeks with texts only, to show what the
calls cost.
Beside the week, the same database's bare commit rate is measured in the same run, as the
floor every simulated transaction stands on.
Progress goes to standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from callcenter.store.db import create_engine
from device_sim.week import WeekOptions, WeekResult, run_week

# The quick run: Monday to Wednesday, about 270 calls with their texts and phone calls.
_QUICK_DAYS = 3.0


def _scratch() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else None


async def _bare_commits(directory: Path, count: int = 2000) -> float:
    """Commits per second of one-row transactions on a fresh SQLite file, the same way
    the server opens it (WAL, synchronous NORMAL)."""
    engine = create_engine(f"sqlite+aiosqlite:///{directory / 'bare.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        started = time.perf_counter()
        for i in range(count):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": str(i)})
        return count / (time.perf_counter() - started)
    finally:
        await engine.dispose()


async def _one(seed: int, days: float, directory: Path, *, voice: bool) -> WeekResult:
    def progress(line: str) -> None:
        print(f"  seed {seed}: {line}", file=sys.stderr, flush=True)

    return await run_week(
        WeekOptions(
            seed=seed,
            days=days,
            work_dir=directory / f"seed-{seed}",
            progress=progress,
            voice=voice,
        )
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    seeds = [2026 + i for i in range(1 if args.quick else args.seeds)]
    if args.days is None:
        args.days = _QUICK_DAYS if args.quick else 7.0
    with tempfile.TemporaryDirectory(prefix="bench-week-", dir=_scratch()) as scratch:
        directory = Path(scratch)
        bare = await _bare_commits(directory)
        print(f"bare SQLite commits: {bare:.0f}/s", file=sys.stderr)
        results = []
        for seed in seeds:
            print(f"week with seed {seed} ({args.days:g} days, 900 households)", file=sys.stderr)
            result = await _one(seed, args.days, directory, voice=not args.no_voice)
            print(f"  {json.dumps(result.summary())}", file=sys.stderr)
            results.append(result)
    first = results[0].summary()
    walls = [r.wall_s for r in results]
    return {
        "mode": "quick" if args.quick else "full",
        "days": args.days,
        "households": first["households"],
        "carers": first["carers"],
        "seeds": seeds,
        "week_seconds": round(statistics.median(walls), 2),
        "week_seconds_each": [round(w, 2) for w in walls],
        "events_generated": sum(r.events.generated for r in results),
        "events_lost": sum(r.events.lost + r.events.doubled for r in results),
        "calls": sum(r.calls["opened"] for r in results),
        "calls_open_unescalated": sum(r.calls["open_unescalated"] for r in results),
        "carer_texts": sum(r.field["texts_sent"] for r in results),
        "answered_60s_share": first["answered_60s_share"],
        "on_scene_15min_share": first["on_scene_15min_share"],
        "on_scene_15min_share_each": [r.on_scene_15min_share for r in results],
        "utilisation": first["utilisation"],
        "voice": not args.no_voice,
        "operator_rings": sum(r.voice["operator_rings"] for r in results),
        "spoken_within_60s_share_each": [r.voice["spoken_within_60s"]["share"] for r in results],
        "carers_rung": sum(r.voice["carers_rung"] for r in results),
        "carers_accepted_by_voice": sum(r.voice["carers_accepted_by_voice"] for r in results),
        "virtual_speedup": round(
            statistics.median(
                (r.ended_at - r.started_at).total_seconds() / r.wall_s for r in results
            )
        ),
        "bare_sqlite_commits_per_s": round(bare),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the first three days, once (not --seeds weeks)"
    )
    parser.add_argument(
        "--days", type=float, default=None, help="simulated days (default 7; 3 with --quick)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="weeks to run in full mode")
    parser.add_argument(
        "--no-voice", action="store_true", help="a centre that places no phone calls"
    )
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
