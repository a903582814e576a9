"""The demo district: deterministic, complete, geographically sound and always staffed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Connection

from callcenter.domain.phones import is_e164
from callcenter.store.db import WRITE_SLICE, create_engine, session_factory
from callcenter.store.migrate import SchemaNotCurrentError
from callcenter.store.models import (
    Base,
    Carer,
    Device,
    FamilyContact,
    Household,
    HouseholdPhone,
    Resident,
    ShiftPattern,
    Station,
    Transport,
    registry_version,
)
from device_sim.demo_district import (
    SKILLS,
    DemoDistrict,
    DistrictAlreadySeededError,
    SeedSummary,
    build_demo_district,
    load_device_directory,
    seed_demo_district,
)
from tests.fixtures.database import DatabaseFactory

MINUTES_PER_WEEK = 7 * 24 * 60
E164_CN_MOBILE = re.compile(r"^\+861[3-9]\d{9}$")
TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HAN = re.compile(r"^[\u4e00-\u9fff]{2,4}$")


# --- helpers ------------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


# Written by the migrations with the time they ran, not by the seed; and the registry's
# version, which counts how often its triggers fired: once a row on SQLite, once a
# statement on PostgreSQL (migration 0008). Its value means nothing, only its moving.
_NOT_SEEDED = frozenset({"cursors", "registry_version"})


def _all_rows(connection: Connection) -> dict[str, list[list[Any]]]:
    content: dict[str, list[list[Any]]] = {}
    for table in Base.metadata.sorted_tables:
        if table.name in _NOT_SEEDED:
            continue
        query = select(table).order_by(*table.primary_key.columns)
        content[table.name] = [[_normal(v) for v in row] for row in connection.execute(query)]
    return content


async def content_digest(url: str) -> str:
    """SHA-256 over every row of every seeded table, in primary key order."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            content = await connection.run_sync(_all_rows)
    finally:
        await engine.dispose()
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


