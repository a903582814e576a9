"""The processes' log: one record, one line, and no carer link token in it.

Log lines quote what requests and devices send (paths, household codes, SMS texts). A
line break in such a value would let its sender write a line that looks like the
server's own, and a terminal escape could rewrite what an operator sees; so every
record's message is written with its control characters escaped (``\\n``, ``\\x1b``,
``\\u2028``), whoever logged it and whatever it quoted. Carer link tokens are masked
(``/c/***``) the same way, since a live one answers as the carer. A traceback below a
record is the server's own and keeps its lines (tokens masked).
"""

from __future__ import annotations

import copy
import logging
import sys
from types import TracebackType
from typing import TextIO, TypeAlias

from callcenter.notify.links import masked
from callcenter.text import one_line

ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogLine(logging.Formatter):
    """Formats each record's message as one line, carer link tokens masked."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        shown = copy.copy(record)
        shown.message = one_line(masked(record.message))
        return super().formatMessage(shown)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return masked(super().formatException(ei))


def configure(level: str | int, stream: TextIO | None = None) -> None:
    """Log records at ``level`` and above to ``stream`` (stderr), one line each."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogLine(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
