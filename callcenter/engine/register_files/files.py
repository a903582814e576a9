"""The two file formats, as tables of text: an .xlsx workbook with one sheet per table,
or a .zip holding one CSV file per table (``<sheet>.csv``, UTF-8 with a byte order mark).

Reading never stops at the first thing wrong: every problem the file has as a file (not
a workbook, a sheet missing, a column unknown, too many rows) comes back together, with
what could be read. The limits keep one upload from taking the server's memory or time:
``MAX_FILE_BYTES`` as sent, ``MAX_UNPACKED_BYTES`` once unzipped (an .xlsx is a zip too),
``MAX_ROWS`` a sheet, ``MAX_CELL_CHARS`` a cell.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from callcenter.engine.register_files.sheets import BY_NAME, NOTES, SHEETS, cell_text

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

# openpyxl is imported where a workbook is read or written, not with this module: it is
# a second of a server's start (every server imports the register's routes), spent
# again at each restart and takeover, for what an administrator does now and then.

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_UNPACKED_BYTES = 100 * 1024 * 1024
MAX_ROWS = 100_000
MAX_COLUMNS = 64
MAX_CELL_CHARS = 10_000
# Excel opens a CSV as UTF-8 only when it starts with this mark; without it, Excel on a
# Chinese Windows reads the file as GBK and every name turns to mojibake.
BOM = "\ufeff"
# Zip entries are dated so that the same register gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class Format(StrEnum):
    XLSX = "xlsx"
    CSV = "csv"  # a .zip of one CSV file a sheet


MEDIA = {
    Format.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    Format.CSV: "application/zip",
}
SUFFIX = {Format.XLSX: ".xlsx", Format.CSV: ".zip"}


@dataclass(frozen=True)
class FileProblem:
    """One thing wrong in a file: where (the sheet, the row as the spreadsheet numbers
    it with the header as row 1, the column; each empty when the problem is about more)
    and what, as a code with the facts its words need (``words.say``)."""

    sheet: str
    row: int | None
    column: str
    code: str
    facts: Mapping[str, str | int | float] = field(default_factory=dict)


@dataclass
class Table:
    """One sheet as read: its header and its rows of text, each with its row number.
    Rows with nothing in them are left out (a spreadsheet's blank lines)."""

    name: str
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Each row as column -> text ('' for a cell past the row's end)."""
        for number, cells in self.rows:
            yield (
                number,
                {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(self.header)},
            )


@dataclass
class ReadFile:
    format: Format | None
    tables: dict[str, Table]
    problems: list[FileProblem]


def detect(data: bytes) -> Format | None:
    """Which of the two formats ``data`` is, from its content; None for neither."""
    if not data.startswith(b"PK"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return None
    return Format.XLSX if "[Content_Types].xml" in names else Format.CSV


def read(data: bytes) -> ReadFile:
    """The tables in ``data`` (either format) and every problem with the file as a file."""
    if not data:
        return ReadFile(None, {}, [FileProblem("", None, "", "empty_file")])
    if len(data) > MAX_FILE_BYTES:
        return ReadFile(
            None, {}, [FileProblem("", None, "", "file_too_large", {"max": _mib(MAX_FILE_BYTES)})]
        )
    kind = detect(data)
    if kind is None:
        return ReadFile(None, {}, [FileProblem("", None, "", "not_a_register_file")])
    problems: list[FileProblem] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_UNPACKED_BYTES or len(archive.infolist()) > 1000:
                problem = FileProblem(
                    "", None, "", "file_too_large", {"max": _mib(MAX_UNPACKED_BYTES)}
                )
                return ReadFile(kind, {}, [problem])
            raw = _xlsx_sheets(data) if kind is Format.XLSX else _csv_sheets(archive, problems)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError):
        return ReadFile(kind, {}, [FileProblem("", None, "", "not_a_register_file")])
    tables = _tables(raw, problems)
    return ReadFile(kind, tables, problems)


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB"


RawSheet = tuple[str, Iterable[tuple[int, Sequence[object]]]]


def _xlsx_sheets(data: bytes) -> list[RawSheet]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # data_only: a formula's value as Excel last computed it, not the formula.
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except InvalidFileException as error:
        raise ValueError(f"not a workbook: {error}") from error
    sheets: list[RawSheet] = []
    for sheet in workbook.worksheets:
        rows = (
            (number, tuple(cell.value for cell in row))
            for number, row in enumerate(sheet.iter_rows(), start=1)
        )
        sheets.append((sheet.title, rows))
    return sheets


def _csv_sheets(archive: zipfile.ZipFile, problems: list[FileProblem]) -> list[RawSheet]:
    sheets: list[RawSheet] = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename.rsplit("/", 1)[-1]
        if name.startswith(".") or info.filename.startswith("__MACOSX/"):
            continue  # what macOS's Finder adds to a zip
        stem, dot, suffix = name.rpartition(".")
        if not dot or suffix.lower() != "csv":
            problems.append(FileProblem(name, None, "", "not_csv"))
            continue
        raw = archive.read(info)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            problems.append(FileProblem(stem, line, "", "not_utf8"))
            continue
        sheets.append((stem, _csv_rows(stem, text, problems)))
    return sheets


# A CSV cell a spreadsheet would run as a formula when the file is opened ("=HYPERLINK(…)",
# "@SUM(…)", "+A1", "-1+1"): written with a leading apostrophe, which a spreadsheet shows
# as text and the import takes off again. A number written with its sign ("+8613…",
# "-3") runs nothing and is left as it is. Cells already starting with apostrophes before
# such text get one more, so every cell comes back as it was written.
_FORMULA = re.compile(r"'*(?:[=@\t\r]|[+-](?![0-9.]*$))", re.S)


def _guarded(cell: str) -> str:
    return "'" + cell if _FORMULA.match(cell) else cell


def _unguarded(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell[1:]) else cell


def _csv_rows(
    sheet: str, text: str, problems: list[FileProblem]
) -> Iterator[tuple[int, Sequence[object]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    number = 0
    try:
        for number, row in enumerate(reader, start=1):
            yield number, [_unguarded(cell) for cell in row]
    except csv.Error:
        problems.append(FileProblem(sheet, number + 1, "", "bad_csv"))


def _tables(raw: list[RawSheet], problems: list[FileProblem]) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for name, rows in raw:
        if name == NOTES:
            continue
        if name not in BY_NAME:
            problems.append(FileProblem(name, None, "", "unknown_sheet", {"sheets": _sheets()}))
            continue
        if name in tables:
            problems.append(FileProblem(name, None, "", "repeated_sheet"))
            continue
        table = _table(name, rows, problems)
        if table is not None:
            tables[name] = table
    if not tables and not any(p.code in ("not_utf8", "bad_csv") for p in problems):
        problems.append(FileProblem("", None, "", "no_sheets", {"sheets": _sheets()}))
    return tables


def _sheets() -> str:
    return ", ".join(sheet.name for sheet in SHEETS)


def _table(
    name: str, rows: Iterable[tuple[int, Sequence[object]]], problems: list[FileProblem]
) -> Table | None:
    spec = BY_NAME[name]
    header: list[str] | None = None
    kept: list[tuple[int, list[str]]] = []
    for number, values in rows:
        cells = [cell_text(value) for value in values[: MAX_COLUMNS + 1]]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if header is None:
            header = cells
            if _header_problems(name, number, header, spec.names, problems):
                return None
            continue
        if len(kept) >= MAX_ROWS:
            problems.append(FileProblem(name, number, "", "too_many_rows", {"max": MAX_ROWS}))
            break
        if len(cells) > len(header):
            problems.append(FileProblem(name, number, "", "cells_past_header"))
        for column, cell in zip(header, cells, strict=False):
            if len(cell) > MAX_CELL_CHARS:
                problems.append(
                    FileProblem(name, number, column, "cell_too_long", {"max": MAX_CELL_CHARS})
                )
            elif "\x00" in cell:
                problems.append(FileProblem(name, number, column, "nul_in_cell"))
        kept.append((number, cells))
    if header is None:
        problems.append(FileProblem(name, 1, "", "no_header", {"columns": ", ".join(spec.names)}))
        return None
    return Table(name, header, kept)


def _header_problems(
    sheet: str,
    row: int,
    header: list[str],
    expected: tuple[str, ...],
    problems: list[FileProblem],
) -> bool:
    """Whether the header row has problems (each added); a sheet whose header is wrong
    is not read further, since no cell of it can be known for sure."""
    found = False
    if len(header) > MAX_COLUMNS:
        problems.append(FileProblem(sheet, row, "", "too_many_columns", {"max": MAX_COLUMNS}))
        return True
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(FileProblem(sheet, row, name, "repeated_column"))
            found = True
        elif name not in expected:
            allowed = ", ".join(expected)
            problems.append(
                FileProblem(sheet, row, name or "(empty)", "unknown_column", {"columns": allowed})
            )
            found = True
        seen.add(name)
    for name in expected:
        if name not in seen:
            problems.append(FileProblem(sheet, row, name, "missing_column"))
            found = True
    return found


# --- writing -------------------------------------------------------------------------


SheetRows = Mapping[str, Sequence[Sequence[str]]]


def write(kind: Format, sheets: SheetRows, notes: Sequence[Sequence[str]] = ()) -> bytes:
    """``sheets`` (name -> rows of text, each sheet's header first) as a file of ``kind``;
    with ``notes``, a notes sheet after them. The same sheets give the same bytes."""
    return _write_zip(sheets, notes) if kind is Format.CSV else _write_xlsx(sheets, notes)


def _write_zip(sheets: SheetRows, notes: Sequence[Sequence[str]]) -> bytes:
    out = io.BytesIO()
    named = [*sheets.items(), *([(NOTES, notes)] if notes else [])]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, rows in named:
            text = io.StringIO(newline="")
            text.write(BOM)
            csv.writer(text).writerows([[_guarded(str(c)) for c in row] for row in rows])
            info = zipfile.ZipInfo(f"{name}.csv", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.getvalue().encode("utf-8"))
    return out.getvalue()


def _write_xlsx(sheets: SheetRows, notes: Sequence[Sequence[str]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    named = [*sheets.items(), *([(NOTES, notes)] if notes else [])]
    for name, rows in named:
        sheet = workbook.create_sheet(name)
        for row in rows:
            # Every cell as text, so Excel keeps "+86..." and "07:00" as written.
            sheet.append([_as_text(sheet, cell) for cell in row])
    workbook.properties.created = _WORKBOOK_DATE
    out = io.BytesIO()
    workbook.save(out)
    return _dated_once(out.getvalue())


# openpyxl stamps each save with the time (the workbook's "modified" and every zip
# entry's date): set to one fixed moment, the same sheets give the same bytes, as the
# CSV zip does, so two exports of one register can be told equal by their bytes.
_WORKBOOK_DATE = datetime(1980, 1, 1)
_MODIFIED = re.compile(rb"<dcterms:modified([^>]*)>[^<]*</dcterms:modified>")


def _dated_once(data: bytes) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as saved,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for entry in saved.infolist():
            content = saved.read(entry.filename)
            if entry.filename == "docProps/core.xml":
                stamp = _WORKBOOK_DATE.isoformat().encode() + b"Z"
                content = _MODIFIED.sub(
                    rb"<dcterms:modified\1>" + stamp + rb"</dcterms:modified>", content
                )
            info = zipfile.ZipInfo(entry.filename, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = entry.external_attr
            archive.writestr(info, content)
    return out.getvalue()


def _as_text(sheet: WriteOnlyWorksheet, text: str) -> object:
    """openpyxl keeps a str as a string cell, but one starting with "=" as a formula:
    that one is marked a string, so a name is never run as a formula."""
    if not text.startswith("="):
        return text
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"
    return cell


def cell_values(data: bytes) -> dict[str, list[tuple[object, ...]]]:
    """Every sheet's cell values in a workbook (for comparing two exports)."""
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True)
    return {
        sheet.title: [tuple(row) for row in sheet.iter_rows(values_only=True)]
        for sheet in workbook.worksheets
    }
