"""The register's file routes over HTTP (callcenter/web/register_files.py): for
administrators only; the template and the export downloaded; a dry run and an import;
a file full of mistakes answered with every problem in the operator's language and
nothing written; garbage, an empty body and a body past the limit refused while the
server keeps serving. On SQLite, and on PostgreSQL when its DSN is set."""

from __future__ import annotations

import io
from typing import Any

import aiohttp

from callcenter.engine import register_files as rf
from callcenter.engine.register_files.files import MEDIA
from tests.api_support import Api, token_of
from tests.register_files_support import sheet, table_counts, workbook

ADMIN = "sun.admin"


def _signed(who: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(who)}"}


async def _download(api: Api, path: str) -> tuple[int, bytes, str, str]:
    async with api.http.get(path, headers=_signed()) as reply:
        return (
            reply.status,
            await reply.read(),
            reply.content_type,
            reply.headers.get("Content-Disposition", ""),
        )


async def _upload(
    api: Api, data: bytes | io.BytesIO | aiohttp.FormData, query: str = "", who: str = ADMIN
) -> tuple[int, Any]:
    headers = _signed(who)
    if not isinstance(data, aiohttp.FormData):
        headers["Content-Type"] = MEDIA[rf.Format.XLSX]
    async with api.http.post(f"/api/register/import{query}", data=data, headers=headers) as reply:
        return reply.status, await reply.json()


async def test_administrators_download_export_check_and_import_the_register(api: Api) -> None:
    """Test that only an administrator may use the routes; that the template and the
    export come as .xlsx and .zip with a file name; that the export is audited with
    the households it carries; that the export, checked, is clean with every record
    unchanged; and that a new household imported (a form's file field) is written and
    audited with its after."""
    for path in ("/api/register/template", "/api/register/export"):
        async with api.http.get(path, headers=_signed("li.na")) as refused:
            assert refused.status == 403
    status, _ = await _upload(api, b"x", who="li.na")
    assert status == 403

    for kind in rf.Format:
        status, data, media, disposition = await _download(
            api, f"/api/register/template?format={kind.value}"
        )
        assert (status, media) == (200, MEDIA[kind])
        assert f'filename="register-template{rf.SUFFIX[kind]}"' in disposition
        assert data == rf.template(kind)

    status, exported, media, disposition = await _download(api, "/api/register/export")
    assert (status, media) == (200, MEDIA[rf.Format.XLSX])
    assert "register-2026-11-23.xlsx" in disposition
    audit = (await api.get("/api/audit?limit=1", who=ADMIN)).body["entries"][0]
    assert audit["action"] == "export_register"
    assert len(audit["detail"]["households"]) == 900

    status, checked = await _upload(api, exported, "?lang=en")
    assert status == 200, checked
    assert (checked["dry_run"], checked["written"], checked["problems_total"]) == (True, False, 0)
    assert checked["counts"]["households"]["unchanged"] == 900
    assert checked["rows"]["households"] == 900

    new_home = workbook(
        {
            "households": sheet("households", {}),
            "residents": sheet("residents", {}),
            "devices": sheet("devices", {}),
        }
    )
    form = aiohttp.FormData()
    form.add_field("note", "the register")
    form.add_field("file", new_home, filename="new.xlsx", content_type=MEDIA[rf.Format.XLSX])
    status, done = await _upload(api, form, "?dry_run=false")
    assert status == 200, done
    assert done["written"] is True
    assert done["counts"]["households"]["added"] == 1
    rows = (await api.get("/api/audit?household=H9001", who=ADMIN)).body["entries"]
    assert {row["action"] for row in rows} == {"import_household", "import_device"}
    assert all(row["actor"] == "supervisor:sun.admin" for row in rows)


async def test_a_bad_file_gets_every_problem_and_nothing_is_written(api: Api) -> None:
    """Test that a file with mistakes, imported for real, is answered 422 with every
    problem (sheet, row, column, code, words in the operator's language: zh for the
    administrator, en when asked) and writes nothing; that garbage and an empty body are
    422 with the file's problem; that a body past 20 MiB is 413; and that the server
    serves on."""
    counted = await table_counts(api.server.engine)
    bad = workbook(
        {
            "households": sheet("households", {"lat": "north", "backup_station": "S01"}),
            "residents": sheet("residents", {"birth_year": "1850"}),
            "devices": sheet("devices", {"kind": "toaster"}),
        }
    )
    status, answer = await _upload(api, bad, "?dry_run=false")
    assert status == 422, answer
    assert answer["error"] == "problems_found" and answer["written"] is False
    found = [(p["sheet"], p["row"], p["column"], p["code"]) for p in answer["problems"]]
    assert found == [
        ("households", 2, "backup_station", "same_as_home"),
        ("households", 2, "lat", "bad_value"),
        ("residents", 2, "birth_year", "out_of_range"),
        ("devices", 2, "kind", "one_of"),
    ]
    assert answer["problems_total"] == 4
    assert "无法读取" in answer["problems"][1]["message"]
    status, english = await _upload(api, bad, "?dry_run=false&lang=en")
    assert "cannot be read" in english["problems"][1]["message"]

    for garbage, code in ((b"\x00\xffgarbage", "not_a_register_file"), (b"", "empty_file")):
        status, answer = await _upload(api, garbage, "?dry_run=false")
        assert status == 422, answer
        assert [p["code"] for p in answer["problems"]] == [code]

    async with api.http.post(
        "/api/register/import",
        data=b'--b\r\n[{"not": "a header"}]\r\n--b--\r\n',
        headers={**_signed(), "Content-Type": "multipart/form-data; boundary=b"},
    ) as broken:
        assert (broken.status, (await broken.json())["error"]) == (400, "bad_request")
    status, answer = await _upload(
        api, aiohttp.FormData({"note": "no file"}, default_to_multipart=True)
    )
    assert (status, answer["error"]) == (400, "bad_request")

    huge = io.BytesIO(b"PK" + b"\x00" * (20 * 1024 * 1024 + 10))
    status, answer = await _upload(api, huge, "?dry_run=false")
    assert (status, answer["error"]) == (413, "too_large")
    assert (await api.get("/api/me")).status == 200
    assert await table_counts(api.server.engine) == counted
