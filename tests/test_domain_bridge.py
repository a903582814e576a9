"""Click-to-call in the call engine: an operator calling the household rings their own
phone with the household's name to say, takes a call nobody owns, and is refused on a
call another operator owns or one already closed; each attempt's progress is kept in the
history with its number and place in the order (docs/voice.md)."""

from __future__ import annotations

import pytest

from callcenter.domain.calls import (
    CallState,
    IllegalTransitionError,
    NotOwnerError,
    Person,
    PlaceCall,
    RingHousehold,
    RingNoted,
    VoicePurpose,
)
from callcenter.domain.messages import MessageKind, render
from tests.calls_support import CLOSED, OPERATOR, OTHER_OPERATOR, actions, call_in, of_type, step

ME = Person("operator:li.na", "李娜", "+8613911112222")


def test_calling_the_household_rings_the_operator_and_takes_the_call() -> None:
    """Test that RingHousehold rings the operator's own phone (a bridge), saying which
    household is rung, writes call_household, and makes the operator the owner."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, RingHousehold(OPERATOR, ME), 30, household_code="H0042")
    assert decision.call.owner == str(OPERATOR)
    assert "call_household" in actions(decision)
    (ring,) = of_type(decision, PlaceCall)
    assert (ring.to, ring.purpose, ring.message.kind) == (
        ME,
        VoicePurpose.BRIDGE,
        MessageKind.VOICE_BRIDGE,
    )
    assert "正在拨打住户H0042" in render(ring.message, "zh")
    assert "household H0042" in render(ring.message, "en")


def test_calling_the_household_of_another_operators_call_is_refused() -> None:
    call = step(call_in(CallState.DISPATCHED), RingHousehold(OPERATOR, ME), 30).call
    other = Person("operator:wang.wei", "王伟", "+8613911113333")
    with pytest.raises(NotOwnerError):
        step(call, RingHousehold(OTHER_OPERATOR, other), 40)


@pytest.mark.parametrize("state", CLOSED)
def test_a_closed_call_is_not_called_from_the_board(state: CallState) -> None:
    with pytest.raises(IllegalTransitionError):
        step(call_in(state), RingHousehold(OPERATOR, ME), 30)


def test_a_bridge_attempt_is_kept_with_its_number_and_place() -> None:
    """Test that a household leg's status is written with the number and which of the
    household's numbers it was; a carer's ring keeps neither (unchanged)."""
    call = call_in(CallState.DISPATCHED)
    noted = RingNoted(
        "household:H0042",
        VoicePurpose.BRIDGE,
        "busy",
        duration_s=0,
        number="+8657100000001",
        attempt=1,
    )
    (entry,) = step(call, noted, 30).history
    assert entry.detail == {
        "to": "household:H0042",
        "purpose": "bridge",
        "status": "busy",
        "duration_s": 0,
        "number": "+8657100000001",
        "attempt": 1,
    }
    (carer,) = step(call, RingNoted("carer:C001", VoicePurpose.PAGE, "ringing"), 30).history
    assert "number" not in carer.detail and "attempt" not in carer.detail
