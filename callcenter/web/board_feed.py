"""The board's live feed: one WebSocket per board (``GET /api/board/feed``).

The desk publishes "call N changed" on its feed after every commit; each connected board
subscribes to that feed and is sent the call as it now is, read once for all boards by
board.py's BoardData. A board that cannot keep up is never left silently stale: it is
told ``resync`` and sent a fresh snapshot. The messages and their rules are in
docs/board.md, "Data the board reads".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.engine.feed import Update
from callcenter.web import audit, views
from callcenter.web.board import BoardData, Message, board_data, dumps
from callcenter.web.health import board_view
from callcenter.web.state import CREDENTIAL, DESK, OPEN_BOARDS, OPERATOR

log = logging.getLogger("callcenter.board")

routes = web.RouteTableDef()

# Messages waiting to go out to one board; a board this far behind is resynced.
SEND_QUEUE = 256
# At most one carers message per board in this long: a burst of calls moves many carers.
CARERS_EVERY_S = 0.25
# Service levels go out this often (real time: a board on screen ages in real time).
SERVICE_EVERY_S = 10.0
# Feed audit rows are written at most this often per board (after what they record is
# sent: an alarm never waits for the audit log).
AUDIT_EVERY_S = 1.0


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
        self._operators_due = asyncio.Event()
        self._last_duty_change: object = None
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
            self._operators,
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
                self._offer("alarm", dumps(alarm))
                continue
            if update.kind == "operators":
                self._last_duty_change = update
                self._operators_due.set()
                continue
            if update.kind == "health":
                self._offer("health", dumps({"health": board_view(update.detail["report"])}))
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

    async def _operators(self) -> None:
        """Operators' duty and offers, at most one message every CARERS_EVERY_S."""
        while True:
            await self._operators_due.wait()
            self._operators_due.clear()
            try:
                self._offer("operators", await self._data.operators_message(self._last_duty_change))
            except Exception:
                log.exception("reading the operators on duty for the board failed")
            await asyncio.sleep(CARERS_EVERY_S)

    async def _service(self) -> None:
        while True:
            await asyncio.sleep(SERVICE_EVERY_S)
            try:
                self._offer("service", dumps({"service": await self._data.service()}))
            except Exception:
                log.exception("computing service levels for the board failed")


# --- the route -----------------------------------------------------------------


@routes.get("/api/board/feed")
async def board_feed(request: web.Request) -> web.WebSocketResponse:
    """The board's WebSocket: a snapshot, then every change (see docs/board.md)."""
    data = board_data(request.app)
    ws = web.WebSocketResponse(heartbeat=15)
    await ws.prepare(request)
    data.sockets.add(ws)
    open_boards = request.app[OPEN_BOARDS]
    open_boards.add(ws, request[OPERATOR].id, request[CREDENTIAL])
    # A board connected: its operator can be offered calls (docs/calls.md, "Offers").
    offers = request.app[DESK].offers
    if offers is not None:
        offers.board_opened(request[OPERATOR].id)
    try:
        # Subscribed before the snapshot is read, so no change falls between the two.
        async with request.app[DESK].feed.subscribe() as updates:
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
        if offers is not None:
            offers.board_closed(request[OPERATOR].id)
    if not ws.closed:
        await ws.close()
    return ws
