"""Running the whole server (ingest and call desk) inside a test, on a virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import Running, running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import Clock
from callcenter.config import Config
from callcenter.store import models as m
from tests.ingest_support import eventually, publish_events

# Monday 23 November 2026, 10:00 in Xining (02:00 UTC): early and office shifts on duty.
MONDAY_MORNING = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def desk_config(
    *,
    host: str,
    port: int,
    prefix: str,
    database_url: str,
    offers: bool = False,
    hosts: list[str] | None = None,
    **calls: Any,
) -> Config:
    """A configuration for the test broker and database; devices never go silent.
    Without ``offers`` no call is offered to operators on duty (docs/calls.md, "Offers"):
    nobody goes on duty in most tests, and every alarm would go to everyone at once,
    its escalation step run then rather than at its time (tests/test_offers.py).
    ``hosts``: several brokers (``broker.hosts``) instead of ``host`` and ``port``."""
    return Config.model_validate(
        {
            "desk": {"offers": offers},
            "database": {"url": database_url},
            "broker": {
                **({"hosts": hosts} if hosts else {"host": host, "port": port}),
                "topic_prefix": prefix,
                "client_id": f"desk-{prefix}",
                "reconnect_max_s": 1.0,
                # The plain test broker (tests/fixtures/broker.py) takes any client: these
                # tests are about what the server does with messages; who may publish is
                # tests/test_device_logins.py's.
                "device_logins": "none",
            },
            # Virtual time and real device clocks drift apart: keep devices "online",
            # and accept their timestamps whichever way the two differ.
            "ingest": {
                "heartbeat_interval_s": 365 * 86400.0,
                "max_clock_skew_s": 365 * 86400.0,
                "max_clock_lag_s": 365 * 86400.0,
            },
            "calls": {"event_poll_s": 0.2, **calls},
            # An answer off its declared model fails the test (docs/api.md).
            "web": {"port": 0, "strict_answers": True},
        }
    )


@contextlib.asynccontextmanager
async def running_desk(
    config: Config, clock: Clock, *, leading: bool = True
) -> AsyncIterator[Running]:
    """The whole server, connected and ready for device events; unless told it is not
    ``leading`` (another server on its database is), doing the desk's once-only work."""
    async with running_server(config, clock) as server:
        await server.ingest.connected.wait()
        if leading:
            # Alone on its database, it takes the desk's lease at once; a test that
            # stops a part of the desk's work to run its own stops the one that runs.
            assert server.leadership is not None
            await asyncio.wait_for(server.leadership.leading_now.wait(), 10)
        yield server


async def scalar(server: Running, query: Any) -> Any:
    async with AsyncSession(server.engine) as session:
        return await session.scalar(query)


async def rows(server: Running, query: Any) -> list[Any]:
    async with AsyncSession(server.engine) as session:
        return list((await session.execute(query)).all())


async def count(server: Running, model: Any, *where: Any) -> int:
    return int(await scalar(server, select(func.count()).select_from(model).where(*where)))


async def history(server: Running, call_id: int) -> list[m.CallHistory]:
    async with AsyncSession(server.engine) as session:
        return list(
            (
                await session.scalars(
                    select(m.CallHistory)
                    .where(m.CallHistory.call_id == call_id)
                    .order_by(m.CallHistory.id)
                )
            ).all()
        )


async def press_for_call(
    server: Running, broker_host: str, broker_port: int, prefix: str, household: str
) -> int:
    """Press the household's call button once; the id of the call it opens (the first
    call in a test's fresh database)."""
    await publish_events(broker_host, broker_port, prefix, [(household, f"CB-{household}", "p1")])

    async def opened() -> bool:
        return await scalar(server, select(m.Call.id)) is not None

    await eventually(opened, what="the call opened")
    return int(await scalar(server, select(m.Call.id)))


async def page_rows(server: Running, call_id: int) -> list[m.OutboxItem]:
    """The call's SMS rows that page a carer, in order."""
    found = await rows(
        server,
        select(m.OutboxItem)
        .where(m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "sms")
        .order_by(m.OutboxItem.id),
    )
    return [row for (row,) in found if "carer_id" in row.guard]


@contextlib.asynccontextmanager
async def base_unit(
    broker: EmbeddedBroker, prefix: str, household: str
) -> AsyncIterator[aiomqtt.Client]:
    """The household's base unit, connected with the persistent session a real one keeps
    (the broker holds its subscription and its QoS 1 commands while it is away) and
    subscribed to its command topic."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"{prefix}-BU-{household}",
        clean_session=False,
    ) as device:
        await device.subscribe(f"{prefix}/v1/{household}/BU-{household}/command", qos=1)
        yield device
