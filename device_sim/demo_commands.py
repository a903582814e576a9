"""``callcenter demo`` and ``callcenter seed --demo``: the simulator's commands, added to
``callcenter``'s own through the ``callcenter.commands`` entry points (pyproject.toml), so
the server never imports the simulator. Only the parsers are built here; a command
imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

from callcenter.cli import CommandList, add_log_format, config_from


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return seconds


def _cmd_demo(args: argparse.Namespace) -> int:
    from device_sim.demo import demo

    config = config_from(args)
    return asyncio.run(
        demo(
            config,
            press_interval_s=args.press_interval,
            carers_answer=not args.no_carers,
            storm=args.storm,
            fresh=args.fresh,
            remind_every_s=args.remind_every,
        )
    )


def _cmd_seed(args: argparse.Namespace) -> int:
    from callcenter.store.migrate import SchemaNotCurrentError
    from device_sim.demo_district import (
        DistrictAlreadySeededError,
        DistrictShapeError,
        seed_demo_district,
    )

    if not args.demo:
        print("nothing to seed: pass --demo to build the demo district", file=sys.stderr)
        return 2
    config = config_from(args)
    try:
        summary = asyncio.run(
            seed_demo_district(
                config.database_url,
                seed=args.seed,
                households=args.households,
                carers=args.carers,
            )
        )
    except (SchemaNotCurrentError, DistrictAlreadySeededError, DistrictShapeError) as error:
        print(f"cannot seed: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def add_demo_command(commands: CommandList) -> None:
    """``callcenter demo``: the server with the demo district's households and carers."""
    demo_command = commands.add_parser(
        "demo", help="seed the demo district if empty, run the server and simulated households"
    )
    demo_command.add_argument(
        "--press-interval",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="seconds between simulated presses across the district (default: a calm load "
        "worked out from the carers on shift now; the demo logs it as 'load: ...')",
    )
    demo_command.add_argument(
        "--storm",
        action="store_true",
        help="a storm once every device is online: twice as many emergency presses as "
        "carers on shift, from different households, within a minute",
    )
    demo_command.add_argument(
        "--fresh",
        action="store_true",
        help="start over: remove the demo's own database (a SQLite file with only the demo's "
        "accounts) and seed the demo district anew",
    )
    demo_command.add_argument(
        "--remind-every",
        type=_positive_seconds,
        default=60.0,
        metavar="S",
        help="show the sign-in box again every S seconds until somebody signs in (default 60)",
    )
    demo_command.add_argument(
        "--no-carers",
        action="store_true",
        help="simulated carers do not answer their pages (answer them on the fake Twilio's page)",
    )
    add_log_format(demo_command)
    demo_command.set_defaults(func=_cmd_demo)


def add_seed_command(commands: CommandList) -> None:
    """``callcenter seed --demo``: the demo district, written into an empty database."""
    seed = commands.add_parser("seed", help="fill the database")
    seed.add_argument("--demo", action="store_true", help="build the demo district")
    seed.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    seed.add_argument(
        "--households", type=int, default=900, help="households in the demo district (default 900)"
    )
    seed.add_argument(
        "--carers", type=int, default=60, help="carers, shared out over the 9 stations (default 60)"
    )
    seed.set_defaults(func=_cmd_seed)
