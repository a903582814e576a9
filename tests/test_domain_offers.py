"""Who is offered an alarm call next (callcenter/domain/offers.py), without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callcenter.domain.offers import (
    Duty,
    Offer,
    OperatorState,
    ToAllBecause,
    must_move,
    next_offer,
    ranked,
)

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=15)


def op(name: str, idle_min: float, **facts: object) -> OperatorState:
    values: dict[str, object] = {
        "actor": f"operator:{name}",
        "duty": Duty.ON_DUTY,
        "board": True,
        "idle_since": NOW - timedelta(minutes=idle_min),
    }
    values.update(facts)
    return OperatorState(**values)  # type: ignore[arg-type]


def test_the_operator_idle_longest_is_offered_first() -> None:
    """Test that a new call goes to the free operator idle longest, until the timeout."""
    offer = next_offer(None, [op("a", 1), op("b", 5), op("c", 3)], NOW, TIMEOUT)
    assert offer == Offer("operator:b", NOW, NOW + TIMEOUT, False, ("operator:b",))


def test_only_free_operators_are_offered() -> None:
    """Test that paused, off-duty, boardless, busy and already-offered operators are
    passed over, and that ties go by name."""
    operators = [
        op("paused", 9, duty=Duty.PAUSED),
        op("gone", 9, duty=Duty.OFF_DUTY),
        op("unwatched", 9, board=False),
        op("busy", 9, owned=1),
        op("holding", 9, holding=7),
        op("zed", 2),
        op("amy", 2),
    ]
    assert [o.actor for o in ranked(operators)] == ["operator:amy", "operator:zed"]


def test_an_offer_goes_to_the_next_not_yet_tried_then_to_everyone() -> None:
    """Test that an offer that ran out goes to the next operator not yet tried, and
    once every one was tried, to everyone, saying so."""
    operators = [op("a", 5), op("b", 3)]
    first = next_offer(None, operators, NOW, TIMEOUT)
    later = NOW + TIMEOUT
    second = next_offer(first, operators, later, TIMEOUT)
    assert second.operator == "operator:b" and second.tried == ("operator:a", "operator:b")
    last = next_offer(second, operators, later + TIMEOUT, TIMEOUT)
    assert last.to_all and last.operator is None and last.expires_at is None
    assert last.because is ToAllBecause.ALL_TRIED and last.tried == second.tried


def test_why_a_call_goes_to_everyone_at_once() -> None:
    """Test that with nobody on duty, or everyone on duty busy, a new call goes to
    everyone at once, and says which."""
    nobody = next_offer(None, [op("a", 1, duty=Duty.PAUSED)], NOW, TIMEOUT)
    assert nobody.to_all and nobody.because is ToAllBecause.NOBODY_ON_DUTY
    assert next_offer(None, [], NOW, TIMEOUT).because is ToAllBecause.NOBODY_ON_DUTY
    busy = next_offer(None, [op("a", 1, owned=2)], NOW, TIMEOUT)
    assert busy.to_all and busy.because is ToAllBecause.NOBODY_FREE


def test_an_offer_must_move_when_its_time_is_up_or_its_operator_is_gone() -> None:
    """Test that an offer moves when it runs out, or when its operator pauses, signs
    out or loses their board; not before, and never once it is to everyone."""
    offer = next_offer(None, [op("a", 1)], NOW, TIMEOUT)
    assert not must_move(offer, [op("a", 1, holding=1)], NOW + TIMEOUT / 2)
    assert must_move(offer, [op("a", 1, holding=1)], NOW + TIMEOUT)
    assert must_move(offer, [op("a", 1, duty=Duty.PAUSED)], NOW)
    assert must_move(offer, [op("a", 1, board=False)], NOW)
    assert must_move(offer, [], NOW)
    everyone = next_offer(None, [], NOW, TIMEOUT)
    assert not must_move(everyone, [], NOW + TIMEOUT * 10)
