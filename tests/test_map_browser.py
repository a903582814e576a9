"""The board's map in headless Chromium, against the whole server: the legend of what
each mark means, calls gathered into clusters when zoomed out and apart when zoomed in,
and the selected call's route from the household to the carers sent.

Screenshots for people to look at go to test-artifacts/ (map-legend-zh.png, -en.png,
map-clusters.png, map-route.png, and the whole board: board-map-zh.png, -en.png,
board-clusters-zh.png, board-route-zh.png).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from callcenter.domain.events import EventKind
from tests.api_support import Api
from tests.fixtures.browser import ARTIFACTS, OpenTab
from tests.ingest_support import publish_events
from tests.test_board_browser import card, passwords, sign_in

pytestmark = pytest.mark.page

LEGEND_KINDS = [
    "alarm",
    "owned",
    "other",
    "cluster",
    "carer_free",
    "carer_busy",
    "station",
    "route",
]


async def zoom(page: Page) -> int:
    return int(await page.locator("#map").get_attribute("data-zoom") or 0)


def zoomed(sign: str, before: int) -> str:
    """A predicate: the map's zoom has gone past ``before`` and the clusters have stopped
    moving (Leaflet.markercluster marks the map while they animate)."""
    return (
        "() => { const map = document.querySelector('#map');"
        f" return Number(map.dataset.zoom) {sign} {before}"
        " && !map.querySelector('.leaflet-cluster-anim'); }"
    )


async def zoom_by(page: Page, control: str) -> None:
    """Click the map's zoom-in or zoom-out button and wait for the new level."""
    before = await zoom(page)
    await page.click(f"#map .leaflet-control-zoom-{control}")
    sign = ">" if control == "in" else "<"
    await settled_marks(page, zoomed(sign, before))


async def settled_marks(page: Page, predicate: str) -> Any:
    """What ``predicate`` answers once it answers something (the clusters animate after
    each zoom), polled for up to 10 s."""
    for _ in range(100):
        found = await page.evaluate(predicate)
        if found:
            return found
        await page.wait_for_timeout(100)
    raise AssertionError(f"the map's marks never settled: {await page.evaluate(predicate)}")


async def open_clusters(page: Page) -> None:
    """Click into the map's clusters, the biggest first, until none is left in view."""
    clusters = page.locator("#map .call-cluster")
    for _ in range(10):
        if await clusters.count() == 0:
            return
        before = await zoom(page)
        biggest = await clusters.evaluate_all(
            "cs => cs.reduce((b, c, i, all) =>"
            " Number(c.textContent) > Number(all[b].textContent) ? i : b, 0)"
        )
        # A cluster may lie under the map's edge, where a pointer cannot reach it.
        await clusters.nth(biggest).dispatch_event("click")
        await settled_marks(page, zoomed(">", before))
    raise AssertionError("clusters left after zooming into them ten times")


async def test_the_legend_names_every_mark_in_the_board_language(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that the map's legend lists every kind of mark (alarm nobody took, alarm
    taken, other call, a cluster, carers free and busy, station, route) in Chinese, then
    in English after the language switch, and that a taken alarm, an untaken one and a
    service request are drawn as three different marks."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    legend = page.locator("#map-legend")
    await expect(legend).to_be_visible()
    kinds = await legend.locator("li").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds == LEGEND_KINDS
    await expect(legend.locator("summary")).to_have_text("图例")
    await expect(legend.locator('[data-kind="alarm"]')).to_contain_text("无人接手")
    await expect(legend.locator('[data-kind="alarm"]')).to_have_attribute(
        "title", "紧急呼叫或跌倒，还没有接线员接手（闪烁）"
    )
    await expect(legend.locator('[data-kind="carer_busy"] .legend-carer')).to_have_count(3)

    untaken = await api.press("H0001")
    taken = await api.press("H0002")
    await api.post(f"/api/calls/{taken}/acknowledge", who="li.na")
    request = await api.press("H0003", EventKind.SERVICE_REQUEST)
    await open_clusters(page)
    for call_id, kind in ((untaken, "alarm"), (taken, "owned"), (request, "other")):
        await expect(card(page, call_id)).to_be_visible()
        await expect(page.locator(f"#map .call-icon.{kind}")).to_have_count(1)
    await page.locator("#side-panel").screenshot(path=str(ARTIFACTS / "map-legend-zh.png"))
    await tab.screenshot("board-map-zh")

    # Closed, it stays closed over a reload (this browser remembers); opened again, the
    # browser keeps nothing.
    await legend.locator("summary").click()
    await expect(legend.locator("li").first).to_be_hidden()
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-connection", "live")
    await expect(legend.locator("summary")).to_be_visible()
    await expect(legend.locator("li").first).to_be_hidden()
    await legend.locator("summary").click()
    await expect(legend.locator("li").first).to_be_visible()
    assert await page.evaluate("localStorage.getItem('board.legend')") is None

    await page.click("#lang-toggle")
    await expect(legend.locator("summary")).to_have_text("Legend")
    await expect(legend.locator('[data-kind="owned"]')).to_contain_text("taken")
    await expect(legend.locator('[data-kind="route"]')).to_contain_text("Selected call's route")
    await expect(legend.locator('[data-kind="carer_busy"]')).to_have_attribute(
        "title", "Sent (yellow), on the way (blue), on scene (purple)"
    )
    await page.locator("#side-panel").screenshot(path=str(ARTIFACTS / "map-legend-en.png"))
    await tab.screenshot("board-map-en")
    assert tab.errors == []