async def registry_version_at(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            version = await registry_version(connection)
    finally:
        await engine.dispose()
    assert version is not None
    return version


async def read_all(url: str, model: type[Base]) -> list[Any]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.scalars(select(model))).all())
    finally:
        await engine.dispose()


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance, written out again here so the test does not trust demo.py."""
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(a))


def uncovered_minutes(
    patterns: dict[str, tuple[time, int, list[int]]], carer_patterns: list[str]
) -> list[int]:
    """Minutes of the week (Monday 00:00 = 0) at which none of these carers is on shift."""
    covered = [False] * MINUTES_PER_WEEK
    for code in carer_patterns:
        starts_at, duration, weekdays = patterns[code]
        for weekday in weekdays:
            start = (weekday - 1) * 1440 + starts_at.hour * 60 + starts_at.minute
            for minute in range(start, start + duration):
                covered[minute % MINUTES_PER_WEEK] = True
    return [minute for minute, on in enumerate(covered) if not on]


def check_geography(district: DemoDistrict) -> None:
    stations = district.stations
    for station in stations:
        nearest_other = min(
            (s for s in stations if s.code != station.code),
            key=lambda s: haversine_m(station.lat, station.lon, s.lat, s.lon),
        )
        assert station.backup == nearest_other.code
    for household in district.households:
        ranked = sorted(
            stations, key=lambda s: haversine_m(household.lat, household.lon, s.lat, s.lon)
        )
        assert (household.home_station, household.backup_station) == (
            ranked[0].code,
            ranked[1].code,
        ), household.code


# --- the district in memory ---------------------------------------------------------------


def test_building_is_deterministic() -> None:
    """Test that the same seed builds the same district and another seed a different one."""
    build_demo_district.cache_clear()
    first = build_demo_district(2026)
    build_demo_district.cache_clear()
    again = build_demo_district(2026)

    assert first == again
    assert first is not again
    assert build_demo_district(2027) != first


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_a_sound_district(seed: int) -> None:
    """Test that for any seed homes and backups are nearest stations and every station is
    covered around the clock."""
    district = build_demo_district(seed)

    check_geography(district)
    patterns = {
        p.code: (p.starts_at, p.duration_minutes, list(p.weekdays)) for p in district.shift_patterns
    }
    for station in district.stations:
        team = [c.shift_pattern for c in district.carers if c.station == station.code]
        assert uncovered_minutes(patterns, team) == [], station.code
    assert len({c.phone for c in district.carers}) == 60


def test_household_numbers_are_international_unique_and_in_order() -> None:
    """Test that every household is reached first through its base unit's SIM, then a
    landline and residents' own mobiles (labelled with their names) where it has them,
    most have more than the unit, every number in the district is E.164 and nobody
    else's, and the households' numbers do not depend on the team."""
    district = build_demo_district()
    numbers = [n for h in district.households for n in h.phones]
    everyone = [
        *(n.number for n in numbers),
        *(s.phone for s in district.stations),
        *(c.phone for c in district.carers),
        *(c.phone for h in district.households for c in h.contacts),
    ]

    for household in district.households:
        kinds = [n.kind for n in household.phones]
        assert [n.position for n in household.phones] == list(range(1, len(kinds) + 1))
        assert kinds == sorted(kinds, key=["unit", "landline", "mobile"].index), household.code
        assert kinds[0] == "unit" and kinds.count("unit") == kinds[:1].count("unit")
        assert kinds.count("landline") <= 1
        residents = {r.name for r in household.residents}
        assert all(n.label in residents for n in household.phones if n.kind == "mobile")
        assert all(n.label == "" for n in household.phones if n.kind != "mobile")
    assert all(is_e164(n) and n.startswith("+86") for n in everyone)
    assert len(set(everyone)) == len(everyone)
    assert sum(len(h.phones) > 1 for h in district.households) > 0.75 * len(district.households)
    assert {n.kind for n in numbers} == {"unit", "landline", "mobile"}
    other_team = build_demo_district(households=900, carers=90, staffed=("S01", "S02", "S03"))
    assert [h.phones for h in other_team.households] == [h.phones for h in district.households]
    assert [h.phones for h in build_demo_district(7).households] != [
        h.phones for h in district.households
    ]


def test_device_directory_names_are_topic_levels() -> None:
    """Test that every household code and serial is usable as an MQTT topic level."""
    directory = build_demo_district().device_directory()

    assert len(directory) == 1800
    assert directory[:2] == [
        ("H0001", "BU-H0001", "base_unit"),
        ("H0001", "CB-H0001", "call_button"),
    ]
    assert directory[-1] == ("H0900", "CB-H0900", "call_button")
    for household, serial, _ in directory:
        assert TOPIC_LEVEL.match(household)
        assert TOPIC_LEVEL.match(serial)


def test_summary_prints_the_counts() -> None:
    """Test that a seed summary says how many of each thing were written."""
    summary = SeedSummary(2026, 9, 4, 60, 900, 1250, 1800, 1800, 2200, seconds=0.5)

    text = str(summary)
    for part in (
        "9 stations",
        "60 carers",
        "900 households",
        "1800 devices",
        "2200 household numbers",
        "seed 2026",
    ):
        assert part in text


# --- the district in a database ----------------------------------------------------------


async def test_same_seed_gives_identical_rows(database_factory: DatabaseFactory) -> None:
    """Test that seeding two fresh databases with one seed writes identical content."""
    first, second, other = [await database_factory() for _ in range(3)]
    await seed_demo_district(first, seed=2026)
    await seed_demo_district(second, seed=2026)
    await seed_demo_district(other, seed=7)

    assert await content_digest(first) == await content_digest(second)
    assert await content_digest(first) != await content_digest(other)


async def test_seeded_counts(database_url: str) -> None:
    """Test that seeding writes 9 stations, 4 shifts, 60 carers, 900 households, 1800 devices."""
    summary = await seed_demo_district(database_url)

    assert (summary.stations, summary.shift_patterns, summary.carers) == (9, 4, 60)
    assert (summary.households, summary.devices) == (900, 1800)
    assert len(await read_all(database_url, Station)) == 9
    assert len(await read_all(database_url, ShiftPattern)) == 4
    assert len(await read_all(database_url, Carer)) == 60
    assert len(await read_all(database_url, Household)) == 900
    assert len(await read_all(database_url, Device)) == 1800
    assert len(await read_all(database_url, Resident)) == summary.residents
    assert len(await read_all(database_url, FamilyContact)) == summary.family_contacts
    assert len(await read_all(database_url, HouseholdPhone)) == summary.household_phones > 900
    assert summary.seconds < 5


async def test_every_household_has_one_base_unit_and_one_call_button(
    seeded_database_url: str,
) -> None:
    """Test that each household has exactly a base unit BU-Hnnnn and a call button CB-Hnnnn."""
    households = {h.id: h.code for h in await read_all(seeded_database_url, Household)}
    devices: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for device in await read_all(seeded_database_url, Device):
        devices[households[device.household_id]].append((device.kind, device.serial))

    assert sorted(households.values()) == [f"H{n:04d}" for n in range(1, 901)]
    for code in households.values():
        assert sorted(devices[code]) == [("base_unit", f"BU-{code}"), ("call_button", f"CB-{code}")]


async def test_residents_and_contacts_are_complete(seeded_database_url: str) -> None:
    """Test that households have 1-2 residents born 1930-1958 and 1-3 contacts in order."""
    residents = Counter(r.household_id for r in await read_all(seeded_database_url, Resident))
    for resident in await read_all(seeded_database_url, Resident):
        assert 1930 <= resident.birth_year <= 1958
        assert HAN.match(resident.name)
        assert resident.mobility in {"independent", "walking_aid", "wheelchair", "bedbound"}
    positions: dict[int, list[int]] = defaultdict(list)
    for contact in await read_all(seeded_database_url, FamilyContact):
        positions[contact.household_id].append(contact.position)
        assert E164_CN_MOBILE.match(contact.phone)
        assert contact.relation
    households = await read_all(seeded_database_url, Household)

    for household in households:
        assert residents[household.id] in (1, 2)
        assert sorted(positions[household.id]) == list(range(1, len(positions[household.id]) + 1))
        assert 1 <= len(positions[household.id]) <= 3
        assert household.address.startswith("西宁市城")
        assert household.access_notes


async def test_homes_and_backups_are_the_nearest_stations(seeded_database_url: str) -> None:
    """Test that each household's home station is its nearest, its backup the second nearest,
    and each station's backup its nearest neighbour."""
    stations = await read_all(seeded_database_url, Station)
    households = await read_all(seeded_database_url, Household)

    for station in stations:
        others = [s for s in stations if s.id != station.id]
        nearest = min(others, key=lambda s: haversine_m(station.lat, station.lon, s.lat, s.lon))
        assert station.backup_station_id == nearest.id
    for household in households:
        ranked = sorted(
            stations, key=lambda s: haversine_m(household.lat, household.lon, s.lat, s.lon)
        )
        assert household.home_station_id == ranked[0].id, household.code
        assert household.backup_station_id == ranked[1].id, household.code
        # Within the district's few kilometres.
        assert haversine_m(household.lat, household.lon, ranked[0].lat, ranked[0].lon) < 2500
    assert all(abs(s.lat - 36.62) < 0.05 and abs(s.lon - 101.78) < 0.05 for s in stations)


