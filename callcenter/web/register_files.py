"""The register as a file, for administrators: the template to fill in, the whole
register exported, and a file imported, checked first (``dry_run``, the default) and
written only when clean (docs/register.md, "Import and export"; docs/api.md).

The file is the request's body as it is (``Content-Type`` an .xlsx's, ``application/zip``
or ``application/octet-stream``) or the field ``file`` of a ``multipart/form-data``
form; its format is told from its content. It may be up to ``MAX_FILE_BYTES``, far past
the 64 KiB every other body may have, so this route reads its body itself, in pieces,
and stops at the limit (413)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import Field

from callcenter.engine import register_files as files
from callcenter.store import models as m
from callcenter.store.db import locked_transaction
from callcenter.text import one_line
from callcenter.web.audit import record_read
from callcenter.web.bodies import Language
from callcenter.web.contract import Parameters, Reply, contract, query_of
from callcenter.web.errors import ApiError
from callcenter.web.register_common import district_today, register_changed
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, DATABASE, OPERATOR
from callcenter.web.views import Shape

log = logging.getLogger("callcenter.web.register_files")

routes = web.RouteTableDef()

_UPLOAD = (files.MEDIA[files.Format.XLSX], "application/zip", "multipart/form-data")
# Problems listed in one answer; the count says how many there are in all.
MAX_LISTED = 5000
_CHUNK = 64 * 1024


class FormatQuery(Parameters):
    format: files.Format = Field(
        files.Format.XLSX, description="xlsx (a workbook) or csv (a .zip of CSV files)"
    )


class ImportQuery(Parameters):
    dry_run: bool = Field(
        True, description="true (the default): check only, write nothing; false: import"
    )
    lang: Language | None = Field(
        None, description="the problems' language, zh or en (default: the operator's)"
    )


class FileProblemView(Shape):
    sheet: str = Field(description="the sheet (the CSV file's name); empty: the file")
    row: int | None = Field(description="the row as the spreadsheet numbers it (header: 1)")
    column: str = Field(description="the column's name; empty: the row or sheet")
    code: str = Field(description="what is wrong, as a code (docs/register.md)")
    message: str = Field(description="what is wrong, in the language asked for")


class KindCounts(Shape):
    in_file: int
    added: int
    updated: int
    unchanged: int


class ImportAnswer(Shape):
    """What the file holds, what an import adds, updates and leaves of each kind of
    record, and every problem found (nothing is written while there is one)."""

    error: str | None = Field(None, description="problems_found when there are problems")
    message: str = Field(description="the outcome in one sentence, for a person")
    dry_run: bool
    written: bool = Field(description="whether the file was imported")
    format: files.Format | None = Field(description="the file's format, told from its content")
    rows: dict[str, int] = Field(description="rows read, per sheet")
    counts: dict[str, KindCounts] = Field(description="per kind of record")
    problems_total: int
    problems: list[FileProblemView] = Field(
        description=f"every problem, in sheet and row order (at most {MAX_LISTED})"
    )


def _download(data: bytes, kind: files.Format, stem: str) -> web.Response:
    name = f"{stem}{files.SUFFIX[kind]}"
    return web.Response(
        body=data,
        content_type=files.MEDIA[kind],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _file_answer(kind_text: str) -> dict[int, Reply]:
    return {
        200: Reply(
            f"{kind_text}: an .xlsx workbook, or with format=csv a .zip of one CSV file a sheet",
            media=files.MEDIA[files.Format.XLSX],
            more_media=(files.MEDIA[files.Format.CSV],),
        )
    }


@routes.get("/api/register/template")
@contract(
    role=m.OperatorRole.ADMIN,
    query=FormatQuery,
    answers=_file_answer("the template"),
    tag="register",
)
async def register_template(request: web.Request) -> web.Response:
    """The register's template: each sheet's header and an example row, and a notes
    sheet explaining every column in zh and en."""
    kind = query_of(request, FormatQuery).format
    return _download(files.template(kind), kind, "register-template")


@routes.get("/api/register/export")
@contract(
    role=m.OperatorRole.ADMIN,
    query=FormatQuery,
    answers=_file_answer("the whole register"),
    tag="register",
)
async def register_export(request: web.Request) -> web.Response:
    """The whole register in the import's format (devices out of service left out).
    The export is audited: it carries every household's data."""
    kind = query_of(request, FormatQuery).format
    today = district_today(request)
    engine = request.app[DATABASE]
    data, register = await files.export(engine, kind, today)
    async with locked_transaction(engine) as session:
        await record_read(
            session,
            request,
            actor=str(request[OPERATOR].actor),
            household_id=None,
            action="export_register",
            detail={"households": [h.code for h in register.households], "format": kind.value},
        )
    return _download(data, kind, f"register-{today.isoformat()}")


