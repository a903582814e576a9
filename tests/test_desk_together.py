"""Small writes sharing a transaction (``Desk.perform_together``): the outbox claims and
settles its texts this way. On SQLite, whatever waits for the write turn meanwhile goes
in one transaction; a work that fails takes none of the others along; each caller gets
its own result. On PostgreSQL each work is its own transaction, with the same results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.clock import ManualClock
from callcenter.domain.policy import PolicyBook
from callcenter.engine.desk import TOGETHER_AT_MOST, Desk, DeskSettings
from callcenter.engine.district import District
from callcenter.engine.follower import CURSOR
from callcenter.store import models as m
from callcenter.store.db import create_engine

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _desk(engine: AsyncEngine) -> Desk:
    return Desk(
        engine,
        ManualClock(NOW),
        District(engine, zone=ZoneInfo("Asia/Shanghai")),
        PolicyBook(),
        DeskSettings(topic_prefix="eldercare"),
    )


def _writes(
    name: str, sessions: list[AsyncSession], *, fails: bool = False
) -> Callable[[AsyncSession], Awaitable[str]]:
    """A small write: a row in ``cursors`` named ``name``; its session noted."""

    async def work(session: AsyncSession) -> str:
        sessions.append(session)
        await session.execute(insert(m.Cursor).values(name=name, position=1, updated_at=NOW))
        if fails:
            raise ValueError(f"{name} cannot be written")
        return name

    return work


async def _names(engine: AsyncEngine) -> list[str]:
    async with AsyncSession(engine) as session:
        names = (await session.scalars(select(m.Cursor.name).where(m.Cursor.name != CURSOR))).all()
        return sorted(names)


async def test_writes_waiting_for_the_turn_share_one_transaction(database_url: str) -> None:
    """Test that five writes asked for while the desk's write turn is taken are
    committed together, in one transaction, and that each caller gets its own result."""
    engine = create_engine(database_url)
    desk = _desk(engine)
    sessions: list[AsyncSession] = []
    try:
        async with desk.transaction():  # another writer holds the turn meanwhile
            asked = [
                asyncio.create_task(desk.perform_together(_writes(f"w{n}", sessions)))
                for n in range(5)
            ]
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in asked)
        results = await asyncio.gather(*asked)
        assert results == [f"w{n}" for n in range(5)]
        assert await _names(engine) == [f"w{n}" for n in range(5)]
        assert len({id(s) for s in sessions}) == 1
    finally:
        await engine.dispose()


async def test_a_write_that_fails_takes_none_of_the_others_along(database_url: str) -> None:
    """Test that when one of the writes sharing a transaction fails, its caller gets
    the error and the others are committed, each exactly once."""
    engine = create_engine(database_url)
    desk = _desk(engine)
    sessions: list[AsyncSession] = []
    try:
        async with desk.transaction():
            asked = [
                asyncio.create_task(
                    desk.perform_together(_writes(name, sessions, fails=name == "bad"))
                )
                for name in ("a", "bad", "c")
            ]
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*asked, return_exceptions=True)
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], ValueError)
        assert await _names(engine) == ["a", "c"]
        # Together first (rolled back), then each on its own.
        assert len({id(s) for s in sessions}) == 4
    finally:
        await engine.dispose()


async def test_writes_asked_for_after_a_group_began_go_in_the_next(database_url: str) -> None:
    """Test that more writes than one transaction takes are all committed, in order."""
    engine = create_engine(database_url)
    desk = _desk(engine)
    sessions: list[AsyncSession] = []
    try:
        names = [f"n{n:03d}" for n in range(TOGETHER_AT_MOST * 5 // 2)]
        results = await asyncio.gather(
            *(desk.perform_together(_writes(name, sessions)) for name in names)
        )
        assert results == names
        assert await _names(engine) == names
        if engine.dialect.name == "sqlite":
            assert 3 <= len({id(s) for s in sessions}) < len(names)
    finally:
        await engine.dispose()


async def test_a_stopping_server_leaves_nobody_waiting(database_url: str) -> None:
    """Test that when the server stops while writes wait for their turn, their callers
    are told (cancelled) rather than left waiting for ever."""
    engine = create_engine(database_url)
    desk = _desk(engine)
    try:
        async with desk.transaction():
            waiting = asyncio.create_task(desk.perform_together(_writes("late", [])))
            await asyncio.sleep(0.05)
            assert desk._together_task is not None
            desk._together_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
    finally:
        await engine.dispose()
