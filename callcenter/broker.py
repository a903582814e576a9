"""A private mosquitto, run as a managed child process when no broker is configured.

Its configuration and persistence live under the data directory. Persistence is on and
``max_queued_messages`` is raised far above mosquitto's default of 1000 per client, so
an outage of this server cannot silently drop alarms queued for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger("callcenter.broker")


class BrokerStartError(Exception):
    """The embedded broker could not be started; ``detail`` says why and what to do."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


_PR_SET_PDEATHSIG = 1


def _detach_from_terminal_and_follow_parent() -> None:
    """Runs in the child before exec: own process group, and die with the server.

    Its own process group keeps a Ctrl-C at the terminal from killing the broker before
    the server has finished its last batch (the server stops it in order). The parent-
    death signal makes sure a server killed outright does not leave the broker behind.
    """
    os.setsid()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mosquitto_conf(
    *, port: int, directory: Path, max_queued_messages: int, autosave_interval_s: int = 1
) -> str:
    """The mosquitto.conf the embedded broker runs with."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {directory}/",
        # Written to disk every second and on shutdown; a broker crash can lose at
        # most the last second of queued messages (see docs/operations.md).
        f"autosave_interval {autosave_interval_s}",
        f"max_queued_messages {max_queued_messages}",
        # The server's session holds unacknowledged events until they are committed;
        # so the broker must not stop sending while a batch waits for its commit.
        "max_inflight_messages 0",
        # Without it, Nagle's algorithm holds small alarm packets back ~40 ms under load.
        "set_tcp_nodelay true",
        f"log_dest file {directory}/mosquitto.log",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
    ]
    if os.geteuid() == 0:
        # As root mosquitto drops to the 'mosquitto' user, who cannot write here.
        lines.append("user root")
    return "\n".join(lines) + "\n"


class EmbeddedBroker:
    """Runs mosquitto on 127.0.0.1 as a child process; use as an async context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        executable: str = "mosquitto",
        port: int = 0,
        max_queued_messages: int = 1_000_000,
    ) -> None:
        self.directory = directory
        self.executable = executable
        self.port = port or free_port()
        self.max_queued_messages = max_queued_messages
        self._process: asyncio.subprocess.Process | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """mosquitto's process id while it runs (benchmarks measure its CPU)."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections."""
        binary = shutil.which(self.executable)
        if binary is None:
            raise BrokerStartError(
                f"mosquitto not found as {self.executable!r}. Install it "
                "(Debian: apt-get install -y mosquitto) or set [broker] host to a running broker."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            mosquitto_conf(
                port=self.port,
                directory=self.directory.resolve(),
                max_queued_messages=self.max_queued_messages,
            )
        )
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_detach_from_terminal_and_follow_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                break
            if await self._accepts_connections():
                log.info("embedded mosquitto listening on 127.0.0.1:%d", self.port)
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise BrokerStartError(
            f"mosquitto did not start on port {self.port}: {self._failure_reason()}"
        )

    def _failure_reason(self) -> str:
        with contextlib.suppress(OSError):
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
            if tail:
                return " | ".join(tail)
        return "no log; is the port already taken?"

    async def _accepts_connections(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop mosquitto with SIGTERM, so it writes its persistence file."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            log.warning("mosquitto ignored SIGTERM for %.0f s; killing it", timeout_s)
            process.kill()
            await process.wait()

    def kill(self) -> None:
        """Kill mosquitto without letting it save (a crash, for tests)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
