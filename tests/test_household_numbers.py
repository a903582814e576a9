"""The numbers that reach a household, as the desk reads them from the register
(engine/district.py): in order, the same in the registry as read fresh, and never one
that could not be dialled."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.phones import HouseholdNumber, PhoneKind
from callcenter.engine.district import District
from callcenter.engine.numbers import household_numbers
from callcenter.store import models as m
from callcenter.store.db import create_engine
from device_sim.demo_district import build_demo_district


async def test_a_households_numbers_come_in_order_and_only_dialable(
    seeded_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that the registry's household and a fresh read both give the numbers that
    reach it in the register's order (the demo district's), with one written in by hand
    at the end; that a number written by hand that is not E.164 is left out of both,
    with a warning naming it; and that a household nobody has gets none."""
    engine = create_engine(seeded_database_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            home = await session.scalar(select(m.Household.id).where(m.Household.code == "H0014"))
            await session.execute(
                insert(m.HouseholdPhone),
                [
                    {"household_id": home, "position": 7, "kind": "landline",
                     "number": "0971 6123456"},
                    {"household_id": home, "position": 8, "kind": "mobile",
                     "number": "+8618400000001", "label": "邻居"},
                ],
            )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="callcenter.district"):
            registry = await District(engine, zone=ZoneInfo("Asia/Shanghai")).registry()
            async with AsyncSession(engine) as session:
                fresh = await household_numbers(session, "H0014")
                nobody = await household_numbers(session, "H9999")
    finally:
        await engine.dispose()
    [unit] = build_demo_district().households[13].phones
    expected = [unit, HouseholdNumber(8, PhoneKind.MOBILE, "+8618400000001", "邻居")]

    assert list(registry.households_by_code["H0014"].phones) == expected
    assert fresh == expected
    assert unit.kind is PhoneKind.UNIT
    assert nobody == []
    assert "'0971 6123456'" in caplog.text
    assert len(registry.households_by_code["H0001"].phones) == 4
