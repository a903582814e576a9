"""Named scenarios: a stretch of the district's life on virtual time, each with what the
call centre is expected to do, checked against what it did.

Every scenario runs the same machinery as a simulated week (:mod:`device_sim.week`);
its quick form is a shorter stretch of the same situation, for CI. docs/simulator.md
describes each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from device_sim.field import FieldProfile
from device_sim.households import PROFILES
from device_sim.week import (
    FIRST_MONDAY,
    Outage,
    StormSpec,
    WeekOptions,
    WeekResult,
    run_week,
)


@dataclass(frozen=True)
class Check:
    """One expectation: what was expected, what happened, and whether that is enough."""

    expected: str
    observed: str
    passed: bool


Expectation = Callable[[WeekResult], Check]


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    # Options for the full form and for the quick one.
    full: WeekOptions
    quick: WeekOptions
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class ScenarioReport:
    scenario: str
    quick: bool
    checks: tuple[Check, ...]
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        head = f"scenario {self.scenario} ({'quick' if self.quick else 'full'}): " + (
            "PASSED" if self.passed else "FAILED"
        )
        return [head] + [
            f"  [{'ok' if c.passed else 'FAIL'}] expected {c.expected}; got {c.observed}"
            for c in self.checks
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "quick": self.quick,
            "passed": self.passed,
            "checks": [c.__dict__ for c in self.checks],
            "summary": self.summary,
        }


# -- expectations every scenario shares -----------------------------------------------


def nothing_lost(result: WeekResult) -> Check:
    e = result.events
    return Check(
        "every device event in the log exactly once",
        f"{e.generated} generated, {e.stored_once} stored once, {e.lost} lost, "
        f"{e.doubled} doubled, {e.pending} still on a device",
        e.lost == 0 and e.doubled == 0 and e.stored_once + e.pending == e.generated,
    )


def every_press_on_a_call(result: WeekResult) -> Check:
    stored, counted = result.calls["presses_stored"], result.calls["alarm_presses_on_calls"]
    return Check(
        "every stored press, fall and service request counted on a call",
        f"{stored} stored, {counted} on calls",
        stored == counted,
    )


def closed_or_escalated(result: WeekResult) -> Check:
    c = result.calls
    return Check(
        "every call closed or escalated",
        f"{c['opened']} calls, {c['closed']} closed, {c['open']} open of which "
        f"{c['open_unescalated']} not escalated",
        c["open_unescalated"] == 0,
    )


def no_overdue_timers(result: WeekResult) -> Check:
    overdue = result.calls["overdue_timers"]
    return Check("no escalation timer left overdue", f"{overdue} overdue at the end", overdue == 0)


def on_scene_share(at_least: float) -> Expectation:
    def check(result: WeekResult) -> Check:
        share = result.on_scene_15min_share
        return Check(
            f"emergencies on scene within 15 min >= {at_least:.0%}",
            "no emergencies" if share is None else f"{share:.1%}",
            share is not None and share >= at_least,
        )

    return check


def answered_share(at_least: float) -> Expectation:
    def check(result: WeekResult) -> Check:
        share = result.answered_60s_share
        return Check(
            f"calls picked up by an operator within 60 s >= {at_least:.0%}",
            "no calls" if share is None else f"{share:.1%}",
            share is not None and share >= at_least,
        )

    return check


def storm_calls(result: WeekResult) -> Check:
    storm = result.options.storm
    assert storm is not None
    wanted = round(storm.share * result.options.households)
    got = result.calls["storm_households_with_call"]
    return Check(
        f"each of the {wanted} storm households on a call",
        f"{got} with a call",
        got == wanted,
    )


def broker_redelivery(result: WeekResult) -> Check:
    e = result.events
    return Check(
        "events re-published after the outage de-duplicated",
        f"{e.republished} re-published, {e.doubled} doubled",
        e.republished > 0 and e.doubled == 0,
    )


def carer_texts_retried(result: WeekResult) -> Check:
    return Check(
        "carers' texts during the restart answered after it",
        f"{result.field['texts_retried']} retried, {result.field['texts_sent']} answered",
        result.field["texts_sent"] > 0,
    )


def backup_station_covers(station: str, at_least: float) -> Expectation:
    def check(result: WeekResult) -> Check:
        figures = next(s for s in result.report["stations"] if s["code"] == station)
        within = figures["on_scene_within_circle"]
        declined = result.field["declined"]
        return Check(
            f"{station}'s households still reached (by other stations) within 15 min "
            f">= {at_least:.0%}, its carers declining",
            f"{within['count']} of {within['of']} in time, {declined} pages declined",
            within["of"] > 0 and (within["share"] or 0) >= at_least and declined > 0,
        )

    return check


_ALWAYS: tuple[Expectation, ...] = (
    nothing_lost,
    every_press_on_a_call,
    closed_or_escalated,
    no_overdue_timers,
)


def _at(day: int, hour: int) -> datetime:
    return FIRST_MONDAY.replace(day=FIRST_MONDAY.day + day, hour=hour)


def _options(start: datetime, hours: float, **more: Any) -> WeekOptions:
    return WeekOptions(start=start, days=hours / 24, settle_s=2 * 3600.0, **more)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "quiet_night",
            "23:00 to 07:00 with the night shift: few calls, every one answered and reached.",
            full=_options(_at(0, 23), 8),
            quick=_options(_at(0, 23), 8, households=900),
            expectations=(*_ALWAYS, answered_share(0.9), on_scene_share(0.8)),
        ),
        Scenario(
            "morning_peak",
            "07:00 to 10:00 on a winter Tuesday: residents getting up, falls and presses at "
            "twice the usual rate, the early shift on.",
            full=_options(_at(1, 7), 3, profile=PROFILES["winter"].scaled(2)),
            quick=_options(_at(1, 7), 1.5, profile=PROFILES["winter"].scaled(2)),
            expectations=(*_ALWAYS, answered_share(0.8), on_scene_share(0.75)),
        ),
        Scenario(
            "storm",
            "10% of households press within one minute at 10:00 (a power cut, an earth "
            "tremor): every press lands on a call, and calls nobody can reach in time are "
            "escalated, not forgotten.",
            full=_options(_at(2, 10), 3, storm=StormSpec(at_s=600, share=0.1, within_s=60)),
            quick=_options(_at(2, 10), 1, storm=StormSpec(at_s=300, share=0.1, within_s=60)),
            expectations=(*_ALWAYS, storm_calls),
        ),
        Scenario(
            "broker_outage",
            "The MQTT broker is away for 10 minutes at 09:00, in the middle of a burst of "
            "presses: devices hold their events and publish them again when it is back "
            "(those whose acknowledgement the outage swallowed, a second time); the call "
            "centre stores each once and opens the calls late, not never.",
            full=_options(
                _at(3, 8),
                4,
                outages=(Outage("broker", 3600, 600),),
                storm=StormSpec(at_s=3570, share=0.05, within_s=60),
                profile=PROFILES["winter"],
            ),
            quick=_options(
                _at(3, 8),
                1.5,
                outages=(Outage("broker", 1800, 600),),
                storm=StormSpec(at_s=1770, share=0.05, within_s=60),
                profile=PROFILES["winter"],
            ),
            expectations=(*_ALWAYS, broker_redelivery, storm_calls),
        ),
        Scenario(
            "server_restart",
            "The call-centre server stops for 5 minutes at 09:30 and starts again on the "
            "same database: the broker keeps the devices' events meanwhile, timers due "
            "while it was down fire on start, carers text again when unanswered.",
            full=_options(
                _at(4, 8), 4, outages=(Outage("server", 5400, 300),), profile=PROFILES["winter"]
            ),
            quick=_options(
                _at(4, 8), 1.5, outages=(Outage("server", 2400, 300),), profile=PROFILES["winter"]
            ),
            expectations=(*_ALWAYS, carer_texts_retried),
        ),
        Scenario(
            "station_without_carers",
            "Every carer of station S03 is out on other work from 08:00 to 14:00 and "
            "declines each page: its households are served from the other stations.",
            full=_options(
                _at(1, 8),
                6,
                field_profile=FieldProfile(busy_stations=frozenset({"S03"})),
                profile=PROFILES["winter"].scaled(2),
            ),
            quick=_options(
                _at(1, 8),
                2,
                field_profile=FieldProfile(busy_stations=frozenset({"S03"})),
                profile=PROFILES["winter"].scaled(3),
            ),
            expectations=(*_ALWAYS, backup_station_covers("S03", 0.5)),
        ),
    )
}


async def run_scenario(
    name: str, *, quick: bool = False, **overrides: Any
) -> tuple[ScenarioReport, WeekResult]:
    """Run scenario ``name`` (KeyError if there is none) and check its expectations."""
    scenario = SCENARIOS[name]
    options = replace(scenario.quick if quick else scenario.full, **overrides)
    result = await run_week(options)
    checks = tuple(expect(result) for expect in scenario.expectations)
    return ScenarioReport(name, quick, checks, result.summary()), result
