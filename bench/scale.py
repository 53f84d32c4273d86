"""Scale benchmark: workers, Redis Cluster, memory per connection and per entity.

Side by side, in one run, stopping by itself (about 3 min; ``--quick`` under 60 s):

- **fan-out and ingest per setup**: deliveries/s to native subscribers (``fanout.py``'s
  subscribers and MessagePack publisher, every frame checked) and acknowledged REST
  batch ingest, events/s (``ingest.py``'s load generators, every reply checked), with
  the hub's CPU per delivery and per event, for four setups: ``flux serve --workers 1``
  and ``--workers 2`` on one embedded Redis (AOF everysec, unix socket), and the same
  on a local Redis Cluster (3 masters + 3 replicas, ``tests/redis_cluster.py``, TCP,
  no AOF) with ``FLUX_PARTITIONS=16``. The hub's CPU is the supervisor's plus its
  workers'; Redis's is every node's.
- **idle memory per connection**: the hub's RSS (``VmRSS``) before and after N idle
  native connections (each subscribed to ``bench/``), divided by N.
- **many connections**: one hub process (``--workers 1``) holding 20,000 subscribed
  connections (subscriber processes each on their own loopback address, 127.0.0.10,
  .11, ...; the file limit raised with ``setrlimit``) while ``publish_ws.py``'s paced
  publisher sends ``--big-rate`` events/s: deliveries/s, publish-to-delivery p50/p99
  (every ``--probe-every``-th connection times each frame), RSS per connection.
- **Redis memory per entity**: ``INFO memory`` ``used_memory`` before and after N new
  entities (a stated property set), less the growth of the two logs (bounded by
  retention, so not a per-entity cost), divided by N; keys per entity.

It prints one line per figure, a summary table, then one JSON line per figure. It has
no criterion (a measurement for the capacity model in docs/scaling.md), but exits
with an error if any reply or frame was wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import redis

# bench/ is not a package: the other scripts sit next to this file (sys.path[0]); the
# local cluster is the tests' (the repository root on the path, as pytest has it).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(1, str(_ROOT))

from fanout import (  # noqa: E402
    ACK_TIMEOUT,
    DRAIN_TIMEOUT,
    HUB_DELTA,
    HUB_OTHERS,
    HUB_SUBPROTOCOL,
    SUB,
    Board,
    PublisherSpec,
    ReaderResult,
    ReaderSpec,
    _publisher_process,
    check_last_delta,
    check_readers,
    cleanup,
    hub_reader_spec,
    read_pause,
    reader_processes,
    start_readers,
)
from ingest import (  # noqa: E402
    BATCH_EVENTS,
    CpuMeter,
    LoadSpec,
    Workers,
    batch_requests,
    emit,
    event_pool,
    foreign_load,
    machine_facts,
    redis_info,
    reset_redis,
    run_load,
    running_hub,
    split_connections,
)
from publish_ws import (  # noqa: E402
    PacedSpec,
    _check_last_latency_delta,
    _paced_process,
    latency_stats,
)

from hub.store import Keys  # noqa: E402
from hub.store.embedded import EmbeddedRedis  # noqa: E402
from tests.redis_cluster import LocalCluster  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Partitions on the cluster (docs/scaling.md: at least 16 over 3 masters).
CLUSTER_PARTITIONS = 16


#: The properties of each entity in the memory-per-entity phase (JSON: ~110 bytes).
def entity_properties(n: int, seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "temperature": 21.5 + n % 10,
        "status": "ok",
        "name": f"sensor-{n:07d}",
        "room": f"room-{n % 500:03d}",
    }


@dataclass(frozen=True)
class Options:
    warmup: float
    duration: float
    subscribers: int
    reader_processes: int
    publisher_connections: int
    batch_connections: int
    idle: int
    big: int
    big_processes: int
    big_rate: float
    big_duration: float
    probe_every: int
    idle_window: float
    entities: int
    setups: tuple[str, ...]
    json_out: Path | None


# ---------------------------------------------------------------------- hub processes


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor and its workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += process_tree(int(child))
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Backend:
    """Where the hubs keep their state: one Redis or the local cluster."""

    name: str
    url: str
    pids: list[int]
    cluster: bool


@contextlib.contextmanager
def flux_serve(
    backend: Backend, workers: int, prefix: str, log: Path, extra: dict[str, str] | None = None
) -> Iterator[tuple[int, list[int]]]:
    """``flux serve --workers N`` (as ``FLUX_WORKERS``) on ``backend``; yields the port
    and the PIDs of the supervisor and its workers once all are up."""
    settings = {"FLUX_WORKERS": str(workers), **(extra or {})}
    if backend.cluster:
        settings["FLUX_PARTITIONS"] = str(CLUSTER_PARTITIONS)
    else:
        reset_redis(backend.url)
    with running_hub(backend.url, prefix, log, settings) as (port, pid):
        deadline = time.monotonic() + 30
        want = 1 + workers if workers > 1 else 1
        while len(pids := process_tree(pid)) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pids) - 1} of {workers} workers up after 30 s")
            time.sleep(0.05)
        time.sleep(0.3)  # every worker's /readyz and its delta-log readers
        yield port, pids


def _window(meter: CpuMeter, begin: float, end: float) -> None:
    time.sleep(max(0.0, begin - time.monotonic()))
    meter.start()
    time.sleep(max(0.0, end - time.monotonic()))
    meter.stop()


def _per(meter: CpuMeter, count: int, digits: int = 3) -> dict[str, float]:
    return {r: round(1e6 * s / max(1, count), digits) for r, s in meter.cpu_seconds.items()}


# ---------------------------------------------------------------------- fan-out and ingest


def measure_fanout(
    backend: Backend, workers: int, options: Options, log: Path, subscribers: int
) -> dict[str, Any]:
    """Deliveries/s to ``subscribers`` native connections (``fanout.py``'s hub phase)."""
    split = reader_processes(subscribers, options.reader_processes)
    board = Board(len(split), subscribers)
    prefix = f"bench-scale-fan-{backend.name}-{workers}"
    with flux_serve(backend, workers, prefix, log) as (port, hub_pids):
        deadline = time.monotonic() + 60 + options.warmup + options.duration + DRAIN_TIMEOUT
        readers, publisher = Workers(), Workers()
        with cleanup(readers, publisher):
            pause = read_pause(subscribers)
            specs = [hub_reader_spec(port, n, s, pause, 0, deadline) for s, n in enumerate(split)]
            start_readers(readers, board, specs, timeout=60)
            cap = max(500, min(5000, 1_000_000 // subscribers))
            spec = PublisherSpec(port, options.publisher_connections, cap, deadline)
            publisher.start(_publisher_process, spec, board)
            start = time.monotonic() + 0.5
            begin = start + options.warmup
            end = begin + options.duration
            board.set_schedule(start, begin, end)
            meter = CpuMeter(
                {
                    "hub": hub_pids,
                    "redis": backend.pids,
                    "publisher": publisher.pids,
                    "subscribers": readers.pids,
                }
            )
            _window(meter, begin, end)
            (published,) = publisher.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
            results: list[ReaderResult] = readers.results(DRAIN_TIMEOUT + 10)
    if published.errors:
        raise AssertionError(published.first_error)
    check_readers(results, f"{backend.name} x{workers}, {subscribers} subscribers")
    if not backend.cluster:
        # One total order only on one Redis: on the cluster each partition has its own
        # log, so the last frame is the last of whichever partition came last (every
        # connection still received exactly every event, checked above).
        check_last_delta([p for r in results for p in r.last], published)
    deliveries = sum(r.window_frames for r in results)
    rate = sum(r.window_frames / r.window_s for r in results if r.window_s > 0)
    return {
        "figure": "fanout",
        "setup": f"{backend.name} x{workers}",
        "subscribers": subscribers,
        "deliveries_per_s": round(rate),
        "events_per_s": round(rate / subscribers, 1),
        "deliveries": deliveries,
        "steal_pct": meter.steal_pct,
        "cpu_pct": meter.cpu_pct,
        "cpu_us_per_delivery": _per(meter, deliveries),
    }


def measure_ingest(backend: Backend, workers: int, options: Options, log: Path) -> dict[str, Any]:
    """Acknowledged events/s of ``POST /api/events/batch`` (``ingest.py``'s batch phase)."""
    requests = batch_requests(event_pool())
    prefix = f"bench-scale-ing-{backend.name}-{workers}"
    with flux_serve(backend, workers, prefix, log) as (port, hub_pids):
        begin = time.monotonic() + 1.0 + options.warmup
        end = begin + options.duration
        split = [n for n in split_connections(options.batch_connections, 2) if n]
        specs = [
            LoadSpec("127.0.0.1", port, requests, n, begin, end, b'"failed":0,', offset=i * 7919)
            for i, n in enumerate(split)
        ]
        load = run_load(specs)
        with cleanup(load):
            meter = CpuMeter({"hub": hub_pids, "redis": backend.pids, "load": load.pids})
            _window(meter, begin, end)
            results = load.results(DRAIN_TIMEOUT + 20)
    for result in results:
        if result.errors or result.responses <= 0:
            raise AssertionError(f"ingest {backend.name} x{workers}: {result.first_error}")
    events = sum(r.responses for r in results) * BATCH_EVENTS
    window = max(r.window for r in results)
    return {
        "figure": "ingest",
        "setup": f"{backend.name} x{workers}",
        "connections": options.batch_connections,
        "events_per_s": round(events / window),
        "events": events,
        "steal_pct": meter.steal_pct,
        "cpu_pct": meter.cpu_pct,
        "cpu_us_per_event": _per(meter, events, 1),
    }


def measure_tail(backend: Backend, options: Options, log: Path) -> dict[str, Any]:
    """What every hub pays per event it did not take: two hubs on one Redis, REST batch
    ingest into hub A only; hub B has one native subscriber whose filter matches none
    of the events (``nothing/``), so B reads and filters every delta and delivers none
    (its subscriber checks that it got none). B's CPU per event is ``e_tail``."""
    requests = batch_requests(event_pool())
    prefix = "bench-scale-tail"
    with (
        flux_serve(backend, 1, prefix, log) as (port_a, pids_a),
        running_hub(backend.url, prefix, log) as (port_b, pid_b),
    ):
        board = Board(1, 1)
        deadline = time.monotonic() + 60 + options.warmup + options.duration + DRAIN_TIMEOUT
        nothing = orjson.dumps(
            {"type": "subscribe", "sub": SUB, "filter": {"prefixes": ["nothing/"]}}
        )
        spec = ReaderSpec(
            port_b,
            1,
            0,
            "/api/ws",
            HUB_SUBPROTOCOL,
            nothing,
            b'{"type":"subscribed",',
            HUB_DELTA,
            HUB_OTHERS,
            0.05,
            0,
            deadline,
        )
        readers = Workers()
        with cleanup(readers):
            start_readers(readers, board, [spec], timeout=60)
            begin = time.monotonic() + 1.0 + options.warmup
            end = begin + options.duration
            split = [n for n in split_connections(options.batch_connections, 2) if n]
            load = run_load(
                [
                    LoadSpec(
                        "127.0.0.1",
                        port_a,
                        requests,
                        n,
                        begin,
                        end,
                        b'"failed":0,',
                        offset=i * 7919,
                    )
                    for i, n in enumerate(split)
                ]
            )
            with cleanup(load):
                meter = CpuMeter(
                    {
                        "hub_a": pids_a,
                        "hub_b": [pid_b],
                        "redis": backend.pids,
                        "load": load.pids,
                    }
                )
                _window(meter, begin, end)
                results = load.results(DRAIN_TIMEOUT + 20)
            board.target.value = 0
            board.set_schedule(time.monotonic(), time.monotonic(), time.monotonic())
            check_readers(readers.results(DRAIN_TIMEOUT + 10), "hub B's subscriber")
    for result in results:
        if result.errors or result.responses <= 0:
            raise AssertionError(f"tail ingest: {result.first_error}")
    events = sum(r.responses for r in results) * BATCH_EVENTS
    window = max(r.window for r in results)
    return {
        "figure": "tail",
        "events_per_s": round(events / window),
        "events": events,
        "steal_pct": meter.steal_pct,
        "cpu_pct": meter.cpu_pct,
        "cpu_us_per_event": _per(meter, events, 1),
    }


# ---------------------------------------------------------------------- connections


def raise_file_limit(wanted: int) -> int:
    """Raise this process's (and so its children's) open-file limit towards ``wanted``;
    returns the soft limit reached. Raising the hard limit needs CAP_SYS_RESOURCE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return min(wanted, hard)


def measure_connections(
    backend: Backend, options: Options, log: Path, count: int, processes: int, rate: float
) -> dict[str, Any]:
    """One hub process holding ``count`` subscribed connections; with ``rate`` > 0, a
    paced publisher runs and deliveries/s and latency are measured, else they stay idle."""
    limit = raise_file_limit(count + 4096)
    reached = min(count, limit - 200)
    split = [n for n in split_connections(reached, processes) if n]
    board = Board(len(split), reached)
    extra = {
        "FLUX_MAX_CONNECTIONS": str(reached + 100),
        "FLUX_MAX_CONNECTIONS_PER_CLIENT": str(max(split) + 10),
    }
    name = "connections" if rate else "idle"
    with flux_serve(backend, 1, f"bench-scale-{name}", log, extra) as (port, (hub_pid,)):
        time.sleep(0.5)
        rss0 = rss_kib(hub_pid)
        timeout = 60 + reached / 200
        deadline = time.monotonic() + timeout + options.big_duration + DRAIN_TIMEOUT + 30
        readers, publisher = Workers(), Workers()
        with cleanup(readers, publisher):
            pause = 0.5 if rate else 1.0
            every = options.probe_every if rate else 0
            specs = [
                hub_reader_spec(port, n, s, pause, every, deadline) for s, n in enumerate(split)
            ]
            opened = time.monotonic()
            start_readers(readers, board, specs, timeout=timeout)
            opened = time.monotonic() - opened
            time.sleep(1.0)
            rss1 = rss_kib(hub_pid)
            # What the connections cost the hub while nothing is published (timers,
            # keepalive pings), apart from the deliveries.
            idle_meter = CpuMeter({"hub": [hub_pid], "subscribers": readers.pids})
            now = time.monotonic()
            _window(idle_meter, now, now + options.idle_window)
            record: dict[str, Any] = {
                "figure": name,
                "connections": reached,
                "asked": count,
                "file_limit": limit,
                "subscriber_processes": len(split),
                "source_addresses": [f"127.0.0.{10 + s}" for s in range(len(split))],
                "connect_s": round(opened, 1),
                "hub_rss_kib_before": rss0,
                "hub_rss_kib_after": rss1,
                "hub_kib_per_connection": round((rss1 - rss0) / reached, 2),
                "idle_window_s": options.idle_window,
                "idle_cpu_pct": idle_meter.cpu_pct,
            }
            if not rate:
                board.target.value = 0
                board.set_schedule(time.monotonic(), time.monotonic(), time.monotonic())
                results: list[ReaderResult] = readers.results(DRAIN_TIMEOUT + 10)
                check_readers(results, "idle connections")
                return record
            publisher.start(_paced_process, PacedSpec(port, True, rate, 1, deadline), board)
            start = time.monotonic() + 0.5
            begin = start + options.warmup
            end = begin + options.big_duration
            board.set_schedule(start, begin, end)
            meter = CpuMeter(
                {
                    "hub": [hub_pid],
                    "redis": backend.pids,
                    "publisher": publisher.pids,
                    "subscribers": readers.pids,
                }
            )
            _window(meter, begin, end)
            record["hub_rss_kib_delivering"] = rss_kib(hub_pid)
            (paced,) = publisher.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
            results = readers.results(DRAIN_TIMEOUT + 30)
    if paced.errors:
        raise AssertionError(paced.first_error)
    check_readers(results, f"{reached} connections")
    assert paced.published is not None
    _check_last_latency_delta([p for r in results for p in r.last], paced.published)
    samples: array[int] = array("q")
    for result in results:
        samples.frombytes(result.latencies)
    deliveries = sum(r.window_frames for r in results)
    record |= {
        "events_per_s": rate,
        "deliveries_per_s": round(sum(r.window_frames / r.window_s for r in results if r.window_s)),
        "latency_samples": len(samples),
        "latency_us": latency_stats(samples),
        "steal_pct": meter.steal_pct,
        "cpu_pct": meter.cpu_pct,
        "cpu_us_per_delivery": _per(meter, deliveries),
    }
    return record


# ---------------------------------------------------------------------- Redis per entity


def _memory_event(n: int, seq: int) -> dict[str, Any]:
    return {
        "stream": "bench.memory",
        "source": "bench",
        "payload": {"entity_id": f"bench/m{n:07d}", "properties": entity_properties(n, seq)},
    }


def measure_entities(backend: Backend, count: int, log: Path) -> dict[str, Any]:
    """Redis ``used_memory`` per entity: ``count`` new entities, one event each; then a
    second event to each (what one more history entry and a changed state cost)."""
    retention = {"FLUX_EVENT_LOG_MAXLEN": "1000", "FLUX_DELTA_LOG_MAXLEN": "1000"}
    prefix = "bench-scale-mem"
    keys = Keys(prefix)
    logs = (keys.event_log(0), keys.delta_log(0))
    with flux_serve(backend, 1, prefix, log, retention) as (port, _):
        client = redis.Redis.from_url(backend.url)
        try:

            def sizes() -> tuple[int, int, int]:
                used = int(client.info("memory")["used_memory"])
                streams = sum(int(client.memory_usage(k, samples=0) or 0) for k in logs)
                return used, streams, int(client.dbsize())

            measured = [sizes()]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                for seq in (0, 1):
                    for first in range(0, count, BATCH_EVENTS):
                        last = min(count, first + BATCH_EVENTS)
                        events = [_memory_event(n, seq) for n in range(first, last)]
                        reply = http.post("/api/events/batch", json={"events": events})
                        if reply.status_code != 200 or reply.json().get("failed") != 0:
                            raise AssertionError(f"batch refused: {reply.text[:300]}")
                    measured.append(sizes())
            one = int(client.memory_usage(keys.entity(0, "bench/m0000000"), samples=0) or 0)
            history = int(client.memory_usage(keys.history(0, "bench/m0000000"), samples=0) or 0)
            per_entry = {
                name: round(
                    int(client.memory_usage(key, samples=0) or 0) / max(1, client.xlen(key))
                )
                for name, key in zip(("event_log", "delta_log"), logs, strict=True)
            }
        finally:
            client.close()
    (used0, logs0, keys0), (used1, logs1, keys1), (used2, logs2, _) = measured
    return {
        "figure": "redis_per_entity",
        "entities": count,
        "properties_json_bytes": len(orjson.dumps(entity_properties(count // 2, 0))),
        "used_memory": [used0, used1, used2],
        "logs_bytes": [logs0, logs1, logs2],
        "bytes_per_entity": round((used1 - used0 - (logs1 - logs0)) / count),
        "bytes_per_further_event": round((used2 - used1 - (logs2 - logs1)) / count),
        "keys_per_entity": round((keys1 - keys0) / count, 2),
        "entity_key_bytes": one,
        "history_key_bytes_2_events": history,
        "log_bytes_per_entry": per_entry,
    }


# ---------------------------------------------------------------------- run


def run(options: Options, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    facts = machine_facts()
    facts["foreign_cores"] = round(foreign_load(), 2)
    log = tmp / "hub.log"
    records: list[dict[str, Any]] = []

    def note(record: dict[str, Any]) -> None:
        records.append(record)
        print(_human(record), flush=True)

    with contextlib.ExitStack() as stack:
        embedded = stack.enter_context(EmbeddedRedis(tmp / "redis", appendfsync="everysec"))
        assert embedded.process is not None
        one = Backend("redis", embedded.url, [embedded.process.pid], False)
        facts["redis"] = redis_info(one.url, "server").get("redis_version")
        backends = {"redis": one}
        if any(s.startswith("cluster") for s in options.setups):
            cluster = stack.enter_context(LocalCluster(tmp / "cluster"))
            pids = [p.pid for p in cluster.processes.values()]
            backends["cluster"] = Backend("cluster", cluster.url, pids, True)
        for setup in options.setups:
            name, _, workers = setup.partition("x")
            note(measure_fanout(backends[name], int(workers), options, log, options.subscribers))
            note(measure_ingest(backends[name], int(workers), options, log))
        note(measure_tail(one, options, log))
        note(measure_connections(one, options, log, options.idle, 2, 0.0))
        note(
            measure_connections(
                one, options, log, options.big, options.big_processes, options.big_rate
            )
        )
        note(measure_entities(one, options.entities, log))
    facts["loadavg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    return facts, records


def _cpu(record: dict[str, Any], key: str) -> str:
    per = record[key]
    return (
        " ".join(f"{role} {per[role]}" for role in per) + f" | other {record['cpu_pct']['other']}%"
    )


def _human(record: dict[str, Any]) -> str:
    kind = record["figure"]
    if kind == "fanout":
        return (
            f"fanout {record['setup']:<10} {record['subscribers']} subs: "
            f"{record['deliveries_per_s']:>10,} deliveries/s  µs/delivery: "
            + _cpu(record, "cpu_us_per_delivery")
        )
    if kind == "ingest":
        return (
            f"ingest {record['setup']:<10} {record['events_per_s']:>10,} events/s  µs/event: "
            + _cpu(record, "cpu_us_per_event")
        )
    if kind == "tail":
        return (
            f"tail   {record['events_per_s']:>10,} events/s into hub A; µs/event: "
            + _cpu(record, "cpu_us_per_event")
            + " (hub_b: reads and filters every delta, delivers none)"
        )
    if kind == "idle":
        return (
            f"idle   {record['connections']:,} subscribed connections: hub RSS "
            f"{record['hub_rss_kib_before']:,} -> {record['hub_rss_kib_after']:,} KiB, "
            f"{record['hub_kib_per_connection']} KiB/connection, idle hub CPU "
            f"{record['idle_cpu_pct']['hub']}% (other {record['idle_cpu_pct']['other']}%)"
        )
    if kind == "connections":
        lat = record["latency_us"]
        return (
            f"held   {record['connections']:,} of {record['asked']:,} connections "
            f"(file limit {record['file_limit']}): {record['hub_kib_per_connection']} KiB/conn, "
            f"idle hub CPU {record['idle_cpu_pct']['hub']}%, "
            f"{record['deliveries_per_s']:,} deliveries/s at {record['events_per_s']} events/s, "
            f"p50 {lat.get('p50_us', 0) / 1000:.1f} ms p99 {lat.get('p99_us', 0) / 1000:.1f} ms  "
            "µs/delivery: " + _cpu(record, "cpu_us_per_delivery")
        )
    return (
        f"redis  {record['entities']:,} entities of {record['properties_json_bytes']} B "
        f"properties: {record['bytes_per_entity']:,} B/entity, "
        f"+{record['bytes_per_further_event']:,} B per further event, "
        f"{record['keys_per_entity']} keys/entity, log bytes/entry {record['log_bytes_per_entry']}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Workers and Redis Cluster side by side; memory per connection and entity."
    )
    parser.add_argument("--quick", action="store_true", help="smaller phases, under 60 s")
    parser.add_argument("--warmup", type=float, help="seconds before each window (1.5)")
    parser.add_argument("--duration", type=float, help="seconds measured per phase (5)")
    parser.add_argument("--subscribers", type=int, help="fan-out subscribers (1000)")
    parser.add_argument("--idle", type=int, help="idle subscribed connections (2000)")
    parser.add_argument("--big", type=int, help="connections held while delivering (20000)")
    parser.add_argument("--big-processes", type=int, help="their processes/addresses (5)")
    parser.add_argument("--big-rate", type=float, help="events/s published to them (5)")
    parser.add_argument("--big-duration", type=float, help="seconds measured (10)")
    parser.add_argument("--probe-every", type=int, help="latency probe connections (every 50th)")
    parser.add_argument(
        "--idle-window", type=float, help="seconds the idle connections' CPU is measured (3)"
    )
    parser.add_argument("--entities", type=int, help="entities written for Redis memory (20000)")
    parser.add_argument(
        "--setups",
        help="comma-separated of redisx1,redisx2,clusterx1,clusterx2 (all)",
    )
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else small if quick else full

    setups = pick(args.setups, "redisx1,redisx2,clusterx1,clusterx2", "redisx1,clusterx1")
    return Options(
        warmup=pick(args.warmup, 1.5, 0.5),
        duration=pick(args.duration, 5.0, 1.5),
        subscribers=pick(args.subscribers, 1000, 50),
        reader_processes=4,
        publisher_connections=8,
        batch_connections=8,
        idle=pick(args.idle, 2000, 200),
        big=pick(args.big, 20_000, 400),
        big_processes=pick(args.big_processes, 5, 2),
        big_rate=pick(args.big_rate, 5.0, 20.0),
        big_duration=pick(args.big_duration, 10.0, 1.5),
        probe_every=pick(args.probe_every, 50, 10),
        idle_window=pick(args.idle_window, 3.0, 0.5),
        entities=pick(args.entities, 20_000, 1000),
        setups=tuple(s.strip() for s in setups.split(",") if s.strip()),
        json_out=args.json_out,
    )


def main(argv: list[str] | None = None) -> int:
    options = options_from(_parser().parse_args(argv))
    for setup in options.setups:
        name, _, workers = setup.partition("x")
        if name not in ("redis", "cluster") or not workers.isdigit():
            raise SystemExit(f"--setups: unknown setup {setup!r} (redisx1, clusterx2, ...)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flux-bench-") as tmp:
        try:
            facts, records = run(options, Path(tmp))
        except BaseException:
            log = Path(tmp) / "hub.log"
            if log.exists():
                print(f"the hubs' log, last lines:\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
    facts["elapsed_s"] = round(time.monotonic() - started, 1)
    print()
    print("setup       deliveries/s  hub µs/delivery  ingest events/s  hub µs/event  other %")
    by_setup: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        if "setup" in record:
            by_setup.setdefault(record["setup"], {})[record["figure"]] = record
    for setup, pair in by_setup.items():
        fan, ing = pair["fanout"], pair["ingest"]
        print(
            f"{setup:<10} {fan['deliveries_per_s']:>13,} {fan['cpu_us_per_delivery']['hub']:>16}"
            f" {ing['events_per_s']:>16,} {ing['cpu_us_per_event']['hub']:>13}"
            f"  {fan['cpu_pct']['other']}/{ing['cpu_pct']['other']}"
        )
    print()
    emit({"figure": "machine", **facts}, options.json_out)
    for record in records:
        emit(record, options.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