async def _body(request: web.Request) -> bytes:
    """The file sent: the body itself, or a form's ``file`` field; 413 past the limit."""
    if request.content_type != "multipart/form-data":
        return await _read_all(request.content.read)
    try:
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and (not isinstance(part, BodyPartReader) or part.name != "file"):
            part = await reader.next()
        if part is None:
            raise ApiError(400, "bad_request", 'the form has no field "file" holding the file')
        return await _read_all(part.read_chunk)
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as error:
        raise ApiError(
            400, "bad_request", f"the form cannot be read: {one_line(str(error))[:200]}"
        ) from None


async def _read_all(read: Callable[[int], Awaitable[bytes]]) -> bytes:
    data = bytearray()
    while True:
        chunk = await read(_CHUNK)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > files.MAX_FILE_BYTES:
            size = files.MAX_FILE_BYTES // (1024 * 1024)
            raise ApiError(
                413, "too_large", f"the file is over {size} MiB; import the register in parts"
            )


@routes.post("/api/register/import")
@contract(
    role=m.OperatorRole.ADMIN,
    query=ImportQuery,
    upload=_UPLOAD,
    answers={
        200: ImportAnswer,
        413: f"too_large: the file is over {files.MAX_FILE_BYTES // (1024 * 1024)} MiB",
        422: Reply(
            "problems were found (the file may not be a register file at all); nothing was written",
            ImportAnswer,
        ),
    },
    tag="register",
)
async def register_import(request: web.Request) -> web.Response:
    """Check a register file (an .xlsx workbook or a .zip of CSV files) and, with
    dry_run=false and no problem found, import it in one transaction. Every problem is
    listed with its sheet, row and column; while there is one, nothing is written. A
    record is found by its code (a device by its serial); records the file does not
    hold are left as they are. Each record changed gets an audit row with its before and
    after. Two imports take turns."""
    query = query_of(request, ImportQuery)
    operator = request[OPERATOR]
    language = query.lang.value if query.lang else ("zh" if operator.language == "zh" else "en")
    data = await _body(request)
    audit = files.Audit(
        actor=str(operator.actor),
        at=request.app[CLOCK].now(),
        path=request.path[:255],
        address=(request.remote or "")[:64],
    )
    outcome = await files.import_file(
        request.app[DATABASE], data, district_today(request), audit, dry_run=query.dry_run
    )
    if outcome.written:
        register_changed(request)
        log.info(
            "%s imported the register (the write lock held %.2f s): %s",
            operator.username,
            outcome.held_s,
            dict(outcome.counts),
        )
    return _answer(outcome, query.dry_run, language)


def _answer(outcome: files.Outcome, dry_run: bool, language: str) -> web.Response:
    problems = sorted(
        outcome.problems,
        key=lambda p: (_sheet_order(p.sheet), p.row or 0, p.column, p.code),
    )
    total = len(problems)
    if not outcome.rows and problems:
        status, message = 422, "the file cannot be read as a register file; nothing was written"
    elif problems:
        status, message = 422, f"{total} problems found; nothing was written"
    elif outcome.written:
        status, message = 200, "the file is imported"
    else:
        status, message = 200, "no problems found; import it with dry_run=false"
    body = {
        "error": "problems_found" if problems else None,
        "message": message,
        "dry_run": dry_run,
        "written": outcome.written,
        "format": outcome.format.value if outcome.format is not None else None,
        "rows": dict(outcome.rows),
        "counts": {kind: dict(tally) for kind, tally in outcome.counts.items()},
        "problems_total": total,
        "problems": [
            {
                "sheet": p.sheet,
                "row": p.row,
                "column": p.column,
                "code": p.code,
                "message": files.said(p, language),
            }
            for p in problems[:MAX_LISTED]
        ],
    }
    return json_reply(body, status=status)


_ORDER = {name: n for n, name in enumerate(files.SHEET_NAMES)}


def _sheet_order(sheet: str) -> int:
    return _ORDER.get(sheet, -1 if not sheet else len(_ORDER))
