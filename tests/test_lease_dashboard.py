"""The dashboard shows when a lease runs out, in a real browser (headless Chromium, as
tests/test_dashboard_browser.py drives it): "expires in Ns" under a leased entity's
id, counted down, moved by a heartbeat, gone with ``ttl: 0``; the detail says it too."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from .browser import CHROMIUM, DevTools
from .test_leases import publish
from .test_where_dashboard import wait_for

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's package (apt-get install chromium); .ci/run does",
)


def lease_of(entity_id: str) -> str:
    """A page expression: the lease text under an entity's id ('' without one)."""
    return (
        "(() => { const tr = [...document.querySelectorAll('#entities tbody tr')]"
        f".find((r) => r.dataset.id === {json.dumps(entity_id)});"
        " return tr ? (tr.querySelector('.lease')?.textContent ?? '') : null; })()"
    )


def seconds(text: str) -> int:
    found = re.fullmatch(r"expires in (\d+)s", text)
    assert found, text
    return int(found.group(1))


async def test_dashboard_counts_a_lease_down_and_follows_its_moves(
    devtools: DevTools, base_url: str, http: httpx.AsyncClient
) -> None:
    await publish(http, "d/agent", ttl=20, status="online")
    await publish(http, "d/plain", x=1)
    await devtools.send("Page.navigate", {"url": f"{base_url}/#filter=d/"})
    await wait_for(devtools, lease_of("d/plain"), "", 15)
    first = seconds(await devtools.evaluate(lease_of("d/agent")))
    assert 17 <= first <= 20
    # Counted down by the page's clock, with no frame from the hub.
    await wait_for(devtools, lease_of("d/agent"), f"expires in {first - 1}s", 3)
    await publish(http, "d/agent", ttl=50, status="online")  # a beat: only the deadline
    await wait_for(devtools, f"{lease_of('d/agent')}.startsWith('expires in 4')", True)
    await devtools.evaluate(
        "document.querySelector('#entities tbody tr[data-id=\"d/agent\"]').click()"
    )
    meta = "document.getElementById('detail-meta').textContent"
    await wait_for(devtools, f"/ · expires in 4\\d+s \\(.+Z\\)$/.test({meta})", True)
    await publish(http, "d/agent", ttl=0, status="online")  # the lease removed
    await wait_for(devtools, lease_of("d/agent"), "")
    await wait_for(devtools, f"{meta}.includes('expires')", False)
    assert devtools.page_errors() == []
