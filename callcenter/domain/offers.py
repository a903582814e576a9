"""Alarm calls handed to operators: who is on duty, who is free, and who is offered a
call next.

An operator is *on duty* from signing in to the board until signing out (or their
sign-in ending), and may pause and resume meanwhile. A new alarm call is offered to one
**free** operator at a time: on duty, with a board connected (a screen somebody
watches), owning no open alarm call and holding no other offer. The one idle longest is
offered it first. Unanswered in time, it goes to the next free operator not yet tried;
when there is none (every operator on duty was tried, or none is on duty, or all are
busy), it goes to everyone: every board shows it and the desk's escalation alerts the
supervisors.

Pure rules over plain values: the engine (engine/offers.py) reads the operators and the
call's offer in the desk's transaction, under the call's lock, and writes what these
functions decide. Nothing here reads a clock or a database.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


class Duty(enum.StrEnum):
    """Whether an operator is working the desk now."""

    ON_DUTY = "on_duty"  # signed in to the board and taking calls
    PAUSED = "paused"  # signed in, away for a moment: offered nothing
    OFF_DUTY = "off_duty"  # signed out, or their sign-in ended


class ToAllBecause(enum.StrEnum):
    """Why a call went to everyone rather than to one operator."""

    NOBODY_ON_DUTY = "nobody_on_duty"  # no operator on duty with a board connected
    ALL_TRIED = "all_tried"  # every free operator was offered it and none accepted
    NOBODY_FREE = "nobody_free"  # operators are on duty, each busy with another alarm


@dataclass(frozen=True)
class OperatorState:
    """One operator as the offer rule sees them."""

    actor: str  # as the call's owner is written, e.g. "operator:li.na"
    duty: Duty
    board: bool  # a board of theirs is connected (or was, within the grace)
    idle_since: datetime  # since when no work was handed to them
    owned: int = 0  # open alarm calls they own
    holding: int | None = None  # the call they are being offered now, if any

    @property
    def available(self) -> bool:
        """On duty and watching a board: someone an offer can reach."""
        return self.duty is Duty.ON_DUTY and self.board

    @property
    def free(self) -> bool:
        """Available, with no alarm call of their own and no other offer in hand."""
        return self.available and self.owned == 0 and self.holding is None


@dataclass(frozen=True)
class Offer:
    """A call's offer: to one operator until ``expires_at``, or (``to_all``) to
    everyone; ``tried``: every operator it was offered to, in order."""

    operator: str | None
    offered_at: datetime
    expires_at: datetime | None
    to_all: bool
    tried: tuple[str, ...]
    because: ToAllBecause | None = None


def ranked(operators: Sequence[OperatorState], tried: Sequence[str] = ()) -> list[OperatorState]:
    """The free operators not yet tried, the one idle longest first (then by name, so
    the order is the same every time)."""
    seen = set(tried)
    return sorted(
        (o for o in operators if o.free and o.actor not in seen),
        key=lambda o: (o.idle_since, o.actor),
    )


def next_offer(
    current: Offer | None,
    operators: Sequence[OperatorState],
    now: datetime,
    timeout: timedelta,
) -> Offer:
    """Where a call's offer goes now: a new call (``current`` None), an offer that ran
    out, or one whose operator paused, signed out or lost their board.

    To the free operator idle longest who has not been offered this call yet; with none,
    to everyone, saying why."""
    tried = current.tried if current is not None else ()
    candidates = ranked(operators, tried)
    if candidates:
        chosen = candidates[0]
        return Offer(chosen.actor, now, now + timeout, False, (*tried, chosen.actor))
    if tried:
        because = ToAllBecause.ALL_TRIED
    elif any(o.available for o in operators):
        because = ToAllBecause.NOBODY_FREE
    else:
        because = ToAllBecause.NOBODY_ON_DUTY
    return Offer(None, now, None, True, tried, because)


def must_move(offer: Offer, operators: Sequence[OperatorState], now: datetime) -> bool:
    """Whether an offer to one operator must go on now: its time ran out, or its
    operator can no longer be reached (paused, signed out, no board)."""
    if offer.to_all or offer.operator is None:
        return False
    if offer.expires_at is not None and now >= offer.expires_at:
        return True
    holder = next((o for o in operators if o.actor == offer.operator), None)
    return holder is None or not holder.available
