"""The demo: the server with the demo district's simulated households, and carers who
answer their pages; and the demo district's operator and supervisor, who sign in to the
board. ``callcenter demo`` runs it (see demo_commands)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.app import Running, running_server, stop_on_signals
from callcenter.broker import BrokerStartError
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.engine.accounts import add_operator, issue_token, set_active, set_password
from callcenter.ingest.service import Ingest
from callcenter.store import models as m
from callcenter.store.db import create_engine
from callcenter.store.migrate import upgrade_async
from callcenter.web import WebStartError
from device_sim.demo_district import (
    DistrictAlreadySeededError,
    build_demo_district,
    seed_demo_district,
)
from device_sim.district import load_devices_from_database
from device_sim.field import FieldProfile, answer_pages, district_field
from device_sim.settings import SimulationSettings
from device_sim.simulation import Simulation

log = logging.getLogger("callcenter.demo")

# The demo district's desk. Invented people; the number looks like the demo carers' ones.
DEMO_OPERATOR = "demo.operator"
DEMO_SUPERVISOR = "demo.supervisor"
_DEMO_ACCOUNTS = (
    (DEMO_OPERATOR, "王丽", m.OperatorRole.OPERATOR, None),
    (DEMO_SUPERVISOR, "陈建国", m.OperatorRole.SUPERVISOR, "+8613997100001"),
)


async def demo(config: Config, *, press_interval_s: float, carers_answer: bool = True) -> int:
    """Seed the demo district if the database is empty, then run server and households
    (and, unless ``carers_answer`` is off, carers who answer their pages)."""
    await upgrade_async(config.database_url)
    with contextlib.suppress(DistrictAlreadySeededError):
        summary = await seed_demo_district(config.database_url, seed=2026)
        log.info("demo district seeded: %s", summary)
    token, passwords = await _demo_operators(config)

    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        async with running_server(config) as server:
            await asyncio.wait_for(server.ingest.connected.wait(), 30)
            if server.fake_twilio is not None:
                # Delivery reports as a phone network would send them, so the demo's
                # texts go on to "delivered"; tests leave this off and report by hand.
                server.fake_twilio.auto_deliver = True
                log.info(
                    "SMS a carer would get: %s (%s)",
                    server.fake_twilio.page_url,
                    "simulated carers answer them; you may answer as a carer there too, e.g. 12a"
                    if carers_answer
                    else "nobody answers them but you (--no-carers): answer as a carer "
                    "there, e.g. 12a",
                )
            log.info(
                "operator API at %s; try: curl -H 'Authorization: Bearer %s' %s/api/calls "
                "(demo.operator's token, new on every start)",
                server.web_url,
                token,
                server.web_url,
            )
            log.info(
                "call board at %s/board: sign in as %s (passwords new on every start)",
                server.web_url,
                ", ".join(f"{user} / {password}" for user, password in passwords.items()),
            )
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
                if server.fake_twilio is not None and carers_answer:
                    # The demo district's carers read their pages and answer like people.
                    field = district_field(build_demo_district(2026), FieldProfile(), seed=2026)
                    tasks.create_task(
                        answer_pages(server.fake_twilio, field, server.clock, stop),
                        name="device_sim.field",
                    )
    except BrokerStartError as error:
        log.error("cannot start the embedded broker: %s", error.detail)
        return 2
    except WebStartError as error:
        log.error("%s", error)
        return 2
    return 0


async def ensure_demo_operators(engine: AsyncEngine, now: datetime) -> str:
    """Make sure the demo operator and supervisor exist and are active; returns a freshly
    issued token for the demo operator, so a person can try the API."""
    async with AsyncSession(engine) as session:
        existing = set(
            (
                await session.scalars(
                    select(m.Operator.username).where(
                        m.Operator.username.in_([a[0] for a in _DEMO_ACCOUNTS])
                    )
                )
            ).all()
        )
    for username, name, role, phone in _DEMO_ACCOUNTS:
        if username in existing:
            await set_active(engine, username, True)
        else:
            await add_operator(engine, username, name=name, now=now, role=role, phone=phone)
    return await issue_token(engine, DEMO_OPERATOR)


async def issue_demo_passwords(engine: AsyncEngine) -> dict[str, str]:
    """Fresh random board passwords for the demo operator and supervisor (shown once, in
    the demo's log); none is written anywhere in the code."""
    passwords = {}
    for username, *_ in _DEMO_ACCOUNTS:
        passwords[username] = secrets.token_urlsafe(9)
        await set_password(engine, username, passwords[username])
    return passwords


async def _demo_operators(config: Config) -> tuple[str, dict[str, str]]:
    """The demo operator and supervisor exist; a fresh API token for the operator and
    fresh board passwords for both."""
    engine = create_engine(config.database_url)
    try:
        token = await ensure_demo_operators(engine, SystemClock().now())
        return token, await issue_demo_passwords(engine)
    finally:
        await engine.dispose()


async def _report(server: Running, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10)
        stats = server.ingest.stats
        report = {
            "events_stored": stats.events_stored,
            "duplicates": stats.duplicates,
            "heartbeats": stats.heartbeats,
            "dead_letters": dict(stats.dead_letters),
        }
        if isinstance(server.ingest, Ingest):  # a child process keeps its registry
            report["devices_online"] = sum(1 for d in server.ingest.registry.all() if d.online)
        log.info("ingest: %s", json.dumps(report))
