"""Redis Cluster resharded live: a slot moved by hand under the store, then two
``flux serve`` hubs under a steady load while ``redis-cli`` reshards.

First, on one cluster, a partition's slot moved step by step (redis-cli's steps:
SETSLOT IMPORTING/MIGRATING, MIGRATE ... KEYS, SETSLOT NODE): publishes into it wait
(in order, none fails) while another partition's go on, up to the ingest's bound of
submissions waiting; one waiting past the store's reply timeout fails, unapplied
(hub/store/moving.py); reads that need several of its keys at once and the lease sweep
wait too, and its delta log is read on its new master.

Then the whole hub:

Eight REST publishers update their own entities through both hubs, each event sent
again (same ``eventId``) until acknowledged; a native subscriber on hub B keeps a
checked replica (tests/native_client.py: no gap, no duplicate); a second one records
its cursor and leaves. Then, with the shipped ``redis-cli``, as an operator would:

1. ``--cluster reshard`` of 300 slots from the first master to the third: the slots
   of partitions 14 and 10 move, keys and all (``MIGRATE``, 10 keys at a time);
2. ``--cluster add-node`` of a fresh master and ``--cluster reshard`` of 400 slots of
   the second master to it: partitions 2 and 6 move to a node the hubs never saw.

Measured (logged, ``-o log_cli=true``; docs/scaling.md, "Resharding", quotes them):
publishes that failed (503) and the slowest acknowledgement, acknowledged events lost,
REST reads (get, list, history) that failed, the replica against the REST state, and
the second subscriber resuming from its old cursor on hub A, across the moves, with no
reset. The delta logs move with their slot:
both hubs' readers of a moved partition are found on its new master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis
from redis.crc import key_slot

from hub.config import LogSettings
from hub.engine.ingest import Ingest
from hub.errors import LogUnavailable
from hub.store import Keys, Store
from hub.store.expiry import LeaseTable
from hub.store.tails import TAIL_NAME

from .conftest import timeout
from .native_client import Native, Replica, rest_state
from .processes import HubProcess, free_port
from .redis_cluster import LocalCluster
from .test_store_channel import Item

PARTITIONS = 16
PUBLISHERS = 8
#: Entities per publisher, updated in turn.
ENTITIES = 25
#: Entities written before the load, so that a moving partition's slot holds
#: hundreds of keys and its migration lasts long enough to meet publishes.
SEED = 6000
#: Partitions whose slots each reshard moves (by the layout of tests/redis_cluster.py:
#: slots 0-5460, 5461-10922, 10923-16383; partition p's slot is CRC16("p")).
MOVED_FIRST = (14, 10)  # slots 115, 247: within the first 300 slots of master 1
MOVED_SECOND = (2, 6)  # slots 5649, 5781: within the first 400 slots of master 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


def _in_partition(keys: Keys, p: int, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in range(1000) if keys.partition_of(f"{prefix}{i}") == p)


@asynccontextmanager
async def _ingest(store: Store) -> AsyncIterator[Ingest]:
    ingest = Ingest(store, max_batch=100, queue_size=100, clock=time.time)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ingest.run)
        yield ingest
        tasks.cancel_scope.cancel()


async def test_publishes_into_a_moving_slot_wait_in_order_while_others_go_on(
    cluster: LocalCluster, key_prefix: str
) -> None:
    keys = Keys(key_prefix, PARTITIONS)
    moving, other = _in_partition(keys, 3, "m/"), _in_partition(keys, 5, "o/")
    slot = key_slot(b"3")
    target = next(p for p in cluster.master_ports() if p != cluster.master_of_slot(slot))
    async with (
        await Store.connect(cluster.url, keys, LogSettings()) as store,
        _ingest(store) as ingest,
    ):
        await ingest.submit([Item(moving, 0), Item(other, 0)])
        # Some of the partition's keys on each side: no multi-key call can run.
        await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
        await anyio.to_thread.run_sync(
            cluster.move_keys, slot, cluster.master_of_slot(slot), target, 2
        )
        first = await ingest.enqueue([Item(moving, 1)])
        beside = await ingest.enqueue([Item(other, 1)])
        second = await ingest.enqueue([Item(moving, 2)])
        with anyio.fail_after(timeout(5)):
            assert [a.version for a in await beside.result()] == [2]
        await anyio.sleep(0.3)
        assert not first.done.is_set() and not second.done.is_set()
        source = cluster.master_of_slot(slot)
        await anyio.to_thread.run_sync(cluster.move_keys, slot, source, target)
        await anyio.to_thread.run_sync(cluster.end_migration, slot, target)
        with anyio.fail_after(timeout(5)):
            versions = [(await t.result())[0].version for t in (first, second)]
        assert versions == [2, 3]
        entity = await store.get(moving)
        assert entity is not None and entity.properties == {"n": b"2"}
        assert cluster.master_of_slot(slot) == target


async def test_past_queue_size_waiting_for_a_moving_slot_no_partition_is_written(
    cluster: LocalCluster, key_prefix: str
) -> None:
    keys = Keys(key_prefix, PARTITIONS)
    moving, other = _in_partition(keys, 9, "m/"), _in_partition(keys, 13, "o/")
    slot = key_slot(b"9")
    target = next(p for p in cluster.master_ports() if p != cluster.master_of_slot(slot))
    async with await Store.connect(cluster.url, keys, LogSettings()) as store:
        # One submission per batch, and room for two set aside.
        ingest = Ingest(store, max_batch=1, queue_size=2, clock=time.time)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ingest.run)
            await ingest.submit([Item(moving, 0)])
            await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
            held = [await ingest.enqueue([Item(moving, n)]) for n in (1, 2)]
            await anyio.sleep(0.3)
            beside = await ingest.enqueue([Item(other, 0)])
            await anyio.sleep(0.3)
            assert not beside.done.is_set() and not any(t.done.is_set() for t in held)
            source = cluster.master_of_slot(slot)
            await anyio.to_thread.run_sync(cluster.move_keys, slot, source, target)
            await anyio.to_thread.run_sync(cluster.end_migration, slot, target)
            with anyio.fail_after(timeout(5)):
                versions = [(await t.result())[0].version for t in (*held, beside)]
            assert versions == [2, 3, 1]
            tasks.cancel_scope.cancel()


async def test_a_publish_held_past_the_reply_timeout_fails_and_was_not_applied(
    cluster: LocalCluster, key_prefix: str
) -> None:
    keys = Keys(key_prefix, PARTITIONS)
    moving = _in_partition(keys, 7, "m/")
    slot = key_slot(b"7")
    source = cluster.master_of_slot(slot)
    target = next(p for p in cluster.master_ports() if p != source)
    async with await Store.connect(cluster.url, keys, LogSettings(), reply_timeout=1.0) as store:
        await store.apply([Item(moving, 0)], 0)
        await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
        started = time.monotonic()
        with pytest.raises(LogUnavailable, match="moving for longer than the reply timeout"):
            await store.apply([Item(moving, 1)], 0)
        assert 1.0 <= time.monotonic() - started < timeout(3)
        # The operator gives up (``redis-cli --cluster fix`` does this): the slot stays.
        for port in (source, target):
            await anyio.to_thread.run_sync(_stable, port, slot)
        entity = await store.get(moving)
        assert entity is not None and entity.properties == {"n": b"0"}
        assert [a.version for a in await store.apply([Item(moving, 2)], 0)] == [2]


async def test_reads_of_a_moving_slot_wait_for_it_and_its_log_is_read_on_its_new_master(
    cluster: LocalCluster, key_prefix: str
) -> None:
    keys = Keys(key_prefix, PARTITIONS)
    moving = _in_partition(keys, 11, "m/")
    slot = key_slot(b"11")
    source = cluster.master_of_slot(slot)
    target = next(p for p in cluster.master_ports() if p != source)
    async with await Store.connect(cluster.url, keys, LogSettings()) as store:
        await store.apply([Item(moving, 0)], 0)
        head = await store.delta_log_head(11)
        await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
        await anyio.to_thread.run_sync(cluster.move_keys, slot, source, target, 3)
        get = asyncio.ensure_future(store.get(moving))
        page = asyncio.ensure_future(store.snapshot_range(11, "m/", None, 10))
        head_now = asyncio.ensure_future(store.delta_log_head(11))
        reads: list[asyncio.Future[Any]] = [get, page, head_now]
        # (It would fail half-way, its entities split, were it not held back.)
        sweep = asyncio.ensure_future(LeaseTable(store).sweep(11, ["x"]))
        reads.append(sweep)
        # The log's reader is told nothing new, at once, rather than failing.
        with anyio.fail_after(timeout(1)):
            assert not await store.read_entries(11, head.position, 10, 1000)
        await anyio.sleep(0.3)
        assert not any(read.done() for read in reads)
        await anyio.to_thread.run_sync(cluster.move_keys, slot, source, target)
        await anyio.to_thread.run_sync(cluster.end_migration, slot, target)
        with anyio.fail_after(timeout(10)):
            await asyncio.gather(*reads)
        entity = get.result()
        assert entity is not None and entity.properties == {"n": b"0"}
        assert [e.id for e in page.result().entities] == [moving]
        assert head_now.result() == head
        assert sweep.result().expired == 0
        await store.apply([Item(moving, 1)], 0)
        with anyio.fail_after(timeout(5)):
            batch = await store.read_entries(11, head.position, 10, 1000)
            while not batch:  # (an empty answer from the old master: MOVED)
                batch = await store.read_entries(11, head.position, 10, 1000)
        assert [d.entity_id for d in batch.deltas()] == [moving]


def _stable(port: int, slot: int) -> None:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


@dataclass
class Load:
    acked: dict[str, int] = field(default_factory=dict)  # entity id -> value acked last
    events: int = 0  # acknowledged
    failures: Counter[int] = field(default_factory=Counter)  # status (0: no answer) -> n
    slowest: float = 0.0
    reads: int = 0
    read_failures: Counter[str] = field(default_factory=Counter)  # what -> n
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _reader(urls: list[str], load: Load) -> None:
    """Reads every kind of REST read of the entities being written, meanwhile."""
    async with httpx.AsyncClient(timeout=timeout(60)) as http:
        i = 0
        while not load.stop.is_set():
            url = urls[i % 2]
            n = i % PUBLISHERS
            reads = {
                "get": f"{url}/api/state/entities/rs%2F{n}-{i % ENTITIES}",
                "list": f"{url}/api/state/entities?prefix=rs/{n}-",
                "history": f"{url}/api/events?entity=rs/{n}-{i % ENTITIES}",
            }
            for what, target in reads.items():
                try:
                    status = (await http.get(target)).status_code
                except httpx.HTTPError:
                    status = 0
                load.reads += 1
                if status not in (200, 404):
                    load.read_failures[f"{what} {status}"] += 1
            i += 1


async def _publisher(n: int, urls: list[str], load: Load) -> None:
    async with httpx.AsyncClient(timeout=timeout(60)) as http:
        i = 0
        while not load.stop.is_set():
            entity_id = f"rs/{n}-{i % ENTITIES}"
            event = {
                "stream": "rs",
                "source": f"publisher-{n}",
                "eventId": f"rs-{n}-{i}",
                "payload": {"entity_id": entity_id, "properties": {"v": i}},
            }
            while True:  # the same event until acknowledged
                started = time.monotonic()
                try:
                    reply = await http.post(urls[i % 2] + "/api/events", json=event)
                    status = reply.status_code
                except httpx.HTTPError:
                    status = 0
                load.slowest = max(load.slowest, time.monotonic() - started)
                if status == 200:
                    break
                load.failures[status] += 1
                if load.stop.is_set() and time.monotonic() - started > timeout(15):
                    return  # (a hub that stopped: the failures say so)
                await asyncio.sleep(0.02)
            load.acked[entity_id] = i
            load.events += 1
            i += 1


async def _seed(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=timeout(30)) as http:
        for start in range(0, SEED, 500):
            batch = [
                {
                    "stream": "seed",
                    "source": "seed",
                    "payload": {"entity_id": f"seed/{k}", "properties": {"k": k}},
                }
                for k in range(start, start + 500)
            ]
            reply = await http.post("/api/events/batch", json={"events": batch})
            assert reply.status_code == 200, reply.text


async def _follow(client: Native, replica: Replica, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            replica.apply(await client.recv(wait=0.2))
        except TimeoutError:
            continue


async def _until_equal(client: Native, replica: Replica, url: str) -> None:
    """Apply frames until the replica holds what the REST API shows."""
    expected = await rest_state(url, "rs/")
    deadline = time.monotonic() + timeout(20)
    while replica.state() != expected:
        assert time.monotonic() < deadline, "the subscriber never caught up with REST"
        try:
            replica.apply(await client.recv(wait=0.5))
        except TimeoutError:
            continue


async def _subscribe(url: str, **extra: Any) -> Native:
    client = await Native.connect(url)
    await client.send({"type": "subscribe", "sub": "rs", "filter": {"prefixes": ["rs/"]}, **extra})
    return client


def _tails_on(port: int) -> Counter[str]:
    """The delta-log readers connected to the node on ``port``, by name."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
        clients = client.client_list()
    return Counter(c["name"] for c in clients if c["name"].startswith(TAIL_NAME))


