"""Calls, situations and commands built by hand for the pure call tests
(tests/test_domain_calls.py, tests/test_domain_escalation.py), on a virtual timeline.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    ActorKind,
    AssignmentState,
    Call,
    CallState,
    Cancel,
    CancelReason,
    CarerReport,
    Command,
    Decision,
    Outcome,
    Person,
    Report,
    Resolve,
    SendSms,
    Situation,
    decide,
    open_call,
)
from callcenter.domain.dispatch import Candidate, CarerSnapshot, CarerState, Tier
from callcenter.domain.geo import Place, Transport
from callcenter.domain.messages import MessageKind
from callcenter.domain.policy import (
    DEFAULT_POLICIES,
    Policy,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CALL_ID = 41
HOUSEHOLD_ID = 7
DEVICE = "CB-H0007"

OPERATOR = Actor(ActorKind.OPERATOR, "li.na")
OTHER_OPERATOR = Actor(ActorKind.OPERATOR, "wang.wei")
SUPERVISOR = Actor(ActorKind.SUPERVISOR, "zhao.min")
DEVICE_ACTOR = Actor(ActorKind.DEVICE, DEVICE)

EMERGENCY = DEFAULT_POLICIES[CallType.EMERGENCY]
# The emergency ladder without the automatic first page, so a call can wait unowned.
MANUAL = replace(EMERGENCY, auto_dispatch=False)
OPENED_STEPS = frozenset({"unacknowledged", "not_on_scene", "emergency_services"})
# Steps counted from each dispatch: the carer's phone rung, then the carer replaced.
DISPATCH_STEPS = frozenset({"ring_carer", "unaccepted"})
ALL_STEPS = OPENED_STEPS | DISPATCH_STEPS

CARER_IDS = (1, 2, 3, 4, 5)
SUPERVISORS = (
    Person("operator:zhao.min", "Zhao Min", "+8613900000001", "zh"),
    Person("operator:chen.li", "Chen Li", "+8613900000002", "en"),
)
STATION_LEADS = (Person("carer:L01", "Lead Sun", "+8613900000010", "zh"),)
FAMILY = (
    Person("family:1", "Daughter", "+8613900000020", "zh"),
    Person("family:2", "Son", "+8613900000021", "en"),
)


def at(seconds: float) -> datetime:
    """The virtual time ``seconds`` after the call opened."""
    return T0 + timedelta(seconds=seconds)


def code(carer_id: int) -> str:
    """A carer's code, as the history and SMS labels show it."""
    return f"C{carer_id:03d}"


def carer_actor(carer_id: int) -> Actor:
    """The carer replying for themselves."""
    return Actor(ActorKind.CARER, code(carer_id))


def carer_person(carer_id: int) -> Person:
    """The carer as someone the call centre may text."""
    return Person(f"carer:{code(carer_id)}", f"Carer {carer_id}", f"+86138000000{carer_id:02d}")


def candidate(carer_id: int, *, skills: tuple[str, ...] = ("lift",)) -> Candidate:
    """A free carer from the home station; a higher id is a little further away."""
    snapshot = CarerSnapshot(
        id=carer_id,
        code=code(carer_id),
        name=f"Carer {carer_id}",
        phone=f"+86138000000{carer_id:02d}",
        language="zh",
        role="carer",
        station_id=1,
        skills=frozenset(skills),
        transport=Transport.EBIKE,
        position=Place(31.23, 121.47),
        state=CarerState.FREE,
    )
    return Candidate(snapshot, Tier.HOME, 200.0 + carer_id, True)


def situation(
    seconds: float = 0,
    *,
    candidates: tuple[int, ...] | tuple[Candidate, ...] = CARER_IDS,
    **overrides: Any,
) -> Situation:
    """A fully staffed household at ``seconds``; ``overrides`` empties or changes parts."""
    facts: dict[str, Any] = {
        "household_code": "H0007",
        "address": "12 Garden Lane",
        "access_notes": "Key box 1234.",
        "residents": "Mrs Li (86)",
        "desk_phone": "+862155550000",
        "candidates": tuple(c if isinstance(c, Candidate) else candidate(c) for c in candidates),
        "assigned": tuple(carer_person(i) for i in range(1, 7)),
        "station_leads": STATION_LEADS,
        "family": FAMILY,
        "supervisors": SUPERVISORS,
    }
    facts.update(overrides)
    return Situation(now=at(seconds), **facts)


