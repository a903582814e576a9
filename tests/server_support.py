"""`callcenter serve` as a child process, for tests that kill and restart it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from callcenter.broker import EmbeddedBroker
from tests.ingest_support import eventually


class ServerProcess:
    """`callcenter serve` as a child process, with its log lines collected."""

    def __init__(
        self,
        config_file: Path,
        *options: str,
        serve_options: Sequence[str] = (),
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.config_file = config_file
        # The command's own options before "serve", e.g. "--log-level", "DEBUG".
        self.options = options
        # Options of "serve" itself, e.g. "--log-format", "json".
        self.serve_options = tuple(serve_options)
        # Another interpreter (an installed copy), its environment and working directory.
        self.python = python
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.cwd = cwd
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.lines = []
        self._process = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "callcenter.cli",
            "--config",
            str(self.config_file),
            *self.options,
            "serve",
            *self.serve_options,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            cwd=self.cwd,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_for_line(self, pattern: str, within_s: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        async def seen() -> bool:
            found.extend(m for line in self.lines if (m := regex.search(line)))
            return bool(found)

        try:
            await eventually(seen, within_s=within_s, what=f"log line /{pattern}/")
        except AssertionError:
            raise AssertionError("server log:\n" + "\n".join(self.lines)) from None
        return found[0]

    def send(self, sig: signal.Signals) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    async def wait(self, within_s: float = 20.0) -> int:
        assert self._process is not None and self._reader is not None
        code = await asyncio.wait_for(self._process.wait(), within_s)
        await self._reader
        return code


@contextlib.asynccontextmanager
async def server_process(
    config_file: Path,
    *options: str,
    serve_options: Sequence[str] = (),
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[ServerProcess]:
    """`callcenter [OPTIONS] serve [SERVE_OPTIONS]` running for the block, killed if still
    alive at its end."""
    server = ServerProcess(
        config_file, *options, serve_options=serve_options, python=python, env=env, cwd=cwd
    )
    await server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            server.send(signal.SIGKILL)
        with contextlib.suppress(Exception):
            await server.wait()


def write_config(
    path: Path,
    *,
    data_dir: Path,
    database_url: str,
    broker: EmbeddedBroker | None,
    prefix: str,
    extra: str = "",
    offers: bool = False,
) -> Path:
    """A configuration file for `callcenter serve` in a test (API on a free port); calls
    offered to operators on duty only with ``offers`` (see desk_support.desk_config)."""
    lines = [
        "[data]",
        f'dir = "{data_dir}"',
        "[database]",
        f'url = "{database_url}"',
        "[broker]",
        f'topic_prefix = "{prefix}"',
        'client_id = "ingest-under-test"',
        "reconnect_max_s = 1.0",
    ]
    if broker is not None:
        # The plain test broker takes any client (tests/fixtures/broker.py); who may
        # publish is tests/test_device_logins.py's.
        lines += [f'host = "{broker.host}"', f"port = {broker.port}", 'device_logins = "none"']
    lines += ["[web]", "port = 0", "[desk]", f"offers = {'true' if offers else 'false'}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def subprocess_config(
    tmp_path: Path,
    database_url: str,
    broker: EmbeddedBroker,
    prefix: str,
    extra: str = "",
    offers: bool = False,
) -> Path:
    """``write_config`` for a `callcenter serve` child in ``tmp_path``. The subprocess
    variants run on the SQLite default: a test using this is marked ``sqlite_only`` (left
    out on PostgreSQL before its fixtures are set up), and skipped here should it not be."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the subprocess variant runs on the SQLite default")
    return write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=database_url,
        broker=broker,
        prefix=prefix,
        extra=extra,
        offers=offers,
    )


@dataclass
class Ran:
    """What a `callcenter` command did: exit code and output."""

    code: int
    out: str
    err: str

    @property
    def token(self) -> str:
        return self.out.strip().splitlines()[-1]


async def run_cli(config: Path, *args: str, stdin: str | None = None) -> Ran:
    """`callcenter --config CONFIG ARGS...` as a child process (``stdin`` fed to it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter.cli",
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    feed = None if stdin is None else stdin.encode()
    out, err = await asyncio.wait_for(process.communicate(feed), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())
