"""Sends in doubt: before a row whose earlier attempt may have gone out is sent again,
the provider is asked what became of it.

A row is in doubt when it is still pending with ``sending_since`` set: the process died
mid-send, or the send timed out or broke after the request went out. Found at the
provider, the row is settled as sent without sending; not found, it is sent. When even
that question cannot be answered, a dispatch page goes out again marked as a repeat (a
carer must not miss a call), and any other message waits and is asked about again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.engine.outbox.sender import OutboxMessage, Receipt, Reconciler, SendError
from callcenter.store import models as m

log = logging.getLogger("callcenter.outbox")

# Starts a dispatch page sent again while an earlier attempt may have arrived.
REPEAT_MARK = "[重发/repeat] "


@dataclass(frozen=True)
class Reconciled:
    """What to do with a message in doubt, once the provider was asked."""

    message: OutboxMessage  # to send: as it was, or marked as a repeat
    sent_as: Receipt | None = None  # an earlier attempt went out as this: send nothing
    wait: SendError | None = None  # the question is open and it is no page: send nothing
    still_in_doubt: bool = False  # sent again while an earlier attempt may have arrived


async def reconcile(
    engine: AsyncEngine,
    sender: Reconciler,
    message: OutboxMessage,
    since: datetime,
    sending: asyncio.Semaphore,
    *,
    repeat: bool = True,
) -> Reconciled:
    """Ask ``sender`` whether an attempt of ``message`` since ``since`` (when its earliest
    attempt in doubt began) reached the provider, in one of the ``sending`` places as a
    send would. ``repeat``: a page may go out again, marked, when that cannot be told
    (a text; a phone call waits instead, see channels.py)."""
    try:
        async with sending:
            found = await sender.find_sent(message, since)
    except Exception as error:  # SendError, or a sender bug: the question is open
        why = error.detail if isinstance(error, SendError) else repr(error)
        if message.carer_id is None or not repeat:
            # Informational, or a phone call: a duplicate would mislead (or ring a carer
            # twice), a delay does not; ask again.
            return Reconciled(
                message,
                wait=SendError(
                    "an earlier attempt may have been sent and the provider's message "
                    f"list could not be checked ({why}); not sent again until it can be",
                    outcome_unknown=True,
                ),
            )
        # A page a carer never gets costs more than one they get twice.
        log.warning(
            "outbox %d: page to %s (%s) may have been sent already and the provider's "
            "message list could not be checked (%s); sending it again marked as a repeat",
            message.id,
            message.recipient,
            message.about,
            why,
        )
        return Reconciled(replace(message, body=REPEAT_MARK + message.body), still_in_doubt=True)
    receipt = await unclaimed(engine, message, found)
    if receipt is not None:
        log.info(
            "outbox %d: an earlier attempt to %s (%s) had been sent as %s; not sending it again",
            message.id,
            message.recipient,
            message.about,
            receipt.ref,
        )
    return Reconciled(message, sent_as=receipt)


async def unclaimed(
    engine: AsyncEngine, message: OutboxMessage, found: Sequence[Receipt]
) -> Receipt | None:
    """The first of ``found`` no other row with the same text already names: an
    identical text sent to the same phone for another row is that row's, not this
    one's. (Rows bundled into one text share its reference, each with its own text.)"""
    if not found:
        return None
    async with AsyncSession(engine) as session:
        taken = set(
            (
                await session.scalars(
                    select(m.OutboxItem.provider_ref).where(
                        m.OutboxItem.provider_ref.in_([r.ref for r in found]),
                        m.OutboxItem.id != message.id,
                        m.OutboxItem.body == message.body,
                    )
                )
            ).all()
        )
    return next((r for r in found if r.ref not in taken), None)
