"""Soak: a steady load for N minutes; hub RSS, Redis memory and latency, start against end.

One hub (``python -m hub.cli serve``, on an embedded Redis with AOF ``appendfsync
everysec`` on a unix socket, as ``ingest.py`` runs it), for ``--minutes`` (10) after a
warm-up (``--warmup``, 15 s):

- **publisher**: ``publish_ws.py``'s paced MessagePack publisher (``flux.v1.msgpack``):
  ``--rate`` (1,000) events/s, one event per ``publish`` frame, over 1,000 entities in
  turn (``bench/l0000`` .. ``bench/l0999``); every event carries its send time
  (``time.monotonic_ns()``) and changes its entity; every ``ack`` is checked, in order.
- **subscribers**: ``--subscribers`` (1,000) native connections (``flux.v1``, JSON) in
  ``--reader-processes`` (4) processes of their own, raw sockets (``fanout.py``'s
  :class:`Subscriber`: every frame header checked, every counted frame a delta of the
  subscription). Connection ``i`` subscribes to ``--entities-per-subscriber`` (4)
  entities by id, ``4i .. 4i+3`` (mod 1,000), so every entity has 4 subscribers and the
  hub delivers 4 frames per event. Every connection reads every frame as soon as it
  arrives and times it (publish-to-deliver, as ``publish_ws.py`` (b) does); at the end
  each must have received exactly the deltas of its entities, and its last frame must
  be the delta of the last event published to them.

The hub runs with small retention so that it is reached within the warm-up and every
minute measured runs at the steady state: ``FLUX_EVENT_LOG_MAXLEN`` and
``FLUX_DELTA_LOG_MAXLEN`` 10,000 (10 s at 1,000 events/s), ``FLUX_HISTORY_PER_ENTITY``
10 (10 s at 1 event/s per entity).

Every minute: hub RSS (``VmRSS`` of ``/proc/<pid>/status``), Redis ``used_memory``
(``INFO memory``), deliveries/s, publish-to-deliver p50/p99 of the frames delivered
that minute, errors, and the CPU of every process (``other``: processes not the
benchmark's; the machine is shared). At the start and the end: ``DBSIZE``, ``XLEN`` and
``MEMORY USAGE`` of both logs and of one entity's history.

Criteria (exit 1 if one fails, or on any wrong frame or ack), comparing the first
minute with the last:

- hub RSS grows < 10 % (sampled at the end of each minute);
- Redis ``used_memory`` grows < 10 %: with retention reached, the data is constant
  (10,000 + 10,000 log entries, 1,000 entities, 10 history entries each); what moves is
  approximate trimming (``MAXLEN ~`` trims whole stream nodes of 100 entries), client
  and AOF buffers;
- p99 of the last minute <= 1.5x that of the first. A leak that slows the hub down (a
  structure that grows and is scanned per event, a heap the garbage collector walks)
  shows as a trend over the minutes, and 1.5x leaves room for this shared VM's noise
  (other tenants move one minute's p99 by several milliseconds; the ``other`` column
  tells a busy minute apart, and the per-minute table shows whether a failure is a
  trend or one noisy window).

Output: human-readable lines (one per minute as it ends, then the table with the
latencies), then JSON lines (``--json-out`` appends them to a file).
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import os
import select
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis

# bench/ is not a package: the other scripts sit next to this file (sys.path[0]).
from fanout import (
    ACK_TIMEOUT,
    DRAIN_TIMEOUT,
    HUB_DELTA,
    HUB_OTHERS,
    HUB_SUBPROTOCOL,
    SUB,
    Board,
    LatencyLog,
    Subscriber,
    cleanup,
    client_frame,
    open_websocket,
    reader_processes,
    split_frame,
)
from ingest import (
    CpuMeter,
    Workers,
    emit,
    on_embedded_redis,
    redis_info,
    reset_redis,
    running_hub,
)
from publish_ws import (
    LATENCY_ENTITIES,
    PacedResult,
    PacedSpec,
    _paced_process,
    latency_stats,
)
from stacks import WsProtocolError

from hub.store import Keys

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["main"]

#: Criteria: hub RSS and Redis used_memory growth, first minute to last (fraction).
RSS_GROWTH = 0.10
REDIS_GROWTH = 0.10
#: Criterion: last minute's p99 / first minute's p99, at most.
P99_FACTOR = 1.5
#: Retention the hub runs with, reached within the warm-up (see the module docstring).
RETENTION = {
    "FLUX_EVENT_LOG_MAXLEN": "10000",
    "FLUX_DELTA_LOG_MAXLEN": "10000",
    "FLUX_HISTORY_PER_ENTITY": "10",
}
#: How long the subscribers may take to connect.
START_TIMEOUT = 60.0
#: An empty masked pong frame, but for its 4-byte masking key.
PONG = bytes((0x8A, 0x80))
#: Seconds in a window.
MINUTE = 60.0


# ---------------------------------------------------------------------- subscribers


class SoakBoard(Board):
    """``fanout.py``'s board, plus one error flag per subscriber process."""

    def __init__(self, slots: int, subscribers: int) -> None:
        super().__init__(slots, subscribers)
        #: 1 once a subscriber process met a wrong frame (or lost a connection).
        self.failed = multiprocessing.get_context("fork").RawArray(ctypes.c_int8, slots)


