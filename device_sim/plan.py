"""Staffing what-if: the same simulated week, run once per team size and station placement.

Every variant uses the same seed, so the households, their presses and their falls are
the same in each; only the team (how many carers, at which stations) changes. Variants
run in worker processes, each with its own temporary database.

    rows = plan_staffing([40, 60, 80], [Placement.parse("all")], days=2)
    print(format_table(rows))
    plot_plan(rows, Path("plan.png"))
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_sim.demo_district import DistrictShapeError, build_demo_district
from device_sim.households import PROFILES
from device_sim.week import SimulationError, WeekOptions, run_week

ALL_STATIONS = "all"


class PlanError(ValueError):
    """A team-size range or station list that cannot be planned; the message says why."""


def station_codes() -> tuple[str, ...]:
    """The district's station codes (S01..S09); they do not depend on the seed."""
    return tuple(station.code for station in build_demo_district(households=1).stations)


@dataclass(frozen=True)
class Placement:
    """Which stations get carers: all of them (``stations`` None) or the ones named."""

    stations: tuple[str, ...] | None

    @property
    def name(self) -> str:
        return ALL_STATIONS if self.stations is None else ",".join(self.stations)

    @property
    def size(self) -> int:
        return len(station_codes()) if self.stations is None else len(self.stations)

    @classmethod
    def parse(cls, text: str) -> Placement:
        """``all``, or station codes separated by commas (``S01,S03,S05``)."""
        text = text.strip()
        if text.lower() == ALL_STATIONS:
            return cls(None)
        codes = tuple(code.strip().upper() for code in text.split(",") if code.strip())
        if not codes:
            raise PlanError("name the stations to staff (S01,S03,...) or say 'all'")
        known = station_codes()
        unknown = [code for code in codes if code not in known]
        if unknown:
            raise PlanError(
                f"no such station {', '.join(unknown)}: the stations are {', '.join(known)}"
            )
        twice = sorted({code for code in codes if codes.count(code) > 1})
        if twice:
            raise PlanError(f"station {', '.join(twice)} named more than once")
        return cls(codes)


def parse_team_sizes(text: str, step: int = 10) -> list[int]:
    """``40..80`` (every ``step`` carers, both ends included), ``40,50,60`` or ``60``."""
    if step < 1:
        raise PlanError(f"the step must be at least 1 carer, not {step}")
    text = text.strip()
    try:
        if ".." in text:
            low_text, high_text = text.split("..", 1)
            ends = [int(low_text), int(high_text)]
        else:
            sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PlanError(
            f"team sizes {text!r}: say a range like 40..80 or a list like 40,50,60"
        ) from None
    if ".." in text:
        low, high = ends
        if low > high:
            raise PlanError(f"team sizes {text}: the first must not be above the last")
        sizes = list(range(low, high + 1, step))
        if sizes[-1] != high:
            sizes.append(high)
    if not sizes:
        raise PlanError("name at least one team size")
    small = [size for size in sizes if size < 1]
    if small:
        raise PlanError(f"a team needs at least 1 carer, not {small[0]}")
    return sorted(set(sizes))


@dataclass(frozen=True)
class Variant:
    """One run of the plan: a team size at a placement."""

    carers: int
    placement: Placement


def variant_grid(team_sizes: Sequence[int], placements: Sequence[Placement]) -> list[Variant]:
    """Every team size at every placement, placement by placement."""
    return [Variant(size, placement) for placement in placements for size in team_sizes]


@dataclass
class PlanRow:
    """What one variant did, or why it could not run."""

    carers: int
    placement: str
    stations: int  # how many stations are staffed
    summary: dict[str, Any] | None = None  # WeekResult.summary() when it ran
    impossible: str | None = None  # why this team cannot staff the placement
    failed: str | None = None  # the run broke off
    wall_s: float = 0.0

    @property
    def ran(self) -> bool:
        return self.summary is not None

    def figure(self, name: str) -> Any:
        return None if self.summary is None else self.summary.get(name)

    @property
    def on_scene_15min_share(self) -> float | None:
        share: float | None = self.figure("on_scene_15min_share")
        return share

    @property
    def answered_60s_share(self) -> float | None:
        share: float | None = self.figure("answered_60s_share")
        return share

    @property
    def busiest(self) -> tuple[str, float] | None:
        """The station whose carers spent the largest share of their hours on calls."""
        utilisation: dict[str, float] | None = self.figure("utilisation")
        if not utilisation:
            return None
        code = max(utilisation, key=lambda c: utilisation[c])
        return code, utilisation[code]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanRow:
        """A row as :meth:`as_json` wrote it (``device-sim plan --json``), to redraw a plot."""
        return cls(
            carers=data["carers"],
            placement=data["placement"],
            stations=data["stations"],
            summary=data["summary"],
            impossible=data["impossible"],
            failed=data["failed"],
            wall_s=data["wall_s"],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "carers": self.carers,
            "placement": self.placement,
            "stations": self.stations,
            "impossible": self.impossible,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 2),
            "summary": self.summary,
        }