def check_history(before: CallState | None, decision: Decision) -> None:
    """Every entry names actor and action, and the entries chain from ``before`` to the end."""
    previous = before
    for entry in decision.history:
        assert entry.actor
        assert entry.action
        assert entry.from_state == previous, decision.history
        assert isinstance(entry.to_state, CallState)
        previous = entry.to_state
    if decision.history:
        assert previous == decision.call.state


def open_(
    call_type: CallType = CallType.EMERGENCY,
    *,
    policy: Policy | None = None,
    seconds: float = 0,
    **situation_facts: Any,
) -> Decision:
    """Open a call of ``call_type`` for the household."""
    decision = open_call(
        CALL_ID,
        HOUSEHOLD_ID,
        call_type,
        policy or DEFAULT_POLICIES[call_type],
        DEVICE,
        situation(seconds, **situation_facts),
    )
    check_history(None, decision)
    return decision


def step(call: Call, command: Command, seconds: float, **situation_facts: Any) -> Decision:
    """Decide ``command`` at ``seconds`` and check the history it writes."""
    decision = decide(call, command, situation(seconds, **situation_facts))
    check_history(call.state, decision)
    return decision


def actions(decision: Decision) -> list[str]:
    """The history actions, in order."""
    return [entry.action for entry in decision.history]


def texts(decision: Decision) -> list[tuple[str, MessageKind]]:
    """Who is texted what kind of message, in order."""
    return [(e.to.label, e.message.kind) for e in decision.effects if isinstance(e, SendSms)]


def of_type(decision: Decision, kind: type[Any]) -> list[Any]:
    """The decision's effects of one kind."""
    return [effect for effect in decision.effects if isinstance(effect, kind)]


def states(call: Call) -> dict[int, AssignmentState]:
    """Each carer's latest assignment state."""
    return {a.carer_id: a.state for a in call.assignments}


def accept(carer_id: int) -> Report:
    """The carer accepts (replies "12a")."""
    return Report(carer_actor(carer_id), carer_id, CarerReport.ACCEPTED)


def report(carer_id: int, what: CarerReport) -> Report:
    """The carer reports their own progress."""
    return Report(carer_actor(carer_id), carer_id, what)


def call_in(state: CallState) -> Call:
    """A single-carer emergency call brought to ``state`` by ordinary commands.

    Raised and acknowledged calls use the manual ladder; dispatched and later calls were
    auto-dispatched to carer 1 and are still unowned (awaiting review: carer 1 reported it
    done).
    """
    if state is CallState.RAISED:
        call = open_(policy=MANUAL).call
    elif state is CallState.ACKNOWLEDGED:
        call = step(call_in(CallState.RAISED), Acknowledge(OPERATOR), 5).call
    elif state is CallState.DISPATCHED:
        call = open_().call
    elif state is CallState.ACCEPTED:
        call = step(call_in(CallState.DISPATCHED), accept(1), 20).call
    elif state is CallState.ON_THE_WAY:
        call = step(call_in(CallState.ACCEPTED), report(1, CarerReport.ON_THE_WAY), 25).call
    elif state is CallState.ON_SCENE:
        call = step(call_in(CallState.ON_THE_WAY), report(1, CarerReport.ON_SCENE), 300).call
    elif state is CallState.AWAITING_REVIEW:
        # Carer 1 reports it done while no operator has ever taken it.
        done = Resolve(carer_actor(1), Outcome.HELPED_AT_HOME, "closed by SMS")
        call = step(call_in(CallState.ON_SCENE), done, 600).call
    elif state is CallState.RESOLVED:
        call = step(
            call_in(CallState.ON_SCENE), Resolve(OPERATOR, Outcome.HELPED_AT_HOME), 600
        ).call
    else:
        call = step(call_in(CallState.RAISED), Cancel(OPERATOR, CancelReason.DUPLICATE), 10).call
    assert call.state is state
    return call


OPEN = [s for s in CallState if s not in (CallState.RESOLVED, CallState.CANCELLED)]
CLOSED = [CallState.RESOLVED, CallState.CANCELLED]
