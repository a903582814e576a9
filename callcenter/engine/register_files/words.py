"""A file's problems in words, in zh or en. The register's own rules are said by
``domain.register.say``; the words here are only for what is wrong with a file as a file
(its format, sheets, columns and rows), which no single record's rule knows."""

from __future__ import annotations

from callcenter.domain.register import Problem, say
from callcenter.engine.register_files.files import FileProblem

_WORDS: dict[str, tuple[str, str]] = {
    "empty_file": ("文件是空的", "the file is empty"),
    "file_too_large": (
        "文件太大：最多 {max}；请分几次导入",
        "the file is too large: at most {max}; import it in parts",
    ),
    "not_a_register_file": (
        "不是 .xlsx 工作簿，也不是装有 CSV 文件的 .zip；请用下载的模板",
        "is neither an .xlsx workbook nor a .zip of CSV files; start from the template",
    ),
    "not_csv": (
        "zip 中只能有 CSV 文件（<表名>.csv）",
        "the zip may hold only CSV files (<sheet>.csv)",
    ),
    "not_utf8": (
        "不是 UTF-8 编码：请在 Excel 中“另存为”“CSV UTF-8（逗号分隔）”",
        'is not UTF-8: in Excel, "Save As" "CSV UTF-8 (Comma delimited)"',
    ),
    "bad_csv": (
        "CSV 无法读取（引号未闭合？）",
        "cannot be read as CSV (a quote left open?)",
    ),
    "unknown_sheet": (
        "不认识这个表；表名须是：{sheets}",
        "is not a sheet of the register; the sheets are: {sheets}",
    ),
    "repeated_sheet": ("这个表出现了两次", "this sheet appears twice"),
    "no_sheets": (
        "文件中没有登记表的任何一张表；表名须是：{sheets}",
        "the file holds none of the register's sheets: {sheets}",
    ),
    "missing_sheet": (
        "缺少这张表：导入住户时须同时有 residents、contacts 和 household_phones 三张表",
        "this sheet is missing: households come with their residents, contacts and "
        "household_phones sheets",
    ),
    "no_header": (
        "第一行须是列名：{columns}",
        "the first row must name the columns: {columns}",
    ),
    "unknown_column": (
        "不认识这一列；列名须是：{columns}",
        "is not a column of this sheet; the columns are: {columns}",
    ),
    "missing_column": ("缺少这一列", "this column is missing"),
    "repeated_column": ("这一列出现了两次", "this column appears twice"),
    "too_many_columns": ("列太多：最多 {max} 列", "too many columns: at most {max}"),
    "too_many_rows": (
        "行太多：每张表最多 {max} 行；请分几次导入",
        "too many rows: at most {max} a sheet; import it in parts",
    ),
    "cells_past_header": (
        "这一行有写在最后一列之后的内容",
        "this row has cells past the last named column",
    ),
    "cell_too_long": ("内容太长：最多 {max} 个字", "is too long: at most {max} characters"),
    "nul_in_cell": ("含有无法保存的空字符（NUL）", "holds a NUL character, which cannot be kept"),
    "household_not_in_file": (
        "住户 {code} 不在本文件的 households 表中：住户须连同其居民、联系人和电话一起导入",
        "household {code} is not in this file's households sheet: a household is imported "
        "with its residents, contacts and phones",
    ),
}


def file_problem_codes() -> frozenset[str]:
    """Every code of a problem with a file as a file."""
    return frozenset(_WORDS)


def said(problem: FileProblem, language: str) -> str:
    """``problem`` in words, in ``language`` (zh or en; anything else is en)."""
    words = _WORDS.get(problem.code)
    if words is None:
        return say(Problem(problem.column, problem.code, problem.facts), language)
    template = words[0] if language == "zh" else words[1]
    try:
        return template.format(**problem.facts)
    except (KeyError, IndexError, ValueError):
        return template
