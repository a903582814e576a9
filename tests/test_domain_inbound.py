"""Calls to the centre's number, as the domain decides them (domain/inbound.py and the
call's ``InboundNoted``): which household rang, which open call the ring is noted on,
and a ring nobody picked up escalating the call at once.

Pure: calls and situations are built by hand (tests/calls_support.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    AlertDesk,
    AutoDispatch,
    CallState,
    Dispatch,
    InboundNoted,
    InboundStep,
    NotPossibleError,
    SendSms,
    open_call,
)
from callcenter.domain.inbound import call_to_attach, caller_household
from callcenter.domain.policy import DEFAULT_POLICIES
from tests.calls_support import OPERATOR, at, candidate, of_type, open_, situation, step

CALLER = "+8613712345678"
SID = "CA" + "0" * 32


@pytest.mark.parametrize(
    ("register", "contacts", "household"),
    [
        ({7}, set(), 7),  # the household's own number
        ({7}, {9}, 7),  # its own number wins over a contact elsewhere
        (set(), {9}, 9),  # a daughter's mobile: the one household naming her
        (set(), {9, 11}, None),  # a contact of two households: who, is asked
        ({7, 8}, set(), None),  # a number two households share
        (set(), set(), None),  # nobody registered it
    ],
)
def test_the_caller_is_the_household_the_register_names_once(
    register: set[int], contacts: set[int], household: int | None
) -> None:
    """Test that a number names the one household whose register has it, else the one
    household naming it as a family contact, and nobody when it is shared or unknown."""
    assert caller_household(register, contacts) == household


def test_a_ring_is_noted_on_the_households_most_urgent_open_call() -> None:
    """Test that a household's ring goes to its first (most urgent) open call, and opens
    a voice call when it has none."""
    assert call_to_attach([(12, CallType.FALL), (9, CallType.LOW_BATTERY)]) == 12
    assert call_to_attach([]) is None


def test_a_voice_call_pages_nobody_and_nobody_picking_up_escalates_it_at_once() -> None:
    """Test that a voice call opens at priority 1 paging nobody, each inbound step is a
    history line, and nobody picking up runs its unacknowledged step now: every board
    alarmed and the supervisors texted; its timer firing later changes nothing."""
    opened = open_(CallType.VOICE)
    call = opened.call
    assert call.priority == 1 and not call.assignments and not of_type(opened, SendSms)
    rung = step(call, InboundNoted(InboundStep.OPERATORS_RUNG, CALLER, SID, rung=("a",)), 5)
    assert [(h.action, h.detail["step"], h.detail["rung"]) for h in rung.history] == [
        ("inbound", "operators_rung", ["a"])
    ]
    nobody = step(rung.call, InboundNoted(InboundStep.NOBODY, CALLER, SID), 45)
    assert [h.action for h in nobody.history][:2] == ["inbound", "escalated"]
    assert of_type(nobody, AlertDesk) and of_type(nobody, SendSms)
    assert "unacknowledged" in nobody.call.fired_steps
    assert nobody.call.state is CallState.RAISED


def test_nobody_picking_up_a_call_someone_owns_escalates_nothing() -> None:
    """Test that a ring nobody picked up about a call an operator owns is only noted."""
    call = replace(open_(CallType.EMERGENCY).call, owner=str(OPERATOR), acknowledged_at=at(2))
    owned = step(call, InboundNoted(InboundStep.NOBODY, CALLER, SID), 40)
    assert [h.action for h in owned.history] == ["inbound"]
    assert not owned.effects


def test_a_call_of_no_household_sends_nobody() -> None:
    """Test that a voice call of no household refuses a carer sent by hand or the best
    free one: there is no door to send them to."""
    opened = open_call(
        1, None, CallType.VOICE, DEFAULT_POLICIES[CallType.VOICE], "phone:" + CALLER, situation()
    )
    assert opened.call.household_id is None
    for command in (Dispatch(OPERATOR, candidate(1)), AutoDispatch(OPERATOR)):
        with pytest.raises(NotPossibleError) as refused:
            step(opened.call, command, 10)
        assert refused.value.code == "no_household"
