"""Escalation policies: what happens, and when, to a call nobody has dealt with.

A policy belongs to a call type. It is copied onto each call when the call opens, so
editing a policy never changes a call already in progress. Each step watches for one
milestone (acknowledged, accepted, on scene, closed); when the milestone has not been
reached ``after_s`` seconds after the step's starting point, the step's actions run.
Steps counted from ``dispatched`` run once per dispatched carer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from callcenter.domain.call_types import CallType


class Milestone(enum.StrEnum):
    """What a step waits for; reaching it cancels the step."""

    ACKNOWLEDGED = "acknowledged"  # an operator owns the call
    ACCEPTED = "accepted"  # the dispatched carer said yes
    ON_SCENE = "on_scene"  # a carer is at the door
    CLOSED = "closed"  # resolved or cancelled


class CountedFrom(enum.StrEnum):
    """Where a step's clock starts."""

    OPENED = "opened"
    DISPATCHED = "dispatched"


class Action(enum.StrEnum):
    """What an escalation step does."""

    ALERT_OPERATORS = "alert_operators"  # alarm on every operator's board
    ALERT_SUPERVISOR = "alert_supervisor"  # SMS to the supervisors on duty
    REDISPATCH = "redispatch"  # page the next nearest free carer
    NOTIFY_STATION_LEAD = "notify_station_lead"  # SMS to the household's station lead
    NOTIFY_FAMILY = "notify_family"  # SMS to the first family contact
    EMERGENCY_SERVICES = "emergency_services"  # board alarm: ring 120 now; supervisors told
    # Ring the paged carer (a step counted from "dispatched"): 1 accepts, 2 declines, no
    # pick-up releases them as silence does. The carer stays on the call meanwhile.
    RING_CARER = "ring_carer"


@dataclass(frozen=True)
class Step:
    """One escalation step."""

    name: str
    after_s: float
    unless: Milestone
    actions: tuple[Action, ...]
    counted_from: CountedFrom = CountedFrom.OPENED

    def __post_init__(self) -> None:
        if self.after_s < 0:
            raise ValueError(f"step {self.name!r}: after_s must not be negative")
        if self.counted_from is CountedFrom.DISPATCHED and self.unless is not Milestone.ACCEPTED:
            raise ValueError(
                f"step {self.name!r}: a step counted from a dispatch waits for that carer's "
                "acceptance; use unless = 'accepted'"
            )
        if Action.RING_CARER in self.actions and (
            self.counted_from is not CountedFrom.DISPATCHED or len(self.actions) != 1
        ):
            raise ValueError(
                f"step {self.name!r}: ring_carer rings the carer of one dispatch, so it is "
                "the only action of a step counted from 'dispatched'"
            )


