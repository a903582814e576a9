"""Writes sharing a transaction. Small ones (``Desk.perform_together``: the outbox's
claims and settlements, due timers): whatever waits for the desk's turn meanwhile goes
in one transaction, on both databases; a work that fails takes none of the others
along; each caller gets its own result. And a transaction's history and timer rows,
which go in together at its end."""

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
from callcenter.engine.desk import TOGETHER_AT_MOST, Desk, DeskSettings, LoggedEvent
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


async def test_a_press_and_its_cancel_in_one_transaction_leave_no_timer_waiting(
    seeded_database_url: str,
) -> None:
    """Test that a call opened and cancelled in one transaction (a batch of the log
    holding both) ends with every timer its opening armed cancelled, and its history in
    the order it happened, although the transaction's history and timer rows go in
    together at its end (repository.defer_rows)."""
    engine = create_engine(seeded_database_url)
    desk = _desk(engine)
    try:
        async with AsyncSession(engine) as session, session.begin():
            device = (
                await session.execute(
                    select(m.Device.id, m.Device.household_id).where(m.Device.serial == "CB-H0001")
                )
            ).one()
            logged = [
                LoggedEvent(
                    await session.scalar(
                        insert(m.DeviceEvent)
                        .values(
                            device_id=device.id,
                            household_id=device.household_id,
                            event_id=kind,
                            kind=kind,
                            device_time=NOW,
                            received_at=NOW,
                            data={},
                        )
                        .returning(m.DeviceEvent.id)
                    ),
                    device.household_id,
                    "CB-H0001",
                    kind,
                    NOW,
                    {},
                )
                for kind in ("emergency_press", "cancel")
            ]

        async def both(session: AsyncSession) -> int | None:
            opened = await desk.apply_event(session, logged[0])
            assert await desk.apply_event(session, logged[1]) == opened
            return opened

        call_id = await desk.perform(both)
        assert call_id is not None
        async with AsyncSession(engine) as session:
            timers = (
                await session.execute(select(m.Timer.state).where(m.Timer.call_id == call_id))
            ).scalars()
            history = (
                await session.execute(
                    select(m.CallHistory.action)
                    .where(m.CallHistory.call_id == call_id)
                    .order_by(m.CallHistory.id)
                )
            ).scalars()
            state = await session.scalar(select(m.Call.state).where(m.Call.id == call_id))
            timer_states = list(timers)
            actions = list(history)
    finally:
        await engine.dispose()
    assert timer_states and m.TimerState.PENDING not in timer_states, timer_states
    assert actions == ["raised", "dispatched", "cancelled"], actions
    assert state is not None and state != "open", state
