"""What a decision is (the call's new state, the history entries that explain the change,
the effects to carry out) and the pieces the lifecycle and escalation both build
decisions from: history entries, one decision after another, a carer's bookkeeping on
the call, and the facts a text is written from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from callcenter.domain.calls.commands import Effect, Person, SendSms, Situation
from callcenter.domain.calls.model import Actor, Assignment, Call, CallState
from callcenter.domain.messages import Because, Message, MessageKind
from callcenter.domain.policy import CountedFrom


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a call's append-only history."""

    at: datetime
    actor: str
    action: str
    from_state: CallState | None
    to_state: CallState
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    call: Call
    history: tuple[HistoryEntry, ...] = ()
    effects: tuple[Effect, ...] = ()


def _entry(
    before: Call,
    after: Call,
    situation: Situation,
    actor: Actor | str,
    action: str,
    **detail: Any,
) -> HistoryEntry:
    return HistoryEntry(situation.now, str(actor), action, before.state, after.state, detail)


def _then(first: Decision, second: Decision) -> Decision:
    """``first`` followed by ``second`` (which was decided on first's call)."""
    return Decision(second.call, first.history + second.history, first.effects + second.effects)


def _with_assignment(call: Call, changed: Assignment) -> Call:
    """``call`` with the carer's active assignment replaced by ``changed``."""
    assignments = list(call.assignments)
    for index in range(len(assignments) - 1, -1, -1):
        if assignments[index].carer_id == changed.carer_id and assignments[index].active:
            assignments[index] = changed
            break
    return replace(call, assignments=tuple(assignments))


def _dispatch_steps(call: Call) -> frozenset[str]:
    return frozenset(s.name for s in call.policy.steps if s.counted_from is CountedFrom.DISPATCHED)


def _carer_contact(assignment: Assignment, situation: Situation) -> Person | None:
    label = f"carer:{assignment.carer_code}"
    return next((p for p in situation.assigned if p.label == label), None)


def _stand_down_sms(
    call: Call, assignment: Assignment, situation: Situation, why: Because | str
) -> tuple[SendSms, ...]:
    """The text standing a carer down: ``why`` is a reason said in the carer's language,
    or what an operator typed, sent as typed."""
    person = _carer_contact(assignment, situation)
    if person is None:
        return ()
    return (SendSms(person, _said(MessageKind.STAND_DOWN, call, situation, why)),)


def _said(kind: MessageKind, call: Call, situation: Situation, why: Because | str) -> Message:
    """A message about ``call`` whose ``{why}`` is a reason (rendered in the recipient's
    language) or words a person typed."""
    if isinstance(why, Because):
        return replace(_message(kind, call, situation), because=why)
    return _message(kind, call, situation, why=why)


def _message(kind: MessageKind, call: Call, situation: Situation, **extra: str) -> Message:
    residents = situation.residents
    facts = {
        "call_ref": str(call.id),
        "call_type": call.type.value,
        "household": situation.household_code,
        "address": situation.address,
        "access": situation.access_notes,
        "residents": residents,
        "desk_phone": situation.desk_phone,
        "minutes": str(round((situation.now - call.opened_at).total_seconds() / 60)),
        # How long the call has waited, said truthfully in each language (messages.duration).
        "waited_s": str(round((situation.now - call.opened_at).total_seconds())),
        **extra,
    }
    return Message(kind, facts)
