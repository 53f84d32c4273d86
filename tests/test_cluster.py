"""The hub on a real local Redis Cluster (3 masters + 3 replicas, tests/redis_cluster.py).

The core of the compat tests (REST publish, get, list, history, delete; compat
WebSocket state_update, across two hubs), the cross-hub kill -9 resume, lease expiry
in every partition, leases' deadlines on reads and deltas, and the native gapless
snapshot/resume tests run here as written:
they are imported from their modules, and this module's ``redis_url`` and ``settings``
fixtures put them on the cluster with 16 partitions (spread over the three masters).
Then the cluster's own checks: every key on its slot's master, a batch across
partitions, docs/scaling.md's command and the Kubernetes overlay run against it. A
master killed mid-publish: tests/test_cluster_failover.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot

from hub.app import Hub
from hub.config import LogSettings, Settings
from hub.core.model import Change, OutcomeStatus
from hub.errors import LogUnavailable
from hub.store import Keys, Store

from .conftest import make_settings, running_hub, timeout
from .doc_blocks import doc_blocks
from .processes import free_port
from .redis_cluster import LocalCluster

# The tests below run again here, on the cluster (pytest collects imported tests).
from .test_compat_ws import (  # noqa: F401
    client,
    test_client_subscribed_to_an_id_receives_only_that_id,
    test_client_without_subscription_receives_every_update,
    test_deletion_reaches_every_connection_whatever_it_subscribed,
    test_subscriber_on_one_hub_receives_a_publish_made_on_another,
)
from .test_connectors_status import FAST as CONNECTORS_FAST
from .test_connectors_status import KEY as CONNECTORS_KEY
from .test_connectors_status import _detail_until
from .test_cross_hub import hubs, test_publish_on_a_delta_on_b_and_resume_on_c_after_b_is_killed  # noqa: F401
from .test_deploy_configs import K8S, _kustomize, _one, _pod_env
from .test_lease_reads import (  # noqa: F401
    test_a_reader_never_sees_the_deadline_of_another_state,
    test_listings_show_each_deadline_streamed_paged_and_filtered,
    test_native_reads_and_snapshots_carry_the_deadline,
    test_native_subscriber_hears_every_move_of_the_deadline_live_and_on_resume,
    test_rest_read_shows_the_deadline_while_leased_and_moves_it_on_a_beat,
)
from .test_leases import test_every_partition_is_swept  # noqa: F401
from .test_native_sync import (  # noqa: F401
    test_of_20_agents_claiming_one_entity_exactly_one_wins,
    test_resume_catches_up_from_the_cursor_of_a_live_subscription,
    test_snapshot_taken_during_writes_hands_over_exactly,
    test_subscriber_resuming_at_20_random_points_misses_nothing,
)
from .test_replay import replay_json, write_everything
from .test_rest_batch import (  # noqa: F401
    test_batcher_events_are_applied_in_array_order,
    test_batcher_gets_one_result_per_event_with_all_three_keys,
)
from .test_rest_delete_history import (  # noqa: F401
    test_deleter_batch_deletes_what_the_filter_selects,
    test_deleter_removes_entity_and_gets_entity_id_and_event_id,
    test_historian_gets_newest_events_first_up_to_limit,
    test_historian_sees_tombstones_between_updates,
)
from .test_rest_publish import (  # noqa: F401
    test_publisher_reads_its_write_right_after_the_reply,
    test_publisher_repeating_event_id_in_a_batch_is_applied_once,
)
from .test_rest_state import (  # noqa: F401
    test_reader_gets_entities_in_lexicographic_order,
    test_reader_walks_all_pages_with_limit_and_cursor,
)
from .test_store_channel import Item

#: Partitions of the hubs here: enough to spread over the three masters.
PARTITIONS = 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(Path(tmp_path_factory.mktemp("cluster"))) as started:
        yield started


@pytest.fixture(scope="module")
def redis_url(cluster: LocalCluster) -> str:
    return cluster.url


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, redis={"partitions": PARTITIONS})


@pytest.fixture(autouse=True)
def _partitioned_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``flux serve`` processes started by the imported tests use the same partitions."""
    monkeypatch.setenv("FLUX_PARTITIONS", str(PARTITIONS))


