"""``device-sim week``, ``device-sim plan`` and ``device-sim scenario``: the district on
virtual time.

``week`` runs one simulated week (or a part of one) and reports what the call centre
did; ``plan`` runs the same week once per team size and station placement and compares
them. Progress goes to stderr; ``week`` writes a readable report there too and prints its
summary as JSON on the last line of stdout, ``plan`` prints its table (Markdown) on stdout.
Exit status: 0 when done, 1 when events were lost or a
variant broke off, 2 for options that cannot work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callcenter import logs
from device_sim.demo_district import DistrictShapeError, build_demo_district
from device_sim.households import PROFILES
from device_sim.plan import (
    ALL_STATIONS,
    Placement,
    PlanError,
    PlanRow,
    PlanSettings,
    format_table,
    parse_team_sizes,
    percent,
    plan_staffing,
    plot_plan,
    require_plotting,
)
from device_sim.scenarios import SCENARIOS, run_scenario
from device_sim.week import SimulationError, WeekOptions, WeekResult, run_week

SUBCOMMANDS = ("week", "plan", "scenario")
_PROFILES = ("district", "winter")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _placement(text: str) -> Placement:
    try:
        return Placement.parse(text)
    except PlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days", type=float, default=7.0, help="simulated days from Monday 00:00 (default 7)"
    )
    parser.add_argument(
        "--households", type=int, default=900, metavar="N", help="households (default 900)"
    )
    parser.add_argument("--seed", type=int, default=2026, help="district and week (default 2026)")
    parser.add_argument(
        "--profile",
        choices=_PROFILES,
        default="district",
        help="how often households press and fall: an ordinary week or a winter one",
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="ERROR",
        help="server log lines on stderr (default ERROR: escalation alerts are counted, not shown)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of both subcommands, exposed for tests and docs."""
    parser = argparse.ArgumentParser(
        prog="device-sim",
        description="The district on virtual time: one simulated week, or a staffing plan.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    week = commands.add_parser(
        "week",
        help="run one simulated week and report what the call centre did",
        description="Run the district's week on virtual time: households, server, "
        "operators and carers. Progress and a readable report on stderr, the summary "
        "as JSON on the last line of stdout.",
    )
    _common(week)
    week.add_argument("--carers", type=int, default=60, metavar="N", help="team size (default 60)")
    week.add_argument(
        "--no-voice",
        action="store_true",
        help="a centre that places no phone calls: carers and families are only texted, "
        "operators do not ring households",
    )
    week.add_argument(
        "--stations",
        type=_placement,
        default=Placement(None),
        metavar="all|S01,S02,...",
        help="stations that get carers (default all nine)",
    )
    week.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the run's database (DIR/week.db) here instead of a temporary directory",
    )
    plan = commands.add_parser(
        "plan",
        help="run the same week for several team sizes and station placements",
        description="Staffing what-if: the same week (same seed, same households and "
        "presses) for every team size at every placement, in parallel worker processes.",
    )
    _common(plan)
    plan.add_argument(
        "--carers",
        required=True,
        metavar="LOW..HIGH|N,N,...",
        help="team sizes: a range like 40..80 (every --step carers) or a list like 40,50,60",
    )
    plan.add_argument(
        "--step", type=int, default=10, help="carers between team sizes of a range (default 10)"
    )
    plan.add_argument(
        "--stations",
        type=_placement,
        action="append",
        default=None,
        metavar="all|S01,S03,...",
        help="a placement: 'all' or station codes; repeat for more placements (default all)",
    )
    plan.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help=f"variants run at once, one process each (default {os.cpu_count() or 1})",
    )
    plan.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write the plot here")
    plan.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write every variant's figures"
    )
    scenario = commands.add_parser(
        "scenario",
        help="run a named scenario and check what it expects",
        description="Run a named scenario on virtual time and check each of its "
        "expectations against what the call centre did (docs/simulator.md). Each "
        "expectation and PASSED/FAILED on stderr; the reports as JSON on stdout. Exit "
        "status 1 when an expectation failed.",
    )
    scenario.add_argument("name", choices=[*sorted(SCENARIOS), "all"], help="which scenario")
    scenario.add_argument(
        "--quick", action="store_true", help="the short form CI runs (default: the full one)"
    )
    scenario.add_argument(
        "--log-level", default="ERROR", choices=_LOG_LEVELS, help="server log level (ERROR)"
    )
    return parser


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _quiet(level: str) -> None:
    logs.configure(level)
    logging.getLogger().setLevel(level)


def week_report(result: WeekResult) -> list[str]:
    """The run's report as `device-sim week` writes it on stderr, line by line."""
    s = result.summary()
    staffed = "all stations" if s["staffed"] == "all" else ",".join(s["staffed"])
    utilisation = ", ".join(
        f"{code} {share * 100:.0f} %" for code, share in s["utilisation"].items()
    )
    p90 = s["on_scene_p90_s"]
    return [
        f"{s['households']} households, {s['carers']} carers ({staffed}), {s['days']:g} days, "
        f"seed {s['seed']}: {s['virtual_hours']} simulated hours in {s['week_seconds']} s",
        f"device events: {s['events_generated']} generated, {s['events_stored']} stored once, "
        f"{s['events_lost']} lost, {s['events_doubled']} doubled, "
        f"{s['events_pending']} still on devices",
        f"calls: {s['calls']} opened, {s['escalated_calls']} escalated, "
        f"{s['calls_open_unescalated']} open and not escalated",
        f"answered within 60 s: {percent(s['answered_60s_share'])}",
        f"emergencies on scene within 15 min: {percent(s['on_scene_15min_share'])}"
        f" (p90 {'n/a' if p90 is None else f'{p90 / 60:.1f} min'})",
        f"carers' hours on calls: {utilisation}",
        *_voice_lines(s["voice"], result.options.voice),
    ]