async def test_every_station_is_covered_every_minute_of_the_week(
    seeded_database_url: str,
) -> None:
    """Test that at every minute of a week each station has at least one carer on shift."""
    patterns = {
        p.code: (p.starts_at, p.duration_minutes, p.weekdays)
        for p in await read_all(seeded_database_url, ShiftPattern)
    }
    teams: dict[int, list[str]] = defaultdict(list)
    for carer in await read_all(seeded_database_url, Carer):
        if carer.active:
            teams[carer.station_id].append(carer.shift_pattern_code)
    stations = await read_all(seeded_database_url, Station)

    assert len(set(patterns[code][0] for code in patterns)) == 4
    for station in stations:
        assert uncovered_minutes(patterns, teams[station.id]) == [], station.code


async def test_carers_are_fully_described(seeded_database_url: str) -> None:
    """Test that carers have unique E.164 phones, zh, one lead per station and known skills."""
    carers = await read_all(seeded_database_url, Carer)

    assert len({c.phone for c in carers}) == 60
    assert all(E164_CN_MOBILE.match(c.phone) for c in carers)
    assert {c.language for c in carers} == {"zh"}
    assert all(HAN.match(c.name) for c in carers)
    leads = Counter(c.station_id for c in carers if c.role == "station_lead")
    assert sorted(leads.values()) == [1] * 9
    assert {c.role for c in carers} == {"station_lead", "carer"}
    assert all(c.skills and set(c.skills) <= set(SKILLS) for c in carers)
    assert {c.transport for c in carers} <= {t.value for t in Transport}
    assert sorted(Counter(c.station_id for c in carers).values()) == [6, 6, 6, 7, 7, 7, 7, 7, 7]


async def test_device_directory_matches_the_district(seeded_database_url: str) -> None:
    """Test that the devices read back from the database are those built in memory."""
    directory = await load_device_directory(seeded_database_url)

    assert directory == build_demo_district().device_directory()


