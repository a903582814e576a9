"""The operators' live board, read once for every board: the snapshot (over HTTP as
``GET /api/board``, and first on every feed), each call change rendered once however many
boards watch (the first board to need it reads it, the others are handed the same
answer, so twenty boards cost the database what one does), carers and stations, today's
service levels; and the board's other reads (a call's candidates, a day's service
levels). Each connected board's socket is in board_feed.py. The messages and their rules
are in docs/board.md, "Data the board reads".
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import WSCloseCode, web
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import FAILED_ASSIGNMENT, CallState
from callcenter.domain.dispatch import CarerSnapshot, CarerState, Tier, rank_carers
from callcenter.domain.geo import Transport
from callcenter.engine import repository
from callcenter.engine.district import Registry
from callcenter.engine.feed import Update
from callcenter.web import audit, views
from callcenter.web.contract import (
    DAY_WORDS,
    MAX_ID,
    CallPath,
    Day,
    Parameters,
    contract,
    path_of,
    query_of,
)
from callcenter.web.duty import OperatorOnDuty
from callcenter.web.errors import ApiError, not_found
from callcenter.web.health import board_view
from callcenter.web.responses import json_reply
from callcenter.web.service_levels import ServiceLevels, service_levels
from callcenter.web.state import BOARD, CONFIG, DATABASE, DESK, OPERATOR

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock
    from callcenter.config import Config
    from callcenter.engine.desk import Desk
    from callcenter.health import Health

routes = web.RouteTableDef()

# Service levels are computed at most this often for the boards (feed and GET /api/board).
SERVICE_FRESH_S = 2.0
# Rendered call changes remembered so every board is handed the first board's read.
RENDERED_MEMORY = 1024
_CLOSED_STATES = frozenset({CallState.RESOLVED.value, CallState.CANCELLED.value})
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A message for a board: its type, its body as JSON (without type and seq), and the
# codes of the households whose data it carries (for the audit log).
Message = tuple[str, str, tuple[str, ...]]


def households_of(cards: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The codes of the households these call cards show."""
    return tuple(card["household"]["code"] for card in cards if card["household"])


