"""Escalation timers survive the server being killed outright."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.broker import EmbeddedBroker
from callcenter.store import models as m
from callcenter.store.db import create_engine
from tests.ingest_support import eventually, publish_events
from tests.server_support import server_process, write_config

# Three quick steps so the test can let them fall due while the server is dead.
_SHORT_LADDER = """
[calls]
event_poll_s = 0.2

[calls.policies.emergency]
auto_dispatch = false
steps = [
  { name = "first", after_s = 3, unless = "closed", actions = ["alert_operators"] },
  { name = "second", after_s = 4, unless = "closed", actions = ["alert_operators"] },
  { name = "third", after_s = 5, unless = "closed", actions = ["alert_operators"] },
]
"""


async def _timers(database_url: str) -> list[tuple[str, str, int]]:
    engine = create_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            found = await session.execute(
                select(m.Timer.step, m.Timer.state, m.Timer.call_id).order_by(m.Timer.due_at)
            )
            return [(step, state, call) for step, state, call in found.all()]
    finally:
        await engine.dispose()


async def _escalations(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            found = await session.scalars(
                select(m.CallHistory)
                .where(m.CallHistory.action == "escalated")
                .order_by(m.CallHistory.id)
            )
            return [h.detail["step"] for h in found.all()]
    finally:
        await engine.dispose()


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_timers_pending_when_the_server_is_killed_each_fire_once_after_restart(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that after SIGKILL with timers pending, a restarted server fires each timer
    that fell due exactly once, in due order, as it starts (not at its 30 s re-read)."""
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=seeded_database_url,
        broker=broker,
        prefix=topic_prefix,
        extra=_SHORT_LADDER,
    )
    async with server_process(config_file) as server:
        await server.wait_for_line("ingest subscribed")
        await publish_events(
            broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "press-1")]
        )
        pressed = time.monotonic()

        async def armed() -> bool:
            return len(await _timers(seeded_database_url)) == 3

        await eventually(armed, within_s=10, what="three timers armed")
        server.send(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        assert time.monotonic() - pressed < 3, "the server must die before the first step"
        await asyncio.sleep(max(0.0, pressed + 5.5 - time.monotonic()))
        assert [s for _, s, _ in await _timers(seeded_database_url)] == ["pending"] * 3

        await server.start()
        # Timed from when it does the desk's work, not from its start: a loaded CI
        # machine takes seconds to start a server.
        await server.wait_for_line("now does the desk's once-only work", within_s=60)
        leading = time.monotonic()

        async def fired() -> bool:
            return all(s == "fired" for _, s, _ in await _timers(seeded_database_url))

        await eventually(fired, within_s=25, what="every due timer fired")
        # Well inside the scheduler's 30 s re-read: fired by the start-up scan. (How fast
        # is measured by bench/dispatch.py, not here.)
        assert time.monotonic() - leading < 20.0
        await asyncio.sleep(1.0)  # anything fired twice would show by now
        assert await _escalations(seeded_database_url) == ["first", "second", "third"]
        server.send(signal.SIGTERM)
        assert await server.wait() == 0
