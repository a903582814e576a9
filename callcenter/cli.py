"""The ``callcenter`` command: serve, demo, seed, db upgrade, config check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from callcenter.config import Config, ConfigError, check_environment, load_config


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration has {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            print(f"  {problem}")
        return 2
    problems = check_environment(config)
    if problems:
        print(f"configuration has {len(problems)} problem(s):")
    for problem in problems:
        print(f"  {problem}")
    if problems:
        return 2
    broker = (
        "embedded mosquitto"
        if config.embedded_broker_wanted
        else f"{config.broker.host}:{config.broker.port}"
    )
    print(f"configuration OK: database {_redact(config.database_url)}, broker {broker}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from callcenter.store.migrate import upgrade

    config = _load(args)
    upgrade(config.database_url)
    print(f"database at {_redact(config.database_url)} is up to date")
    return 0


def _cmd_seed(args: argparse.Namespace) -> int:
    from callcenter.store.demo import DistrictAlreadySeededError, seed_demo_district
    from callcenter.store.migrate import SchemaNotCurrentError

    if not args.demo:
        print("nothing to seed: pass --demo to build the demo district", file=sys.stderr)
        return 2
    config = _load(args)
    try:
        summary = asyncio.run(seed_demo_district(config.database_url, seed=args.seed))
    except (SchemaNotCurrentError, DistrictAlreadySeededError) as error:
        print(f"cannot seed: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from callcenter.app import serve

    config = _load(args)
    return asyncio.run(serve(config))


def _cmd_demo(args: argparse.Namespace) -> int:
    from callcenter.app import demo

    config = _load(args)
    return asyncio.run(demo(config, press_interval_s=args.press_interval))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and docs."""
    parser = argparse.ArgumentParser(
        prog="callcenter", description="Eldercare emergency call-centre server."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: ./callcenter.toml if present)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (embedded broker if none set)")
    serve.set_defaults(func=_cmd_serve)

    demo = commands.add_parser(
        "demo", help="seed the demo district if empty, run the server and simulated households"
    )
    demo.add_argument(
        "--press-interval",
        type=float,
        default=5.0,
        help="seconds between simulated button presses across the district (default 5)",
    )
    demo.set_defaults(func=_cmd_demo)

    seed = commands.add_parser("seed", help="fill the database")
    seed.add_argument("--demo", action="store_true", help="build the demo district")
    seed.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    seed.set_defaults(func=_cmd_seed)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_upgrade = db_commands.add_parser("upgrade", help="apply all migrations")
    db_upgrade.set_defaults(func=_cmd_db_upgrade)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(
        dest="config_command", required=True, metavar="CONFIG_COMMAND"
    )
    check = config_commands.add_parser("check", help="report every configuration problem")
    check.set_defaults(func=_cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``callcenter`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces its SQLite context on every schema check; only its warnings matter.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
