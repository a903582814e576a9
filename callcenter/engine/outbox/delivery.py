"""A message that will not arrive, and what its call makes of it.

The one place for it, whoever finds out: the relay (the provider refused the message for
good, or the phone is marked as unable to get texts) and Twilio's delivery report
(web/sms_webhooks.py: undelivered, failed). A dispatch page moves the escalation on at once: its
carer is marked unreachable and the next one paged, instead of waiting out their time to
accept. Any other message about a call is written on the call and supervisors are told.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from callcenter.domain.calls import (
    CallError,
    FamilyRingOver,
    RingUnanswered,
    TextFailed,
    Unreachable,
)
from callcenter.engine.desk import CallNotFoundError, Desk

log = logging.getLogger("callcenter.outbox")

# Labels of family contacts start with this ("family:7:1", engine/district.py).
FAMILY_RECIPIENT = "family:"


def paged_carer(guard: Mapping[str, Any]) -> int | None:
    """The carer a message to people pages (its guard names them), else None."""
    carer_id = guard.get("carer_id")
    return None if carer_id is None else int(carer_id)


def consequence(
    carer_id: int | None, recipient: str, address: str, why: str, *, rings: bool = False
) -> Unreachable | RingUnanswered | FamilyRingOver | TextFailed:
    """The command a message that will not arrive comes to: a page's carer is
    unreachable, or (``rings``: a phone call about it) did not pick up; a family contact
    rung in their turn did not pick up, so the next one is rung; any other message
    failed, as written on its call."""
    if carer_id is not None and rings:
        return RingUnanswered(carer_id, "failed")
    if rings and recipient.startswith(FAMILY_RECIPIENT):
        return FamilyRingOver(recipient, "failed")
    if carer_id is not None:
        return Unreachable(carer_id, why)
    return TextFailed(recipient, address, why)


async def did_not_arrive(
    desk: Desk,
    call_id: int,
    *,
    carer_id: int | None,
    recipient: str,
    address: str,
    why: str,
    about: str,
    rings: bool = False,
) -> None:
    """Record on call ``call_id`` that a message to ``recipient`` will not arrive
    (``why``); ``about`` starts the log lines (e.g. "outbox 7 (call 3 household H0001)").
    Never raises: a page's time to accept still runs out and moves the call on."""
    command = consequence(carer_id, recipient, address, why, rings=rings)
    try:
        await desk.command(call_id, command)
    except (CallError, CallNotFoundError) as refused:  # e.g. the call closed meanwhile
        log.info("%s: %s not recorded on the call: %s", about, command, refused)
    except Exception:
        log.exception("%s: could not record %s on the call", about, command)
    else:
        log.info("%s: %s; moving on", about, command)