class BoardData:
    """What every board of one server reads, shared between them: the snapshot, rendered
    call changes (one read per change), carers and service levels."""

    def __init__(
        self, config: Config, engine: AsyncEngine, clock: Clock, desk: Desk, health: Health
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._desk = desk
        self._health = health
        self.zone = ZoneInfo(config.district.timezone)
        self._circle_s = config.calls.service_circle_s
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # Keyed by the Update object's identity (each board's queue holds the same
        # object); the Update is kept alongside so its id cannot be reused meanwhile.
        self._rendered: OrderedDict[int, tuple[Update, asyncio.Future[Message]]] = OrderedDict()
        self._carers: tuple[object, asyncio.Future[str]] | None = None
        self._operators: tuple[object, asyncio.Future[str]] | None = None
        self._service: tuple[float, date, asyncio.Future[dict[str, Any]]] | None = None
        # The last snapshot read for the feed: (loop time it started, its JSON and the
        # households it shows).
        self._snapshot: tuple[float, asyncio.Future[tuple[str, tuple[str, ...]]]] | None = None
        # How many times a call change was read from the database (for the benchmark).
        self.call_reads = 0

    # --- reading -----------------------------------------------------------------

    def _session(self) -> AsyncSession:
        return AsyncSession(self._engine)

    async def _registry(self) -> Registry:
        return await self._desk.district.registry()

    def today(self) -> date:
        """Today in the district's time zone, by the server's clock."""
        return self._clock.now().astimezone(self.zone).date()

    async def board_calls(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """List entries with the household's position and residents added."""
        registry = await self._registry()
        if any(
            e["household"] and e["household"]["code"] not in registry.households_by_code
            for e in entries
        ):
            # A household enrolled since the registry was read.
            self._desk.district.invalidate()
            registry = await self._registry()
        return [_board_call(entry, registry) for entry in entries]

    async def snapshot(self) -> dict[str, Any]:
        """The whole board as of now (without ``seq``)."""
        async with self._session() as session:
            entries = await views.list_calls(session, views.CallFilter.OPEN, closed_limit=0)
        calls = await self.board_calls(entries)
        carers = await self._desk.carer_snapshots()
        registry = await self._registry()
        return {
            "at": views.iso(self._clock.now()),
            "timezone": self.zone.key,
            "calls": calls,
            "carers": views.carers_view(carers, registry),
            "stations": stations_view(carers, registry),
            "service": await self.service(),
            "health": self.health(),
            "operators": await self.operators(),
        }

    async def operators(self) -> list[dict[str, Any]]:
        """Every operator who has been on duty, their duty, calls and offer (web/duty.py)."""
        offers = self._desk.offers
        return [] if offers is None else views.operators_view(await offers.view())

    async def operators_message(self, after: object) -> str:
        """The operators (JSON without type and seq) as of a read made after the change
        ``after``; boards that saw the same last change share one read."""
        if self._operators is None or self._operators[0] is not after:
            self._operators = (after, asyncio.ensure_future(self._read_operators()))
        memo = self._operators
        try:
            return await asyncio.shield(memo[1])
        except Exception:
            if self._operators is memo:
                self._operators = None
            raise

    async def _read_operators(self) -> str:
        return dumps({"operators": await self.operators()})

    def health(self) -> dict[str, Any]:
        """The server's parts stuck for too long, as of the last look (no database read:
        a board must hear of a stuck database too)."""
        return board_view(self._health.latest)

    async def snapshot_json(self, since: float) -> tuple[str, tuple[str, ...]]:
        """The snapshot as JSON, from a read that started at loop time ``since`` or
        later: boards connecting together share one read, and each still sees
        everything that changed after it subscribed (those changes follow on its feed)."""
        memo = self._snapshot
        if memo is None or memo[0] < since:
            started = asyncio.get_running_loop().time()
            memo = (started, asyncio.ensure_future(self._read_snapshot_json()))
            self._snapshot = memo
        try:
            return await asyncio.shield(memo[1])
        except Exception:
            if self._snapshot is memo:
                self._snapshot = None
            raise

    async def _read_snapshot_json(self) -> tuple[str, tuple[str, ...]]:
        snapshot = await self.snapshot()
        return dumps(snapshot), households_of(snapshot["calls"])

    async def _render_call(self, update: Update) -> Message:
        """The message for one call change: ``call`` with the call as it now is, or
        ``closed``; (type, body as JSON without type and seq, the household shown)."""
        assert update.call_id is not None
        state = update.detail.get("state")
        if state in _CLOSED_STATES:
            # The feed says how it ended; nothing to read.
            return "closed", dumps({"call_id": update.call_id, "state": state}), ()
        self.call_reads += 1
        async with self._session() as session:
            found = await views.call_summaries(session, [update.call_id])
        if not found:  # calls are never deleted; only a foreign database gets here
            return "closed", dumps({"call_id": update.call_id, "state": "cancelled"}), ()
        entry = found[0]
        if entry["closed_at"] is not None:  # closed since this update was published
            return "closed", dumps({"call_id": entry["id"], "state": entry["state"]}), ()
        card = (await self.board_calls([entry]))[0]
        return "call", dumps({"call": card}), households_of([card])

    async def call_message(self, update: Update) -> Message:
        """(type, body, households) of the message for a call update, read once for all
        boards."""
        key = id(update)
        remembered = self._rendered.get(key)
        if remembered is None or remembered[0] is not update:
            future = asyncio.ensure_future(self._render_call(update))
            remembered = (update, future)
            self._rendered[key] = remembered
            while len(self._rendered) > RENDERED_MEMORY:
                self._rendered.popitem(last=False)
        try:
            return await asyncio.shield(remembered[1])
        except Exception:
            # A failed read is not remembered: the next board tries again.
            if self._rendered.get(key) is remembered:
                del self._rendered[key]
            raise

    async def carers_message(self, after: object) -> str:
        """Carers and stations (JSON without type and seq) as of a read made after the
        change ``after``; boards that saw the same last change share one read."""
        if self._carers is None or self._carers[0] is not after:
            self._carers = (after, asyncio.ensure_future(self._read_carers()))
        memo = self._carers
        try:
            return await asyncio.shield(memo[1])
        except Exception:
            if self._carers is memo:
                self._carers = None
            raise

    async def _read_carers(self) -> str:
        carers = await self._desk.carer_snapshots()
        registry = await self._registry()
        return dumps(
            {
                "carers": views.carers_view(carers, registry),
                "stations": stations_view(carers, registry),
            }
        )

    async def service(self) -> dict[str, Any]:
        """Today's service levels for the boards: one computation serves every board
        asking within SERVICE_FRESH_S."""
        today = self.today()
        memo = self._service
        if memo is None or memo[1] != today or time.monotonic() - memo[0] > SERVICE_FRESH_S:
            memo = (time.monotonic(), today, asyncio.ensure_future(self.read_service(today)))
            self._service = memo
        try:
            return await asyncio.shield(memo[2])
        except Exception:
            if self._service is memo:
                self._service = None
            raise

    async def read_service(self, day: date) -> dict[str, Any]:
        """Service levels of ``day``, computed now."""
        carers = await self._desk.carer_snapshots()
        registry = await self._registry()
        async with self._session() as session:
            return await service_levels(
                session,
                day=day,
                zone=self.zone,
                now=self._clock.now(),
                circle_s=self._circle_s,
                carers=carers,
                registry=registry,
            )

    async def close_all(self) -> None:
        """Close every board's socket with 1001 (going away): the server is stopping."""
        sockets = list(self.sockets)
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for ws in sockets
            ),
            return_exceptions=True,
        )


