"""deploy/docker/docker-compose.yml's topology, run without containers (deploy/README.md).

The compose file's hubs become as many ``flux serve`` processes (its hub environment,
with the test Redis for ``redis``), started on one Redis; like compose's health gates,
nginx starts only once every hub answers /readyz. nginx is Debian's, with the shipped
deploy/nginx/standalone.conf around deploy/docker/nginx-compose.conf, rendered with the
hubs' 127.0.0.1 ports and a free listen port (tests/nginx_local.py). Then the Python
SDK works through nginx only: a native WebSocket round trip, the hub holding the
subscription killed with SIGKILL mid-publish, then the next holder stopped with SIGTERM,
and each time the client's replica compared with the REST state: nothing missed, every
event applied once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import yaml

from flux_client import EntityCache, FluxClient, make_event

from .conftest import timeout
from .doc_blocks import ROOT
from .native_client import rest_state
from .nginx_local import NGINX, prefix_dir, render, run_nginx, upstream_servers
from .processes import HubProcess, free_port, until_ready

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx)"
)

COMPOSE = ROOT / "deploy/docker/docker-compose.yml"
NGINX_COMPOSE = ROOT / "deploy/docker/nginx-compose.conf"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _hub_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the hub's Dockerfile."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_nginx_compose_upstreams_are_the_compose_hubs() -> None:
    compose = _compose()
    hubs = _hub_services(compose)
    assert sorted(hubs) == ["hub-1", "hub-2", "hub-3"]
    ports = {str(s["environment"]["PORT"]) for s in hubs.values()}
    servers = upstream_servers(NGINX_COMPOSE.read_text(encoding="utf-8"))
    assert servers == [f"{name}:{port}" for name in sorted(hubs) for port in ports]


async def _native_subscriptions(port: int) -> int:
    """``flux_subscriptions{protocol="native"}`` of one hub (asked directly, not via nginx)."""
    async with httpx.AsyncClient(timeout=timeout(5)) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    match = re.search(r'^flux_subscriptions\{protocol="native"\} (\S+)$', text, re.M)
    assert match, "no flux_subscriptions gauge in /metrics"
    return int(float(match[1]))


@pytest.fixture
async def hubs(redis_url: str, key_prefix: str) -> AsyncIterator[list[HubProcess]]:
    services = _hub_services(_compose())
    started: list[HubProcess] = []
    try:
        for service in services.values():
            env = {k: str(v) for k, v in service["environment"].items()}
            del env["FLUX_REDIS_URL"], env["PORT"]  # the test Redis, a free port
            env["FLUX_LOG_LEVEL"] = "warning"
            hub = HubProcess(redis_url, key_prefix, free_port(), env=env)
            await hub.start()
            started.append(hub)
        for hub in started:
            await until_ready(f"http://127.0.0.1:{hub.port}")  # as compose's healthcheck
        yield started
    finally:
        for hub in started:
            await hub.stop()


@pytest.mark.slow
async def test_three_hubs_behind_the_shipped_nginx_survive_a_kill_and_a_stop(
    hubs: list[HubProcess],
) -> None:
    listen = free_port()
    shipped = NGINX_COMPOSE.read_text(encoding="utf-8")
    conf = render(shipped, [f"127.0.0.1:{hub.port}" for hub in hubs], f"127.0.0.1:{listen}")
    changed = [a for a, b in zip(shipped.splitlines(), conf.splitlines(), strict=True) if a != b]
    assert len(changed) == len(hubs) + 1  # the upstream servers and the listen line only

    with prefix_dir(conf) as prefix:
        assert (prefix / "standalone.conf").read_bytes() == (
            ROOT / "deploy/nginx/standalone.conf"
        ).read_bytes()
        async with run_nginx(prefix, listen) as nginx:
            await _an_event_stream_is_not_held_back(f"http://127.0.0.1:{listen}")
            await _lose_the_subscribers_hub_twice(f"http://127.0.0.1:{listen}", hubs)
            assert nginx.returncode is None
        log = (prefix / "error.log").read_text(errors="replace")
        assert "[emerg]" not in log and "[alert]" not in log, log


async def _an_event_stream_is_not_held_back(url: str) -> None:
    """GET /api/stream through nginx: a change arrives at once.

    The hub asks nginx not to buffer the stream (``X-Accel-Buffering: no``), so this
    holds even with ``proxy_buffering on`` (tried); the shipped config turns it off
    for every response anyway (a proxy that ignores that header would hold events).
    """
    async with httpx.AsyncClient(base_url=url, timeout=timeout(10)) as http:
        params = {"prefixes": "sse/", "snapshot": "false"}
        async with http.stream("GET", "/api/stream", params=params) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()

            async def line_where(predicate: Callable[[str], bool]) -> str:
                async for line in lines:
                    if predicate(line):
                        return line
                raise AssertionError("the stream ended")

            await asyncio.wait_for(line_where(lambda x: x == "event: subscribed"), timeout(10))
            event = {
                "stream": "s",
                "source": "t",
                "payload": {"entity_id": "sse/a", "properties": {"n": 1}},
            }
            assert (await http.post("/api/events", json=event)).status_code == 200
            started = asyncio.get_running_loop().time()
            data = await asyncio.wait_for(line_where(lambda x: '"type":"delta"' in x), 5)
            assert '"id":"sse/a"' in data, data
            assert asyncio.get_running_loop().time() - started < 2


async def _lose_the_subscribers_hub_twice(url: str, hubs: list[HubProcess]) -> None:
    """SIGKILL the hub holding the subscription mid-publish, then SIGTERM the next one."""
    per_round = 240
    prefix = "deploy/"
    sent: list[str] = []
    async with (
        FluxClient(url, request_timeout=timeout(30), backoff=(0.05, 0.5)) as subscriber,
        FluxClient(url, request_timeout=timeout(30), backoff=(0.05, 0.5)) as publisher,
    ):
        async with EntityCache(subscriber, prefixes=[prefix]) as cache:
            # A round trip through nginx: published over one WebSocket, seen on the other.
            await publisher.publish(f"{prefix}hello", {"via": "nginx"})
            await cache.wait_until(
                lambda entities: f"{prefix}hello" in entities, within=timeout(10)
            )
            alive = list(hubs)
            for round_, lose in enumerate([HubProcess.kill, HubProcess.stop], start=1):
                counts = [await _native_subscriptions(hub.port) for hub in alive]
                assert sum(counts) == 1, counts
                holder = alive.pop(counts.index(1))
                generation = subscriber.generation
                a_third_sent = asyncio.Event()

                async def publish(
                    round_: int = round_, event: asyncio.Event = a_third_sent
                ) -> None:
                    for k in range(per_round):
                        published = make_event(f"{prefix}{k % 6}", {"round": round_, "k": k})
                        sent.append(published["eventId"])
                        if k == per_round // 3:
                            event.set()
                        results = await publisher.publish_many([published], raise_on_error=True)
                        assert results[0].event_id == published["eventId"]

                publishing = asyncio.create_task(publish())
                await a_third_sent.wait()
                # SIGKILL: no close frame, no goodbye. SIGTERM: the hub closes with 1001.
                await lose(holder)
                await asyncio.wait_for(publishing, timeout(60))

                expected = await rest_state(url, prefix)
                await _until_equal(cache, expected)
                assert cache.gaps == 0
                assert subscriber.generation > generation, f"round {round_}: no reconnection"
                # The subscription now lives on a surviving hub.
                assert sum([await _native_subscriptions(hub.port) for hub in alive]) == 1

        # Every event applied exactly once: each id once in the entities' histories.
        ids: list[str] = []
        for n in range(6):
            ids += [e["eventId"] for e in await publisher.history(f"{prefix}{n}", limit=1000)]
        assert sorted(ids) == sorted(sent)
        assert {k: v for k, (v, _) in expected.items() if k != f"{prefix}hello"} == {
            f"{prefix}{n}": 2 * per_round // 6 for n in range(6)
        }


async def _until_equal(cache: EntityCache, expected: dict[str, tuple[int, dict[str, Any]]]) -> None:
    """The replica holds exactly ``expected`` (ids, versions, properties)."""
    await cache.wait_until(lambda _: cache.snapshot() == expected, within=timeout(20))
