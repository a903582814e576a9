"""``callcenter demo`` and ``callcenter seed --demo``: the simulator's commands, added to
``callcenter``'s own through the ``callcenter.commands`` entry points (pyproject.toml), so
the server never imports the simulator. Only the parsers are built here; a command
imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from callcenter.cli import CommandList, add_log_format, config_from


def _cmd_demo(args: argparse.Namespace) -> int:
    from device_sim.demo import demo

    config = config_from(args)
    return asyncio.run(
        demo(config, press_interval_s=args.press_interval, carers_answer=not args.no_carers)
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
        type=float,
        default=5.0,
        help="seconds between simulated button presses across the district (default 5)",
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
