"""bench/storm.py stopped by SIGTERM: it ends within seconds, whatever it was doing, and
leaves nothing behind: no process it started, no database, no temporary directory."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.database import postgres_dsn

STORM = Path(__file__).resolve().parent.parent / "bench" / "storm.py"
# Generous: a stop takes a few seconds; this only keeps a hung bench from hanging the test.
STOPS_WITHIN_S = 60.0
SAYS_WITHIN_S = 90.0


def _tagged(tag: str) -> list[str]:
    """The command lines of the running processes whose environment carries ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if f"STORM_BENCH_TAG={tag}".encode() in environ.split(b"\0"):
            found.append(command.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _wait_for(log: Path, words: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SAYS_WITHIN_S
    while words not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the bench never said {words!r}:\n{log.read_text()}")
        time.sleep(0.1)


async def _database_exists(dsn: str, name: str) -> bool:
    engine = create_async_engine(dsn)
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
            )
    finally:
        await engine.dispose()
    return bool(found)


SEEDING = "schema migrated; seeding the district"
# The server (with its ingest process), the broker and the bare subscriber run by then.
DEVICES = "starting device-sim"


@pytest.mark.parametrize(
    ("database", "stopped_at"),
    [
        pytest.param("sqlite", SEEDING, id="sqlite-seeding"),
        pytest.param("postgresql", SEEDING, id="postgresql-seeding", marks=pytest.mark.postgres),
        # Which processes run does not depend on the database: SQLite alone, for time.
        pytest.param("sqlite", DEVICES, id="sqlite-devices"),
    ],
)
def test_sigterm_stops_the_run_and_leaves_nothing_behind(
    tmp_path: Path, database: str, stopped_at: str
) -> None:
    """Test that a SIGTERM while seeding, or once the server and broker run, ends the
    bench with 143 and leaves no process, database or temporary directory of its run."""
    dsn = postgres_dsn()
    if database == "postgresql" and dsn is None:
        pytest.skip("set CALLCENTER_TEST_POSTGRES_DSN to run PostgreSQL tests")
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    log = tmp_path / "storm.log"
    command = [sys.executable, str(STORM), "--quick", "--households", "5000"]
    if database == "postgresql":
        assert dsn is not None
        command += ["--database-url", dsn]
    environment = {**os.environ, "STORM_BENCH_TAG": tag, "TMPDIR": str(temporary)}
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=environment)
    try:
        _wait_for(log, stopped_at, process)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=STOPS_WITHIN_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    said = log.read_text(errors="replace")

    assert process.returncode == 128 + signal.SIGTERM, said
    assert "stopped by SIGTERM" in said
    assert stdout == b""  # no figures from a run that did not finish
    assert _tagged(tag) == []
    assert list(temporary.iterdir()) == []
    if database == "postgresql":
        created = re.search(r"created the database (\w+)", said)
        assert created is not None, said
        assert dsn is not None
        assert not asyncio.run(_database_exists(dsn, created.group(1)))
