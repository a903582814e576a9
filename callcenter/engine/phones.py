"""Phones that cannot get our texts.

A number is marked when Twilio refuses it for good (not a valid number, opted out, not a
mobile) or when its owner texts STOP. While marked, nothing more is sent to it (each text
fails at once, and a page moves the call on to the next carer without waiting for Twilio
to refuse again) and a carer with that phone is not paged automatically. The mark is
lifted by START from that phone, by changing the number in the records (the new number
has no mark), or by hand with ``callcenter phone clear NUMBER`` once it is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m


@dataclass(frozen=True)
class Broken:
    """One marked number."""

    phone: str
    problem: m.PhoneProblem
    detail: str
    recipient: str
    since: datetime

    def why(self) -> str:
        """Why nothing is sent to it, in words a person can act on."""
        return f"{self.phone} cannot get texts: {self.detail or self.problem.value}"


_phones = m.Base.metadata.tables["broken_phones"]
# Built once, on the table rather than the ORM class: cheaper than an ORM ``get``.
_FIND = select(
    _phones.c.phone, _phones.c.problem, _phones.c.detail, _phones.c.recipient, _phones.c.since
).where(_phones.c.phone == bindparam("p_phone"))

# Where a transaction keeps its view of the carers, marked phones included
# (engine/district.py); marking or lifting a mark drops it, to be read afresh.
CARERS_VIEW = "callcenter.carers_view"


async def mark(
    session: AsyncSession,
    phone: str,
    problem: m.PhoneProblem,
    detail: str,
    *,
    recipient: str = "",
    now: datetime,
) -> None:
    """Mark ``phone`` (again: the newest reason wins, ``since`` stays the first)."""
    session.info.pop(CARERS_VIEW, None)
    row = await session.get(m.BrokenPhone, phone, with_for_update=True)
    if row is None:
        session.add(
            m.BrokenPhone(
                phone=phone, problem=problem, detail=detail, recipient=recipient, since=now
            )
        )
    else:
        row.problem = problem
        row.detail = detail
        row.recipient = recipient or row.recipient
    await session.flush()


async def lift(session: AsyncSession, phone: str, problem: m.PhoneProblem | None = None) -> bool:
    """Lift the mark on ``phone`` (only if it is ``problem``, when given); whether it had one."""
    session.info.pop(CARERS_VIEW, None)
    query = delete(m.BrokenPhone).where(m.BrokenPhone.phone == phone)
    if problem is not None:
        query = query.where(m.BrokenPhone.problem == problem)
    result = await session.execute(query)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def find(session: AsyncSession, phone: str) -> Broken | None:
    """The mark on ``phone``, if it has one (asked before every text is sent)."""
    row = (await session.execute(_FIND, {"p_phone": phone})).one_or_none()
    return None if row is None else _broken(row)


async def every(session: AsyncSession) -> dict[str, Broken]:
    """Every marked number (a handful in a district: read whole)."""
    rows = await session.scalars(select(m.BrokenPhone).order_by(m.BrokenPhone.since))
    return {row.phone: _broken(row) for row in rows.all()}


class _Marked(Protocol):
    """A mark as read: an ORM row, or a row of ``_FIND`` (the same columns)."""

    phone: str
    problem: str
    detail: str
    recipient: str
    since: datetime


def _broken(row: _Marked) -> Broken:
    return Broken(row.phone, m.PhoneProblem(row.problem), row.detail, row.recipient, row.since)