def board_data(app: web.Application) -> BoardData:
    """The boards' shared data of this application (made in build_app)."""
    return app[BOARD]


async def close_boards(app: web.Application) -> None:
    """``on_shutdown`` hook: tell every connected board the server is going away."""
    await app[BOARD].close_all()


def _board_call(entry: dict[str, Any], registry: Registry) -> dict[str, Any]:
    if entry["household"] is None:  # a call of no household: nothing to add
        return entry
    household = registry.households_by_code.get(entry["household"]["code"])
    return {
        **entry,
        "household": {
            **entry["household"],
            "position": (
                {"lat": household.place.lat, "lon": household.place.lon} if household else None
            ),
            "residents": household.residents if household else "",
            # The household's home station, for the board's station filter.
            "home_station": (
                registry.stations[household.home_station_id].code
                if household and household.home_station_id in registry.stations
                else None
            ),
        },
    }


def stations_view(carers: Sequence[CarerSnapshot], registry: Registry) -> list[dict[str, Any]]:
    """Every station with how many of its carers are on shift now and how many are free."""
    on_shift: dict[int, int] = {}
    free: dict[int, int] = {}
    for carer in carers:
        if carer.state is not CarerState.OFF_SHIFT:
            on_shift[carer.station_id] = on_shift.get(carer.station_id, 0) + 1
        if carer.state is CarerState.FREE:
            free[carer.station_id] = free.get(carer.station_id, 0) + 1
    return [
        {
            "code": s.code,
            "name": s.name,
            "position": {"lat": s.place.lat, "lon": s.place.lon},
            "on_shift": on_shift.get(s.id, 0),
            "free": free.get(s.id, 0),
        }
        for s in sorted(registry.stations.values(), key=lambda s: s.code)
    ]


# --- the answers' shapes and the routes -------------------------------------


class BoardHousehold(views.Shape):
    code: str
    address: str
    position: views.Position | None
    residents: str = Field(description="the residents' names")
    home_station: str | None = Field(description="the household's home station's code")


class BoardCall(views.CallSummary):
    household: BoardHousehold | None  # type: ignore[assignment]


class StationView(views.Shape):
    code: str
    name: str
    position: views.Position
    on_shift: int
    free: int


class StuckPart(views.Shape):
    part: str = Field(
        description="ingest, database, follower, timers, outbox, sms or device_commands"
    )
    since: datetime | None = Field(description="since when it has been stuck")
    detail: str


class BoardHealth(views.Shape):
    """The server's parts stuck for too long, as /healthz judges them (docs/board.md)."""

    at: datetime | None = Field(description="when they were last looked at; null before")
    stuck_after_s: float | None = None
    failing: list[StuckPart]


class BoardSnapshot(views.Shape):
    """The whole board at once: open calls most urgent first, carers, stations and
    today's service levels."""

    seq: int = Field(description="0: it belongs to no feed connection")
    at: datetime
    timezone: str
    calls: list[BoardCall]
    carers: list[views.CarerView]
    stations: list[StationView]
    service: ServiceLevels
    health: BoardHealth
    operators: list[OperatorOnDuty] = Field(
        description="every operator who has been on duty (GET /api/operators/duty)"
    )


class Candidate(views.Shape):
    code: str
    name: str
    station: str
    tier: str = Field(description="home, backup or other")
    travel_min: float
    distance_m: int
    within_circle: bool
    state: CarerState
    transport: Transport
    skills: list[str]
    position: views.Position