@dataclass(frozen=True)
class PlanSettings:
    """What stays the same across the variants."""

    days: float = 7.0
    seed: int = 2026
    households: int = 900
    profile: str = "district"
    log_level: str = "ERROR"

    def options(self, variant: Variant) -> WeekOptions:
        return WeekOptions(
            seed=self.seed,
            households=self.households,
            carers=variant.carers,
            staffed=variant.placement.stations,
            days=self.days,
            profile=PROFILES[self.profile],
        )


def _quiet_worker(log_level: str) -> None:
    # Escalation alerts are logged as warnings: in a what-if they are counted, not shown.
    logging.basicConfig(level=log_level)
    logging.getLogger().setLevel(log_level)


def _run_variant(options: WeekOptions) -> tuple[dict[str, Any], float]:
    """In a worker process: one week on virtual time, with its own temporary database."""
    started = time.perf_counter()
    result = asyncio.run(run_week(options))
    return result.summary(), time.perf_counter() - started


def _impossible(settings: PlanSettings, variant: Variant) -> str | None:
    try:
        build_demo_district(
            settings.seed, settings.households, variant.carers, variant.placement.stations
        )
    except DistrictShapeError as exc:
        return str(exc)
    return None


def describe(row: PlanRow) -> str:
    """One line for a finished variant."""
    label = f"{row.carers} carers at {row.placement}"
    if row.impossible:
        return f"{label}: impossible ({row.impossible})"
    if row.failed:
        return f"{label}: failed ({row.failed})"
    return (
        f"{label}: on scene within 15 min {percent(row.on_scene_15min_share)}, "
        f"answered within 60 s {percent(row.answered_60s_share)} ({row.wall_s:.0f} s)"
    )


def plan_staffing(
    team_sizes: Sequence[int],
    placements: Sequence[Placement],
    settings: PlanSettings | None = None,
    *,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[PlanRow]:
    """Run the week for every team size at every placement, ``jobs`` at a time (the
    machine's CPUs by default); rows come back in grid order."""
    settings = settings or PlanSettings()
    if settings.profile not in PROFILES:
        raise PlanError(f"no profile {settings.profile!r}: one of {', '.join(PROFILES)}")
    problems = WeekOptions(days=settings.days, households=settings.households).problems()
    if problems:
        raise PlanError("; ".join(problems))
    grid = variant_grid(team_sizes, placements)
    rows = [PlanRow(v.carers, v.placement.name, v.placement.size) for v in grid]
    to_run: list[int] = []
    for index, variant in enumerate(grid):
        why = _impossible(settings, variant)
        if why is None:
            to_run.append(index)
        else:
            rows[index].impossible = why
    tell = progress or (lambda _line: None)
    for row in rows:
        if row.impossible:
            tell(describe(row))
    if not to_run:
        return rows
    workers = max(1, min(jobs or os.cpu_count() or 1, len(to_run)))
    tell(
        f"{len(to_run)} variants of {settings.days:g} days, {settings.households} households, "
        f"seed {settings.seed}, {workers} at a time"
    )
    began = time.perf_counter()
    spent = 0.0
    # spawn: a fresh interpreter per worker, whatever the caller's threads and loops.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_quiet_worker,
        initargs=(settings.log_level,),
    ) as pool:
        running: dict[Future[tuple[dict[str, Any], float]], int] = {
            pool.submit(_run_variant, settings.options(grid[index])): index for index in to_run
        }
        for done, future in enumerate(as_completed(running), start=1):
            row = rows[running[future]]
            try:
                row.summary, row.wall_s = future.result()
            except (SimulationError, DistrictShapeError) as exc:
                row.failed = str(exc)
            spent += row.wall_s
            left = len(to_run) - done
            # Variants take about as long as each other; ``workers`` of them run at once.
            eta = f", about {_duration(spent / done * left / workers)} to go" if left else ""
            tell(f"[{done}/{len(to_run)}] {describe(row)}{eta}")
    tell(f"{len(to_run)} variants in {_duration(time.perf_counter() - began)}")
    return rows


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f} %"