async def test_seeding_twice_is_refused(seeded_database_url: str) -> None:
    """Test that seeding a database that already has households raises a clear error."""
    before = await content_digest(seeded_database_url)

    with pytest.raises(DistrictAlreadySeededError, match="already has 900 household") as caught:
        await seed_demo_district(seeded_database_url)

    assert caught.value.households == 900
    assert await content_digest(seeded_database_url) == before


async def test_seeding_without_a_schema_is_refused(empty_database_url: str) -> None:
    """Test that seeding a database without the schema says to run `callcenter db upgrade`."""
    with pytest.raises(SchemaNotCurrentError, match="run `callcenter db upgrade`"):
        await seed_demo_district(empty_database_url)
    with pytest.raises(SchemaNotCurrentError):
        await load_device_directory(empty_database_url)


async def test_rows_added_after_seeding_get_fresh_ids(seeded_database_url: str) -> None:
    """Test that a household enrolled after seeding gets a new id (sequences moved on)."""
    engine = create_engine(seeded_database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            household = Household(
                code="H0901",
                address="西宁市城中区南山路1号",
                lat=36.61,
                lon=101.78,
                home_station_id=1,
                backup_station_id=2,
            )
            session.add(household)
            await session.flush()
            session.add(Device(serial="CB-H0901", kind="call_button", household_id=household.id))
    finally:
        await engine.dispose()

    assert household.id == 901
    directory = await load_device_directory(seeded_database_url)
    assert directory[-1] == ("H0901", "CB-H0901", "call_button")


async def test_same_rows_on_sqlite_and_postgresql(
    sqlite_database_factory: DatabaseFactory, postgres_database_factory: DatabaseFactory
) -> None:
    """Test that one seed writes the very same rows into SQLite and PostgreSQL."""
    sqlite_url = await sqlite_database_factory()
    postgres_url = await postgres_database_factory()
    await seed_demo_district(sqlite_url)
    await seed_demo_district(postgres_url)

    assert await content_digest(sqlite_url) == await content_digest(postgres_url)


async def test_seeding_writes_many_rows_a_statement_on_postgresql(
    postgres_database_factory: DatabaseFactory,
) -> None:
    """Test that the seed writes a slice of rows a statement, not a row a statement, on
    PostgreSQL. The registry's version trigger fires once a statement there, so its
    count of bumps is the count of statements; a row each would bump it once a row and
    make seeding slow down as it goes (the storm's 50,000 households never finished)."""
    url = await postgres_database_factory()
    before = await registry_version_at(url)
    summary = await seed_demo_district(url)

    rows = (
        summary.stations,
        summary.shift_patterns,
        summary.carers,
        summary.households,
        summary.residents,
        summary.family_contacts,
        summary.devices,
        summary.household_phones,
    )
    slices = sum(math.ceil(count / WRITE_SLICE) for count in rows)
    # Then each station's backup, set once all stations exist.
    statements = slices + summary.stations
    bumps = await registry_version_at(url) - before
    assert 0 < bumps <= statements < sum(rows)


# --- the command line ---------------------------------------------------------------------


async def run_cli(config: Path, *args: str, database_url: str | None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    if database_url is not None:
        env["CALLCENTER_DATABASE__URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter.cli",
        "--config",
        str(config),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_cli_upgrades_and_seeds(
    tmp_path: Path, database_backend: str, database_factory: DatabaseFactory
) -> None:
    """Test that `callcenter db upgrade` then `seed --demo` build the district, and a
    second seed is refused."""
    data_dir = tmp_path / "var"
    config = tmp_path / "callcenter.toml"
    config.write_text(f"[data]\ndir = {json.dumps(str(data_dir))}\n", encoding="utf-8")
    url = None if database_backend == "sqlite" else await database_factory("empty")

    code, out, err = await run_cli(config, "db", "upgrade", database_url=url)
    assert code == 0, err
    assert "up to date" in out

    code, out, err = await run_cli(config, "seed", "--demo", database_url=url)
    assert code == 0, err
    assert "9 stations" in out
    assert "60 carers" in out
    assert "900 households" in out
    assert "1800 devices" in out

    code, out, err = await run_cli(config, "seed", "--demo", database_url=url)
    assert code != 0
    assert "already has 900 household" in err

    checked = url or f"sqlite+aiosqlite:///{data_dir / 'callcenter.db'}"
    assert len(await load_device_directory(checked)) == 1800
    if url is None:
        assert (data_dir / "callcenter.db").exists()
