"""Migrations: the schema they build is the schema of models.py, on every database."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


async def _registry_version(connection: AsyncConnection) -> int:
    return int(await connection.scalar(text("SELECT version FROM registry_version")) or -1)


async def _triggers_on_phones(connection: AsyncConnection) -> set[str]:
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    return {name for name in (await connection.scalars(text(query))).all() if "phones" in name}


async def test_0013_adds_household_phones_beside_the_households_already_there(
    empty_database_url: str,
) -> None:
    """Test that 0013 on a database at 0012 that holds a household keeps it and adds
    household_phones as models.py has it; the table refuses a position below 1, a kind it
    does not know and two numbers at one position; a change to it moves the registry
    version; and going back to 0012 takes the table and its triggers away."""
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0012")
    engine = create_engine(empty_database_url)
    refused = []
    try:
        async with engine.begin() as connection:
            await _a_household(connection)
        await upgrade_async(empty_database_url)
        assert await schema_differences(empty_database_url) == []
        async with engine.begin() as connection:
            before = await _registry_version(connection)
            await connection.execute(
                text(
                    "INSERT INTO household_phones (household_id, position, kind, number)"
                    " VALUES (1, 1, 'unit', '+8614712345678')"
                )
            )
            moved = await _registry_version(connection) > before
            label = await connection.scalar(text("SELECT label FROM household_phones"))
            triggers_at_head = await _triggers_on_phones(connection)
        for values in ("(1, 0, 'mobile', '+8618212345678')", "(1, 2, 'fax', '+869716000001')"):
            refused.append(await _refused(engine, values))
        refused.append(await _refused(engine, "(1, 1, 'landline', '+869716000001')"))
        async with engine.connect() as connection:
            households = await connection.scalar(text("SELECT count(*) FROM households"))
        await asyncio.to_thread(command.downgrade, config, "0012")
        async with engine.connect() as connection:
            triggers_after = await _triggers_on_phones(connection)
    finally:
        await engine.dispose()
    assert (households, moved, label) == (1, True, "")
    assert refused == [True, True, True]
    assert triggers_at_head == {
        f"registry_changed_household_phones_{op}" for op in ("insert", "update", "delete")
    }
    assert "household_phones" not in await tables_of(empty_database_url)
    assert triggers_after == set()


async def _a_household(connection: AsyncConnection) -> None:
    """Station S01 and its household H0001 (id 1), written by hand at an older revision."""
    await connection.execute(
        text(
            "INSERT INTO stations (id, code, name, address, lat, lon, phone)"
            " VALUES (1, 'S01', '站', '西宁市', 36.6, 101.8, '+869718000001')"
        )
    )
    await connection.execute(
        text(
            "INSERT INTO households (id, code, address, lat, lon, home_station_id,"
            " backup_station_id, access_notes) VALUES (1, 'H0001', '西宁市', 36.6,"
            " 101.8, 1, 1, '')"
        )
    )


async def _refused(engine: AsyncEngine, values: str) -> bool:
    """Whether the database refuses the household_phones row ``values``."""
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO household_phones (household_id, position, kind, number)"
                    f" VALUES {values}"
                )
            )
    except IntegrityError:
        return True
    return False


async def test_0015_lets_a_call_belong_to_no_household_and_keeps_the_calls_there(
    empty_database_url: str,
) -> None:
    """Test that 0015 on a database at 0014 holding a call with its history keeps both,
    then takes a call of no household (a number nobody registered rang), still refuses
    two calls offered to one operator, and that the schema is models.py's."""
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0014")
    engine = create_engine(empty_database_url)
    call = (
        "INSERT INTO calls (id, household_id, call_type, priority, state, presses, opened_at,"
        " policy, fired_steps, alerts, version, updated_at, offer_to) VALUES ({id},"
        " {household}, 'voice', 1, 'raised', 1, '2026-12-07 03:00:00+00:00', '{{}}', '[]',"
        " '[]', 0, '2026-12-07 03:00:00+00:00', {offer_to})"
    )
    try:
        async with engine.begin() as connection:
            await _a_household(connection)
            await connection.execute(text(call.format(id=1, household=1, offer_to="'li.na'")))
            await connection.execute(
                text(
                    "INSERT INTO call_history (call_id, at, actor, action, to_state, detail)"
                    " VALUES (1, '2026-12-07 03:00:00+00:00', 'system', 'raised', 'raised',"
                    " '{}')"
                )
            )
        await upgrade_async(empty_database_url)
        assert await schema_differences(empty_database_url) == []
        async with engine.begin() as connection:
            await connection.execute(text(call.format(id=2, household="NULL", offer_to="NULL")))
            await connection.execute(text(call.format(id=3, household="NULL", offer_to="NULL")))
        twice_offered = False
        try:
            async with engine.begin() as connection:
                await connection.execute(text(call.format(id=4, household=1, offer_to="'li.na'")))
        except IntegrityError:
            twice_offered = True
        async with engine.connect() as connection:
            kept = (
                await connection.execute(text("SELECT id, household_id FROM calls ORDER BY id"))
            ).all()
            history = await connection.scalar(text("SELECT count(*) FROM call_history"))
    finally:
        await engine.dispose()
    assert [tuple(row) for row in kept] == [(1, 1), (2, None), (3, None)]
    assert history == 1
    assert twice_offered, "uq_calls_offer_to still holds one offer per operator"
