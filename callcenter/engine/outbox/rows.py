"""The outbox table as the relay reads and writes it: the statements of a claim, built
once; the read of the due rows and of the next one due; and what settling a row writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.engine.outbox.channels import rules_of
from callcenter.engine.outbox.delivery import paged_carer
from callcenter.engine.outbox.lanes import Due
from callcenter.engine.outbox.sender import Receipt, SendError
from callcenter.store import models as m

# Due rows read in one pass.
BATCH = 100

# The statements claiming a row, built once (building them anew, as ORM statements, cost
# more than running them): the outbox table itself, not its ORM class.
OUTBOX = m.Base.metadata.tables["outbox"]
CALL_OF_ITEM = select(OUTBOX.c.call_id).where(OUTBOX.c.id == bindparam("p_item"))
ITEM = (
    select(
        OUTBOX.c.id,
        OUTBOX.c.call_id,
        OUTBOX.c.channel,
        OUTBOX.c.recipient,
        OUTBOX.c.address,
        OUTBOX.c.body,
        OUTBOX.c.guard,
        OUTBOX.c.state,
        OUTBOX.c.attempts,
        OUTBOX.c.next_attempt_at,
        OUTBOX.c.sending_since,
    )
    .where(OUTBOX.c.id == bindparam("p_item"))
    .with_for_update()
)
CLAIM = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("p_item"))
    .values(
        attempts=bindparam("p_attempts"),
        next_attempt_at=bindparam("p_next"),
        sending_since=bindparam("p_since"),
    )
)
SKIP = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("p_item"))
    .values(state=m.OutboxState.SKIPPED.value, done_at=bindparam("p_now"))
)
NOT_SENT = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("p_item"))
    .values(
        state=m.OutboxState.FAILED.value,
        done_at=bindparam("p_now"),
        last_error=bindparam("p_error"),
    )
)


async def due_rows(engine: AsyncEngine, channels: Sequence[str], now: datetime) -> list[Due]:
    """The first ``BATCH`` rows of ``channels`` pending and due at ``now``, oldest first."""
    async with AsyncSession(engine) as session:
        found = await session.execute(
            select(
                m.OutboxItem.id,
                m.OutboxItem.channel,
                m.OutboxItem.address,
                m.OutboxItem.guard,
                m.OutboxItem.sending_since,
            )
            .where(
                m.OutboxItem.state == m.OutboxState.PENDING,
                m.OutboxItem.next_attempt_at <= now,
                m.OutboxItem.channel.in_(channels),
            )
            .order_by(m.OutboxItem.id)
            .limit(BATCH)
        )
        return [
            Due(
                row.id,
                row.channel,
                row.address,
                rules_of(row.channel).to_people and paged_carer(row.guard) is not None,
                row.sending_since is not None,
            )
            for row in found.all()
        ]


async def next_due(engine: AsyncEngine, channels: Sequence[str]) -> datetime | None:
    """When the earliest pending row of ``channels`` is due (now or later), if any."""
    async with AsyncSession(engine) as session:
        return await session.scalar(
            select(func.min(m.OutboxItem.next_attempt_at)).where(
                m.OutboxItem.state == m.OutboxState.PENDING,
                m.OutboxItem.channel.in_(channels),
            )
        )


async def due_now(session: AsyncSession, channel: str, now: datetime) -> None:
    """``channel``'s rows waiting to be tried again are due at ``now``; a row being sent
    right now (``sending_since`` set) is left as it is, so it is never claimed twice."""
    await session.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.channel == channel,
            OUTBOX.c.state == m.OutboxState.PENDING.value,
            OUTBOX.c.next_attempt_at > now,
            OUTBOX.c.sending_since.is_(None),
        )
        .values(next_attempt_at=now)
    )


def settled(
    error: SendError | None, receipt: Receipt | None, now: datetime, *, still_in_doubt: bool
) -> dict[str, Any]:
    """What a row's attempt writes on it: sent, refused for good, or failed (to retry)."""
    if error is None:
        values: dict[str, Any] = {
            "state": m.OutboxState.SENT,
            "done_at": now,
            "last_error": "",
            "sending_since": None,
        }
        if receipt is not None:
            values["provider_ref"] = receipt.ref
        if receipt is not None and receipt.delivery is not None:
            values["delivery"] = receipt.delivery
        return values
    if error.permanent:
        return {
            "state": m.OutboxState.FAILED,
            "done_at": now,
            "last_error": error.detail,
            "sending_since": None,
        }
    values = {"last_error": error.detail}
    if not (error.outcome_unknown or still_in_doubt):
        values["sending_since"] = None  # known not to have gone out
    return values


async def write_settled(session: AsyncSession, item_id: int, values: dict[str, Any]) -> None:
    """Write ``values`` (``settled``) on row ``item_id``."""
    await session.execute(update(OUTBOX).where(OUTBOX.c.id == item_id).values(values))
