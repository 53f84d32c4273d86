"""``GET /metrics``: Prometheus text that prometheus_client's parser reads, with
figures that move with what the hub does."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import timeout
from .native_client import Native, event


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_parse_and_count_what_happened(http: httpx.AsyncClient, ws_url: str) -> None:
    native = await Native.connect(ws_url)
    try:
        await native.request(
            {"type": "subscribe", "sub": "s", "filter": {"all": True}}, "subscribed"
        )
        await http.post("/api/events", json=event("m/1", v=1))
        await http.post("/api/events", json={**event("m/1", v=2), "eventId": "once"})
        await http.post("/api/events", json={**event("m/1", v=3), "eventId": "once"})
        await http.post("/api/events", json={"stream": "BAD", "source": "s", "payload": {}})
        await native.publish({**event("m/2", v=1), "if_version": 5})
        await native.recv_type("delta")
        reply = await http.get("/metrics")
    finally:
        await native.close()
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(reply.text)
    # Two of ours; the hub's own flux-core/directory writes count too.
    assert samples[("flux_events_accepted_total", (("outcome", "ok"),))] >= 2
    assert samples[("flux_events_accepted_total", (("outcome", "duplicate"),))] == 1
    assert samples[("flux_events_rejected_total", (("reason", "invalid"),))] == 1
    assert samples[("flux_events_rejected_total", (("reason", "conflict"),))] == 1
    assert samples[("flux_connections", (("kind", "native"),))] == 1
    assert samples[("flux_subscriptions", (("protocol", "native"),))] == 1
    assert samples[("flux_ws_frames_sent_total", (("protocol", "native"),))] >= 2
    assert samples[("flux_redis_apply_seconds_count", ())] >= 1
    assert ("flux_queue_depth", (("queue", "ingest"),)) in samples


async def test_metrics_count_websocket_closes_by_code(http: httpx.AsyncClient, ws_url: str) -> None:
    native = await Native.connect(ws_url)
    await native.close()
    await asyncio.sleep(0.1)
    samples = _samples((await http.get("/metrics")).text)
    assert samples[("flux_ws_closes_total", (("code", "1000"),))] == 1


async def test_curl_reads_metrics_that_parse(base_url: str) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    process = await asyncio.create_subprocess_exec(
        curl, "-sf", base_url + "/metrics", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout(10))
    assert process.returncode == 0
    names = {f.name for f in text_string_to_metric_families(out.decode())}
    assert {
        "flux_events_accepted",
        "flux_ws_closes",
        "flux_redis_apply_seconds",
        "flux_rate_limited",
    } <= names
