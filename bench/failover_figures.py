"""What bench/failover.py reads back and reports: what became of each press (the
database and the fake Twilio), where it fell (one server alone, steady, in a takeover's
window; reaching a live server or held for a restart), and the figures."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.failover_cluster import TAG, Press, Takeover, progress
from bench.storm import decisions
from callcenter.domain.response_times import nearest_rank
from callcenter.engine.repository import SMS
from callcenter.fake_twilio import FakeTwilio
from callcenter.store import models as m

# A press made while a server was down (or just before its kill) and stored this long
# after it was made waited in that server's session for it to come back: a live server
# stores what reaches it within milliseconds (tens of them on this machine under load).
HELD_S = 0.5
# How long before a kill a press may have been handed to the server killed.
IN_FLIGHT_S = 1.0


# --- what the database and the fake Twilio say ---------------------------------------------


@dataclass
class Outcome:
    """What became of one press (wall-clock seconds)."""

    stored_at: float | None = None
    device_time: float | None = None  # what the device said: when it was pressed
    copies: int = 0
    call_id: int | None = None
    action: str = ""
    decided_at: float | None = None
    paged_at: float | None = None


async def outcomes(engine: AsyncEngine, fake: FakeTwilio, tag: str = TAG) -> dict[str, Outcome]:
    """Each stored press (its event id ``{tag}-…``) by its event id: its call, the call's
    first dispatch decision, and when the first page to a carer for it arrived at the
    fake Twilio."""
    query = (
        select(
            m.DeviceEvent.event_id,
            m.DeviceEvent.received_at,
            m.DeviceEvent.device_time,
            m.Call.id,
        )
        .outerjoin(m.Call, m.Call.event_id == m.DeviceEvent.id)
        .where(m.DeviceEvent.event_id.like(f"{tag}-%"))
    )
    pages = select(m.OutboxItem.call_id, m.OutboxItem.provider_ref, m.OutboxItem.guard).where(
        m.OutboxItem.channel == SMS,
        m.OutboxItem.recipient.like("carer:%"),
        m.OutboxItem.provider_ref.is_not(None),
    )
    async with engine.connect() as connection:
        stored = (await connection.execute(query)).all()
        paged = (await connection.execute(pages)).all()
    arrived = {message.sid: message.date_created.timestamp() for message in list(fake.messages)}
    first_page: dict[int, float] = {}
    for call_id, sid, guard in paged:
        # A page to the carer sent (not a station lead's notice): guarded by that carer.
        if call_id is not None and guard.get("carer_id") is not None and sid in arrived:
            first_page[call_id] = min(arrived[sid], first_page.get(call_id, arrived[sid]))
    decided = await decisions(engine)
    found: dict[str, Outcome] = {}
    for event_id, received_at, device_time, call_id in stored:
        outcome = found.setdefault(event_id, Outcome())
        outcome.copies += 1
        outcome.stored_at = received_at.timestamp()
        outcome.device_time = device_time.timestamp()
        if call_id is not None:
            outcome.call_id = call_id
            action, at = decided.get(call_id, ("", None))
            outcome.action = action
            outcome.decided_at = at.timestamp() if at is not None else None
            outcome.paged_at = first_page.get(call_id)
    return found


async def texts_waiting(engine: AsyncEngine, *, due: bool = True) -> list[Any]:
    """The texts not sent yet (``due``: those due by now, not those held back for their
    phone's sms.recipient_limit): each one's id, recipient, attempts and last error."""
    query = select(
        m.OutboxItem.id,
        m.OutboxItem.recipient,
        m.OutboxItem.attempts,
        m.OutboxItem.next_attempt_at,
        m.OutboxItem.last_error,
    ).where(m.OutboxItem.channel == SMS, m.OutboxItem.state == m.OutboxState.PENDING)
    if due:
        query = query.where(m.OutboxItem.next_attempt_at <= datetime.now(UTC))
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def settle(
    engine: AsyncEngine,
    fake: FakeTwilio,
    presses: Sequence[Press],
    within_s: float,
    tag: str = TAG,
) -> dict[str, Outcome]:
    """Wait until every acknowledged press is stored and decided and no text due waits
    to be sent, or ``within_s``; what became of each press (``tag`` as for ``outcomes``)
    then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    acked = [press.event_id for press in presses if press.acked]
    while True:
        found = await outcomes(engine, fake, tag)
        undecided = sum(found.get(e, Outcome()).decided_at is None for e in acked)
        waiting = await texts_waiting(engine)
        if not undecided and not waiting:
            return found
        if loop.time() > deadline:
            progress(
                f"gave up waiting: {undecided} presses without a dispatch decision, "
                f"{len(waiting)} texts not sent"
            )
            for row in waiting[:5]:
                progress(f"  not sent: {row}")
            return found
        await asyncio.sleep(0.25)


async def calls_doubled(engine: AsyncEngine, households: Sequence[str]) -> int:
    """Households that pressed once and have more than one call."""
    query = (
        select(m.Household.code)
        .join(m.Call, m.Call.household_id == m.Household.id)
        .where(m.Household.code.in_(list(households)))
        .group_by(m.Household.code)
        .having(func.count() > 1)
    )
    async with engine.connect() as connection:
        return len((await connection.execute(query)).all())


def pages_doubled(fake: FakeTwilio) -> list[tuple[str, str]]:
    """Texts that reached the fake Twilio more than once: the same body to the same number."""
    sent = Counter((message.to, message.body) for message in fake.messages)
    return [text for text, times in sent.items() if times > 1]


def write_presses(path: Path, presses: Sequence[Press], found: dict[str, Outcome]) -> None:
    """Every press and what became of it, one JSON object a line (wall-clock seconds)."""
    with path.open("w") as out:
        for press in presses:
            outcome = found.get(press.event_id, Outcome())
            out.write(json.dumps({**vars(press), **vars(outcome)}) + "\n")


# --- the figures ----------------------------------------------------------------------------


def latencies(name: str, values_s: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p99 and max in milliseconds as ``{name}_p50_ms_…``-style keys, and the count."""
    values = [v * 1000 for v in values_s]
    head, _, tail = name.partition("@")
    return {
        f"{head}_p50_ms_{tail}": nearest_rank(values, 50),
        f"{head}_p99_ms_{tail}": nearest_rank(values, 99),
        f"{head}_max_ms_{tail}": round(max(values), 1) if values else None,
        f"{head}_count_{tail}": len(values),
    }


@dataclass(frozen=True)
class Placed:
    """One decided press: seconds to its dispatch decision (and page), and where it fell."""

    to_dispatch_s: float
    to_page_s: float | None
    phase: str
    held: bool  # it waited in a killed server's session until that server was back
    in_window: bool  # made in a takeover's window, or before a kill and decided after it
    while_down: bool  # made while a killed server was down


def place(
    press: Press, outcome: Outcome, takeovers: Sequence[Takeover], after_s: float
) -> Placed | None:
    """Where a press fell, once it was decided. In a takeover's window: made in it, or
    made before the kill and not through by then (decided and, for a carer dispatched,
    paged). Held: made while a killed server was down (or just before its kill) and
    stored late (HELD_S)."""
    if outcome.decided_at is None or outcome.stored_at is None:
        return None
    pressed, stored, decided = press.pressed_at, outcome.stored_at, outcome.decided_at
    through = max(decided, outcome.paged_at or decided)
    return Placed(
        decided - pressed,
        None if outcome.paged_at is None else outcome.paged_at - pressed,
        press.phase,
        stored - pressed > HELD_S
        and any(t.killed_at - IN_FLIGHT_S <= pressed < t.back_at for t in takeovers),
        any(
            t.killed_at <= pressed <= t.taken_at + after_s or pressed < t.killed_at <= through
            for t in takeovers
        ),
        any(t.killed_at <= pressed < t.back_at for t in takeovers),
    )


def report(
    after_s: float,
    presses: Sequence[Press],
    found: dict[str, Outcome],
    takeovers: Sequence[Takeover],
    doubled_calls: int,
    doubled_pages: int,
) -> dict[str, Any]:
    acked = [press for press in presses if press.acked]
    lost = [press.event_id for press in acked if press.event_id not in found]
    placed = [
        p
        for press in acked
        if press.event_id in found
        and (p := place(press, found[press.event_id], takeovers, after_s)) is not None
    ]
    cluster = [p for p in placed if p.phase == "cluster"]
    single = [p for p in placed if p.phase == "single"]
    window = [p for p in cluster if p.in_window]
    steady = [p for p in cluster if not p.in_window and not p.held]
    took = sorted(t.took_s for t in takeovers)
    back = sorted(t.back_at - t.killed_at for t in takeovers)
    actions = Counter(found[p.event_id].action for p in acked if p.event_id in found)
    return {
        "kills": len(takeovers),
        "takeover_p50_s": round(took[(len(took) - 1) // 2], 3) if took else None,
        "takeover_max_s": round(took[-1], 3) if took else None,
        "killed_server_back_p50_s": round(back[(len(back) - 1) // 2], 2) if back else None,
        "takeovers": [t.as_dict() for t in takeovers],
        "events_published": len(acked),
        "presses_not_acknowledged": len(presses) - len(acked),
        "events_lost": len(lost),
        "events_doubled": sum(outcome.copies > 1 for outcome in found.values()),
        "calls_doubled": doubled_calls,
        "presses_without_dispatch": len(acked) - len(lost) - len(placed),
        "pages_doubled": doubled_pages,
        **latencies("press_to_dispatch@single", [p.to_dispatch_s for p in single]),
        **latencies("press_to_dispatch@takeover", [p.to_dispatch_s for p in window]),
        **latencies(
            "press_to_dispatch@takeover_live", [p.to_dispatch_s for p in window if not p.held]
        ),
        **latencies("press_to_dispatch@takeover_held", [p.to_dispatch_s for p in window if p.held]),
        **latencies("press_to_dispatch@held", [p.to_dispatch_s for p in cluster if p.held]),
        **latencies("press_to_dispatch@cluster_steady", [p.to_dispatch_s for p in steady]),
        **latencies("press_to_page@single", [p.to_page_s for p in single if p.to_page_s]),
        **latencies("press_to_page@cluster_steady", [p.to_page_s for p in steady if p.to_page_s]),
        **latencies("press_to_page@takeover", [p.to_page_s for p in window if p.to_page_s]),
        **latencies(
            "press_to_page@takeover_live",
            [p.to_page_s for p in window if p.to_page_s and not p.held],
        ),
        "presses_while_a_server_was_down": sum(p.while_down for p in cluster),
        "presses_held_for_a_restart": sum(p.held for p in cluster),
        "dispatched": actions.get("dispatched", 0),
        "nobody_to_send": actions.get("nobody_to_send", 0),
        "window_after_takeover_s": after_s,
        "lost_event_ids": lost[:10],
    }