def entities_of(subscriber: int, per: int) -> list[int]:
    """Entity numbers subscriber ``subscriber`` (0-based, over all processes) follows."""
    return [(subscriber * per + j) % LATENCY_ENTITIES for j in range(per)]


def entity_id(number: int) -> str:
    return f"bench/l{number:04d}"


def expected_for(entities: list[int], sent: int) -> tuple[int, int]:
    """``(deltas, last seq)`` a subscriber of ``entities`` must get when ``sent`` events
    (seq 0 .. sent-1, entity ``seq % 1000``) were published."""
    rounds, rest = divmod(sent, LATENCY_ENTITIES)
    total = sum(rounds + (1 if e < rest else 0) for e in entities)
    last = max(
        (
            e + LATENCY_ENTITIES * (rounds if e < rest else rounds - 1)
            for e in entities
            if e < rest or rounds
        ),
        default=-1,
    )
    return total, last


@dataclass(frozen=True, slots=True)
class SoakReaderSpec:
    port: int
    #: Global index of this process's first connection, and how many it opens.
    first: int
    connections: int
    per: int
    #: Its slot on the board; it connects from 127.0.0.(10 + slot).
    slot: int
    minutes: int
    deadline: float


@dataclass(frozen=True, slots=True)
class SoakReaderResult:
    slot: int
    connections: int
    #: Deltas received per minute window (by delivery time).
    per_minute: list[int] = field(default_factory=list)
    #: Latency samples (µs, array "q" as bytes) per minute window.
    latencies: list[bytes] = field(default_factory=list)
    frames: int = 0
    others: int = 0
    pings: int = 0
    errors: int = 0
    first_error: str = ""