# ---------------------------------------------------------------------- the cluster's own


def _all_keys(cluster: LocalCluster, prefix: str) -> list[tuple[int, bytes]]:
    """Every key starting with ``prefix`` on every master, with the master's port."""
    found = []
    for port in cluster.live_ports():
        with redis.Redis(host="127.0.0.1", port=port) as node:
            if node.info("replication")["role"] != "master":
                continue
            found += [(port, key) for key in node.scan_iter(match=prefix + "*", count=1000)]
    return found


async def test_the_store_detects_the_cluster_and_spreads_partitions_over_every_master(
    store: Store, cluster: LocalCluster, key_prefix: str
) -> None:
    assert store.cluster
    masters = {cluster.master_of_key(store.keys.delta_log(p)) for p in range(PARTITIONS)}
    assert len(masters) == 3


async def test_a_batch_across_partitions_is_split_with_a_result_per_event(
    hub: Hub, http: httpx.AsyncClient, store: Store, cluster: LocalCluster, key_prefix: str
) -> None:
    ids = [f"spread/{n}" for n in range(40)]
    assert len({store.keys.partition_of(i) for i in ids}) == PARTITIONS
    events: list[dict[str, Any]] = [
        {
            "stream": "spread",
            "source": "t",
            "eventId": f"spread-{n}",
            "payload": {"entity_id": i, "properties": {"n": n}},
        }
        for n, i in enumerate(ids)
    ]
    # One event that breaks a rule among them: only it fails, the others apply.
    events.insert(7, {"stream": "spread", "source": "", "payload": {"entity_id": "spread/x"}})
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["successful"], body["failed"]) == (40, 1)
    assert [r["error"] is None for r in body["results"]] == [n != 7 for n in range(41)]
    assert [r["eventId"] for r in body["results"][8:]] == [f"spread-{n}" for n in range(7, 40)]
    listing = (await http.get("/api/state/entities", params={"prefix": "spread/"})).json()
    assert sorted(e["id"] for e in listing) == sorted(ids)
    assert {e["properties"]["n"] for e in listing} == set(range(40))
    # Every key the hub wrote is on the master of its slot; all but a few single keys
    # (never two in one call: singleton leases, the runtime config, rate buckets)
    # carry a hash tag: a partition's, or the namespace registry's or connectors'.
    keys = _all_keys(cluster, key_prefix)
    assert len(keys) > 3 * 40
    for port, key in keys:
        text = key.decode()
        assert cluster.master_of_key(text) == port
        rest = text[len(key_prefix) + 1 :]
        assert rest.startswith(("{", "lease:", "config", "rl:")), text


async def test_the_cluster_example_of_docs_scaling_md(cluster: LocalCluster) -> None:
    """docs/scaling.md's command, run as written against the local cluster (its node's
    address replaced; port and host from the environment)."""
    (block,) = [
        b
        for b in doc_blocks()
        if b.path == "docs/scaling.md" and "flux serve --redis" in b.first_line
    ]
    words = shlex.split(block.text.replace("redis://10.0.0.11:6379", cluster.url))
    assignments = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    assert words[:2] == ["flux", "serve"] and assignments == {"FLUX_PARTITIONS": "16"}
    prefix = "doc" + uuid.uuid4().hex[:8]
    env = {**os.environ, **assignments, "FLUX_HOST": "127.0.0.1", "FLUX_KEY_PREFIX": prefix}
    await _serve_and_publish(words[1:], env, {})
    keys = _all_keys(cluster, prefix)
    assert any(key.endswith(b":e:doc/1") for _, key in keys)  # written on the cluster


