"""The dashboard's layout at the widths people open it at, in headless Chromium.

Seen on a newcomer's screenshots: at 1280 px with a scrollbar (1200 px without) the
eighth figure, "updates received", wrapped alone onto a second row; below 800 px the
page scrolled sideways (the filter boxes' intrinsic width pushed the entity list past
the screen, and the connectors' fixed columns past the page).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from .browser import CHROMIUM, DevTools
from .conftest import timeout

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's package (apt-get install chromium); .ci/run does",
)

#: Page expression: the page's width and its visible width, and the top of each figure.
LAYOUT = (
    "JSON.stringify({scroll: document.documentElement.scrollWidth,"
    " client: document.documentElement.clientWidth,"
    " tops: [...document.querySelectorAll('#figures .figure')]"
    ".map((f) => Math.round(f.getBoundingClientRect().top))})"
)


async def _open_at(devtools: DevTools, base_url: str, width: int) -> dict[str, Any]:
    await devtools.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    await devtools.send("Page.navigate", {"url": f"{base_url}/"})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(15)
    script = "document.getElementById('connection')?.dataset.state"
    while await devtools.evaluate(script) != "live":
        assert loop.time() < deadline, devtools.page_errors()
        await asyncio.sleep(0.05)
    # The connectors panel fills in after its first read.
    while not await devtools.evaluate("document.querySelectorAll('#connectors tbody tr').length"):
        assert loop.time() < deadline, devtools.page_errors()
        await asyncio.sleep(0.05)
    layout: dict[str, Any] = json.loads(await devtools.evaluate(LAYOUT))
    return layout


async def test_dashboard_fits_the_screen_from_phone_to_desktop(
    devtools: DevTools, base_url: str, http: httpx.AsyncClient
) -> None:
    reply = await http.post(
        "/api/events",
        json={
            "stream": "layout",
            "source": "pytest",
            "payload": {"entity_id": "lab/a-rather-long-entity-id", "properties": {"t": 1}},
        },
    )
    assert reply.status_code == 200
    for width in (390, 700, 1024, 1200):
        layout = await _open_at(devtools, base_url, width)
        assert layout["scroll"] == layout["client"], (width, layout)  # no sideways scroll
        if width >= 1200:  # 8 x 8.5rem + gaps + padding = 1184 px: the eight figures in one row
            assert len(set(layout["tops"])) == 1, (width, layout)
    assert devtools.page_errors() == []


async def test_dashboard_shows_an_update_of_another_day_whole(
    devtools: DevTools, base_url: str, http: httpx.AsyncClient
) -> None:
    # The page's clock two days ahead: every entity was updated on another day, so its
    # time is shown with its date (2026-12-06 23:29:38), which must fit its column.
    await devtools.send(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "const Real = Date, ahead = 2 * 86400000;"
            "globalThis.Date = class extends Real {"
            " constructor(...a) { a.length ? super(...a) : super(Real.now() + ahead); }"
            " static now() { return Real.now() + ahead; } };"
        },
    )
    reply = await http.post(
        "/api/events",
        json={
            "stream": "layout",
            "source": "pytest",
            "payload": {"entity_id": "lab/old", "properties": {"t": 1}},
        },
    )
    assert reply.status_code == 200
    await _open_at(devtools, base_url, 1280)
    # The entity's row comes with the page's snapshot, which may land after the
    # connection shows "live" and the connectors panel fills (on a busy machine).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(15)
    cells: list[list[Any]] = []
    while not cells:
        assert loop.time() < deadline, devtools.page_errors()
        await asyncio.sleep(0.05)
        cells = json.loads(
            await devtools.evaluate(
                "JSON.stringify([...document.querySelectorAll('#entities td.time')]"
                ".map((td) => [td.textContent, td.scrollWidth <= td.clientWidth]))"
            )
        )
    assert cells and all(len(text) == 19 and fits for text, fits in cells), cells
