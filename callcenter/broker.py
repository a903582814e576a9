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

from callcenter.broker_logins import (
    DYNSEC_FILE,
    OwnLogins,
    find_plugin,
    own_logins,
    prepare_dynsec_file,
)
from callcenter.broker_refusals import RefusalWatch

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
    *,
    port: int,
    directory: Path,
    max_queued_messages: int,
    autosave_interval_s: int = 1,
    plugin: str | None = None,
    watch_refusals: bool = False,
) -> str:
    """The mosquitto.conf the embedded broker runs with: with ``plugin`` (the path of
    mosquitto's dynamic-security plugin) every client needs a login it holds, and only
    what its roles allow; without, anyone may connect and publish anywhere. With
    ``watch_refusals`` mosquitto's log goes to its standard error (see RefusalWatch)."""
    lines = [f"listener {port} 127.0.0.1"]
    if plugin is None:
        lines.append("allow_anonymous true")
    else:
        lines += [
            "allow_anonymous false",
            f"plugin {plugin}",
            f"plugin_opt_config_file {directory}/{DYNSEC_FILE}",
        ]
    lines += [
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
    ]
    if watch_refusals:
        # mosquitto 2.0 says a refused publish only in a debug line; the debug lines
        # come to us through a pipe, and all but the chatter reach mosquitto.log.
        lines += ["log_dest stderr", "log_type all"]
    else:
        lines += [
            f"log_dest file {directory}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
    lines.append("connection_messages false")
    if os.geteuid() == 0:
        # As root mosquitto drops to the 'mosquitto' user, who cannot write here.
        lines.append("user root")
    return "\n".join(lines) + "\n"


class EmbeddedBroker:
    """Runs mosquitto on 127.0.0.1 as a child process; use as an async context manager.

    With ``device_logins`` every client needs a login: the broker loads mosquitto's
    dynamic-security plugin, this server's own logins are made at the first start and
    kept in the broker's directory (``logins``), and refused publishes are watched
    (``refusals``). Without it the broker takes anyone, as a test or benchmark of
    something else wants. ``watch_refusals`` watches without logins (for measuring it).
    """

    def __init__(
        self,
        directory: Path,
        *,
        executable: str = "mosquitto",
        port: int = 0,
        max_queued_messages: int = 1_000_000,
        device_logins: bool = False,
        topic_prefix: str = "eldercare",
        plugin: str = "",
        watch_refusals: bool | None = None,
    ) -> None:
        self.directory = directory
        self.executable = executable
        self.port = port or free_port()
        self.max_queued_messages = max_queued_messages
        self.device_logins = device_logins
        self.topic_prefix = topic_prefix
        self.plugin = plugin
        self.logins: OwnLogins | None = None
        watch = device_logins if watch_refusals is None else watch_refusals
        self.refusals: RefusalWatch | None = RefusalWatch(self.log_file) if watch else None
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
        plugin = self._prepare_logins()
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            mosquitto_conf(
                port=self.port,
                directory=self.directory.resolve(),
                max_queued_messages=self.max_queued_messages,
                plugin=plugin,
                watch_refusals=self.refusals is not None,
            )
        )
        log_pipe = self.refusals.open_pipe() if self.refusals is not None else None
        try:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(conf),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL if log_pipe is None else log_pipe,
                preexec_fn=_detach_from_terminal_and_follow_parent,
            )
        finally:
            if log_pipe is not None:
                os.close(log_pipe)  # the broker holds its own copy
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

    def _prepare_logins(self) -> str | None:
        """With device logins: the plugin's path, after the broker's file holds this
        server's own logins (made now at the first start). Without: None."""
        if not self.device_logins:
            return None
        plugin = find_plugin(self.plugin)
        if plugin is None:
            where = repr(self.plugin) if self.plugin else "in the usual places"
            raise BrokerStartError(
                f"mosquitto's dynamic-security plugin was not found {where}. Install "
                "mosquitto 2.0 or later (Debian: apt-get install -y mosquitto), set "
                "[embedded_broker] dynamic_security_plugin to its "
                'mosquitto_dynamic_security.so, or set [broker] device_logins = "none" '
                "to let any client publish anywhere."
            )
        self.logins = own_logins(self.directory)
        try:
            prepare_dynsec_file(self.directory / DYNSEC_FILE, self.logins, self.topic_prefix)
        except ValueError as error:
            raise BrokerStartError(
                f"{error}. Move it away to start with no device logins, then run the "
                "server again; the devices' logins are issued again from the register."
            ) from None
        return plugin

    def _failure_reason(self) -> str:
        if self.refusals is not None:
            self.refusals.finish()  # the broker has ended: its last lines are in the file
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
        if self.refusals is not None:
            await asyncio.to_thread(self.refusals.finish)

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
