"""Register import benchmark: the demo district exported, then checked (the dry run) and
imported into an empty database, in both formats, and exported again to confirm the
round trip; then the same file imported again (every record unchanged).

    python bench/register_import.py [--quick] [--database-url postgresql+asyncpg://...]

Starts what it needs: SQLite databases in a temporary directory, and, given
``--database-url``, databases of its own on that PostgreSQL server too (dropped
afterwards; the database the URL names is only connected to). ``--quick`` runs the
900-household district; the full run adds one ten times larger (9,000 households).
Progress goes to standard error; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import throwaway_database
from callcenter.engine import register_files as rf
from callcenter.engine.register_files.files import cell_values
from callcenter.store.db import create_engine
from callcenter.store.migrate import upgrade_async
from device_sim.demo_district import seed_demo_district

TODAY = date(2026, 12, 7)


def progress(message: str) -> None:
    print(f"[register-import] {message}", file=sys.stderr, flush=True)


def migrated(workdir: Path, server_url: str | None, name: str) -> AbstractAsyncContextManager[str]:
    """A new, migrated, empty database: a SQLite file, or one on the PostgreSQL server."""
    return throwaway_database(workdir, server_url, upgrade_async, name=name)


async def timed(work: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await work
    return result, round(time.perf_counter() - started, 3)


class LoopWatch:
    """The longest the event loop was kept from a 10 ms tick while some work ran: what
    an alarm arriving then would wait before the server even read it."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            due = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - due) * 1000)

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def one_size(
    workdir: Path, server_url: str | None, households: int, kind: rf.Format
) -> dict[str, Any]:
    """Export a district of ``households``, check it and import it into an empty
    database, export again and compare; import the same file once more."""
    audit = rf.Audit(actor="operator:bench", at=datetime.now(UTC))
    tag = f"{households}-{kind.value}"
    async with (
        migrated(workdir, server_url, f"source-{tag}") as source_url,
        migrated(workdir, server_url, f"target-{tag}") as target_url,
    ):
        await seed_demo_district(source_url, households=households)
        source, target = create_engine(source_url), create_engine(target_url)
        try:
            (exported, _), export_s = await timed(rf.export(source, kind, TODAY))
            checked, dry_run_s = await timed(
                rf.import_file(target, exported, TODAY, audit, dry_run=True)
            )
            async with LoopWatch() as watch:
                done, import_s = await timed(
                    rf.import_file(target, exported, TODAY, audit, dry_run=False)
                )
            (again, _), _ = await timed(rf.export(target, kind, TODAY))
            unchanged, reimport_s = await timed(
                rf.import_file(target, exported, TODAY, audit, dry_run=False)
            )
        finally:
            await source.dispose()
            await target.dispose()
    same = (
        exported == again if kind is rf.Format.CSV else cell_values(exported) == cell_values(again)
    )
    rows = sum(done.rows.values())
    result = {
        "households": households,
        "format": kind.value,
        "file_bytes": len(exported),
        "rows": rows,
        "export_s": export_s,
        "dry_run_s": dry_run_s,
        "import_s": import_s,
        "import_write_lock_held_s": done.held_s,
        "import_loop_stall_max_ms": round(watch.worst_ms, 1),
        "reimport_unchanged_s": reimport_s,
        "import_rows_per_s": round(rows / import_s) if import_s else None,
        "problems": len(checked.problems) + len(done.problems),
        "written": done.written,
        "round_trip_identical": same,
        "reimport_all_unchanged": all(
            t["unchanged"] == t["in_file"] for t in unchanged.counts.values()
        ),
    }
    progress(json.dumps(result))
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="900 households only (under 30 s)")
    parser.add_argument(
        "--database-url",
        help="also run on this PostgreSQL server (postgresql+asyncpg://...): the benchmark "
        "creates databases of its own there and drops them afterwards",
    )
    args = parser.parse_args()
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a PostgreSQL URL; SQLite always runs")
    sizes = [900] if args.quick else [900, 9000]
    servers: list[str | None] = [None, *([args.database_url] if args.database_url else [])]
    runs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        for server_url in servers:
            database = "sqlite" if server_url is None else "postgresql"
            for households in sizes:
                for kind in rf.Format:
                    progress(f"{database}: {households} households, {kind.value}")
                    run = await one_size(Path(tmp), server_url, households, kind)
                    runs.append({"database": database, **run})
    ok = all(r["round_trip_identical"] and r["problems"] == 0 for r in runs)
    print(
        json.dumps(
            {
                "benchmark": "register_import",
                "quick": args.quick,
                "cpus": os.cpu_count(),
                "seconds": round(time.perf_counter() - started, 1),
                "all_round_trips_identical": ok,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
