"""The server as a wheel installs it: built from this tree, installed into a fresh venv,
run from elsewhere, it serves every page from the files the wheel carried."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from callcenter.broker import EmbeddedBroker
from tests.server_support import server_process, write_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "dashboards"
LEAFLET = PAGES / "node_modules" / "leaflet" / "dist"
MARKERCLUSTER = PAGES / "node_modules" / "leaflet.markercluster" / "dist"
# What the build reads: the project's files, not the tests, docs or a local venv.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "callcenter", "device_sim", "dashboards")
# The pages' own folders and files, each served as /static/<its path>.
PAGE_FILES = sorted(
    path.relative_to(PAGES).as_posix()
    for pattern in ("*.html", "*.css", "*/**/*")
    for path in PAGES.glob(pattern)
    if path.is_file() and path.relative_to(PAGES).parts[0] not in {"node_modules", "__pycache__"}
)
# Of Leaflet, what the board loads.
LEAFLET_FILES = ("leaflet.js", "leaflet.css", "images/marker-icon.png")
# Of Leaflet.markercluster, what the board loads.
MARKERCLUSTER_FILES = ("leaflet.markercluster.js", "MarkerCluster.css")
PASSWORD = "installed-and-well"
PIP = (sys.executable, "-m", "pip", "--disable-pip-version-check")

pytestmark = pytest.mark.slow


async def _run(*command: str | Path, cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 180)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{command} failed:\n{text}"
    return text


def _in_the_tree(entries: list[str], dependencies: set[str]) -> list[str]:
    """The entries of a sys.path inside this tree, but for the dependencies' directories
    (the dev venv may live in the tree: .venv)."""
    return [
        e for e in entries if e and e not in dependencies and Path(e).resolve().is_relative_to(ROOT)
    ]


def _content(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _copy_sources(target: Path) -> None:
    """The build's inputs, copied (Leaflet's link followed), so building leaves nothing
    behind in the tree and nothing left from an earlier build gets into the wheel."""
    target.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


async def _build_wheel(tmp_path: Path, elsewhere: Path, env: dict[str, str]) -> Path:
    """The wheel of this tree, and what it carries of the pages checked."""
    _copy_sources(tmp_path / "src")
    # With the dev venv's setuptools (the dev extra asks for one new enough): no network.
    await _run(
        *PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
        tmp_path / "src",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    prefix = "callcenter/dashboards/"
    with zipfile.ZipFile(wheel) as archive:
        carried = {n.removeprefix(prefix) for n in archive.namelist() if n.startswith(prefix)}
    assert set(PAGE_FILES) <= carried, set(PAGE_FILES) - carried
    assert not {"package.json", "package-lock.json", "README.md"} & carried
    npm = {n for n in carried if n.startswith("node_modules/")}
    assert all(
        re.fullmatch(r"node_modules/leaflet/dist/(leaflet\.(js|css)|images/\w[\w-]*\.png)", n)
        or re.fullmatch(
            r"node_modules/leaflet\.markercluster/dist/"
            r"(leaflet\.markercluster\.js|MarkerCluster\.css)",
            n,
        )
        for n in npm
    ), npm
    if LEAFLET.is_dir():
        assert {f"node_modules/leaflet/dist/{n}" for n in LEAFLET_FILES} <= npm
    if MARKERCLUSTER.is_dir():
        assert {f"node_modules/leaflet.markercluster/dist/{n}" for n in MARKERCLUSTER_FILES} <= npm
    return wheel


async def _install(wheel: Path, venv: Path, elsewhere: Path, env: dict[str, str]) -> str:
    """``wheel`` installed into a fresh ``venv``, whose python this returns; the
    dependencies come from this interpreter's site-packages, after the venv's own (a
    directory a .pth adds runs no .pth of its own, so an editable install's finder there
    stays out)."""
    await _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=elsewhere, env=env)
    python = str(venv / "bin" / "python")
    await _run(
        *PIP, "--python", python, "install", "--no-deps", "--no-index", wheel,
        cwd=elsewhere, env=env,
    )  # fmt: skip
    site = await _run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    dependencies = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    _write(Path(site.strip()) / "dependencies.pth", "\n".join(sorted(dependencies)) + "\n")
    where = await _run(
        python,
        "-c",
        "import callcenter, sys; from callcenter.web import assets; "
        "print(callcenter.__file__); print(assets.PAGES); print(*sys.path, sep='\\n')",
        cwd=elsewhere,
        env=env,
    )
    imported_from, pages, *path = where.splitlines()
    assert Path(imported_from).is_relative_to(venv), imported_from
    assert Path(pages).is_relative_to(venv), pages
    assert not _in_the_tree(path, dependencies), path
    return python


async def test_a_wheel_installed_elsewhere_serves_every_page(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that the wheel built from this tree carries the pages and Leaflet's files (and
    not npm's manifests), and that, installed into a fresh venv and run from outside the
    tree, the server serves the sign-in page, the board, the reports, the carer page's and
    the family page's files, the wallboard, and Leaflet and Leaflet.markercluster, each
    byte for byte."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing of this tree on the installed server's path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CALLCENTER_"))}
    wheel = await _build_wheel(tmp_path, elsewhere, env)
    python = await _install(wheel, tmp_path / "venv", elsewhere, env)

    config = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callcenter.db'}",
        broker=broker,
        prefix=topic_prefix,
    )
    callcenter = (python, "-m", "callcenter.cli", "--config", config)
    await _run(*callcenter, "db", "upgrade", cwd=elsewhere, env=env)
    await _run(
        *callcenter, "users", "add", "wei.admin", "--name", "魏", "--role", "admin",
        "--password-stdin", stdin=PASSWORD + "\n", cwd=elsewhere, env=env,
    )  # fmt: skip

    async with (
        server_process(config, python=python, env=env, cwd=elsewhere) as server,
        # unsafe: cookies for a bare 127.0.0.1, as a browser keeps them
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = (await server.wait_for_line(r"operator API (http://\S+)")).group(1)

        async def same_as(path: str, source: Path) -> None:
            async with http.get(base + path, allow_redirects=False) as reply:
                assert reply.status == 200, (path, reply.status, await reply.text())
                assert await reply.read() == _content(source), path

        async with http.get(base + "/login") as login:
            assert login.status == 200
            form = re.search(r'name="csrf" value="([^"]+)"', await login.text())
        assert form is not None
        await same_as("/login/static/login.css", PAGES / "login.css")
        await same_as("/family/login", PAGES / "family" / "index.html")
        for name in ("family.js", "family.css"):
            await same_as(f"/family/static/{name}", PAGES / "family" / name)
        for name in ("carer.js", "carer.css"):
            await same_as(f"/carer/static/{name}", PAGES / "carer" / name)

        async with http.post(
            base + "/login",
            data={"username": "wei.admin", "password": PASSWORD, "csrf": form.group(1)},
            allow_redirects=False,
        ) as signed_in:
            assert signed_in.status == 303, await signed_in.text()
        await same_as("/board", PAGES / "board" / "index.html")
        await same_as("/reports", PAGES / "reports" / "index.html")
        await same_as("/wall", PAGES / "wall" / "index.html")
        await same_as("/admin", PAGES / "admin" / "index.html")
        for name in PAGE_FILES:
            await same_as(f"/static/{name}", PAGES / name)
        if LEAFLET.is_dir():
            for name in LEAFLET_FILES:
                await same_as(f"/static/vendor/leaflet/{name}", LEAFLET / name)
        if MARKERCLUSTER.is_dir():
            for name in MARKERCLUSTER_FILES:
                await same_as(f"/static/vendor/leaflet.markercluster/{name}", MARKERCLUSTER / name)
        for name in ("package.json", "__init__.py"):
            async with http.get(base + f"/static/{name}") as refused:
                assert refused.status == 404, name
