"""Calls to the centre's number, as the register and the desk's duty read them: which
household the caller is (domain/inbound.py decides from what is read here), and whose
phones ring (docs/voice.md, "Inbound calls").
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.inbound import caller_household
from callcenter.domain.offers import Duty
from callcenter.engine.offers import actor_of
from callcenter.store import models as m


async def caller_of(session: AsyncSession, number: str) -> int | None:
    """The household ringing from ``number`` (an E.164 number), or None when the register
    names none (or several)."""
    register = await session.scalars(
        select(m.HouseholdPhone.household_id).where(m.HouseholdPhone.number == number).distinct()
    )
    contacts = await session.scalars(
        select(m.FamilyContact.household_id).where(m.FamilyContact.phone == number).distinct()
    )
    return caller_household(set(register.all()), set(contacts.all()))


@dataclass(frozen=True)
class DeskPhone:
    """Someone at the desk a call to the centre's number rings."""

    operator_id: int
    actor: str  # as the call's owner is written, e.g. "operator:li.na"
    phone: str
    language: str


async def desk_phones(session: AsyncSession, *, supervisors: bool) -> list[DeskPhone]:
    """The operators (``supervisors``: the supervisors and admins) on duty now, not
    paused, who have a phone; in the order of their names, so a ring is the same each
    time."""
    roles = (
        [m.OperatorRole.SUPERVISOR, m.OperatorRole.ADMIN]
        if supervisors
        else [m.OperatorRole.OPERATOR]
    )
    rows = await session.execute(
        select(m.Operator.id, m.Operator.username, m.Operator.role, m.Operator.phone)
        .add_columns(m.Operator.language)
        .join(m.OperatorDuty, m.OperatorDuty.operator_id == m.Operator.id)
        .where(
            m.Operator.active.is_(True),
            m.Operator.phone.is_not(None),
            m.Operator.phone != "",
            m.Operator.role.in_([str(r) for r in roles]),
            m.OperatorDuty.duty == str(Duty.ON_DUTY),
        )
        .order_by(m.Operator.username)
    )
    return [
        DeskPhone(int(r.id), actor_of(r.username, r.role), str(r.phone), str(r.language))
        for r in rows.all()
    ]
