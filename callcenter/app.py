"""Composition root: builds the broker, database and ingest, runs them in one TaskGroup,
and shuts everything down cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.broker import BrokerStartError, EmbeddedBroker
from callcenter.clock import Clock, SystemClock
from callcenter.config import Config
from callcenter.ingest.service import Ingest
from callcenter.store.db import create_engine
from callcenter.store.migrate import SchemaNotCurrentError, require_current_schema

log = logging.getLogger("callcenter.app")


@dataclass
class Running:
    """What a running server is made of, for the demo and for tests."""

    config: Config
    engine: AsyncEngine
    ingest: Ingest
    broker_host: str
    broker_port: int


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def running_server(config: Config, clock: Clock | None = None) -> AsyncIterator[Running]:
    """Start broker (if embedded), database and ingest; stop them in reverse on exit."""
    clock = clock or SystemClock()
    async with contextlib.AsyncExitStack() as stack:
        if config.embedded_broker_wanted:
            broker = EmbeddedBroker(
                config.data.dir / "mosquitto",
                executable=config.embedded_broker.mosquitto,
                port=config.embedded_broker.port,
                max_queued_messages=config.embedded_broker.max_queued_messages,
            )
            await stack.enter_async_context(broker)
            host, port = broker.host, broker.port
        else:
            host, port = config.broker.host, config.broker.port
        engine = create_engine(config.database_url, echo=config.database.echo)
        stack.push_async_callback(engine.dispose)
        await require_current_schema(engine)
        ingest = Ingest(config, engine, clock, broker_host=host, broker_port=port)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest.run(), name="callcenter.ingest")
            try:
                yield Running(config, engine, ingest, host, port)
            finally:
                ingest.stop()


async def serve(config: Config) -> int:
    """Run the server until SIGTERM/SIGINT. Returns the process exit code."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        async with running_server(config) as server:
            log.info(
                "callcenter serving: broker %s:%d, database %s",
                server.broker_host,
                server.broker_port,
                server.engine.url.render_as_string(hide_password=True),
            )
            await stop.wait()
            log.info("shutting down: finishing the batch in hand")
    except BrokerStartError as error:
        log.error("cannot start the embedded broker: %s", error.detail)
        return 2
    except SchemaNotCurrentError as error:
        log.error("%s", error)
        return 2
    return 0


async def demo(config: Config, *, press_interval_s: float) -> int:
    """Seed the demo district if the database is empty, then run server and households."""
    from callcenter.store.demo import DistrictAlreadySeededError, seed_demo_district
    from callcenter.store.migrate import upgrade_async
    from device_sim.district import load_devices_from_database
    from device_sim.settings import SimulationSettings
    from device_sim.simulation import Simulation

    await upgrade_async(config.database_url)
    with contextlib.suppress(DistrictAlreadySeededError):
        summary = await seed_demo_district(config.database_url, seed=2026)
        log.info("demo district seeded: %s", summary)

    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        async with running_server(config) as server:
            await asyncio.wait_for(server.ingest.connected.wait(), 30)
            simulation = Simulation(
                SimulationSettings(
                    broker_host=server.broker_host,
                    broker_port=server.broker_port,
                    prefix=config.broker.topic_prefix,
                    press_rate=1.0 / press_interval_s,
                    heartbeat_interval_s=config.ingest.heartbeat_interval_s,
                ),
                await load_devices_from_database(config.database_url),
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(simulation.run(stop), name="device_sim")
                tasks.create_task(_report(server, stop), name="callcenter.demo.report")
    except BrokerStartError as error:
        log.error("cannot start the embedded broker: %s", error.detail)
        return 2
    return 0


async def _report(server: Running, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10)
        stats = server.ingest.stats
        log.info(
            "ingest: %s",
            json.dumps(
                {
                    "events_stored": stats.events_stored,
                    "duplicates": stats.duplicates,
                    "heartbeats": stats.heartbeats,
                    "dead_letters": dict(stats.dead_letters),
                    "devices_online": sum(1 for d in server.ingest.registry.all() if d.online),
                }
            ),
        )
