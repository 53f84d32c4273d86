"""The Flux skill's ``flux.sh``, call by call, with the real ``curl``.

FLUX_COMPAT.md, "The skill's command-line client": each helper below builds exactly
the argument vector the script builds (``curl -s -X METHOD URL -H "Content-Type:
application/json" [-d DATA]``, ids pasted unescaped into the JSON, ``/`` sent as
``%2F``, ``timestamp`` as ``<epoch seconds>000``). curl runs as a subprocess of the
event loop that also runs the hub, so it is awaited, never run blocking.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

import pytest

from hub.store import Store

from .conftest import make_settings, running_hub, timeout

CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(
    CURL is None, reason="curl is not installed: these tests drive the real curl binary"
)

ADMIN_TOKEN = "skill-admin-token"


class FluxSh:
    """The HTTP calls of ``flux.sh``, one method per verb."""

    def __init__(self, flux_url: str, admin_token: str = "") -> None:
        self.flux_url = flux_url
        self.admin_token = admin_token

    async def _curl(self, *args: str) -> str:
        assert CURL is not None
        process = await asyncio.create_subprocess_exec(
            CURL,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout(10))
        assert process.returncode == 0, f"curl {args}: exit {process.returncode}: {stderr!r}"
        return stdout.decode()

    async def api_call(self, method: str, endpoint: str, data: str = "") -> str:
        # FLUX_TOKEN is unset (Internal mode), so no Authorization header.
        cmd = ["-s", "-X", method, f"{self.flux_url}{endpoint}"]
        cmd += ["-H", "Content-Type: application/json"]
        if data:
            cmd += ["-d", data]
        return await self._curl(*cmd)

    async def publish(self, stream: str, source: str, entity_id: str, properties: str) -> Any:
        timestamp = f"{int(time.time())}000"
        payload = f'{{\n  "entity_id": "{entity_id}",\n  "properties": {properties}\n}}'
        event = (
            f'{{\n  "stream": "{stream}",\n  "source": "{source}",\n'
            f'  "timestamp": {timestamp},\n  "payload": {payload}\n}}'
        )
        return json.loads(await self.api_call("POST", "/api/events", event))

    async def batch(self, events: str) -> Any:
        return json.loads(
            await self.api_call("POST", "/api/events/batch", f'{{"events": {events}}}')
        )

    async def get(self, entity_id: str) -> Any:
        encoded = entity_id.replace("/", "%2F")
        return json.loads(await self.api_call("GET", f"/api/state/entities/{encoded}"))

    async def list(self, flag: str = "", value: str = "") -> Any:
        query = ""
        if flag == "--prefix" and value:
            query = f"?prefix={value}"
        elif flag == "--namespace" and value:
            query = f"?namespace={value}"
        return json.loads(await self.api_call("GET", f"/api/state/entities{query}"))

    async def delete(self, entity_id: str) -> Any:
        encoded = entity_id.replace("/", "%2F")
        return json.loads(await self.api_call("DELETE", f"/api/state/entities/{encoded}"))

    async def batch_delete(self, filter_json: str) -> Any:
        return json.loads(await self.api_call("POST", "/api/state/entities/delete", filter_json))

    async def admin_config(self, update: str = "") -> Any:
        if not update:
            return json.loads(await self.api_call("GET", "/api/admin/config"))
        assert self.admin_token, "flux.sh refuses to send the PUT without FLUX_ADMIN_TOKEN"
        reply = await self._curl(
            "-s",
            "-X",
            "PUT",
            f"{self.flux_url}/api/admin/config",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {self.admin_token}",
            "-d",
            update,
        )
        return json.loads(reply)

    async def health(self) -> int:
        """Reachable when the reply is non-empty; returns the number of entities."""
        response = await self.api_call("GET", "/api/state/entities")
        assert response, "flux.sh health: empty reply, Flux unreachable"
        entities = json.loads(response)
        return len([e for e in entities if not e["id"].startswith("flux-core/")])


def _ids(entities: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entities if not e["id"].startswith("flux-core/")]


async def test_skill_commands_work_through_curl(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"admin_token": ADMIN_TOKEN})
    async with running_hub(settings, store) as hub:
        flux = FluxSh(f"http://127.0.0.1:{hub.port}", ADMIN_TOKEN)

        assert await flux.health() == 0

        published = await flux.publish(
            "sensors", "agent-01", "demo/temp-sensor-01", '{"temperature":22.5,"unit":"celsius"}'
        )
        assert set(published) == {"eventId", "stream"}
        assert published["stream"] == "sensors" and len(published["eventId"]) == 36
        await flux.publish("sensors", "agent-02", "demo/temp-sensor-01", '{"temperature":23.1}')
        await flux.publish("system", "monitor", "api-gateway", '{"status":"healthy","uptime":3600}')

        entity = await flux.get("demo/temp-sensor-01")
        assert entity["id"] == "demo/temp-sensor-01"
        assert entity["properties"] == {"temperature": 23.1, "unit": "celsius"}
        assert entity["lastUpdated"].endswith("Z")
        assert (await flux.get("api-gateway"))["properties"]["status"] == "healthy"

        batched = await flux.batch(
            "[\n"
            '  {"stream":"sensors","source":"agent-01","payload":{"entity_id":"demo/sensor-01","properties":{"temp":22}}},\n'
            '  {"stream":"sensors","source":"agent-01","payload":{"entity_id":"demo/sensor-02","properties":{"temp":23}}}\n'
            "]"
        )
        assert batched["successful"] == 2 and batched["failed"] == 0
        assert all(r["error"] is None and r["stream"] == "sensors" for r in batched["results"])
        assert (await flux.get("demo/sensor-02"))["properties"] == {"temp": 23}

        demo = ["demo/sensor-01", "demo/sensor-02", "demo/temp-sensor-01"]
        assert _ids(await flux.list()) == ["api-gateway", *demo]
        assert _ids(await flux.list("--prefix", "demo/")) == demo
        assert _ids(await flux.list("--prefix", "demo/sensor")) == demo[:2]
        assert _ids(await flux.list("--namespace", "demo")) == demo
        assert await flux.health() == 4

        deleted = await flux.delete("demo/temp-sensor-01")
        assert set(deleted) == {"entity_id", "eventId"}
        assert deleted["entity_id"] == "demo/temp-sensor-01"
        assert await flux.get("demo/temp-sensor-01") == {
            "error": "Entity not found",
            "code": "not_found",
        }

        assert await flux.batch_delete('{"prefix":"loadtest-"}') == {
            "deleted": 0,
            "failed": 0,
            "errors": [],
        }
        assert await flux.batch_delete('{"entity_ids":["api-gateway","id2"]}') == {
            "deleted": 1,
            "failed": 0,
            "errors": [],
        }
        assert await flux.batch_delete('{"namespace":"demo"}') == {
            "deleted": 2,
            "failed": 0,
            "errors": [],
        }
        assert await flux.health() == 0

        defaults = {
            "rate_limit_enabled": True,
            "rate_limit_per_namespace_per_minute": 10000,
            "body_size_limit_single_bytes": 1048576,
            "body_size_limit_batch_bytes": 10485760,
        }
        assert await flux.admin_config() == defaults
        updated = await flux.admin_config('{"rate_limit_per_namespace_per_minute": 5000}')
        assert updated == {**defaults, "rate_limit_per_namespace_per_minute": 5000}
        assert await flux.admin_config() == updated
        refused = FluxSh(flux.flux_url, "not-the-token")
        assert await refused.admin_config('{"rate_limit_enabled": false}') == {
            "error": "Unauthorized",
            "code": "unauthorized",
        }


async def test_skill_getting_started_reads_the_directory(store: Store, key_prefix: str) -> None:
    # SKILL.md: `flux.sh health`, then `flux.sh get flux-core/directory`.
    async with running_hub(make_settings(key_prefix), store) as hub:
        flux = FluxSh(f"http://127.0.0.1:{hub.port}")
        await flux.publish("sensors", "agent-01", "alpha/one", '{"a":1}')
        await flux.publish("sensors", "agent-01", "alpha/two", '{"a":2}')
        await flux.publish("sensors", "agent-01", "beta/one", '{"b":1}')
        assert await flux.health() == 3

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(3)
        while True:
            directory = await flux.get("flux-core/directory")
            namespaces = directory.get("properties", {}).get("namespaces", {})
            if {"alpha", "beta"} <= set(namespaces):
                break
            assert loop.time() < deadline, f"flux-core/directory: {directory}"
            await asyncio.sleep(0.1)
        assert directory["id"] == "flux-core/directory"
        properties = directory["properties"]
        assert {"namespaces", "namespace_count", "total_entities", "updated_at"} <= set(properties)
        assert namespaces["alpha"]["entity_count"] == 2
        assert namespaces["beta"]["entity_count"] == 1
        assert "last_updated" in namespaces["alpha"]
        assert properties["total_entities"] >= 3
