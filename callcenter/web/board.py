"""The operators' live board: one snapshot over HTTP, then changes over a WebSocket.

The desk publishes "call N changed" on its feed after every commit; each connected board
subscribes to that feed and is sent the call as it now is. A call is read once per
change however many boards watch (the first board to need it reads it, the others are
handed the same answer), so twenty boards cost the database what one does. A board that
cannot keep up is never left silently stale: it is told ``resync`` and sent a fresh
snapshot. The messages and their rules are in docs/board.md, "Data the board reads".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import CallState
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
from callcenter.web.errors import not_found
from callcenter.web.health import board_view
from callcenter.web.replies import json_reply
from callcenter.web.service_levels import ServiceLevels, service_levels
from callcenter.web.state import BOARD, CREDENTIAL, OPEN_BOARDS, OPERATOR, SERVER

if TYPE_CHECKING:
    from callcenter.app import Running

log = logging.getLogger("callcenter.board")

routes = web.RouteTableDef()

# Messages waiting to go out to one board; a board this far behind is resynced.
SEND_QUEUE = 256
# At most one carers message per board in this long: a burst of calls moves many carers.
CARERS_EVERY_S = 0.25
# Service levels go out this often (real time: a board on screen ages in real time).
SERVICE_EVERY_S = 10.0
# Service levels are computed at most this often for the boards (feed and GET /api/board).
SERVICE_FRESH_S = 2.0
# Rendered call changes remembered so every board is handed the first board's read.
RENDERED_MEMORY = 1024
# Feed audit rows are written at most this often per board (after what they record is
# sent: an alarm never waits for the audit log).
AUDIT_EVERY_S = 1.0
_CLOSED_STATES = frozenset({CallState.RESOLVED.value, CallState.CANCELLED.value})
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A message for a board: its type, its body as JSON (without type and seq), and the
# codes of the households whose data it carries (for the audit log).
Message = tuple[str, str, tuple[str, ...]]


def households_of(cards: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The codes of the households these call cards show."""
    return tuple(card["household"]["code"] for card in cards)


