"""The numbers that reach a household, read from the register in the order to try them:
the base unit's own SIM, a landline, residents' mobiles (store's ``household_phones``).

The desk's registry keeps them on each household (``district.HouseholdInfo.phones``);
``household_numbers`` reads one household's afresh, for a call about to be placed. Both
leave out a number that breaks the one rule for numbers (domain/phones.py), so nothing
that could not be dialled is ever rung.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.phones import HouseholdNumber, PhoneKind, is_e164
from callcenter.store import models as m
from callcenter.store.db import in_slices

log = logging.getLogger("callcenter.district")

# A household's numbers, in the order to try them (position 1 first).
_NUMBERS = select(
    m.HouseholdPhone.household_id,
    m.HouseholdPhone.position,
    m.HouseholdPhone.kind,
    m.HouseholdPhone.number,
    m.HouseholdPhone.label,
).order_by(m.HouseholdPhone.household_id, m.HouseholdPhone.position)


class _NumberRow(Protocol):
    household_id: int
    position: int
    kind: str
    number: str
    label: str


def _number(row: _NumberRow) -> HouseholdNumber | None:
    """The register's row as a number to ring; None, and a warning, when it holds one that
    cannot be dialled (written by hand or plain SQL): it is left out, never rung."""
    if not is_e164(row.number):
        log.warning(
            "household %s: the number at position %s, %r, is not in E.164 form and is "
            "left out of the numbers that reach it; correct it in household_phones",
            row.household_id,
            row.position,
            row.number,
        )
        return None
    return HouseholdNumber(row.position, PhoneKind(row.kind), row.number, row.label)


async def household_numbers(session: AsyncSession, household_code: str) -> list[HouseholdNumber]:
    """The numbers that reach household ``household_code``, in the order to try them
    (the base unit's SIM, a landline, residents' mobiles, as the register orders them);
    empty for a household with none or a code nobody has. Read fresh, in ``session``;
    the registry's ``HouseholdInfo.phones`` (engine/district.py) holds the same list as
    last read."""
    rows = await session.execute(
        _NUMBERS.join(m.Household, m.Household.id == m.HouseholdPhone.household_id).where(
            m.Household.code == household_code
        )
    )
    return [number for row in rows.all() if (number := _number(row)) is not None]


async def every_household_number(session: AsyncSession) -> dict[int, list[HouseholdNumber]]:
    """Every household's numbers, by household id, each list in the order to try them."""
    numbers: dict[int, list[HouseholdNumber]] = {}
    async for row in in_slices(await session.execute(_NUMBERS)):
        number = _number(row)
        if number is not None:
            numbers.setdefault(row.household_id, []).append(number)
    return numbers
