"""Serving the API on the configured address for as long as the server runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from callcenter.web.app import build_app

if TYPE_CHECKING:
    from callcenter.app import Running

# Requests still running at shutdown get this long to finish.
_SHUTDOWN_TIMEOUT_S = 5.0


class _UnreadableRequest(logging.Filter):
    """aiohttp answers a request it cannot read as HTTP (a request line or header over
    8 KiB, a malformed header) with a 400 and logs the parser's traceback as an error.
    What a client sent is not our fault: one warning line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "refused a request that is not readable HTTP from %s: %s"
            record.args = (*(record.args or ("?",)), str(error).replace("\n", " "))
            record.exc_info = record.exc_text = None
        return True


# aiohttp's log of the requests it handles (in place of its "aiohttp.server").
_HTTP_LOG = logging.getLogger("callcenter.web.http")
_HTTP_LOG.addFilter(_UnreadableRequest())


class WebStartError(Exception):
    """The API could not listen on its address (port taken, address not on this host)."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        self.host = host
        self.port = port
        self.detail = detail
        super().__init__(
            f"cannot serve the API on {host}:{port}: {detail} "
            "(set [web] host/port, or CALLCENTER_WEB__PORT; port 0 picks a free one)"
        )


class WebServer:
    """The API listening on ``host``:``port`` (the real port, when the configuration
    said 0) until closed."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._closed = False

    @property
    def app(self) -> web.Application:
        """The application served: its routes, for the API's description and for tests
        that try every one."""
        return self._runner.app

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and let requests in hand finish (briefly); safe to repeat."""
        if not self._closed:
            self._closed = True
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def serving_web(server: Running) -> AsyncIterator[WebServer]:
    """Serve the API on ``config.web.host``/``port`` until the block ends (or until the
    server is closed earlier); WebStartError when it cannot listen there."""
    config = server.config.web
    runner = web.AppRunner(
        build_app(server),
        access_log=None,
        logger=_HTTP_LOG,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    listening = WebServer(runner, config.host, config.port)
    try:
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as error:
            raise WebStartError(config.host, config.port, error.strerror or str(error)) from None
        listening.port = int(runner.addresses[0][1])
        yield listening
    finally:
        await listening.close()
