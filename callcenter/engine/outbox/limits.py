"""Limits and bundling: at most so many texts to one phone in a window
(``sms.recipient_limit``); more are bundled into one text, and a phone at its limit waits
for the window to free, except that a page never waits.

The rules (``weigh``, ``bundles``) are pure; ``recent_texts`` and ``hold`` are the
reads and writes they need. The relay applies them to channels whose rules say
``limited`` (channels.py).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.engine.outbox.sender import OutboxMessage
from callcenter.store import models as m

# Between the texts of a bundle, and the most one text may hold (Twilio's body limit).
BUNDLE_SEPARATOR = "\n---\n"
MAX_TEXT_CHARS = 1600


@dataclass(frozen=True)
class TextLimit:
    """At most ``count`` texts to one phone per ``window_s``; more are bundled."""

    count: int
    window_s: float


class Weighing(enum.Enum):
    """What becomes of the texts waiting for one phone, weighed against its limit."""

    EACH = "each"  # within the limit: one by one
    HOLD = "hold"  # at the limit already: held until the window frees (``free_at``)
    BUNDLE = "bundle"  # over it: as few texts as fit


def weigh(limit: TextLimit, recent: Sequence[datetime], waiting: int, *, paged: bool) -> Weighing:
    """Texts ``waiting`` for a phone texted at ``recent`` (within the window): one by one
    within its limit; at it, held, unless one is a page (a page never waits); else
    bundled."""
    if len(recent) + waiting <= limit.count:
        return Weighing.EACH
    if len(recent) >= limit.count and not paged:
        return Weighing.HOLD
    return Weighing.BUNDLE


def free_at(limit: TextLimit, recent: Sequence[datetime]) -> datetime:
    """When a phone at its limit may be texted again; ``recent`` newest first."""
    return recent[limit.count - 1] + timedelta(seconds=limit.window_s)


def bundles(
    messages: Sequence[OutboxMessage], limit: int = MAX_TEXT_CHARS
) -> list[list[OutboxMessage]]:
    """``messages`` to one phone as few texts as fit: pages first, then oldest first,
    each text at most ``limit`` characters (a text alone longer than that goes alone)."""
    ordered = sorted(messages, key=lambda m: (m.carer_id is None, m.id))
    parts: list[list[OutboxMessage]] = []
    size = 0
    for message in ordered:
        grown = size + len(BUNDLE_SEPARATOR) + len(message.body)
        if parts and grown <= limit:
            parts[-1].append(message)
            size = grown
        else:
            parts.append([message])
            size = len(message.body)
    return parts


async def recent_texts(
    engine: AsyncEngine,
    channel: str,
    addresses: Sequence[str],
    limit: TextLimit,
    now: datetime,
) -> dict[str, list[datetime]]:
    """For each phone of ``addresses`` texted within the window, when its latest
    ``limit.count`` texts (a bundle is one) went out, newest first; one read for all."""
    if not addresses:
        return {}
    since = now - timedelta(seconds=limit.window_s)
    sent_at = func.max(m.OutboxItem.done_at)
    # One text per provider reference (a bundle's rows share it); a row without one
    # (a sender that gives none) is a text of its own.
    text = func.coalesce(m.OutboxItem.provider_ref, cast(m.OutboxItem.id, String))
    async with AsyncSession(engine) as session:
        found = await session.execute(
            select(m.OutboxItem.address, sent_at)
            .where(
                m.OutboxItem.channel == channel,
                m.OutboxItem.address.in_(addresses),
                m.OutboxItem.state == m.OutboxState.SENT,
                m.OutboxItem.done_at > since,
            )
            .group_by(m.OutboxItem.address, text)
        )
        recent: dict[str, list[datetime]] = {}
        for address, moment in found.all():
            if moment is not None:
                recent.setdefault(address, []).append(moment)
    return {a: sorted(moments, reverse=True)[: limit.count] for a, moments in recent.items()}


async def hold(session: AsyncSession, item_ids: Sequence[int], until: datetime) -> None:
    """Put the rows ``item_ids`` still pending off until ``until``."""
    await session.execute(
        update(m.OutboxItem)
        .where(
            m.OutboxItem.id.in_(item_ids),
            m.OutboxItem.state == m.OutboxState.PENDING,
        )
        .values(next_attempt_at=until)
    )