def _voice_lines(voice: dict[str, Any], enabled: bool) -> list[str]:
    if not enabled:
        return ["phone calls: none (--no-voice: the centre places no calls)"]
    spoken = voice["spoken_within_60s"]
    p50 = voice["spoken_after_p50_s"]
    return [
        f"operators rang {voice['operator_rings']} households, "
        f"{voice['operator_phone_minutes']:g} min on the phone; someone there spoke with "
        f"the desk within 60 s for {percent(spoken['share'])} of emergencies and falls "
        f"(median {'n/a' if p50 is None else f'{p50:.0f} s'})",
        f"carers rung about a page not accepted by text: {voice['carers_rung']}, "
        f"{voice['carers_picked_up']} picked up, {voice['carers_accepted_by_voice']} "
        f"accepted and {voice['carers_declined_by_voice']} declined with a key",
        f"family contacts rung when help was late: {voice['family_rung']}, "
        f"{voice['family_confirmed']} confirmed with 1",
    ]


def _week(args: argparse.Namespace) -> int:
    placement: Placement = args.stations
    options = WeekOptions(
        seed=args.seed,
        households=args.households,
        carers=args.carers,
        staffed=placement.stations,
        days=args.days,
        profile=PROFILES[args.profile],
        work_dir=args.work_dir,
        progress=_say,
        voice=not args.no_voice,
    )
    problems = options.problems()
    try:
        if problems:
            raise SimulationError("; ".join(problems))
        build_demo_district(args.seed, args.households, args.carers, placement.stations)
    except (SimulationError, DistrictShapeError) as exc:
        _say(f"device-sim week: {exc}")
        return 2
    _quiet(args.log_level)
    _say(
        f"week: {args.households} households, {args.carers} carers at {placement.name}, "
        f"{args.days:g} days, seed {args.seed}, {args.profile} profile"
    )
    try:
        result = asyncio.run(run_week(options))
    except (SimulationError, DistrictShapeError) as exc:
        _say(f"device-sim week: {exc}")
        return 2
    for line in week_report(result):
        _say(line)
    summary = result.summary()
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 1 if summary["events_lost"] or summary["events_doubled"] else 0


def _plan(args: argparse.Namespace) -> int:
    try:
        sizes = parse_team_sizes(args.carers, args.step)
        if args.jobs < 1:
            raise PlanError(f"--jobs must be at least 1, not {args.jobs}")
        problems = WeekOptions(days=args.days, households=args.households).problems()
        if problems:
            raise PlanError("; ".join(problems))
        if args.plot is not None:
            require_plotting()
    except PlanError as exc:
        _say(f"device-sim plan: {exc}")
        return 2
    placements: list[Placement] = list(
        dict.fromkeys(args.stations or [Placement.parse(ALL_STATIONS)])
    )
    settings = PlanSettings(
        days=args.days,
        seed=args.seed,
        households=args.households,
        profile=args.profile,
        log_level=args.log_level,
    )
    _quiet(args.log_level)
    rows = plan_staffing(sizes, placements, settings, jobs=args.jobs, progress=_say)
    print(format_table(rows), flush=True)
    if args.plot is not None and any(row.ran for row in rows):
        plot_plan(rows, args.plot, households=args.households, days=args.days, seed=args.seed)
        _say(f"plot: {args.plot}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_plan_json(settings, rows), ensure_ascii=False, indent=2))
        _say(f"figures: {args.json}")
    broken = any(row.failed or (row.figure("events_lost") or 0) > 0 for row in rows)
    return 1 if broken else 0


def _plan_json(settings: PlanSettings, rows: Sequence[PlanRow]) -> dict[str, Any]:
    return {
        "households": settings.households,
        "days": settings.days,
        "seed": settings.seed,
        "profile": settings.profile,
        "variants": [row.as_json() for row in rows],
    }


def _scenario(args: argparse.Namespace) -> int:
    names = sorted(SCENARIOS) if args.name == "all" else [args.name]
    _quiet(args.log_level)
    reports = []
    for name in names:
        scenario = SCENARIOS[name]
        _say(f"scenario {name} ({'quick' if args.quick else 'full'}): {scenario.story}")
        report, _result = asyncio.run(run_scenario(name, quick=args.quick, progress=_say))
        for line in report.lines():
            _say(line)
        reports.append(report)
    print(json.dumps([r.to_json() for r in reports], ensure_ascii=False), flush=True)
    return 0 if all(r.passed for r in reports) else 1


def main(argv: Sequence[str]) -> int:
    """``device-sim week|plan|scenario ...``; argv starts with the subcommand's name."""
    args = build_parser().parse_args(list(argv))
    if args.command == "week":
        return _week(args)
    if args.command == "scenario":
        return _scenario(args)
    return _plan(args)
