"""Writers to one SQLite file take turns across processes (store.db.write_turn), as the
server and its ingest process do with ``ingest.own_process``."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import time
from pathlib import Path

from callcenter.store.db import create_engine, write_turn
from tests.loop_support import loop_ticks

# Another process: takes the write turn on the database, says so, holds it for the
# given seconds, says it let go.
_HOLDER = """
import asyncio, sys
from callcenter.store.db import create_engine, write_turn

async def main(url, hold_s):
    engine = create_engine(url)
    async with write_turn(engine):
        print("held", flush=True)
        await asyncio.sleep(hold_s)
    print("released", flush=True)
    await engine.dispose()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def _holder(url: str, hold_s: float) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, url, str(hold_s), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"held\n"
    return process


async def test_a_writer_waits_for_another_process_s_turn_without_stalling_the_loop(
    tmp_path: Path,
) -> None:
    """Test that a write turn taken while another process holds one begins only after
    that process lets go, and that the event loop runs meanwhile."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    holder = await _holder(url, 1.5)
    engine = create_engine(url)
    try:
        async with loop_ticks() as ticks:
            asked = time.monotonic()
            async with write_turn(engine):
                waited = time.monotonic() - asked
                assert holder.stdout is not None
                # The holder has let go (it says so right after its turn ends).
                assert await asyncio.wait_for(holder.stdout.readline(), 5) == b"released\n"
        assert waited > 0.5, f"the turn began after {waited:.2f} s, inside the other's"
        assert ticks.count >= 10, "the event loop stalled while waiting for the other process"
    finally:
        await holder.wait()
        await engine.dispose()
    assert (tmp_path / "shared.db-write-turn").exists()


async def test_a_writer_cancelled_while_waiting_leaves_the_turn_free(tmp_path: Path) -> None:
    """Test that giving up on a turn while another process holds it (the server stopping)
    does not leave this process holding it afterwards: a third process gets it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    holder = await _holder(url, 1.0)
    engine = create_engine(url)
    try:

        async def take() -> None:
            async with write_turn(engine):
                raise AssertionError("the turn was given while the other process held it")

        waiting = asyncio.create_task(take())
        await asyncio.sleep(0.3)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert waiting.cancelled()
        await holder.wait()
        await asyncio.sleep(0.3)  # the waiting thread got the lock and gave it back
        third = os.open(tmp_path / "shared.db-write-turn", os.O_RDWR)
        try:
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
        finally:
            os.close(third)
        async with write_turn(engine):
            pass  # and this process can still take its turns
    finally:
        await engine.dispose()


async def test_a_private_database_keeps_its_turns_in_process(tmp_path: Path) -> None:
    """Test that an engine opened inline (a file no other process opens, e.g. the week on
    virtual time) takes no file lock at all."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'private.db'}", inline=True)
    try:
        async with write_turn(engine):
            pass
    finally:
        await engine.dispose()
    assert not (tmp_path / "private.db-write-turn").exists()
