"""The benchmarks' throwaway databases: a SQLite file in the run's directory, or a new
database on a PostgreSQL server, dropped afterwards. The database named in the server's
URL is only connected to, never changed."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine


@contextlib.asynccontextmanager
async def throwaway_database(
    workdir: Path,
    server_url: str | None,
    prepare: Callable[[str], Awaitable[object]],
    *,
    name: str,
    say: Callable[[str], None] = lambda _: None,
) -> AsyncIterator[str]:
    """``prepare``d (migrated, seeded: the caller's business): ``workdir/<name>.db``
    without ``server_url``, else ``callcenter_<name>_<random>`` on that server, dropped
    with FORCE when done (a connection the run left open, say a seed stopped by a
    signal, does not keep it)."""
    if server_url is None:
        url = f"sqlite+aiosqlite:///{workdir / f'{name}.db'}"
        await prepare(url)
        yield url
        return
    database = f"callcenter_{name}_{secrets.token_hex(4)}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{database}"'))
        say(f"created the database {database}")
        try:
            url = make_url(server_url).set(database=database).render_as_string(hide_password=False)
            await prepare(url)
            yield url
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            say(f"dropped the database {database}")
    finally:
        await admin.dispose()