async def test_the_kubernetes_redis_cluster_overlay_serves_on_a_cluster(
    cluster: LocalCluster,
) -> None:
    """deploy/k8s/redis-cluster's pod environment (its Secret's URL pointed at the local
    cluster), with the Deployment's command: it serves, takes a publish (with the
    admin token: auth is on), its partitions spread over the masters."""
    objects = _kustomize(K8S / "redis-cluster")
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    pod = _pod_env(objects)
    assert pod["FLUX_PARTITIONS"] == "16"
    prefix = "k8s" + uuid.uuid4().hex[:8]
    env = {**os.environ, **pod, "FLUX_REDIS_URL": cluster.url, "FLUX_KEY_PREFIX": prefix}
    env["FLUX_HOST"] = "127.0.0.1"
    assert container["command"][:2] == ["flux", "serve"]
    headers = {"authorization": "Bearer " + pod["FLUX_ADMIN_TOKEN"]}
    await _serve_and_publish(container["command"][1:], env, headers)
    keys = _all_keys(cluster, prefix)
    assert any(key.endswith(b":e:doc/1") for _, key in keys)


async def _serve_and_publish(args: list[str], env: dict[str, str], headers: dict[str, str]) -> None:
    """``flux <args>`` on a free port until it is ready; publish doc/1, read it; SIGTERM."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "flux"), *args, env=env
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=5, headers=headers
        ) as http:
            deadline = asyncio.get_running_loop().time() + timeout(20)
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert asyncio.get_running_loop().time() < deadline, "flux serve did not start"
                await asyncio.sleep(0.1)
            if headers:  # auth is on: a namespace (on the cluster's {ns} slot) and its token
                made = await http.post("/api/namespaces", json={"name": "doc"})
                assert made.status_code == 200, made.text
                http.headers["authorization"] = "Bearer " + made.json()["token"]
            payload = {"entity_id": "doc/1", "properties": {"on": True}}
            event = {"stream": "doc", "source": "t", "payload": payload}
            reply = await http.post("/api/events", json=event)
            assert reply.status_code == 200, reply.text
            assert (await http.get("/api/state/entities/doc%2F1")).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0


async def test_scripts_missing_on_every_master_are_loaded_again(
    hub: Hub, http: httpx.AsyncClient, store: Store, cluster: LocalCluster
) -> None:
    """As on masters promoted from replicas of Redis 7 (scripts are not replicated):
    readiness loads the reduce script again, and publishes in every partition apply."""
    for port in cluster.live_ports():
        with redis.Redis(host="127.0.0.1", port=port) as node:
            node.script_flush()
    assert await store.ready()
    events = [
        {"stream": "s", "source": "t", "payload": {"entity_id": f"re/{n}", "properties": {"n": n}}}
        for n in range(32)
    ]
    assert (await http.post("/api/events/batch", json={"events": events})).json()["failed"] == 0
    listing = (await http.get("/api/state/entities", params={"prefix": "re/"})).json()
    assert len(listing) == 32


async def test_connector_credentials_polls_and_deletion_on_the_cluster(
    store: Store, key_prefix: str
) -> None:
    """The connectors' scripts and transactions (the {connectors} slot): a token
    stored, its job leased and polled (status recorded), deleted with its status and
    lease in one transaction, deleting again 404."""
    connectors = {**CONNECTORS_FAST, "encryption_key": CONNECTORS_KEY}
    settings = make_settings(key_prefix, redis={"partitions": PARTITIONS}, connectors=connectors)
    async with (
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        reply = await http.post("/api/connectors/github/token", json={"token": "ghp_x"})
        assert reply.status_code == 200, reply.text
        detail = await _detail_until(http, "github", "last_poll")
        assert detail["status"] == "configured"
        assert (await http.delete("/api/connectors/github/token")).status_code == 200
        detail = (await http.get("/api/connectors/github")).json()
        assert detail["status"] == "not_configured" and "last_poll" not in detail
        assert (await http.delete("/api/connectors/github/token")).status_code == 404


async def test_flux_replay_of_a_cluster_agrees_with_its_state(
    hub: Hub, http: httpx.AsyncClient, redis_url: str, key_prefix: str
) -> None:
    """``flux replay --redis <a cluster node>`` folds every partition's event log (on
    three masters) and finds the state the hub wrote (FLUX_PARTITIONS from the env)."""
    await write_everything(http)
    status, report = await replay_json(redis_url, key_prefix)
    assert status == 0, report
    assert len(report["partitions"]) == PARTITIONS
    assert all(p["differences"] == [] for p in report["partitions"])
    assert sum(p["agree"] for p in report["partitions"]) >= 5


async def test_a_replica_node_as_the_url_works_too(cluster: LocalCluster, key_prefix: str) -> None:
    """A Service in front of the cluster may answer from any node, replicas included:
    the hub learns the masters from whichever node it is given."""
    replicas = []
    for port in cluster.live_ports():
        with redis.Redis(host="127.0.0.1", port=port) as node:
            if node.info("replication")["role"] == "slave":
                replicas.append(port)
    assert replicas
    settings = make_settings(key_prefix, redis={"partitions": PARTITIONS})
    keys = Keys(key_prefix, PARTITIONS)
    async with await Store.connect(f"redis://127.0.0.1:{replicas[0]}", keys, settings.log) as store:
        assert store.cluster and await store.ready()
        applied = await store.apply([Item(f"rep/{n}", n) for n in range(32)], 1_800_000_000_000)
        assert {a.status for a in applied} == {OutcomeStatus.APPLIED}
        assert len(await store.list_ids("rep/", 100)) == 32


async def test_too_few_partitions_for_the_masters_are_warned_about(
    cluster: LocalCluster, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(key_prefix)
    async with await Store.connect(cluster.url, Keys(key_prefix, 1), settings.log):
        pass
    assert "FLUX_PARTITIONS=1 puts the state on 1 of them" in caplog.text
    caplog.clear()
    async with await Store.connect(cluster.url, Keys(key_prefix, PARTITIONS), settings.log):
        pass
    assert "FLUX_PARTITIONS" not in caplog.text


async def test_a_read_never_takes_an_entity_moved_mid_migration_for_absent(
    cluster: LocalCluster, key_prefix: str
) -> None:
    """While a partition's slot migrates, an entity's hash may already be on the new
    master while every key a read names (snapshot.lua: index, delta log, leases) is
    still on the old one. The old master refuses the script then (Redis checks every key
    a script touches in a migrating slot), rather than reading the moved entity as
    absent: a read gets the entity, or fails (503, retryable); never a 404 for an
    entity that exists (as when reads were plain HGETALLs, which follow ASK)."""
    keys = Keys(key_prefix, PARTITIONS)
    entity = next(f"mv/{n}" for n in range(1000) if keys.partition_of(f"mv/{n}") == 5)
    slot = key_slot(keys.delta_log(5).encode())
    source = cluster.master_of_slot(slot)
    target = next(port for port in cluster.master_ports() if port != source)

    def move(start: int, end: int, first_key: str | None = None) -> None:
        cluster.begin_migration(slot, end)
        if first_key is not None:  # this key first, alone
            with redis.Redis(host="127.0.0.1", port=start) as node:
                node.execute_command("MIGRATE", "127.0.0.1", end, "", 0, 5000, "KEYS", first_key)
            return
        cluster.move_keys(slot, start, end)
        cluster.end_migration(slot, end)

    # Another entity of the partition holds a lease: every key the read names but the
    # moved entity's exists on the old master, which would answer for them.
    other = next(f"mv/{n}" for n in range(1000, 2000) if keys.partition_of(f"mv/{n}") == 5)
    leased = Item(other, 1)
    leased.change = Change.from_parts(other, {"n": b"1"}, source="test", ttl_ms=60_000)
    async with await Store.connect(cluster.url, keys, LogSettings()) as store:
        await store.apply([Item(entity, 7), leased], 0)
        await asyncio.to_thread(move, source, target, keys.entity(5, entity))
        try:
            read = asyncio.ensure_future(store.get(entity))
            await asyncio.sleep(0.3)
        finally:
            await asyncio.to_thread(move, source, target)
        try:
            got = await asyncio.wait_for(read, timeout(10))
        except LogUnavailable:
            pass  # refused while the slot moved: the client retries
        else:
            assert got is not None, "an entity that exists was read as absent"
            assert got.properties == {"n": b"7"}
        assert (await store.get(entity)) is not None
        await asyncio.to_thread(move, target, source)  # (as it was, for the other tests)
