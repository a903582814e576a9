"""The demo's sign-in lines: the board's address, the demo accounts and their passwords,
in a plain-text box on standard output, repeated every minute until somebody signs in.

The log scrolls at several lines a second while the district's devices connect and
call, so one line with the passwords is soon out of sight. The box is written on
standard output (the log is on standard error), so it reads in a terminal whatever the
log format, and a JSON log stays one object a line. Whether somebody signed in is one
small query a minute on the sign-in attempts the board records (indexed by time), made
only just before the box would be shown again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.store import models as m

log = logging.getLogger("callcenter.demo")

REMIND_EVERY_S = 60.0
_WIDTH = 76


@dataclass(frozen=True)
class SignInLines:
    """What the box says: the board, who signs in with what, and the rest of the demo."""

    board_url: str
    passwords: dict[str, str]
    notes: Sequence[str]


def box(lines: SignInLines, *, repeated: bool, every_s: float = REMIND_EVERY_S) -> str:
    """The sign-in lines in a plain ASCII box (every line the same width)."""
    rows = [
        "callcenter demo: sign in to the call board" + (" (repeated)" if repeated else ""),
        "",
        f"  {lines.board_url}",
        "",
    ]
    rows += [f"  user {user:<18} password {password}" for user, password in lines.passwords.items()]
    rows.append("")
    rows += list(lines.notes)
    rows += ["", f"Passwords are new on every start. This box is shown again {_every(every_s)}"]
    rows += ["until somebody signs in to the board."]
    width = max(_WIDTH, *(len(row) for row in rows))
    edge = "+" + "-" * (width + 2) + "+"
    body = [f"| {row:<{width}} |" for row in rows]
    return "\n".join([edge, *body, edge]) + "\n"


def _every(seconds: float) -> str:
    if seconds == 60:
        return "every minute"
    if seconds % 60 == 0:
        return f"every {seconds / 60:.0f} minutes"
    return f"every {seconds:g} s"


def show(text: str, stream: TextIO | None = None) -> None:
    """Write the box on its own lines at once (standard output is a pipe in tests)."""
    out = stream or sys.stdout
    out.write("\n" + text + "\n")
    out.flush()


async def signed_in_since(engine: AsyncEngine, since: datetime) -> bool:
    """Whether somebody signed in to the board at or after ``since``."""
    async with AsyncSession(engine) as session:
        found = await session.scalar(
            select(m.SignInAttempt.id)
            .where(
                m.SignInAttempt.at >= since,
                m.SignInAttempt.outcome == m.SignInOutcome.SIGNED_IN,
            )
            .limit(1)
        )
    return found is not None


async def remind_until_signed_in(
    engine: AsyncEngine,
    since: datetime,
    lines: SignInLines,
    stop: asyncio.Event,
    *,
    every_s: float = REMIND_EVERY_S,
    again: asyncio.Event | None = None,
) -> None:
    """Show the box again every ``every_s`` seconds (and once when ``again`` is set, e.g.
    when every device is online) until somebody has signed in since ``since``."""
    while not stop.is_set():
        waits = [asyncio.ensure_future(stop.wait())]
        if again is not None and not again.is_set():
            waits.append(asyncio.ensure_future(again.wait()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every_s):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if again is not None and again.is_set():
            again = None
        if stop.is_set():
            return
        if await signed_in_since(engine, since):
            log.info("somebody signed in to the call board: the sign-in box is not shown again")
            return
        show(box(lines, repeated=True, every_s=every_s))
