"""The processes' log: one record, one line, and no carer link token in it.

Log lines quote what requests and devices send (paths, household codes, SMS texts). A
line break in such a value would let its sender write a line that looks like the
server's own, and a terminal escape could rewrite what an operator sees; so every
record's message is written with its control characters escaped (``\\n``, ``\\x1b``,
``\\u2028``), whoever logged it and whatever it quoted. Carer link tokens are masked
(``/c/***``) the same way, since a live one answers as the carer. A traceback below a
record is the server's own and keeps its lines (tokens masked).

Two formats (``logging.format``, ``--log-format``): ``text``, a line a person reads, and
``json``, one JSON object a line for a desk that searches its logs. In both, a record
logged while the work for one call, household, carer or device event is under way
carries them (``bound``): the JSON line as fields, so every line about one call can be
found by its id; the text line as it always was, since its message names them already.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import enum
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO, TypeAlias

from callcenter.notify.links import masked
from callcenter.text import one_json_line, one_line

ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(enum.StrEnum):
    """How log records are written."""

    TEXT = "text"
    JSON = "json"


@dataclasses.dataclass(frozen=True)
class Fields:
    """What a record is about, as far as it is known where it was logged."""

    call_id: int | None = None
    household: str | None = None  # its code, e.g. "H0001"
    carer: str | None = None  # their code, e.g. "C012"
    event_id: int | None = None  # the device event's id in the event log

    def over(self, other: Fields) -> Fields:
        """These fields, and ``other``'s where these are not known."""
        return Fields(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(
                    dataclasses.astuple(self), dataclasses.astuple(other), strict=True
                )
            )
        )

    def known(self) -> dict[str, int | str]:
        """The fields that are known, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Fields))
UNKNOWN = Fields()  # (frozen: one value for every context that bound nothing)
_BOUND: contextvars.ContextVar[Fields] = contextvars.ContextVar(
    "callcenter_log_fields", default=UNKNOWN
)


@contextlib.contextmanager
def bound(
    *,
    call_id: int | None = None,
    household: str | None = None,
    carer: str | None = None,
    event_id: int | None = None,
) -> Iterator[None]:
    """Records logged inside the block (in this task, and tasks it starts) carry these
    fields, over those bound already; None leaves a field as it was."""
    with bound_again(Fields(call_id, household, carer, event_id)):
        yield


@contextlib.contextmanager
def bound_again(fields: Fields) -> Iterator[None]:
    """``bound`` with fields taken earlier (``current``), e.g. to log after a commit
    what was decided inside the transaction."""
    token = _BOUND.set(fields.over(_BOUND.get()))
    try:
        yield
    finally:
        _BOUND.reset(token)


def current() -> Fields:
    """The fields bound where this is called."""
    return _BOUND.get()


class BoundFields(logging.Filter):
    """Puts the bound fields on each record (one given with ``extra=`` stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _BOUND.get().known().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class ExpectedRefusals(logging.Filter):
    """A record logged with an exception that says it is expected (``one_line = True``
    on its class, e.g. the fence refusing a server that lost the desk's lease) is
    written as one warning with the exception's words, not an error with a traceback:
    it is what the design does, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and getattr(type(error), "one_line", False):
            record.msg = f"{record.getMessage()}: {error}"
            record.args = ()
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class LogLine(logging.Formatter):
    """Formats each record's message as one line, carer link tokens masked."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        shown = copy.copy(record)
        shown.message = one_line(masked(record.message))
        return super().formatMessage(shown)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return masked(super().formatException(ei))


class JsonLine(LogLine):
    """Formats each record as one JSON object on one line: ``time`` (ISO 8601, UTC),
    ``level``, ``logger``, ``message`` (as the text line shows it), the bound fields
    known, and ``exception`` (the traceback, tokens masked) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": one_line(masked(record.message)),
        }
        for name in FIELD_NAMES:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = one_line(value) if isinstance(value, str) else value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = masked(self.formatStack(record.stack_info))
        return one_json_line(line)


def handler(stream: TextIO, log_format: LogFormat = LogFormat.TEXT) -> logging.Handler:
    """A handler writing records to ``stream`` in ``log_format``, bound fields and all."""
    written = _Written(stream)
    written.setFormatter(JsonLine() if log_format is LogFormat.JSON else LogLine(FORMAT))
    written.addFilter(BoundFields())
    written.addFilter(ExpectedRefusals())
    return written


class _Written(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs (and replaces when called again)."""


def configure(
    level: str | int, stream: TextIO | None = None, log_format: LogFormat = LogFormat.TEXT
) -> None:
    """Log records at ``level`` and above to ``stream`` (stderr), one line each in
    ``log_format``; called again, it replaces what it installed before."""
    root = logging.getLogger()
    for installed in [h for h in root.handlers if isinstance(h, _Written)]:
        root.removeHandler(installed)
    logging.basicConfig(level=level, handlers=[handler(stream or sys.stderr, log_format)])