def _subscribe(spec: SoakReaderSpec, index: int) -> Subscriber:
    sock, rest = open_websocket(spec.port, f"127.0.0.{10 + spec.slot}", "/api/ws", HUB_SUBPROTOCOL)
    ids = [entity_id(e) for e in entities_of(index, spec.per)]
    sock.sendall(
        client_frame(orjson.dumps({"type": "subscribe", "sub": SUB, "filter": {"ids": ids}}))
    )
    while (parsed := split_frame(rest)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise WsProtocolError("connection closed before the subscription was confirmed")
        rest += chunk
    first, payload, rest = parsed
    if first != 0x81 or not payload.startswith(b'{"type":"subscribed",'):
        raise WsProtocolError(f"subscription refused: {payload[:300]!r}")
    sock.setblocking(False)
    return Subscriber(sock, HUB_DELTA, HUB_OTHERS, rest)


def _soak_reader(spec: SoakReaderSpec, board: SoakBoard, results: Connection) -> None:
    subscribers: list[Subscriber] = []
    try:
        # Appended one by one: those opened are closed below if one fails.
        subscribers.extend(_subscribe(spec, spec.first + n) for n in range(spec.connections))
        board.ready[spec.slot] = 1
        result = _read(spec, board, subscribers)
    except (OSError, WsProtocolError, TimeoutError) as exc:
        board.failed[spec.slot] = 1
        result = SoakReaderResult(spec.slot, spec.connections, errors=1, first_error=repr(exc))
    finally:
        for subscriber in subscribers:
            subscriber.sock.close()
    results.send(result)


def _read(
    spec: SoakReaderSpec, board: SoakBoard, subscribers: list[Subscriber]
) -> SoakReaderResult:
    """Read every frame as it arrives until every connection has all its deltas."""
    _, begin, end = board.wait_schedule(spec.deadline)
    latency = LatencyLog(int(begin * 1e9), int(end * 1e9))
    poller = select.epoll()
    by_fd = {s.sock.fileno(): s for s in subscribers}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    pongs = dict.fromkeys(by_fd, 0)
    total = 0
    #: (deltas, samples) at begin and at the end of each minute.
    marks: list[tuple[int, int]] = []
    bounds = [begin + MINUTE * m for m in range(spec.minutes + 1)]
    expected: list[tuple[int, int]] = []
    error = ""
    try:
        while True:
            now = time.monotonic()
            while len(marks) < len(bounds) and now >= bounds[len(marks)]:
                marks.append((total, len(latency.samples)))
            target = board.target.value
            if target >= 0:
                if not expected:
                    expected = [
                        expected_for(entities_of(spec.first + n, spec.per), target)
                        for n in range(len(subscribers))
                    ]
                if all(s.deltas >= e for s, (e, _) in zip(subscribers, expected, strict=True)):
                    break
            if now > spec.deadline:
                error = f"deadline: {total} frames received"
                break
            for fd, _ in poller.poll(0.05):
                subscriber = by_fd[fd]
                total += subscriber.read(latency)
                if subscriber.pings != pongs[fd]:
                    # The hub closes a connection silent for two keepalive intervals (40 s).
                    pongs[fd] = subscriber.pings
                    subscriber.sock.send(PONG + os.urandom(4))
            board.counts[spec.slot] = total
    except (OSError, WsProtocolError) as exc:
        error = repr(exc)
    finally:
        poller.close()
    if not error:
        error = _check_ends(spec, subscribers, expected)
    if error:
        board.failed[spec.slot] = 1
    marks += [(total, len(latency.samples))] * (len(bounds) - len(marks))
    samples = latency.samples
    return SoakReaderResult(
        spec.slot,
        len(subscribers),
        [marks[m + 1][0] - marks[m][0] for m in range(spec.minutes)],
        [samples[marks[m][1] : marks[m + 1][1]].tobytes() for m in range(spec.minutes)],
        total,
        sum(s.others for s in subscribers),
        sum(s.pings for s in subscribers),
        1 if error else 0,
        error,
    )


def _check_ends(
    spec: SoakReaderSpec, subscribers: list[Subscriber], expected: list[tuple[int, int]]
) -> str:
    """Each connection got exactly its deltas, and its last is the last event of its entities."""
    for n, (subscriber, (count, last_seq)) in enumerate(zip(subscribers, expected, strict=True)):
        if subscriber.deltas != count:
            return f"connection {spec.first + n}: {subscriber.deltas} deltas, {count} expected"
        if count == 0:
            continue
        delta = orjson.loads(subscriber.last)
        want = entity_id(last_seq % LATENCY_ENTITIES)
        if (
            delta.get("id") != want
            or delta.get("set", {}).get("seq") != last_seq
            or delta.get("version") != delta.get("base", -2) + 1
        ):
            return f"connection {spec.first + n}: last delta {delta}, seq {last_seq} of {want} expected"
    return ""


# ---------------------------------------------------------------------- the run


@dataclass
class Minute:
    """One minute window, as printed and as a JSON line."""

    minute: int
    hub_rss_kib: int
    redis_used_memory: int
    deliveries: int
    deliveries_per_s: float
    p50_us: int
    p99_us: int
    max_us: int
    samples: int
    errors: int
    steal_pct: float
    #: % of one core per process role; "other" is everybody else on the machine.
    cpu_pct: dict[str, float]


@dataclass(frozen=True)
class Options:
    minutes: int
    warmup: float
    rate: float
    subscribers: int
    reader_processes: int
    per: int
    json_out: Path | None


@dataclass
class Soak:
    minutes: list[Minute]
    keys_start: dict[str, Any]
    keys_end: dict[str, Any]
    published: int
    errors: list[str]
    settings: dict[str, str]


def hub_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def redis_keys(url: str, prefix: str) -> dict[str, Any]:
    """Sizes of what retention bounds: both logs, one entity's history, the key count."""
    keys = Keys(prefix)
    client = redis.Redis.from_url(url)
    try:
        found: dict[str, Any] = {"dbsize": int(client.dbsize())}
        history = keys.history(0, entity_id(0))
        for name, key in (
            ("events", keys.event_log(0)),
            ("deltas", keys.delta_log(0)),
            ("history_l0000", history),
        ):
            length = client.llen(key) if name.startswith("history") else client.xlen(key)
            found[f"{name}_len"] = int(length)
            found[f"{name}_bytes"] = int(client.memory_usage(key, samples=0) or 0)
        return found
    finally:
        client.close()


def run_soak(url: str, redis_pid: int, options: Options, log: Path) -> Soak:
    split = reader_processes(options.subscribers, options.reader_processes)
    board = SoakBoard(len(split), options.subscribers)
    prefix = "bench-soak"
    reset_redis(url)
    errors: list[str] = []
    minutes: list[Minute] = []
    with running_hub(url, prefix, log, RETENTION) as (port, hub_pid):
        span = options.warmup + MINUTE * options.minutes
        deadline = time.monotonic() + START_TIMEOUT + span + DRAIN_TIMEOUT
        readers, publisher = Workers(), Workers()
        with cleanup(readers, publisher):
            first = 0
            for slot, n in enumerate(split):
                spec = SoakReaderSpec(port, first, n, options.per, slot, options.minutes, deadline)
                readers.start(_soak_reader, spec, board)
                first += n
            board.wait_ready(readers, START_TIMEOUT)
            paced = PacedSpec(port, True, options.rate, 1, deadline)
            publisher.start(_paced_process, paced, board)
            start = time.monotonic() + 0.5
            begin = start + options.warmup
            end = begin + MINUTE * options.minutes
            board.set_schedule(start, begin, end)
            roles = {
                "hub": [hub_pid],
                "redis": [redis_pid],
                "publisher": publisher.pids,
                "subscribers": readers.pids,
            }
            time.sleep(max(0.0, begin - time.monotonic()))
            keys_start = redis_keys(url, prefix)
            print(f"warm-up done; keys at the start: {keys_start}", flush=True)
            delivered = sum(board.counts)
            for m in range(options.minutes):
                meter = CpuMeter(roles)
                meter.start()
                time.sleep(max(0.0, begin + MINUTE * (m + 1) - time.monotonic()))
                meter.stop()
                now_delivered = sum(board.counts)
                failed = sum(board.failed) + (0 if publisher.processes[0].is_alive() else 1)
                minute = Minute(
                    m + 1,
                    hub_rss_kib(hub_pid),
                    int(redis_info(url, "memory")["used_memory"]),
                    now_delivered - delivered,
                    (now_delivered - delivered) / meter.elapsed,
                    0,
                    0,
                    0,
                    0,
                    failed,
                    meter.steal_pct,
                    meter.cpu_pct,
                )
                delivered = now_delivered
                minutes.append(minute)
                print(_progress(minute), flush=True)
            keys_end = redis_keys(url, prefix)
            (sent,) = publisher.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
            results: list[SoakReaderResult] = readers.results(DRAIN_TIMEOUT + 30)
    assert isinstance(sent, PacedResult)
    if sent.errors:
        errors.append(f"publisher: {sent.first_error}")
    errors += [f"subscriber process {r.slot}: {r.first_error}" for r in results if r.errors]
    for m, minute in enumerate(minutes):
        samples: array[int] = array("q")
        for result in results:
            if result.latencies:
                samples.frombytes(result.latencies[m])
        stats = latency_stats(samples)
        minute.p50_us, minute.p99_us, minute.max_us = (
            stats["p50_us"],
            stats["p99_us"],
            stats["max_us"],
        )
        minute.samples = len(samples)
        if results and all(r.per_minute for r in results):
            minute.deliveries = sum(r.per_minute[m] for r in results)
            minute.deliveries_per_s = minute.deliveries / MINUTE
    return Soak(minutes, keys_start, keys_end, sent.sent, errors, dict(RETENTION))


# ---------------------------------------------------------------------- output


def _progress(minute: Minute) -> str:
    cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in minute.cpu_pct.items())
    return (
        f"minute {minute.minute:>3}: hub RSS {minute.hub_rss_kib / 1024:.1f} MiB, Redis "
        f"used_memory {minute.redis_used_memory / 2**20:.2f} MiB, "
        f"{minute.deliveries_per_s:,.0f} deliveries/s, errors {minute.errors}; "
        f"steal {minute.steal_pct:.1f}%; CPU (% of a core): {cpu}"
    )


