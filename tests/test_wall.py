"""The wallboard's page over HTTP: for supervisors and administrators, refused to an
operator with a reason, the sign-in page for anyone not signed in; the map's npm
packages served only to someone signed in, and no other package."""

from __future__ import annotations

from callcenter.web.assets import MARKERCLUSTER, WALL_PAGE
from tests.api_support import Api, set_password
from tests.board_support import browser


async def test_the_wallboard_is_for_supervisors_and_administrators(api: Api) -> None:
    """Test that /wall sends a stranger to the sign-in page, refuses an operator with a
    403 page that says why (in both languages) and links back to the board, and serves
    the page to a supervisor and to an administrator."""
    async with browser(api) as stranger:
        reply = await stranger.get("/wall")
        assert (reply.status, reply.headers["Location"]) == (303, "/login")
        reply = await stranger.get("/static/wall/wall.js")
        assert (reply.status, reply.headers["Location"]) == (303, "/login")

    for username in ("li.na", "zhao.min", "sun.admin"):
        await set_password(api.server, username)
    async with browser(api) as operator:
        assert (await operator.sign_in("li.na")).status == 303
        reply = await operator.get("/wall")
        assert reply.status == 403
        text = await reply.text()
        assert "li.na" in text and "supervisors" in text and "主管" in text
        assert 'href="/board"' in text
    for username in ("zhao.min", "sun.admin"):
        async with browser(api) as allowed:
            assert (await allowed.sign_in(username)).status == 303
            async with allowed.http.get("/wall", allow_redirects=False) as reply:
                assert reply.status == 200, username
                assert await reply.read() == WALL_PAGE.read_bytes()
                assert reply.headers["Cache-Control"] == "no-cache"


async def test_the_map_packages_are_served_to_someone_signed_in_and_nothing_else(
    api: Api,
) -> None:
    """Test that Leaflet.markercluster's script is served from npm's dist/ to someone
    signed in (and not to a stranger), and that a package the pages do not load, or a
    way out of a package's folder, is a 404."""
    path = "/static/vendor/leaflet.markercluster/leaflet.markercluster.js"
    async with browser(api) as stranger:
        assert (await stranger.get(path)).status == 303
    await set_password(api.server, "li.na")
    async with browser(api) as operator:
        assert (await operator.sign_in("li.na")).status == 303
        async with operator.http.get(path, allow_redirects=False) as reply:
            assert reply.status == 200
            assert await reply.read() == (MARKERCLUSTER / "leaflet.markercluster.js").read_bytes()
        for refused in (
            "/static/vendor/leaflet.markercluster/../package.json",
            "/static/vendor/leaflet.markercluster/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
            "/static/vendor/leaflet.markercluster/src/index.js",
            "/static/vendor/left-pad/index.js",
            "/static/vendor/..%2fleaflet/package.json",
        ):
            assert (await operator.get(refused)).status == 404, refused