def format_table(rows: Sequence[PlanRow]) -> str:
    """The plan as a Markdown table: team size x placement, one row each."""
    header = (
        "| carers | stations staffed | on scene ≤ 15 min | answered ≤ 60 s "
        "| p90 on scene | escalated calls | busiest station |"
    )
    lines = [header, "|---:|---|---:|---:|---:|---:|---|"]
    for row in rows:
        where = f"{row.placement} ({row.stations})"
        if not row.ran:
            why = f"impossible: {row.impossible}" if row.impossible else f"failed: {row.failed}"
            lines.append(f"| {row.carers} | {where} | {why} | | | | |")
            continue
        p90 = row.figure("on_scene_p90_s")
        busiest = row.busiest
        lines.append(
            f"| {row.carers} | {where} | {percent(row.on_scene_15min_share)} "
            f"| {percent(row.answered_60s_share)} "
            f"| {'n/a' if p90 is None else f'{p90 / 60:.1f} min'} "
            f"| {row.figure('escalated_calls')} "
            f"| {'n/a' if busiest is None else f'{busiest[0]} {percent(busiest[1])}'} |"
        )
    return "\n".join(lines)


PLOT_NEEDS = (
    "the staffing plot needs matplotlib, an optional part of this package: "
    "pip install 'eldercare-callcenter[plan]' (or leave out --plot)"
)


def require_plotting() -> None:
    """Raise PlanError saying how to install it when matplotlib, which only the plot
    needs, is missing: before the plan's minutes of simulation, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlanError(PLOT_NEEDS) from None


def plot_plan(
    rows: Sequence[PlanRow],
    path: Path,
    *,
    households: int | None = None,
    days: float | None = None,
    seed: int | None = None,
) -> Path:
    """Draw the plan as a PNG: team size against the share of emergencies reached within
    15 minutes (left) and of calls answered within 60 s (right), a line per placement.
    PlanError without matplotlib (``require_plotting``)."""
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import PercentFormatter

    ran = [row for row in rows if row.ran]
    first = ran[0].summary if ran else None
    households = households if households is not None else (first or {}).get("households")
    days = days if days is not None else (first or {}).get("days")
    seed = seed if seed is not None else (first or {}).get("seed")
    placements = list(dict.fromkeys(row.placement for row in rows))
    figure, (on_scene, answered) = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    # Lines that coincide (everyone answered in time) stay apart by marker and dash.
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":")]
    lowest = 100.0
    try:
        for number, placement in enumerate(placements):
            marker, dash = styles[number % len(styles)]
            mine = sorted(
                (row for row in ran if row.placement == placement), key=lambda r: r.carers
            )
            count = next(row.stations for row in rows if row.placement == placement)
            label = (
                "all 9 stations" if placement == ALL_STATIONS else f"{count} stations: {placement}"
            )
            for axes, figures in (
                (on_scene, [r.on_scene_15min_share for r in mine]),
                (answered, [r.answered_60s_share for r in mine]),
            ):
                points = [
                    (r.carers, share * 100)
                    for r, share in zip(mine, figures, strict=True)
                    if share is not None
                ]
                if points:
                    lowest = min(lowest, *(share for _, share in points))
                    axes.plot(
                        *zip(*points, strict=True),
                        marker=marker,
                        linestyle=dash,
                        markersize=7 - number,
                        label=label,
                    )
        on_scene.set_title("Emergencies with a carer on scene within 15 min")
        answered.set_title("Calls answered (acknowledged) within 60 s")
        for axes in (on_scene, answered):
            axes.set_xlabel("carers in the team")
            axes.set_ylabel("share")
            axes.yaxis.set_major_formatter(PercentFormatter(100))
            axes.set_ylim(max(0.0, lowest - 5), 101)
            axes.grid(True, alpha=0.3)
            axes.legend(loc="lower right")
        figure.suptitle(
            f"Staffing what-if: {households} households, {days:g} days, seed {seed}"
            if days is not None
            else "Staffing what-if"
        )
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
