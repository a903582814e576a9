"""The SQLite engine whose calls run on the event loop's own thread (``inline``), as the
simulator's week uses for its private database: it must behave as the ordinary one."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from callcenter.store import models as m
from callcenter.store.db import create_engine, write_locked
from callcenter.store.migrate import upgrade_async


async def test_the_inline_engine_commits_rolls_back_and_refuses_as_the_threaded_one(
    tmp_path: Path,
) -> None:
    """Test that on the inline engine a commit is seen by the ordinary engine, a rolled
    back write is not, a unique index refuses a double with IntegrityError, a write
    transaction takes SQLite's lock at once, and no call leaves the loop's thread."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}"
    await upgrade_async(url)
    inline = create_engine(url, inline=True)
    threaded = create_engine(url)
    threads: set[int] = set()
    event.listen(
        inline.sync_engine,
        "before_cursor_execute",
        lambda *_: threads.add(threading.get_ident()),
    )
    station = {
        "code": "S01",
        "name": "一站",
        "address": "路 1 号",
        "lat": 31.2,
        "lon": 121.4,
        "phone": "+8613800000000",
    }
    try:
        async with write_locked(inline).begin() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            # Only read so far, yet the lock is held: nobody else may start writing.
            probe = sqlite3.connect(tmp_path / "inline.db", timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            probe.close()
            await connection.execute(insert(m.Station).values(station))
        with pytest.raises(RuntimeError):
            async with inline.begin() as connection:
                await connection.execute(insert(m.Station).values(station | {"code": "S02"}))
                raise RuntimeError("changed my mind")
        with pytest.raises(IntegrityError):
            async with inline.begin() as connection:
                await connection.execute(insert(m.Station).values(station))
        async with threaded.connect() as connection:
            codes = (await connection.scalars(select(m.Station.code))).all()
        async with inline.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(m.Station))
    finally:
        await inline.dispose()
        await threaded.dispose()
    assert (mode, codes, count) == ("wal", ["S01"], 1)
    assert threads == {threading.get_ident()}