@dataclass(frozen=True)
class Policy:
    """How one type of call is handled."""

    auto_dispatch: bool
    steps: tuple[Step, ...]
    carers_required: int = 1
    skills: tuple[str, ...] = ()
    cancel_grace_s: float = 60.0

    def __post_init__(self) -> None:
        if self.carers_required < 1:
            raise ValueError("carers_required must be at least 1")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, got {names}")

    def step(self, name: str) -> Step:
        """The step called ``name``; KeyError if the policy has none."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON copy, stored on the call."""
        return {
            "auto_dispatch": self.auto_dispatch,
            "carers_required": self.carers_required,
            "skills": list(self.skills),
            "cancel_grace_s": self.cancel_grace_s,
            "steps": [
                {
                    "name": s.name,
                    "after_s": s.after_s,
                    "unless": s.unless.value,
                    "counted_from": s.counted_from.value,
                    "actions": [a.value for a in s.actions],
                }
                for s in self.steps
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        """The policy stored by ``to_json``."""
        return cls(
            auto_dispatch=bool(data["auto_dispatch"]),
            carers_required=int(data["carers_required"]),
            skills=tuple(data["skills"]),
            cancel_grace_s=float(data["cancel_grace_s"]),
            steps=tuple(
                Step(
                    name=s["name"],
                    after_s=float(s["after_s"]),
                    unless=Milestone(s["unless"]),
                    counted_from=CountedFrom(s["counted_from"]),
                    actions=tuple(Action(a) for a in s["actions"]),
                )
                for s in data["steps"]
            ),
        )


A = Action
M = Milestone

_ALARM_STEPS = (
    Step("unacknowledged", 30, M.ACKNOWLEDGED, (A.ALERT_OPERATORS, A.ALERT_SUPERVISOR)),
    # A page not accepted within a minute: the carer's phone rings (docs/voice.md).
    Step("ring_carer", 60, M.ACCEPTED, (A.RING_CARER,), CountedFrom.DISPATCHED),
    Step(
        "unaccepted",
        120,
        M.ACCEPTED,
        (A.REDISPATCH, A.NOTIFY_STATION_LEAD),
        CountedFrom.DISPATCHED,
    ),
    Step("not_on_scene", 15 * 60, M.ON_SCENE, (A.ALERT_SUPERVISOR, A.NOTIFY_FAMILY)),
    Step("emergency_services", 30 * 60, M.ON_SCENE, (A.EMERGENCY_SERVICES,)),
)

DEFAULT_POLICIES: dict[CallType, Policy] = {
    CallType.EMERGENCY: Policy(auto_dispatch=True, steps=_ALARM_STEPS),
    # A fallen resident may need two people for a safe lift.
    CallType.FALL: Policy(
        auto_dispatch=True, steps=_ALARM_STEPS, carers_required=2, skills=("lift",)
    ),
    CallType.SERVICE_REQUEST: Policy(
        auto_dispatch=True,
        steps=(
            Step("unacknowledged", 120, M.ACKNOWLEDGED, (A.ALERT_OPERATORS,)),
            Step(
                "unaccepted",
                300,
                M.ACCEPTED,
                (A.REDISPATCH, A.NOTIFY_STATION_LEAD),
                CountedFrom.DISPATCHED,
            ),
            Step("not_on_scene", 60 * 60, M.ON_SCENE, (A.NOTIFY_STATION_LEAD,)),
        ),
    ),
    # Device health: an operator phones the household first and sends someone by hand.
    CallType.DEVICE_OFFLINE: Policy(
        auto_dispatch=False,
        steps=(
            Step("unacknowledged", 10 * 60, M.ACKNOWLEDGED, (A.ALERT_OPERATORS,)),
            Step("still_open", 4 * 3600, M.CLOSED, (A.NOTIFY_STATION_LEAD,)),
        ),
    ),
    CallType.LOW_BATTERY: Policy(
        auto_dispatch=False,
        steps=(
            Step("unacknowledged", 60 * 60, M.ACKNOWLEDGED, (A.ALERT_OPERATORS,)),
            Step("still_open", 24 * 3600, M.CLOSED, (A.NOTIFY_STATION_LEAD,)),
        ),
    ),
    # A wrong clock is a job for the technician, not an emergency: its alarms are raised
    # at the server's time all the same.
    CallType.DEVICE_CLOCK: Policy(
        auto_dispatch=False,
        steps=(
            Step("unacknowledged", 60 * 60, M.ACKNOWLEDGED, (A.ALERT_OPERATORS,)),
            Step("still_open", 24 * 3600, M.CLOSED, (A.NOTIFY_STATION_LEAD,)),
        ),
    ),
    # Someone rang the centre's number (docs/voice.md, "Inbound calls"): the operators
    # on duty were rung at once; nobody owning the call escalates as an unanswered alarm
    # does. A ring nobody picked up (operators, then supervisors) runs these steps at once.
    CallType.VOICE: Policy(
        auto_dispatch=False,
        steps=(
            Step("unacknowledged", 60, M.ACKNOWLEDGED, (A.ALERT_OPERATORS, A.ALERT_SUPERVISOR)),
            Step("still_open", 60 * 60, M.CLOSED, (A.ALERT_SUPERVISOR,)),
        ),
    ),
}


@dataclass(frozen=True)
class PolicyBook:
    """The policies in force, by call type; missing types use the defaults."""

    policies: dict[CallType, Policy] = field(default_factory=dict)

    def for_type(self, call_type: CallType) -> Policy:
        return self.policies.get(call_type) or DEFAULT_POLICIES[call_type]