def _human(minute: Minute) -> str:
    return (
        f"{minute.minute:>6} {minute.hub_rss_kib / 1024:>12.1f} "
        f"{minute.redis_used_memory / 2**20:>15.2f} {minute.deliveries_per_s:>13,.0f} "
        f"{minute.p50_us / 1000:>8.2f} {minute.p99_us / 1000:>8.2f} {minute.max_us / 1000:>8.1f} "
        f"{minute.errors:>6} {minute.cpu_pct.get('hub', 0):>6.0f} "
        f"{minute.cpu_pct.get('other', 0):>6.0f}"
    )


def report(facts: dict[str, Any], soak: Soak, options: Options, elapsed: float) -> int:
    """Print the table, the verdicts and the JSON lines; returns the exit status."""
    first, last = soak.minutes[0], soak.minutes[-1]
    print()
    print(
        f"hub {facts['hub_revision']}; machine: {facts['cpu']}, {facts['cores']} cores, "
        f"Linux {facts['kernel']}, Python {facts['python']}, Redis {facts['redis']} "
        f"({facts['redis_setup']}), uvloop {facts['uvloop']}, redis-py {facts['redis_py']}"
    )
    print(
        f"{facts['date']}; load average {facts['loadavg']} at start, {facts['loadavg_end']} "
        f"at end; other processes kept {facts['foreign_cores']:.2f} cores busy before the "
        f"run; during the run: steal up to {max(m.steal_pct for m in soak.minutes):.1f}%, "
        f"other processes up to {max(m.cpu_pct.get('other', 0) for m in soak.minutes):.0f}% "
        f"of a core"
    )
    print(
        f"{options.rate:,.0f} events/s ({soak.published:,} published) over "
        f"{LATENCY_ENTITIES:,} entities, {options.subscribers:,} subscribers of "
        f"{options.per} entities each; hub settings {soak.settings}"
    )
    print(
        f"{'minute':>6} {'hub RSS MiB':>12} {'Redis used MiB':>15} {'deliveries/s':>13} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6} {'hub %':>6} {'other%':>6}"
    )
    for minute in soak.minutes:
        print(_human(minute))
    print(f"Redis keys at the start: {soak.keys_start}")
    print(f"Redis keys at the end:   {soak.keys_end}")
    rss = last.hub_rss_kib / first.hub_rss_kib - 1
    mem = last.redis_used_memory / first.redis_used_memory - 1
    p99 = last.p99_us / max(1, first.p99_us)
    verdicts = {
        "rss": (
            rss < RSS_GROWTH,
            f"hub RSS {first.hub_rss_kib / 1024:.1f} -> "
            f"{last.hub_rss_kib / 1024:.1f} MiB ({100 * rss:+.1f} %; criterion < "
            f"{100 * RSS_GROWTH:.0f} %)",
        ),
        "redis_memory": (
            mem < REDIS_GROWTH,
            f"Redis used_memory "
            f"{first.redis_used_memory / 2**20:.2f} -> "
            f"{last.redis_used_memory / 2**20:.2f} MiB ({100 * mem:+.1f} %; "
            f"criterion < {100 * REDIS_GROWTH:.0f} %)",
        ),
        "p99": (
            p99 <= P99_FACTOR,
            f"p99 {first.p99_us / 1000:.2f} -> {last.p99_us / 1000:.2f} "
            f"ms ({p99:.2f}x; criterion <= {P99_FACTOR:g}x)",
        ),
        "errors": (
            not soak.errors and not any(m.errors for m in soak.minutes),
            f"errors: {soak.errors or 'none'}",
        ),
    }
    for name, (ok, text) in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'} {name}: {text}")
    print(f"elapsed {elapsed:.0f} s")
    date = facts["date"]
    emit({"bench": "soak", "figure": "machine", **facts}, options.json_out)
    for minute in soak.minutes:
        emit(
            {"bench": "soak", "date": date, "figure": "minute", **asdict(minute)}, options.json_out
        )
    emit(
        {
            "bench": "soak",
            "date": date,
            "figure": "summary",
            "minutes": options.minutes,
            "rate": options.rate,
            "published": soak.published,
            "subscribers": options.subscribers,
            "entities_per_subscriber": options.per,
            "settings": soak.settings,
            "keys_start": soak.keys_start,
            "keys_end": soak.keys_end,
            "rss_growth": round(rss, 4),
            "redis_memory_growth": round(mem, 4),
            "p99_factor": round(p99, 3),
            "errors": soak.errors,
            "verdicts": {name: "PASS" if ok else "FAIL" for name, (ok, _) in verdicts.items()},
        },
        options.json_out,
    )
    return 0 if all(ok for ok, _ in verdicts.values()) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Soak: steady publish and fan-out for N minutes; hub RSS, Redis memory "
        "and publish-to-deliver latency of the first minute against the last."
    )
    parser.add_argument("--minutes", type=int, default=10, help="minutes measured (>= 2)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before minute 1")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--reader-processes", type=int, default=4, help="subscriber processes")
    parser.add_argument("--entities-per-subscriber", type=int, default=4)
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes < 1:
        raise SystemExit("--minutes must be at least 1")
    options = Options(
        args.minutes,
        args.warmup,
        args.rate,
        args.subscribers,
        args.reader_processes,
        args.entities_per_subscriber,
        args.json_out,
    )
    started = time.monotonic()
    facts, soak = on_embedded_redis(lambda url, pid, log: run_soak(url, pid, options, log))
    return report(facts, soak, options, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
