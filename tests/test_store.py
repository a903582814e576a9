"""Migrations: the schema they build is the schema of models.py, on every database."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection

from callcenter.store.db import SLICE, create_engine, in_slices
from callcenter.store.migrate import (
    SchemaNotCurrentError,
    alembic_config,
    current_revision,
    head_revision,
    require_current_schema,
    upgrade,
    upgrade_async,
)
from callcenter.store.models import Base, Household


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def schema_differences(url: str) -> list[object]:
    """What autogenerate would change to make the database match models.py."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_differences)
    finally:
        await engine.dispose()


async def revision_of(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await current_revision(connection)
    finally:
        await engine.dispose()


def _tables(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


async def tables_of(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_tables)
    finally:
        await engine.dispose()


async def test_upgrade_builds_the_schema_of_the_models(empty_database_url: str) -> None:
    """Test that after upgrade the database matches models.py exactly (no autogenerate diff)."""
    await upgrade_async(empty_database_url)

    assert await schema_differences(empty_database_url) == []
    assert await revision_of(empty_database_url) == head_revision()
    assert await tables_of(empty_database_url) == sorted([*Base.metadata.tables, "alembic_version"])


async def test_upgrade_twice_is_harmless(empty_database_url: str) -> None:
    """Test that running upgrade on an up-to-date database changes nothing."""
    await upgrade_async(empty_database_url)
    await upgrade_async(empty_database_url)

    assert await schema_differences(empty_database_url) == []
    assert await revision_of(empty_database_url) == head_revision()


async def test_upgrade_keeps_existing_rows(seeded_database_url: str) -> None:
    """Test that upgrading a database already at head leaves its data alone."""
    await upgrade_async(seeded_database_url)

    engine = create_engine(seeded_database_url)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(Household))
    finally:
        await engine.dispose()
    assert count == 900


async def test_sync_upgrade_works_inside_a_running_loop(empty_database_url: str) -> None:
    """Test that the synchronous upgrade can be called from code already inside a loop."""
    upgrade(empty_database_url)

    assert await revision_of(empty_database_url) == head_revision()


async def test_downgrade_to_base_and_back(empty_database_url: str) -> None:
    """Test that the initial revision can be undone completely and applied again."""
    await upgrade_async(empty_database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "base")

    assert await tables_of(empty_database_url) == ["alembic_version"]
    assert await revision_of(empty_database_url) is None

    await upgrade_async(empty_database_url)
    assert await schema_differences(empty_database_url) == []


async def test_schema_check_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    """Test that require_current_schema tells the user to run `callcenter db upgrade`."""
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(SchemaNotCurrentError, match="callcenter db upgrade") as caught:
            await require_current_schema(engine)
        assert caught.value.current is None
        assert caught.value.required == head_revision()

        await upgrade_async(empty_database_url)
        await require_current_schema(engine)
    finally:
        await engine.dispose()


async def test_migrations_agree_with_models_from_the_command_line() -> None:
    """Test that `python -m callcenter.store.migrate check` finds nothing to generate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter.store.migrate",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()

    assert process.returncode == 0, stderr.decode()
    assert "agree" in stdout.decode()


async def test_rows_read_in_slices_let_the_event_loop_run_between_them() -> None:
    """Test that turning a large result into objects (the district's households, ingest's
    devices) gives the event loop a turn every SLICE rows, and yields every row in order."""
    turns = 0
    stop = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    started = turns
    rows = [row async for row in in_slices(range(SLICE * 3 + 1))]
    during = turns - started
    stop.set()
    await ticking
    assert rows == list(range(SLICE * 3 + 1))
    assert during >= 3