class PassedOver(views.Shape):
    """A carer who failed this call: not offered for it again, but an operator may still
    pick them by hand."""

    code: str
    name: str
    why: str = Field(description="declined, no_answer or unreachable: how they failed it")


class Candidates(views.Shape):
    """The free carers the desk would send, best first; those who already failed this
    call are left out (``passed_over``)."""

    call_id: int
    household: str
    skills: list[str]
    service_circle_min: float
    candidates: list[Candidate]
    passed_over: list[PassedOver]


class DayQuery(Parameters):
    day: Day | None = Field(None, description=f"{DAY_WORDS} (default today)")


@routes.get("/api/board")
@contract(answers={200: BoardSnapshot}, tag="board")
async def board_snapshot(request: web.Request) -> web.Response:
    """The whole board at once: open calls most urgent first, carers, stations and
    today's service levels (``seq`` is 0: it belongs to no feed connection)."""
    snapshot = await board_data(request.app).snapshot()
    await audit.record_shown(
        request,
        actor=str(request[OPERATOR].actor),
        action="read_board",
        households=households_of(snapshot["calls"]),
    )
    return json_reply({"seq": 0, **snapshot})


@routes.get("/api/calls/{call_id}/candidates")
@contract(
    path=CallPath,
    answers={
        200: Candidates,
        404: "no such call",
        409: "no_household: the call belongs to no household, so no carer is a candidate",
    },
    tag="board",
)
async def candidates(request: web.Request) -> web.Response:
    """The free carers the desk would send to this call, best first, with tier and
    estimated travel time, so an operator can send the best or choose by hand."""
    call_id = path_of(request, CallPath).call_id
    desk = request.app[DESK]
    registry = await desk.district.registry()
    call = None
    if 0 < call_id <= MAX_ID:
        async with AsyncSession(request.app[DATABASE]) as session:
            call = await repository.load(session, call_id, registry.carer_codes, lock=False)
    if call is None:
        raise not_found(f"there is no call {call_id}")
    if call.household_id is None:
        raise ApiError(
            409, "no_household", f"call {call_id} belongs to no household: no door to send to"
        )
    household = registry.households.get(call.household_id)
    if household is None:
        desk.district.invalidate()
        registry = await desk.district.registry()
        household = registry.households[call.household_id]
    await audit.record(
        request,
        actor=str(request[OPERATOR].actor),
        household_id=household.id,
        action="read_candidates",
        detail={"call_id": call.id},
    )
    circle_s = request.app[CONFIG].calls.service_circle_s
    # A carer who declined, did not answer or could not be reached on this call is not
    # offered for it again (the desk's own paging skips them too); picking by hand still can.
    failed = call.failed_carers
    ranked = rank_carers(
        await desk.carer_snapshots(),
        household.destination(),
        skills=call.policy.skills,
        exclude=failed,
        circle_s=circle_s,
    )
    # Each such carer once, with how they last failed it.
    passed_over = {a.carer_id: a for a in call.assignments if a.state in FAILED_ASSIGNMENT}
    return json_reply(
        {
            "call_id": call.id,
            "household": household.code,
            "skills": list(call.policy.skills),
            "service_circle_min": round(circle_s / 60, 1),
            "candidates": [
                {
                    "code": c.carer.code,
                    "name": c.carer.name,
                    "station": registry.stations[c.carer.station_id].code,
                    "tier": Tier(c.tier).name.lower(),
                    "travel_min": round(c.travel_s / 60, 1),
                    "distance_m": round(c.distance_m),
                    "within_circle": c.within_circle,
                    "state": c.carer.state.value,
                    "transport": c.carer.transport.value,
                    "skills": sorted(c.carer.skills),
                    "position": {"lat": c.carer.position.lat, "lon": c.carer.position.lon},
                }
                for c in ranked
            ],
            "passed_over": [
                {
                    "code": a.carer_code,
                    "name": info.name if (info := registry.carers.get(a.carer_id)) else "",
                    "why": a.state.value,
                }
                for a in passed_over.values()
            ],
        }
    )


@routes.get("/api/service-levels")
@contract(query=DayQuery, answers={200: ServiceLevels}, tag="board")
async def service_levels_of_day(request: web.Request) -> web.Response:
    """Service levels of ``?day=YYYY-MM-DD`` (default today in the district's zone)."""
    data = board_data(request.app)
    day = query_of(request, DayQuery).day
    return json_reply(await data.read_service(day or data.today()))