async def _reshard_under_load(
    cluster: LocalCluster, urls: list[str], ws_urls: list[str], key_prefix: str
) -> dict[str, Any]:
    keys = Keys(key_prefix, PARTITIONS)
    first, second, third = cluster.master_ports()
    await _seed(urls[0])
    live = await _subscribe(ws_urls[1], snapshot=True)
    replica = Replica()
    leaving = await _subscribe(ws_urls[1], snapshot=True)
    left = Replica()
    while (frame := await leaving.recv(wait=10))["type"] != "synced":
        left.apply(frame)
    left.apply(frame)
    await leaving.close()

    load = Load()
    following = asyncio.Event()
    tasks = [asyncio.create_task(_publisher(n, urls, load)) for n in range(PUBLISHERS)]
    tasks.append(asyncio.create_task(_reader(urls, load)))
    follower = asyncio.create_task(_follow(live, replica, following))
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(cluster.reshard, first, third, 300)
        first_move = time.monotonic() - started
        added = await asyncio.to_thread(cluster.add_master)
        started = time.monotonic()
        await asyncio.to_thread(cluster.reshard, second, added, 400)
        second_move = time.monotonic() - started
        await asyncio.sleep(0.5)
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)
        following.set()
        await follower
    for p in MOVED_FIRST:
        assert cluster.master_of_key(keys.delta_log(p)) == third
    for p in MOVED_SECOND:
        assert cluster.master_of_key(keys.delta_log(p)) == added

    expected = await rest_state(urls[0], "rs/")
    lost = [i for i, v in load.acked.items() if expected.get(i, (0, {}))[1] != {"v": v}]
    await _until_equal(live, replica, urls[0])
    await live.close()
    # The cursor taken before the moves resumes on the other hub: the positions of
    # the moved partitions' logs are valid on their new masters.
    resumed = await _subscribe(ws_urls[0], **{"from": left.cursor_text()})
    await _until_equal(resumed, left, urls[0])
    await resumed.close()
    # Both hubs' readers of a moved partition followed its log to its new master.
    tails = _tails_on(added)
    return {
        "acked": load.events,
        "failures": dict(load.failures),
        "slowest_ack_s": round(load.slowest, 3),
        "reads": load.reads,
        "read_failures": dict(load.read_failures),
        "lost": len(lost),
        "first_reshard_s": round(first_move, 2),
        "second_reshard_s": round(second_move, 2),
        "replica_resets": replica.resets,
        "resumed_resets": left.resets,
        "tails_on_new_master": {p: tails[f"{TAIL_NAME}-{p}"] for p in MOVED_SECOND},
    }


@pytest.mark.slow
async def test_a_live_reshard_and_a_new_master_lose_nothing_and_fail_no_publish(
    cluster: LocalCluster, key_prefix: str
) -> None:
    # (Last in this module: it reshapes the cluster. The slots moved by the tests
    # above are not among those whose moves it checks.)
    env = {"FLUX_PARTITIONS": str(PARTITIONS)}
    a, b = (HubProcess(cluster.url, key_prefix, free_port(), env) for _ in range(2))
    await asyncio.gather(a.start(), b.start())
    try:
        urls = [f"http://127.0.0.1:{hub.port}" for hub in (a, b)]
        ws_urls = [f"ws://127.0.0.1:{hub.port}/api/ws" for hub in (a, b)]
        figures = await _reshard_under_load(cluster, urls, ws_urls, key_prefix)
    finally:
        await asyncio.gather(a.stop(), b.stop())
    logging.getLogger("tests.reshard").warning("resharded under load: %s", figures)
    assert figures["lost"] == 0
    assert figures["replica_resets"] == 0
    assert figures["resumed_resets"] == 0
    assert all(n >= 2 for n in figures["tails_on_new_master"].values())
    assert figures["failures"] == {}
    assert figures["read_failures"] == {}
