"""The ``device-sim`` command: connect a simulated district to a broker and press buttons.

Progress goes to stderr; the last line on stdout is the run's summary as JSON.
Exit status: 0 when every generated event was acknowledged, 1 when some were still
pending at the end, 2 for a setting that cannot work.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from callcenter import logs
from device_sim.district import DeviceSpec, district_devices, load_devices_from_database
from device_sim.settings import (
    DEFAULT_KIND_WEIGHTS,
    SimulationSettings,
    SimulatorConfigError,
    parse_brokers,
    parse_kind_weights,
    parse_storm,
)
from device_sim.simulation import Simulation

log = logging.getLogger("device_sim")

DEFAULT_HOUSEHOLDS = 900


# Subcommands that run the district on virtual time (device_sim.commands.SUBCOMMANDS,
# named here so the real-time simulator starts without importing them).
VIRTUAL_TIME_COMMANDS = ("week", "plan", "scenario")


def _default_weights() -> str:
    return ",".join(f"{kind.value}={weight:g}" for kind, weight in DEFAULT_KIND_WEIGHTS.items())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and docs."""
    defaults = SimulationSettings()
    parser = argparse.ArgumentParser(
        prog="device-sim",
        description="Simulated eldercare households (base unit + call button) speaking "
        "device protocol v1 over MQTT.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--households",
        type=int,
        default=None,
        metavar="N",
        help=f"simulate households H0001..HN, devices BU-/CB-Hnnnn (default {DEFAULT_HOUSEHOLDS})",
    )
    source.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help="simulate every device registered in this database (SQLAlchemy URL)",
    )
    broker = parser.add_argument_group("broker")
    first = defaults.brokers[0]
    broker.add_argument(
        "--broker-host",
        default=first.host,
        metavar="HOST[:PORT],...",
        help=f"MQTT broker, or several separated by commas, each device trying them in "
        f"turn (default {first.host})",
    )
    broker.add_argument(
        "--broker-port",
        type=int,
        default=first.port,
        metavar="PORT",
        help=f"MQTT port of a broker named without one (default {first.port})",
    )
    broker.add_argument(
        "--prefix", default=defaults.prefix, help=f"topic prefix (default {defaults.prefix})"
    )
    broker.add_argument(
        "--connections",
        type=int,
        default=None,
        metavar="N",
        help="share N MQTT connections among all devices (default: one per device); "
        "last wills are then per connection",
    )
    broker.add_argument(
        "--connect-concurrency",
        type=int,
        default=defaults.connect_concurrency,
        metavar="N",
        help=f"connection attempts in flight at once (default {defaults.connect_concurrency})",
    )
    broker.add_argument(
        "--keepalive",
        type=int,
        default=defaults.keepalive_s,
        metavar="S",
        help=f"MQTT keepalive in seconds (default {defaults.keepalive_s})",
    )
    broker.add_argument(
        "--backoff-initial",
        type=float,
        default=defaults.backoff_initial_s,
        metavar="S",
        help=f"first reconnect delay, doubled per failure (default {defaults.backoff_initial_s})",
    )
    broker.add_argument(
        "--backoff-max",
        type=float,
        default=defaults.backoff_max_s,
        metavar="S",
        help=f"longest reconnect delay (default {defaults.backoff_max_s:g})",
    )
    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument(
        "--press-rate",
        type=float,
        default=defaults.press_rate,
        metavar="R",
        help=f"events per second across the district, Poisson (default {defaults.press_rate})",
    )
    behaviour.add_argument(
        "--kind-weights",
        default=None,
        metavar="SPEC",
        help=f"mix of event kinds, kind=weight,... (default {_default_weights()})",
    )
    behaviour.add_argument(
        "--duplicate-rate",
        type=float,
        default=defaults.duplicate_rate,
        metavar="F",
        help="share of events (0..1) published twice with the same id (default 0)",
    )
    behaviour.add_argument(
        "--heartbeat-interval",
        type=float,
        default=defaults.heartbeat_interval_s,
        metavar="S",
        help=f"seconds between a device's heartbeats, 0 = off "
        f"(default {defaults.heartbeat_interval_s:g})",
    )
    behaviour.add_argument(
        "--storm",
        default=None,
        metavar="COUNT:SECONDS",
        help="once every device is online, COUNT emergency presses from different "
        "households, evenly spread over SECONDS (e.g. 10000:60)",
    )
    behaviour.add_argument(
        "--storm-after",
        type=float,
        default=defaults.storm_after_s,
        metavar="S",
        help="start the storm S seconds after every device is online (default 0)",
    )
    behaviour.add_argument("--seed", type=int, default=None, help="random seed for the presses")
    limits = parser.add_argument_group("how the run ends")
    limits.add_argument("--duration", type=float, default=None, metavar="S", help="run S seconds")
    limits.add_argument(
        "--events", type=int, default=None, metavar="N", help="stop after generating N events"
    )
    limits.add_argument(
        "--drain-timeout",
        type=float,
        default=defaults.drain_timeout_s,
        metavar="S",
        help=f"at the end, wait up to S seconds for unacknowledged events "
        f"(default {defaults.drain_timeout_s:g})",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        metavar="FILE",
        help="append every generated event and its acknowledgement to FILE (JSON lines)",
    )
    output.add_argument(
        "--report-interval",
        type=float,
        default=defaults.report_interval_s,
        metavar="S",
        help=f"seconds between progress lines (default {defaults.report_interval_s:g})",
    )
    output.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="progress goes to stderr at INFO (default INFO)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> SimulationSettings:
    """Turn parsed options into settings; SimulatorConfigError lists every problem."""
    weights = (
        parse_kind_weights(args.kind_weights)
        if args.kind_weights is not None
        else dict(DEFAULT_KIND_WEIGHTS)
    )
    storm_presses, storm_seconds = (0, 60.0) if args.storm is None else parse_storm(args.storm)
    settings = SimulationSettings(
        brokers=parse_brokers(args.broker_host, args.broker_port),
        prefix=args.prefix,
        press_rate=args.press_rate,
        kind_weights=weights,
        duplicate_rate=args.duplicate_rate,
        heartbeat_interval_s=args.heartbeat_interval,
        duration_s=args.duration,
        max_events=args.events,
        storm_presses=storm_presses,
        storm_seconds=storm_seconds,
        storm_after_s=args.storm_after,
        drain_timeout_s=args.drain_timeout,
        connections=args.connections,
        connect_concurrency=args.connect_concurrency,
        ground_truth=args.ground_truth,
        seed=args.seed,
        backoff_initial_s=args.backoff_initial,
        backoff_max_s=args.backoff_max,
        keepalive_s=args.keepalive,
        report_interval_s=args.report_interval,
    )
    settings.check()
    return settings


