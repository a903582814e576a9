"""``callcenter demo --fresh``: start over with a new database, and what the demo says
about the database it keeps between runs.

The demo keeps its database between runs (by default ``var/callcenter.db`` under the
directory it starts in): calls still open from last time are on the board again.
``--fresh`` removes that database, and only when it is the demo's own: a SQLite file
whose only accounts are the demo's operator and supervisor. A PostgreSQL database, or a
file with anybody else's account in it, is left alone and the demo refuses to start.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import database_kind
from callcenter.store import models as m
from callcenter.store.db import create_engine

# The files SQLite keeps beside a database.
_BESIDE = ("-wal", "-shm", "-journal")


class NotTheDemosDatabaseError(Exception):
    """``--fresh`` was asked for a database the demo did not make; says why."""


@dataclass(frozen=True)
class Kept:
    """What the database holds from earlier runs."""

    calls: int
    open_calls: int


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for PostgreSQL or an in-memory database)."""
    if database_kind(url) != "sqlite":
        return None
    name = make_url(url).database
    if not name or name == ":memory:":
        return None
    return Path(name).resolve()


def _accounts_in(path: Path) -> set[str] | None:
    """The operator accounts in a SQLite file (None: it has no operators table)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT username FROM operators").fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        connection.close()
    return {str(row[0]) for row in rows}


def remove_demo_database(
    url: str, demo_accounts: set[str], broker_store: Path | None = None
) -> str:
    """Remove the demo's own SQLite database, and the embedded broker's saved sessions
    and queued messages (``broker_store``, mosquitto.db) with it, so no press of an
    earlier run reaches the new database; one line saying what was removed.
    ``NotTheDemosDatabaseError`` when it is not the demo's own: then nothing is removed."""
    path = sqlite_file(url)
    if path is None:
        raise NotTheDemosDatabaseError(
            "--fresh removes only the demo's own SQLite file, and the database configured "
            f"is {make_url(url).render_as_string(hide_password=True)}: empty it yourself "
            "or run the demo without database.url"
        )
    broker = ""
    if broker_store is not None and broker_store.exists():
        broker = f" and the embedded broker's queued messages {broker_store.resolve()}"
    if not path.exists():
        if broker_store is not None and broker:
            broker_store.unlink()
            return f"--fresh: no database at {path} yet; removed{broker[4:]}"
        return f"--fresh: there is no database at {path} yet; the demo makes a new one"
    accounts = _accounts_in(path)
    if accounts is None and path.stat().st_size > 0:
        raise NotTheDemosDatabaseError(
            f"--fresh left {path} alone: it has no operators table, so it is not a database "
            "the demo made; remove it yourself if you mean to"
        )
    others = sorted((accounts or set()) - demo_accounts)
    if others:
        raise NotTheDemosDatabaseError(
            f"--fresh left {path} alone: it has accounts the demo did not make "
            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}), so it is not only "
            "the demo's; remove it yourself if you mean to"
        )
    path.unlink()
    for suffix in _BESIDE:
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    if broker and broker_store is not None:
        broker_store.unlink()
    return (
        f"--fresh: removed the demo's database {path} (calls, history, texts and accounts "
        f"of earlier runs){broker}; the demo district is seeded anew"
    )


async def kept_from_before(url: str) -> Kept:
    """How many calls the database holds from earlier runs, and how many are open."""
    engine = create_engine(url)
    try:
        async with AsyncSession(engine) as session:
            calls = await session.scalar(select(func.count()).select_from(m.Call)) or 0
            open_calls = (
                await session.scalar(
                    select(func.count()).select_from(m.Call).where(m.Call.closed_at.is_(None))
                )
                or 0
            )
    finally:
        await engine.dispose()
    return Kept(calls, open_calls)
