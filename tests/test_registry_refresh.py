"""The district registry is re-read only when the database says it changed: triggers
bump ``registry_version`` on every change to what the registry holds, whoever makes it,
and not on a device's heartbeat or an operator's sign-in."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.engine.district import District
from callcenter.store import models as m
from callcenter.store.db import create_engine


async def _version(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(m.RegistryVersion.version)) or -1)


async def _changed_by(engine: AsyncEngine, statement: str) -> bool:
    """Whether running ``statement`` (plain SQL, as an administrator might) moved the
    version."""
    before = await _version(engine)
    async with engine.begin() as connection:
        await connection.execute(text(statement))
    return await _version(engine) != before


async def test_the_version_moves_on_district_changes_and_not_on_heartbeats(
    seeded_database_url: str,
) -> None:
    """Test that a new household, a carer's new phone, a device moved to another
    household, a household's new number and an operator switched off each move the
    version, while a heartbeat's liveness columns and an operator's new password do not."""
    engine = create_engine(seeded_database_url)
    try:
        moves = {
            "household added": await _changed_by(
                engine,
                "INSERT INTO households (code, address, lat, lon, home_station_id,"
                " backup_station_id, access_notes) SELECT 'H9999', 'x', lat, lon,"
                " home_station_id, backup_station_id, '' FROM households WHERE code = 'H0001'",
            ),
            "carer's phone": await _changed_by(
                engine, "UPDATE carers SET phone = '+8613000000000' WHERE code = 'C001'"
            ),
            "device moved": await _changed_by(
                engine,
                "UPDATE devices SET household_id = (SELECT id FROM households"
                " WHERE code = 'H9999') WHERE serial = 'CB-H0002'",
            ),
            "household's number": await _changed_by(
                engine,
                "INSERT INTO household_phones (household_id, position, kind, number, label)"
                " SELECT id, 9, 'mobile', '+8618200000000', '' FROM households"
                " WHERE code = 'H9999'",
            ),
            "resident removed": await _changed_by(
                engine, "DELETE FROM residents WHERE id = (SELECT min(id) FROM residents)"
            ),
        }
        async with engine.begin() as connection:
            await connection.execute(
                insert(m.Operator).values(
                    username="wu.fang",
                    name="吴芳",
                    role=m.OperatorRole.SUPERVISOR,
                    phone="+8613900000009",
                    language="zh",
                    token_sha256="0" * 64,
                    active=True,
                    created_at=datetime(2026, 12, 1, tzinfo=UTC),
                )
            )
        moves["operator switched off"] = await _changed_by(
            engine, "UPDATE operators SET active = false WHERE username = 'wu.fang'"
        )
        stays = {
            "heartbeat": await _changed_by(
                engine,
                "UPDATE devices SET online = true, battery_pct = 80,"
                " last_seen_at = CURRENT_TIMESTAMP WHERE serial = 'CB-H0003'",
            ),
            "new password": await _changed_by(
                engine, "UPDATE operators SET password_hash = 'x' WHERE username = 'wu.fang'"
            ),
        }
    finally:
        await engine.dispose()
    assert moves == dict.fromkeys(moves, True)
    assert stays == dict.fromkeys(stays, False)


async def test_the_registry_is_read_again_only_after_a_change(seeded_database_url: str) -> None:
    """Test that the periodic look re-reads nothing while the district is unchanged,
    and re-reads it after a household is added behind the server's back, which the
    desk then knows."""
    engine = create_engine(seeded_database_url)
    try:
        district = District(engine, zone=ZoneInfo("Asia/Shanghai"))
        first = await district.registry()
        unchanged = (await district.refresh(), await district.refresh())
        async with engine.begin() as connection:
            await connection.execute(
                update(m.Household).where(m.Household.code == "H0001").values(access_notes="梯")
            )
        changed = await district.refresh()
        again = await district.refresh()
        notes = (await district.registry()).households_by_code["H0001"].access_notes
    finally:
        await engine.dispose()
    assert first.version is not None
    assert (unchanged, changed, again, district.reloads) == ((False, False), True, False, 1)
    assert notes == "梯"


async def test_every_watched_table_has_its_triggers_at_head(seeded_database_url: str) -> None:
    """Test that the schema at head has the insert, update and delete trigger of each
    table the registry is read from (a later migration that rebuilds one of them, as
    SQLite's batch mode does, must make them again)."""
    tables = (
        "stations",
        "shift_patterns",
        "carers",
        "residents",
        "family_contacts",
        "households",
        "household_phones",
        "devices",
        "operators",
    )
    wanted = {
        f"registry_changed_{table}_{operation}"
        for table in tables
        for operation in ("insert", "update", "delete")
    }
    engine = create_engine(seeded_database_url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            else:
                query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            found = set((await connection.scalars(text(query))).all())
    finally:
        await engine.dispose()
    assert wanted <= found, sorted(wanted - found)
