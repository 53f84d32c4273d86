"""The dashboard's value filter in a real browser (headless Chromium, as
tests/test_dashboard_browser.py drives it): rows come and go as values change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from .browser import CHROMIUM, DevTools
from .conftest import timeout
from .native_client import rest_publish

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's package (apt-get install chromium); .ci/run does",
)

ROWS = "[...document.querySelectorAll('#entities tbody tr')].map((r) => r.dataset.id).join(' ')"


async def wait_for(tools: DevTools, expression: str, wanted: Any, within: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(within)
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await tools.evaluate(expression)
        if value == wanted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{expression} is {value!r}, not {wanted!r} ({tools.page_errors()})")


async def publish(http: httpx.AsyncClient, entity_id: str, **properties: Any) -> None:
    await rest_publish(http, entity_id, properties)


async def test_dashboard_value_filter_shows_only_matching_rows(
    devtools: DevTools, base_url: str, http: httpx.AsyncClient
) -> None:
    await publish(http, "v/a", status="open", load=1)
    await publish(http, "v/b", status="done", load=1)
    await publish(http, "v/c", status="open", load=9)
    await devtools.send("Page.navigate", {"url": f"{base_url}/#filter=v/&where=status=open load<5"})
    await wait_for(devtools, ROWS, "v/a", 15)
    await publish(http, "v/b", status="open")  # enters
    await wait_for(devtools, ROWS, "v/a v/b")
    await publish(http, "v/a", load=7)  # leaves
    await wait_for(devtools, ROWS, "v/b")
    # Typed in the box: a new filter (the fragment follows).

    def set_where(text: str) -> str:
        return (
            "(() => { const box = document.getElementById('where');"
            f" box.value = {json.dumps(text)}; box.dispatchEvent(new Event('input')); }})()"
        )

    await devtools.evaluate(set_where("zone in x,y"))
    await publish(http, "v/c", zone="y")
    await wait_for(devtools, ROWS, "v/c")
    assert "where=zone+in+x%2Cy" in await devtools.evaluate("location.hash")
    # Not a filter: the box says why, and the table stays as it was.
    await devtools.evaluate(set_where("=5"))
    await wait_for(devtools, "document.getElementById('where').validity.valid", False, 2)
    message = await devtools.evaluate("document.getElementById('where').validationMessage")
    assert message.startswith('"=5": expected name=value')
    assert await devtools.evaluate(ROWS) == "v/c"
    assert devtools.page_errors() == []