async def _devices(args: argparse.Namespace) -> list[DeviceSpec]:
    if args.database is not None:
        return await load_devices_from_database(args.database)
    return district_devices(args.households if args.households is not None else DEFAULT_HOUSEHOLDS)


def _quiet_stale_socket_writers(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # aiomqtt 2.5 schedules add_writer(fd) with call_soon_threadsafe; when the broker
    # drops the connection before that runs, the fd is closed and asyncio logs a
    # traceback per connection (EBADF). The connection loss itself is handled.
    error = context.get("exception")
    if (
        isinstance(error, OSError)
        and error.errno == errno.EBADF
        and "add_writer" in repr(context.get("handle"))
    ):
        log.debug("ignored a write registration for a closed socket: %s", error)
        return
    loop.default_exception_handler(context)


async def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    simulation = Simulation(settings, await _devices(args))
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_stale_socket_writers)
    signals = (signal.SIGINT, signal.SIGTERM)

    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info(
                "%s: stopping; waiting up to %g s for unacknowledged events (again to stop now)",
                signal.Signals(signum).name,
                settings.drain_timeout_s,
            )
            simulation.stop()
        else:
            simulation.stop(drain=False)

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        summary = await simulation.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print(json.dumps(summary.as_dict()), flush=True)
    return 0 if summary.counters.events_pending == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``device-sim`` console script."""
    given = sys.argv[1:] if argv is None else argv
    if given and given[0] in VIRTUAL_TIME_COMMANDS:
        # The district on virtual time (device_sim.commands); no broker involved.
        from device_sim.commands import main as on_virtual_time

        return on_virtual_time(given)
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    if args.log_level != "DEBUG":
        # Every lost connection would log paho's complaint; the progress lines count them.
        logging.getLogger("device_sim.mqtt").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_run(args))
    except SimulatorConfigError as exc:
        print(f"device-sim: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
