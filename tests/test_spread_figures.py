"""bench/spread.py's figures of one storm, from what became of its presses: what counts
as lost, undecided or not yet out, the rates over the storm, and each server's share."""

from __future__ import annotations

import pytest

from bench.failover_figures import Outcome
from bench.spread import per_second, storm_figures


def test_a_storms_figures_count_each_press_once_where_it_got_to() -> None:
    found = {
        # paged: 0.1 s from press to the page at Twilio
        "s-0": Outcome(
            stored_at=100.02, device_time=100.0, copies=1, call_id=1,
            action="dispatched", decided_at=100.05, paged_at=100.1,
        ),
        # nobody to send: the dispatch went out with the decision
        "s-1": Outcome(
            stored_at=100.53, device_time=100.5, copies=1, call_id=2,
            action="nobody_to_send", decided_at=100.8,
        ),
        # stored, not yet decided
        "s-2": Outcome(stored_at=101.5, device_time=101.0, copies=1),
        # decided, its page not at Twilio yet
        "s-3": Outcome(
            stored_at=101.02, device_time=101.0, copies=1, call_id=3,
            action="dispatched", decided_at=102.0,
        ),
    }  # fmt: skip
    figures = storm_figures(["s-0", "s-1", "s-2", "s-3", "s-4"], found, {"a": 3, "b": 1})

    assert figures["presses"] == 5
    assert figures["events_stored"] == 4
    assert figures["events_lost"] == 1  # s-4 never stored
    assert figures["events_doubled"] == 0
    assert figures["presses_undecided"] == 1
    assert figures["pages_not_out"] == 1
    assert (figures["dispatched"], figures["nobody_to_send"]) == (2, 1)
    # From the first press (100.0) to the last press, the last stored, the last decision.
    assert figures["published_per_s"] == 4.0  # 4 presses over 1.0 s
    assert figures["stored_per_s"] == pytest.approx(4 / 1.5, abs=0.1)
    assert figures["decided_per_s"] == pytest.approx(3 / 2.0, abs=0.1)
    assert figures["ingest_share"] == {"a": 0.75, "b": 0.25}
    # Press to dispatch: 100 ms (the page) and 300 ms (nobody to send).
    assert figures["press_to_dispatch_max_ms"] == pytest.approx(300, abs=0.5)
    assert figures["press_to_decision_max_ms"] == pytest.approx(1000, abs=0.5)
    assert figures["press_to_stored_max_ms"] == pytest.approx(500, abs=0.5)


def test_a_rate_needs_a_span_and_something_to_count() -> None:
    assert per_second(10, 5.0, 7.0) == 5.0
    assert per_second(0, 5.0, 7.0) is None
    assert per_second(1, 5.0, 5.0) is None
