"""What every change to the register shares: the refusals, who made it (``Change``),
the one transaction shape (``changing``: in turn with the other writers, under the
import's lock), the audit row with the record before and after, records as plain JSON,
and what the rest of the register holds for the rules that look beyond one record."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain.register import Known, Problem
from callcenter.store import models as m
from callcenter.store.db import lock_names, write_locked, write_turn

log = logging.getLogger("callcenter.register")

# A register table whose rows are known by their code.
Coded = TypeVar("Coded", m.Station, m.Carer, m.ShiftPattern)

# The advisory lock (PostgreSQL) every change to the register takes: an import and an
# edit of the same record take turns rather than one overwriting the other unseen.
# SQLite's write lock does the same there.
REGISTER_LOCK = "register_import"


class RegisterRefusedError(Exception):
    """The change breaks the register's rules; nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.code}" for p in self.problems))


class RecordNotFoundError(Exception):
    """No such record (``kind`` and ``key`` say which)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"there is no {kind} {key!r}")


class RecordInUseError(Exception):
    """The change would remove what other records still need; ``detail`` says what."""


class BrokerRefusedError(Exception):
    """The broker did not take a device's login; the register is as it was."""


@dataclass(frozen=True)
class Change:
    """Who makes a change, when, and from where (for the audit row)."""

    actor: str
    at: datetime
    path: str = ""
    address: str = ""


# --- records as JSON (the API's shape and the audit's before and after) ----------------


def _plain(value: Any) -> Any:
    if isinstance(value, time):
        return value.isoformat(timespec="minutes")  # the register keeps minutes
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def record_json(record: Any) -> dict[str, Any]:
    """A register record as plain JSON: dates and times in ISO form, lists as lists."""
    return {k: _plain(v) for k, v in dataclasses.asdict(record).items()}


async def station_codes(session: AsyncSession) -> dict[int, str]:
    return {s.id: s.code for s in (await session.execute(select(m.Station.id, m.Station.code)))}


# --- what the rest of the register holds -------------------------------------------------


async def known(session: AsyncSession, today: date) -> Known:
    """The codes every rule that looks beyond its record needs."""

    async def column(attribute: Any) -> frozenset[str]:
        return frozenset((await session.scalars(select(attribute))).all())

    return Known(
        today=today,
        stations=await column(m.Station.code),
        shift_patterns=await column(m.ShiftPattern.code),
        households=await column(m.Household.code),
        carers=await column(m.Carer.code),
    )


def refuse_if(problems: Iterable[Problem]) -> None:
    found = list(problems)
    if found:
        raise RegisterRefusedError(found)


def audit_row(
    session: AsyncSession,
    change: Change,
    *,
    action: str,
    household_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        m.AuditEntry(
            at=change.at,
            actor=change.actor[:96],
            household_id=household_id,
            action=action[:32],
            path=change.path[:255],
            address=change.address[:64],
            detail=detail or {},
            before=before,
            after=after,
        )
    )


@contextlib.asynccontextmanager
async def changing(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """The transaction of one change to the register: in turn with the server's other
    writers, locked against a concurrent import (REGISTER_LOCK), committed on leaving."""
    async with write_turn(engine), AsyncSession(write_locked(engine)) as session, session.begin():
        await lock_names(session, REGISTER_LOCK)
        yield session


async def coded_row(
    session: AsyncSession, model: type[Coded], kind: str, existing: str | None, code: str
) -> Coded | None:
    """The row a change edits (None for a new record); RecordNotFoundError if there is
    none with code ``existing``, and a refusal if the change would rename it."""
    if existing is None:
        return None
    row = await session.scalar(select(model).where(model.code == existing))
    if row is None:
        raise RecordNotFoundError(kind, existing)
    same_code(existing, code)
    return row


def given_place(lat: float | None, lon: float | None) -> tuple[float, float]:
    """A position the rules passed (they refuse one not given)."""
    if lat is None or lon is None:
        raise RegisterRefusedError([Problem("lat" if lat is None else "lon", "required")])
    return lat, lon


def same_code(existing: str | None, code: str) -> None:
    """A record's code never changes once it is made: a household's is its devices'
    topic level (and their broker rules), a carer's is how call histories name them, a
    station's and a shift pattern's are how the rota and reports name them."""
    if existing is not None and code != existing:
        raise RegisterRefusedError([Problem("code", "fixed", {"value": existing})])


def taken_refusal(error: IntegrityError, what: str, value: str) -> RegisterRefusedError:
    """Two writers raced for one code: the loser is told as a rule would tell it."""
    log.info("register: %s %r taken by a concurrent change (%s)", what, value, error.orig)
    return RegisterRefusedError([Problem(what, "taken", {"value": value})])
