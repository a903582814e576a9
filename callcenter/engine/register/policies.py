"""Escalation policies as supervisors edit them, over the configured ones."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.policy import Policy
from callcenter.engine.register.changes import Change, audit_row, changing
from callcenter.store import models as m

# --- escalation policies ---------------------------------------------------------------


async def policy_rows(engine: AsyncEngine) -> dict[str, m.EscalationPolicy]:
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(m.EscalationPolicy))).all()
        return {r.call_type: r for r in rows}


async def set_policy(
    engine: AsyncEngine,
    call_type: CallType,
    policy: Policy | None,
    change: Change,
    *,
    before: Policy,
    after: Policy,
) -> None:
    """Set a call type's policy for calls opened from now on; None: back to the
    configuration's. ``before`` and ``after`` are the policies in force, for the audit."""
    async with changing(engine) as session:
        row = await session.get(m.EscalationPolicy, call_type.value, with_for_update=True)
        if policy is None:
            if row is not None:
                await session.delete(row)
        else:
            if row is None:
                row = m.EscalationPolicy(call_type=call_type.value)
                session.add(row)
            row.policy = policy.to_json()
            row.edited_by = change.actor[:96]
            row.edited_at = change.at
        audit_row(
            session,
            change,
            action="set_policy" if policy is not None else "reset_policy",
            household_id=None,
            before={"call_type": call_type.value, **before.to_json()},
            after={"call_type": call_type.value, **after.to_json()},
        )
