"""Redis Cluster resharding: what it costs when no slot moves, and while slots move.

Two phases, each on a fresh local cluster (``tests/redis_cluster.py``: 3 masters + 3
replicas of the shipped ``redis-server``, loopback, no AOF), 16 partitions:

- ``cost``: the reduce script's write path with no slot moving, in this process
  (``Store.send_apply``, 8 calls in flight): its CPU per event (``process_time``) and
  events/s, for 1-event calls and 100-event batches, rounds alternated. The write path
  names one more key per call on a cluster, and the ingest asks each reply whether a
  moving slot holds it (hub/store/moving.py): run this phase on two checkouts to see
  what that costs (docs/scaling.md, "Resharding", quotes both).
- ``soak``: two ``flux serve`` hubs, ``--seed`` entities written first (so that each
  partition's slot holds many keys and migrates for a while), ``--publishers`` REST
  publishers each updating its own entities through both hubs and sending an event
  again (same ``eventId``) until it is acknowledged; then a master is added and
  ``redis-cli --cluster rebalance --cluster-use-empty-masters`` moves a quarter of the
  slots to it, as an operator would (``--pipeline`` keys per ``MIGRATE``, redis-cli's
  ``--cluster-pipeline``). Reported: the rebalance's duration, publishes
  that failed, acknowledged events lost, and the latency of the publishes started
  while it ran, apart for the partitions whose slot moved and for the others (a
  moving slot should delay only its own partition's publishes).

It prints one line per figure, then one JSON line per figure; it exits with an error
if an acknowledged event was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

# bench/ is not a package; the repository root holds hub/ and tests/.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(1, str(_ROOT))

from hub.config import LogSettings  # noqa: E402
from hub.core import Change  # noqa: E402
from hub.store import Keys, PendingApply, Store  # noqa: E402
from hub.wire.jsonutil import canonical  # noqa: E402
from tests.processes import HubProcess, free_port  # noqa: E402
from tests.redis_cluster import LocalCluster  # noqa: E402

PARTITIONS = 16
#: Entities each soak publisher updates in turn.
ENTITIES = 25


class Item:
    """A submission: one update of ``entity_id`` setting ``n``."""

    def __init__(self, entity_id: str, n: int) -> None:
        self.change = Change.from_parts(entity_id, {"n": canonical(n)}, source="bench")
        self.stored = b'{"stream":"bench"}'


def emit(figures: list[dict[str, Any]], name: str, value: float, **extra: Any) -> None:
    figures.append({"bench": "reshard", "figure": name, "value": value, **extra})
    detail = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{name:<44} {value:>12.2f}  {detail}", flush=True)


# ---------------------------------------------------------------------- cost


async def _write(store: Store, batch: int, calls: int) -> tuple[float, float]:
    """CPU µs per event and events/s of ``calls`` send_apply calls, 8 in flight."""
    in_flight: deque[PendingApply] = deque()
    n = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for call in range(calls):
        items = [Item(f"cost/{(call * batch + i) % 5000}", call) for i in range(batch)]
        in_flight.append(await store.send_apply(items, 0))
        n += batch
        if len(in_flight) >= 8:
            await in_flight.popleft().result()
    while in_flight:
        await in_flight.popleft().result()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / n * 1e6, n / wall


async def cost(figures: list[dict[str, Any]], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as base, LocalCluster(Path(base)) as cluster:
        keys = Keys("bench", PARTITIONS)
        async with await Store.connect(cluster.url, keys, LogSettings()) as store:
            await _write(store, 100, 50)  # warm-up: connections, scripts, entities
            samples: dict[int, list[tuple[float, float]]] = {1: [], 100: []}
            for _ in range(rounds):
                for batch, calls in ((1, 3000), (100, 200)):
                    samples[batch].append(await _write(store, batch, calls))
    for batch, got in samples.items():
        emit(
            figures,
            f"cost: cpu per event, {batch}-event calls (us)",
            statistics.median(c for c, _ in got),
            runs=[round(c, 1) for c, _ in got],
        )
        emit(
            figures,
            f"cost: events/s, {batch}-event calls",
            statistics.median(r for _, r in got),
            runs=[round(r) for _, r in got],
        )


# ---------------------------------------------------------------------- soak


class Load:
    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        #: (started, seconds, partition) of each acknowledged publish.
        self.samples: list[tuple[float, float, int]] = []
        self.failures: dict[int, int] = {}
        self.stop = asyncio.Event()


async def _publisher(n: int, urls: list[str], keys: Keys, load: Load) -> None:
    async with httpx.AsyncClient(timeout=120) as http:
        i = 0
        while not load.stop.is_set():
            entity_id = f"soak/{n}-{i % ENTITIES}"
            event = {
                "stream": "soak",
                "source": f"publisher-{n}",
                "eventId": f"soak-{n}-{i}",
                "payload": {"entity_id": entity_id, "properties": {"v": i}},
            }
            started = time.monotonic()
            while True:
                try:
                    status = (await http.post(urls[i % 2] + "/api/events", json=event)).status_code
                except httpx.HTTPError:
                    status = 0
                if status == 200:
                    break
                load.failures[status] = load.failures.get(status, 0) + 1
                await asyncio.sleep(0.02)
            load.samples.append((started, time.monotonic() - started, keys.partition_of(entity_id)))
            load.acked[entity_id] = i
            i += 1


async def _seed(url: str, count: int) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for first in range(0, count, 1000):
            events = [
                {
                    "stream": "seed",
                    "source": "seed",
                    "payload": {"entity_id": f"seed/{k}", "properties": {"k": k}},
                }
                for k in range(first, min(first + 1000, count))
            ]
            reply = await http.post("/api/events/batch", json={"events": events})
            reply.raise_for_status()
    return time.monotonic() - started


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


async def soak(figures: list[dict[str, Any]], seed: int, publishers: int, pipeline: int) -> bool:
    keys = Keys("soak", PARTITIONS)
    with tempfile.TemporaryDirectory() as base, LocalCluster(Path(base)) as cluster:
        env = {"FLUX_PARTITIONS": str(PARTITIONS)}
        hubs = [HubProcess(cluster.url, "soak", free_port(), env) for _ in range(2)]
        await asyncio.gather(*(hub.start() for hub in hubs))
        urls = [f"http://127.0.0.1:{hub.port}" for hub in hubs]
        try:
            emit(figures, "soak: seeding (s)", await _seed(urls[0], seed), entities=seed)
            owners = [cluster.master_of_key(keys.delta_log(p)) for p in range(PARTITIONS)]
            load = Load()
            tasks = [
                asyncio.create_task(_publisher(n, urls, keys, load)) for n in range(publishers)
            ]
            await asyncio.sleep(3)
            added = await asyncio.to_thread(cluster.add_master)
            began = time.monotonic()
            await asyncio.to_thread(cluster.rebalance, pipeline)
            ended = time.monotonic()
            await asyncio.sleep(3)
            load.stop.set()
            await asyncio.gather(*tasks)
            state = await _rest_state(urls[0])
        finally:
            await asyncio.gather(*(hub.stop() for hub in hubs))
        moved = {p for p in range(PARTITIONS) if cluster.master_of_key(keys.delta_log(p)) == added}
        moved_away = {p for p in range(PARTITIONS) if owners[p] != added} & moved
    lost = sum(1 for i, v in load.acked.items() if state.get(i) != {"v": v})
    emit(
        figures,
        "soak: rebalance (s)",
        ended - began,
        partitions_moved=sorted(moved_away),
        pipeline=pipeline,
    )
    emit(figures, "soak: publishes acknowledged", len(load.samples))
    emit(figures, "soak: publishes failed", sum(load.failures.values()), by_status=load.failures)
    emit(figures, "soak: acknowledged events lost", lost)
    during = [(s, p) for t, s, p in load.samples if began <= t <= ended]
    before = [s for t, s, _ in load.samples if t < began]
    for name, values in (
        ("before, all partitions", before),
        ("during, partitions moved", [s for s, p in during if p in moved_away]),
        ("during, other partitions", [s for s, p in during if p not in moved_away]),
    ):
        p50, p99, top = _percentiles(values)
        emit(figures, f"soak: publish latency {name} p50 (ms)", p50, count=len(values))
        emit(figures, f"soak: publish latency {name} p99 (ms)", p99)
        emit(figures, f"soak: publish latency {name} max (ms)", top)
    return lost == 0


async def _rest_state(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        reply = await http.get("/api/state/entities", params={"prefix": "soak/", "limit": 10000})
        reply.raise_for_status()
    return {e["id"]: e["properties"] for e in reply.json()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phases", nargs="*", default=["cost", "soak"], choices=["cost", "soak"])
    parser.add_argument("--rounds", type=int, default=3, help="cost rounds (3)")
    parser.add_argument("--seed", type=int, default=100_000, help="soak: entities first (100000)")
    parser.add_argument("--publishers", type=int, default=8, help="soak: REST publishers (8)")
    parser.add_argument(
        "--pipeline", type=int, default=10, help="soak: keys per MIGRATE (redis-cli's 10)"
    )
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    figures: list[dict[str, Any]] = []
    ok = True
    if "cost" in args.phases:
        asyncio.run(cost(figures, args.rounds))
    if "soak" in args.phases:
        ok = asyncio.run(soak(figures, args.seed, args.publishers, args.pipeline))
    lines = [json.dumps(f) for f in figures]
    print("\n".join(lines))
    if args.json_out:
        with args.json_out.open("a") as out:
            out.write("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
