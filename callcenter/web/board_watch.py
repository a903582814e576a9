"""Closing the open boards whose sign-in has ended.

A board's WebSocket is authorised once, when it opens; after that it would go on
receiving residents' details for as long as it stays connected. So every server checks
the sign-ins of its own open boards against the database every
``web.board_session_check_s`` (one query for all of them), and closes each board whose
sign-in has ended, for whatever reason and on whichever server: signed out, switched off,
a new password (both delete the person's sessions), the session run out, the API token
replaced. The close code (4401) and reason tell the board's page to show the operator
they are signed out instead of reconnecting. A change made on this server asks for a
check at once rather than at the next tick.

A change of role does not close a board: every board is sent the same feed, and every
action is checked against the role as it is when the request comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m
from callcenter.web.sessions import is_ended
from callcenter.web.state import OPEN_BOARDS, Credential

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock
    from callcenter.config import WebConfig

log = logging.getLogger("callcenter.board")

# The close code a board reads as "your sign-in has ended" (4000-4999: the application's).
SIGNED_OUT_CODE = 4401


class Ended(enum.StrEnum):
    """Why a board's sign-in ended: the close message its page is sent."""

    SIGNED_OUT = "signed_out"  # signed out, or a new password ended every session
    SWITCHED_OFF = "switched_off"
    EXPIRED = "expired"  # unused too long, or too long since sign-in
    TOKEN_REPLACED = "token_replaced"  # a feed opened with an API token that was replaced


@dataclass(frozen=True)
class _Board:
    ws: web.WebSocketResponse
    operator_id: int
    credential: Credential


class OpenBoards:
    """This server's open boards and what each signed in with; closes those whose
    sign-in has ended."""

    def __init__(self, config: WebConfig, engine: AsyncEngine, clock: Clock) -> None:
        self._config = config
        self._engine = engine
        self._clock = clock
        self._boards: dict[int, _Board] = {}
        self._check_now = asyncio.Event()
        self._closing: set[asyncio.Task[bool]] = set()
        # Told of each operator whose board was closed for an ended sign-in (web/app.py:
        # they go off duty).
        self.on_ended: Callable[[int], Awaitable[object]] | None = None

    def add(self, ws: web.WebSocketResponse, operator_id: int, credential: Credential) -> None:
        self._boards[id(ws)] = _Board(ws, operator_id, credential)

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._boards.pop(id(ws), None)

    def check_soon(self) -> None:
        """A sign-in may have ended here: check now rather than at the next tick."""
        self._check_now.set()

    async def run(self) -> None:
        """Check the open boards every ``web.board_session_check_s`` until cancelled."""
        failing = False
        while True:
            every = self._config.board_session_check_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._check_now.wait()
            self._check_now.clear()
            try:
                await self.check()
            except Exception:
                # Boards stay open while the database cannot say; the next tick tries
                # again (a database that is down stops their feed anyway). Said once,
                # not twice a second for as long as the database is down.
                if not failing:
                    log.exception(
                        "checking the open boards' sign-ins failed; boards stay open, and "
                        "the check is tried again every %g s",
                        every,
                    )
                failing = True
            else:
                if failing:
                    log.info("checking the open boards' sign-ins works again")
                failing = False

    async def check(self) -> int:
        """Close every open board whose sign-in has ended; how many were closed."""
        boards = list(self._boards.values())
        if not boards:
            return 0
        ended = await self._ended(boards)
        for board, why in ended:
            self.discard(board.ws)
            log.info(
                "closing a board of operator %d: its sign-in ended (%s)", board.operator_id, why
            )
            # Closing waits for the browser's answer: not here, where it would hold up
            # the checks of everyone else's boards.
            task = asyncio.create_task(
                board.ws.close(code=SIGNED_OUT_CODE, message=why.value.encode()),
                name="callcenter.board.sign_out",
            )
            self._closing.add(task)
            task.add_done_callback(self._closed)
        if self.on_ended is not None:
            for operator_id in sorted({board.operator_id for board, _ in ended}):
                try:
                    await self.on_ended(operator_id)
                except Exception:
                    log.exception("taking operator %d off duty failed", operator_id)
        return len(ended)

    def _closed(self, task: asyncio.Task[bool]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a signed-out board went away while closing: %s", task.exception())

    async def _ended(self, boards: Sequence[_Board]) -> list[tuple[_Board, Ended]]:
        """The boards whose sign-in has ended, and why: one query for all of them."""
        sessions = {b.credential.digest for b in boards if b.credential.kind == "session"}
        query = (
            select(m.Operator.id, m.Operator.active, m.Operator.token_sha256, m.WebSession)
            .outerjoin(
                m.WebSession,
                and_(
                    m.WebSession.operator_id == m.Operator.id,
                    m.WebSession.token_sha256.in_(sessions),
                ),
            )
            .where(m.Operator.id.in_({b.operator_id for b in boards}))
        )
        async with AsyncSession(self._engine) as session:
            rows = (await session.execute(query)).all()
        active = {operator_id: is_active for operator_id, is_active, _, _ in rows}
        tokens = {operator_id: token for operator_id, _, token, _ in rows}
        live = {row.token_sha256: row for *_, row in rows if row is not None}
        now = self._clock.now()
        idle = timedelta(hours=self._config.session_idle_hours)
        ended = []
        for board in boards:
            digest = board.credential.digest
            why = None
            if not active.get(board.operator_id, False):
                why = Ended.SWITCHED_OFF
            elif board.credential.kind == "token":
                if tokens.get(board.operator_id) != digest:
                    why = Ended.TOKEN_REPLACED
            elif digest not in live:
                why = Ended.SIGNED_OUT
            elif is_ended(now, live[digest], idle):
                why = Ended.EXPIRED
            if why is not None:
                ended.append((board, why))
        return ended

    async def close(self) -> None:
        """Let closes in hand finish (briefly): the server is stopping."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)


async def watching(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the open boards' sign-ins checked for as long as the API runs."""
    boards = app[OPEN_BOARDS]
    task = asyncio.create_task(boards.run(), name="callcenter.board.sign_ins")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await boards.close()