async def test_calls_cluster_when_zoomed_out_and_part_when_zoomed_in(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that 40 households' alarms, seen across the whole district, are drawn as a
    few numbered clusters (red: they hold alarms nobody took) counting every call, and
    that zooming into a cluster shows the calls one by one, with no cluster left once
    zoomed in to street level."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    await expect(page.locator("#map")).to_have_attribute("data-clustering", "on")
    households = [f"H{n:04d}" for n in range(1, 41)]
    await publish_events(
        api.broker.host,
        api.broker.port,
        api.prefix,
        [(h, f"CB-{h}", f"cluster-{h}") for h in households],
        EventKind.EMERGENCY_PRESS,
    )
    await expect(page.locator("#calls-count")).to_contain_text("40", timeout=30_000)
    # Zoomed out to the whole district.
    while await zoom(page) > 11:
        await zoom_by(page, "out")
    clusters = page.locator("#map .call-cluster")
    await expect(clusters.first).to_be_visible()
    # Once the clusters' animation has settled: fewer marks than calls, and every call
    # counted once, in a cluster's number or as a mark of its own.
    marks = """() => {
        const counted = [...document.querySelectorAll('#map .call-cluster')]
            .map(c => Number(c.textContent));
        const singles = document.querySelectorAll('#map .call-icon').length;
        const sum = counted.reduce((a, b) => a + b, 0);
        return counted.length > 0 && counted.length + singles < 40 && sum + singles === 40
            && {counted, singles};
    }"""
    settled = await settled_marks(page, marks)
    counted = settled["counted"]
    assert await page.locator("#map .call-cluster-alarm").count() == len(counted)
    await page.locator("#side-panel").screenshot(path=str(ARTIFACTS / "map-clusters.png"))
    await tab.screenshot("board-clusters-zh")

    # Into the clusters until the calls in view stand apart, one mark each.
    await open_clusters(page)
    assert await page.locator("#map .call-icon.alarm").count() > 0
    # At street level nothing is grouped any more, wherever the map is.
    while await zoom(page) < 16:
        await zoom_by(page, "in")
    await expect(page.locator("#map .call-cluster")).to_have_count(0)
    assert tab.errors == []


async def test_the_selected_call_shows_its_route_to_the_carers_sent(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that selecting a call draws a line from its household to the carer the desk
    paged, named at the line's end; a second carer sent adds a second line; another call
    selected shows only its own (none, with nobody sent)."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    call_id = await api.press("H0001")
    await expect(card(page, call_id)).to_be_visible()
    # Nothing selected: no route.
    await expect(page.locator("#map")).to_have_attribute("data-routes", "0")
    await card(page, call_id).click()
    detail = await api.call(call_id)
    paged = detail["assignments"][0]["carer"]
    await expect(page.locator("#map")).to_have_attribute("data-routes", "1")
    await expect(page.locator("#map path.route-line")).to_have_count(1)
    await expect(page.locator("#map .route-end")).to_have_text(paged)

    candidates = (await api.get(f"/api/calls/{call_id}/candidates")).body["candidates"]
    second = next(c["code"] for c in candidates if c["code"] != paged)
    await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")
    reply = await api.post(f"/api/calls/{call_id}/dispatch", {"carer": second}, who="li.na")
    assert reply.status == 200, reply.body
    await expect(page.locator("#map")).to_have_attribute("data-routes", "2")
    ends = sorted(await page.locator("#map .route-end").all_text_contents())
    assert ends == sorted([paged, second])
    await page.locator("#side-panel").screenshot(path=str(ARTIFACTS / "map-route.png"))
    await tab.screenshot("board-route-zh")

    other = await api.press("H0050", EventKind.SERVICE_REQUEST)
    await card(page, other).click()
    await expect(page.locator("#map .route-end", has_text=second)).to_have_count(0)
    await card(page, call_id).click()
    await expect(page.locator("#map")).to_have_attribute("data-routes", "2")
    assert tab.errors == []
