"""Publishes the embedded broker refused, read from its log as it writes it.

mosquitto 2.0 refuses a publish its rules do not allow without closing the connection.
An MQTT 5 client gets PUBACK reason 0x87 (not authorised); an MQTT 3.1.1 client gets a
plain PUBACK and cannot tell. The only trace on the broker's side is a line at debug
level: ``Denied PUBLISH from <client id> (d0, q1, r0, m3, '<topic>', ... (20 bytes))``.
No counter in ``$SYS`` and no plugin event says it.

So the embedded broker writes its whole log, debug included, to a pipe this module reads
on a thread of its own. The thread looks for refusals with one scan of each chunk read,
hands the chunk's refusals to the event loop in one call, and writes every line but the
per-packet chatter ("Received …", "Sending …") to ``mosquitto.log``, where the lines of
the broker's other levels went before. The pipe's writing end is non-blocking and holds
1 MiB: should this reader ever fall behind, mosquitto drops log lines rather than wait
for it, so an alarm never waits for the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("callcenter.broker")

_F_SETPIPE_SZ = 1031  # Linux
_PIPE_BYTES = 1 << 20
_READ_BYTES = 1 << 20
_DENIED = re.compile(
    rb"Denied PUBLISH from (.*) \(d\d, q(\d), r\d, m\d+, '(.*)', \.\.\. \(\d+ bytes\)\)$",
    re.MULTILINE,
)
# A line worth keeping in the file: not a packet received or sent, nor a subscription's
# topic list (each starts after mosquitto's "<seconds>: " time stamp).
_KEPT = re.compile(rb"^(?!(?:\d+: )?(?:Received |Sending |\t)).+$", re.MULTILINE)


@dataclass(frozen=True)
class Refusal:
    """One publish the broker refused: who (the client id), and where."""

    client_id: str
    topic: str
    qos: int


class RefusalWatch:
    """Reads mosquitto's log from a pipe; counts and tells of refused publishes."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.count = 0
        self._listeners: list[Callable[[Refusal], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def listen(self, listener: Callable[[Refusal], None]) -> None:
        """Call ``listener`` on the event loop with each refusal (it must return at once)."""
        self._listeners.append(listener)

    def open_pipe(self) -> int:
        """The pipe's writing end, for the broker's standard error; reading starts now."""
        self._loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_BYTES)
        flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
        fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        # The thread reads its own pipe to its end and closes it: a broker started
        # again (after a kill, whose reader may not have reached the end yet) gets a
        # new pipe and a new reader, and the two never share an end.
        self._thread = threading.Thread(
            target=self._read, args=(read_end,), name="callcenter.broker.log", daemon=True
        )
        self._thread.start()
        return write_end

    def finish(self, timeout_s: float = 5.0) -> None:
        """Wait for the reader to reach the end of the log (the broker has stopped)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _read(self, read_end: int) -> None:
        try:
            self._copy(read_end)
        finally:
            os.close(read_end)

    def _copy(self, read_end: int) -> None:
        rest = b""
        with open(self.log_file, "ab") as kept:
            while chunk := os.read(read_end, _READ_BYTES):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if not data:
                    continue
                lines = b"\n".join(match.group() for match in _KEPT.finditer(data))
                if lines:
                    kept.write(lines + b"\n")
                    kept.flush()
                if b"Denied PUBLISH" in data:
                    self._tell(data)
            if rest:
                kept.write(rest + b"\n")

    def _tell(self, data: bytes) -> None:
        """Hand the event loop the refusals in ``data``, all in one call: a device that
        keeps publishing where it may not wakes the loop once per chunk, not per line."""
        refusals = [
            Refusal(
                client_id=match.group(1).decode(errors="replace"),
                topic=match.group(3).decode(errors="replace"),
                qos=int(match.group(2)),
            )
            for match in _DENIED.finditer(data)
        ]
        if refusals and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._refused, refusals)

    def _refused(self, refusals: list[Refusal]) -> None:
        self.count += len(refusals)
        for refusal in refusals:
            for listener in self._listeners:
                try:
                    listener(refusal)
                except Exception:  # one listener's fault must not silence the others
                    log.exception("a listener of refused publishes failed")