class BoardData:
    """What every board of one server reads, shared between them: the snapshot, rendered
    call changes (one read per change), carers and service levels."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.zone = ZoneInfo(server.config.district.timezone)
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # Keyed by the Update object's identity (each board's queue holds the same
        # object); the Update is kept alongside so its id cannot be reused meanwhile.
        self._rendered: OrderedDict[int, tuple[Update, asyncio.Future[Message]]] = OrderedDict()
        self._carers: tuple[object, asyncio.Future[str]] | None = None
        self._service: tuple[float, date, asyncio.Future[dict[str, Any]]] | None = None
        # The last snapshot read for the feed: (loop time it started, its JSON and the
        # households it shows).
        self._snapshot: tuple[float, asyncio.Future[tuple[str, tuple[str, ...]]]] | None = None
        # How many times a call change was read from the database (for the benchmark).
        self.call_reads = 0

    # --- reading -----------------------------------------------------------------

    def _session(self) -> AsyncSession:
        return AsyncSession(self.server.engine)

    async def _registry(self) -> Registry:
        return await self.server.desk.district.registry()

    def today(self) -> date:
        """Today in the district's time zone, by the server's clock."""
        return self.server.clock.now().astimezone(self.zone).date()

    async def board_calls(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """List entries with the household's position and residents added."""
        registry = await self._registry()
        if any(e["household"]["code"] not in registry.households_by_code for e in entries):
            # A household enrolled since the registry was read.
            self.server.desk.district.invalidate()
            registry = await self._registry()
        return [_board_call(entry, registry) for entry in entries]

    async def snapshot(self) -> dict[str, Any]:
        """The whole board as of now (without ``seq``)."""
        async with self._session() as session:
            entries = await views.list_calls(session, views.CallFilter.OPEN, closed_limit=0)
        calls = await self.board_calls(entries)
        carers = await self.server.desk.carer_snapshots()
        registry = await self._registry()
        return {
            "at": views.iso(self.server.clock.now()),
            "timezone": self.zone.key,
            "calls": calls,
            "carers": views.carers_view(carers, registry),
            "stations": stations_view(carers, registry),
            "service": await self.service(),
            "health": self.health(),
        }

    def health(self) -> dict[str, Any]:
        """The server's parts stuck for too long, as of the last look (no database read:
        a board must hear of a stuck database too)."""
        return board_view(self.server.health.latest)

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
        return _dumps(snapshot), households_of(snapshot["calls"])

    async def _render_call(self, update: Update) -> Message:
        """The message for one call change: ``call`` with the call as it now is, or
        ``closed``; (type, body as JSON without type and seq, the household shown)."""
        assert update.call_id is not None
        state = update.detail.get("state")
        if state in _CLOSED_STATES:
            # The feed says how it ended; nothing to read.
            return "closed", _dumps({"call_id": update.call_id, "state": state}), ()
        self.call_reads += 1
        async with self._session() as session:
            found = await views.call_summaries(session, [update.call_id])
        if not found:  # calls are never deleted; only a foreign database gets here
            return "closed", _dumps({"call_id": update.call_id, "state": "cancelled"}), ()
        entry = found[0]
        if entry["closed_at"] is not None:  # closed since this update was published
            return "closed", _dumps({"call_id": entry["id"], "state": entry["state"]}), ()
        card = (await self.board_calls([entry]))[0]
        return "call", _dumps({"call": card}), households_of([card])

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
        carers = await self.server.desk.carer_snapshots()
        registry = await self._registry()
        return _dumps(
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
        carers = await self.server.desk.carer_snapshots()
        registry = await self._registry()
        async with self._session() as session:
            return await service_levels(
                session,
                day=day,
                zone=self.zone,
                now=self.server.clock.now(),
                circle_s=self.server.config.calls.service_circle_s,
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
    household = registry.households_by_code.get(entry["household"]["code"])
    return {
        **entry,
        "household": {
            **entry["household"],
            "position": (
                {"lat": household.place.lat, "lon": household.place.lon} if household else None
            ),
            "residents": household.residents if household else "",
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


# --- one connected board -------------------------------------------------------


_RESYNC: Message = ("resync", "", ())


class BoardConnection:
    """One board's socket: the feed's changes in, messages out through a bounded queue.

    Small loops share the socket: ``follow`` turns feed updates into messages, ``write``
    sends them out in order, the carers and service loops add their periodic messages,
    and ``audit`` writes, at most every AUDIT_EVERY_S, one audit row for the households
    this board was shown for the first time. When the queue overflows (the board reads
    too slowly) everything queued is dropped for one ``resync`` followed by a snapshot
    read when it goes out.
    """

    def __init__(
        self,
        data: BoardData,
        ws: web.WebSocketResponse,
        updates: asyncio.Queue[Update | None],
        request: web.Request,
        *,
        queue_size: int = SEND_QUEUE,
    ) -> None:
        self._data = data
        self._ws = ws
        self._updates = updates
        self._request = request
        self._out: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        self._resync_queued = False
        self._seq = 0
        self._carers_due = asyncio.Event()
        self._last_change: object = None
        # Households this board has been shown (audited or about to be), and those
        # whose audit row is still to be written.
        self._shown: set[str] = set()
        self._unaudited: set[str] = set()
        self._audit_due = asyncio.Event()
        self.resyncs = 0

    def _offer(self, kind: str, body: str, households: tuple[str, ...] = ()) -> None:
        if self._resync_queued:
            return  # the snapshot that follows the resync will cover it
        try:
            self._out.put_nowait((kind, body, households))
        except asyncio.QueueFull:
            self.resync()

    def resync(self) -> None:
        """Drop whatever is queued; the board gets ``resync`` and a fresh snapshot."""
        if self._resync_queued:
            return
        self.resyncs += 1
        while not self._out.empty():
            self._out.get_nowait()
        self._out.put_nowait(_RESYNC)
        self._resync_queued = True

    async def _send(self, kind: str, body: str, households: tuple[str, ...] = ()) -> None:
        self._seq += 1
        head = f'{{"type":"{kind}","seq":{self._seq}'
        await self._ws.send_str(head + "}" if body in ("", "{}") else f"{head},{body[1:]}")
        new = set(households) - self._shown
        if new:
            self._shown |= new
            self._unaudited |= new
            self._audit_due.set()

    async def _send_snapshot(self, since: float) -> None:
        await self._send("snapshot", *await self._data.snapshot_json(since))

    async def run(self, subscribed_at: float) -> None:
        """Serve the board until it disconnects or the server closes its socket."""
        try:
            await self._run(subscribed_at)
        finally:
            # What was shown in the last moments is audited too.
            await asyncio.shield(self._write_audit())

    async def _run(self, subscribed_at: float) -> None:
        await self._send_snapshot(subscribed_at)
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._follow,
            self._write,
            self._carers,
            self._service,
            self._audit,
        ]
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(loop(), name=f"callcenter.board.{loop.__name__.strip('_')}")
                for loop in loops
            ]
            try:
                async for message in self._ws:
                    # Boards send nothing we act on; reading keeps pings and the close
                    # handshake flowing.
                    if message.type is WSMsgType.ERROR:
                        break
            finally:
                for task in running:
                    task.cancel()

    async def _follow(self) -> None:
        while True:
            update = await self._updates.get()
            if update is None:
                log.info("a board fell behind the desk's feed; resyncing it")
                self.resync()
                continue
            if update.kind == "alarm":
                alarm = {"call_id": update.call_id, "at": views.iso(update.at), **update.detail}
                self._offer("alarm", _dumps(alarm))
                continue
            if update.kind == "health":
                self._offer("health", _dumps({"health": board_view(update.detail["report"])}))
                continue
            if update.kind != "call" or update.call_id is None:
                continue
            try:
                self._offer(*await self._data.call_message(update))
            except Exception:
                log.exception("reading call %s for the board failed; resyncing", update.call_id)
                self.resync()
                continue
            self._last_change = update
            self._carers_due.set()

    async def _write(self) -> None:
        while True:
            message = await self._out.get()
            try:
                if message == _RESYNC:
                    # Later changes are queued again from here on; the snapshot read
                    # below sees at least everything they were dropped for.
                    self._resync_queued = False
                    since = asyncio.get_running_loop().time()
                    await self._send("resync", "")
                    await self._send_snapshot(since)
                else:
                    await self._send(*message)
            except ConnectionError:
                await self._ws.close()
                return

    async def _audit(self) -> None:
        while True:
            await self._audit_due.wait()
            self._audit_due.clear()
            await self._write_audit()
            await asyncio.sleep(AUDIT_EVERY_S)

    async def _write_audit(self) -> None:
        """One audit row for the households shown and not yet audited."""
        if not self._unaudited:
            return
        households, self._unaudited = self._unaudited, set()
        try:
            await audit.record_shown(
                self._request,
                actor=str(self._request[OPERATOR].actor),
                action="read_board",
                households=households,
                detail={"feed": True},
            )
        except Exception:
            log.exception("writing the board feed's audit row failed; trying again")
            self._unaudited |= households
            self._audit_due.set()

    async def _carers(self) -> None:
        while True:
            await self._carers_due.wait()
            self._carers_due.clear()
            try:
                self._offer("carers", await self._data.carers_message(self._last_change))
            except Exception:
                log.exception("reading carers for the board failed")
            await asyncio.sleep(CARERS_EVERY_S)

    async def _service(self) -> None:
        while True:
            await asyncio.sleep(SERVICE_EVERY_S)
            try:
                self._offer("service", _dumps({"service": await self._data.service()}))
            except Exception:
                log.exception("computing service levels for the board failed")


# --- routes --------------------------------------------------------------------


class BoardHousehold(views.Shape):
    code: str
    address: str
    position: views.Position | None
    residents: str = Field(description="the residents' names")


class BoardCall(views.CallSummary):
    household: BoardHousehold  # type: ignore[assignment]


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


class Candidates(views.Shape):
    """The free carers the desk would send, best first."""

    call_id: int
    household: str
    skills: list[str]
    service_circle_min: float
    candidates: list[Candidate]


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


@routes.get("/api/board/feed")
async def board_feed(request: web.Request) -> web.WebSocketResponse:
    """The board's WebSocket: a snapshot, then every change (see docs/board.md)."""
    data = board_data(request.app)
    ws = web.WebSocketResponse(heartbeat=15)
    await ws.prepare(request)
    data.sockets.add(ws)
    open_boards = request.app[OPEN_BOARDS]
    open_boards.add(ws, request[OPERATOR].id, request[CREDENTIAL])
    try:
        # Subscribed before the snapshot is read, so no change falls between the two.
        async with request.app[SERVER].desk.feed.subscribe() as updates:
            subscribed_at = asyncio.get_running_loop().time()
            await BoardConnection(data, ws, updates, request).run(subscribed_at)
    except asyncio.CancelledError:
        # The server stopped without closing us first (no on_shutdown hook ran).
        with contextlib.suppress(Exception):
            await asyncio.shield(ws.close(code=WSCloseCode.GOING_AWAY))
        raise
    except ConnectionError:
        pass  # the board went away mid-message
    finally:
        data.sockets.discard(ws)
        open_boards.discard(ws)
    if not ws.closed:
        await ws.close()
    return ws


@routes.get("/api/calls/{call_id}/candidates")
@contract(path=CallPath, answers={200: Candidates, 404: "no such call"}, tag="board")
async def candidates(request: web.Request) -> web.Response:
    """The free carers the desk would send to this call, best first, with tier and
    estimated travel time, so an operator can send the best or choose by hand."""
    call_id = path_of(request, CallPath).call_id
    server = request.app[SERVER]
    desk = server.desk
    registry = await desk.district.registry()
    call = None
    if 0 < call_id <= MAX_ID:
        async with AsyncSession(server.engine) as session:
            call = await repository.load(session, call_id, registry.carer_codes, lock=False)
    if call is None:
        raise not_found(f"there is no call {call_id}")
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
    circle_s = server.config.calls.service_circle_s
    ranked = rank_carers(
        await desk.carer_snapshots(),
        household.destination(),
        skills=call.policy.skills,
        circle_s=circle_s,
    )
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
        }
    )


@routes.get("/api/service-levels")
@contract(query=DayQuery, answers={200: ServiceLevels}, tag="board")
async def service_levels_of_day(request: web.Request) -> web.Response:
    """Service levels of ``?day=YYYY-MM-DD`` (default today in the district's zone)."""
    data = board_data(request.app)
    day = query_of(request, DayQuery).day
    return json_reply(await data.read_service(day or data.today()))
