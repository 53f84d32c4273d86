"""Native-protocol publish benchmark: throughput beside bare EVALSHA, latency beside bare broadcast.

Two measurements, each beside its bare counterpart measured in the same run, against
one embedded Redis (AOF, ``appendfsync everysec``, unix socket) and a hub started as
``python -m hub.cli serve`` with a key prefix of its own per phase:

- **(a) throughput**: acknowledged events/s of MessagePack ``publish`` frames of 100
  events (``flux.v1.msgpack``) on 8 WebSocket connections from 2 processes, one frame
  in flight on each; every ``ack`` is checked (its ``ref``, 100 results, each ``ok``
  with an ``eventId`` and a ``version``). The events are ``ingest.py``'s pool (every
  event changes its entity). Beside it, the bare ceiling of ``ingest.py`` (redis-py
  EVALSHA of the hub's reduce script, 100 events per call, pipelined), measured by its
  own code. Criterion: **hub >= 40 % of bare EVALSHA**.
- **(b) latency**: p50/p99 from publish to delivery at 1,000 events/s (one event per
  frame, paced, on one publisher connection by default) to 100 subscribers in 2
  processes of their own, each event carrying its send time (``time.monotonic_ns()``:
  one host clock for every process). Hub: a native MessagePack publisher (every ack
  checked, in order), subscribers on ``flux.v1`` subscribed to ``bench/``. Bare: a
  ``websockets`` server that broadcasts every message its publisher sends to the
  subscribers (``serve`` + ``broadcast``). Criterion: **hub p99 <= 2x bare p99**, the
  samples of all rounds pooled.

Subscribers are the raw-socket readers of ``fanout.py`` (every frame header checked,
every connection must receive every event, the hub's last delta checked against the
publisher's acks). In (b) every 5th one is a latency probe that reads each frame as
soon as it arrives and times it; the others read every 10 ms: 100 connections all
reading eagerly cost ~0.7 of a core here (a ``recv()`` per frame), which starved the
servers being measured. For every phase the script
reports steal, the CPU used by processes that are not the benchmark's (``other``), and
the CPU time per event of each process it started: a busy machine moves both sides.

The phases are interleaved (bare and hub of (a), bare and hub of (b); twice) and the
figures combine the rounds. Exit status 1 if a criterion is not met. Output:
human-readable lines, then one JSON line per figure. About 80 s (longer when the hub
falls behind in (b): its backlog is drained, within bounds, before the checks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
import uvloop

# bench/ is not a package: the other scripts sit next to this file (sys.path[0]).
from fanout import (
    ACK_TIMEOUT,
    DRAIN_TIMEOUT,
    SUB,
    Board,
    PublisherResult,
    ReaderResult,
    ReaderSpec,
    check_ack,
    check_readers,
    cleanup,
    hub_reader_spec,
    open_publisher,
    parse_position,
    percentile,
    reader_processes,
    start_readers,
)
from ingest import (
    BATCH_EVENTS,
    CpuMeter,
    LoadResult,
    Workers,
    combined,
    combined_cpu,
    emit,
    event_pool,
    on_embedded_redis,
    redis_info,
    reset_redis,
    running_hub,
    sleep_until,
    split_connections,
)
from ingest import Figure as IngestFigure
from ingest import Options as IngestOptions
from ingest import measure_bare as measure_bare_evalsha
from stacks import listening_socket
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence
    from multiprocessing.connection import Connection

__all__ = ["main"]

#: Criterion (a): hub events/s / bare EVALSHA events/s.
THROUGHPUT_THRESHOLD = 0.40
#: Criterion (b): hub p99 / bare p99, at most.
LATENCY_FACTOR = 2.0
#: How long a server may take to start.
START_TIMEOUT = 30.0
#: Bare latency frames: ``{"sent_ns":…,"seq":…,"pad":"xx…"}``, this long.
BARE_MESSAGE_BYTES = 150
#: Distinct entities of the latency events.
LATENCY_ENTITIES = 1000
#: Seconds between two reads of a subscriber that is not a latency probe.
LAZY_PAUSE = 0.01


# ---------------------------------------------------------------------- (a) throughput


def publish_frames() -> tuple[bytes, ...]:
    """``ingest.py``'s event pool as MessagePack publish frames (``ref`` = pool index)."""
    return tuple(
        bytes(msgpack.packb({"type": "publish", "ref": ref, "events": batch}))
        for ref, batch in enumerate(event_pool())
    )


@dataclass(frozen=True, slots=True)
class WsLoadSpec:
    """One publishing process: ``connections`` connections, one frame in flight on each,
    cycling through ``frames``; acks between ``begin`` and ``end`` are counted."""

    port: int
    frames: tuple[bytes, ...]
    connections: int
    begin: float
    end: float
    offset: int


@dataclass
class _Acks:
    count: int = 0
    running: bool = True


async def _publish_connection(
    ws: ClientConnection, frames: tuple[bytes, ...], first: int, acks: _Acks
) -> None:
    index = first % len(frames)
    while acks.running:
        await ws.send(frames[index])
        reply = await asyncio.wait_for(ws.recv(), ACK_TIMEOUT)
        check_ack(reply, index, BATCH_EVENTS, changed=False)
        acks.count += 1
        index = (index + 1) % len(frames)


async def drive_ws_load(spec: WsLoadSpec) -> LoadResult:
    """Publish until ``spec.end``; every ack checked, those in the window counted."""
    connections = [await open_publisher(spec.port) for _ in range(spec.connections)]
    acks = _Acks()
    stride = max(1, len(spec.frames) // max(1, spec.connections))
    try:
        async with asyncio.TaskGroup() as tg:
            for n, ws in enumerate(connections):
                tg.create_task(_publish_connection(ws, spec.frames, spec.offset + n * stride, acks))
            await sleep_until(spec.begin)
            t0, n0 = time.monotonic(), acks.count
            await sleep_until(spec.end)
            t1, n1 = time.monotonic(), acks.count
            # Each connection finishes the frame it has in flight (checked), then stops.
            acks.running = False
    finally:
        for ws in connections:
            await ws.close()
    return LoadResult(n1 - n0, t1 - t0, acks.count, 0)


def _ws_load_process(spec: WsLoadSpec, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = runner.run(drive_ws_load(spec))
        except Exception as exc:  # reported to the parent, which fails the run
            result = LoadResult(0, 0.0, 0, 1, f"publisher failed: {exc!r}")
    results.send(result)


@dataclass(frozen=True)
class Options:
    warmup: float
    duration: float
    latency_duration: float
    rounds: int
    connections: int
    load_processes: int
    bare_depth: int
    bare_pipelines: int
    rate: float
    subscribers: int
    reader_processes: int
    probe_every: int
    publishers: int
    only: str | None
    json_out: Path | None


def measure_bare(url: str, redis_pid: int, options: Options, round_no: int) -> IngestFigure:
    """``ingest.py``'s bare ceiling, with its own code and its defaults for the pipeline."""
    ingest_options = IngestOptions(
        options.warmup,
        options.duration,
        options.rounds,
        0,
        0,
        0,
        options.bare_depth,
        options.bare_pipelines,
        None,
    )
    return measure_bare_evalsha(url, redis_pid, ingest_options, round_no)


def measure_hub(
    url: str,
    redis_pid: int,
    options: Options,
    frames: tuple[bytes, ...],
    log: Path,
    round_no: int,
) -> IngestFigure:
    """Acknowledged events/s of MessagePack publish frames of 100 events."""
    reset_redis(url)
    forks = int(redis_info(url, "stats").get("total_forks", 0))
    with running_hub(url, f"bench-publish-{round_no}", log) as (port, hub_pid):
        begin = time.monotonic() + 1.0 + options.warmup
        end = begin + options.duration
        split = [n for n in split_connections(options.connections, options.load_processes) if n]
        workers = Workers()
        with cleanup(workers):
            for i, n in enumerate(split):
                workers.start(_ws_load_process, WsLoadSpec(port, frames, n, begin, end, i * 7919))
            meter = CpuMeter({"hub": [hub_pid], "redis": [redis_pid], "load": workers.pids})
            time.sleep(max(0.0, begin - time.monotonic()))
            meter.start()
            time.sleep(max(0.0, end - time.monotonic()))
            meter.stop()
            results: list[LoadResult] = workers.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
    for result in results:
        if result.errors:
            raise AssertionError(f"hub publish: {result.first_error}")
        if result.responses <= 0:
            raise AssertionError("hub publish: no ack at all in the measured window")
    acks = sum(r.responses for r in results)
    window = max(r.window for r in results)
    events = acks * BATCH_EVENTS
    return IngestFigure(
        "hub_ws",
        events / window,
        events,
        window,
        meter.steal_pct,
        meter.cpu_pct,
        meter.us_per(events),
        {
            "protocol": "flux.v1.msgpack",
            "events_per_frame": BATCH_EVENTS,
            "connections": options.connections,
            "load_processes": len(split),
            "frames_per_s": round(acks / window, 1),
        },
        round_no,
        int(redis_info(url, "stats").get("total_forks", 0)) - forks,
    )


# ---------------------------------------------------------------------- (b) latency


@dataclass(frozen=True, slots=True)
class PacedSpec:
    """A publisher sending one event per frame at ``rate`` from the board's start to end,
    over ``connections`` connections in turn."""

    port: int
    hub: bool
    rate: float
    connections: int
    deadline: float


@dataclass(frozen=True, slots=True)
class PacedResult:
    sent: int
    #: Seconds the sends came after their due time: median and 99th percentile.
    late_p50: float = 0.0
    late_p99: float = 0.0
    published: PublisherResult | None = None
    #: Bare: the last message sent.
    last: bytes = b""
    errors: int = 0
    first_error: str = ""


def bare_message(seq: int, sent_ns: int) -> bytes:
    head = b'{"sent_ns":%d,"seq":%d,"pad":"' % (sent_ns, seq)
    return head + b"x" * (BARE_MESSAGE_BYTES - len(head) - 2) + b'"}'


def hub_event_frame(seq: int, sent_ns: int) -> bytes:
    event = {
        "stream": "bench.latency",
        "source": "bench",
        "payload": {
            "entity_id": f"bench/l{seq % LATENCY_ENTITIES:04d}",
            "properties": {"sent_ns": sent_ns, "seq": seq},
        },
    }
    return bytes(msgpack.packb({"type": "publish", "ref": seq, "events": [event]}))


@dataclass
class _Paced:
    sent: int = 0
    acked: int = 0
    best: tuple[int, int, int] = (-1, 0, 0)
    best_text: str = ""
    best_seq: int = -1
    all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    done_sending: bool = False


async def _read_acks(ws: ClientConnection, state: _Paced, first: int, step: int) -> None:
    """Check every ack of one connection, in order (events ``first``, ``first + step`` ...)."""
    expected = first
    while True:
        try:
            reply = await ws.recv()
        except ConnectionClosed:
            return
        (result,) = check_ack(reply, expected, 1)
        position = parse_position(result["position"])
        if position > state.best:
            state.best, state.best_text, state.best_seq = position, result["position"], expected
        expected += step
        state.acked += 1
        if state.done_sending and state.acked == state.sent:
            state.all_acked.set()


async def _open(spec: PacedSpec) -> ClientConnection:
    if spec.hub:
        return await open_publisher(spec.port)
    return await connect(
        f"ws://127.0.0.1:{spec.port}/publish", compression=None, ping_interval=None
    )


async def drive_paced(spec: PacedSpec, board: Board) -> PacedResult:
    connections = [await _open(spec) for _ in range(spec.connections)]
    state = _Paced()
    late = array("d")
    last = b""
    try:
        async with asyncio.TaskGroup() as tg:
            if spec.hub:
                for n, ws in enumerate(connections):
                    tg.create_task(_read_acks(ws, state, n, len(connections)))
            start, _, end = await board.schedule_soon(spec.deadline)
            interval = 1.0 / spec.rate
            while (due := start + state.sent * interval) < end:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                late.append(time.monotonic() - due)
                ws = connections[state.sent % len(connections)]
                sent_ns = time.monotonic_ns()
                if spec.hub:
                    await ws.send(hub_event_frame(state.sent, sent_ns))
                else:
                    last = bare_message(state.sent, sent_ns)
                    await ws.send(last.decode())
                state.sent += 1
            state.done_sending = True
            if spec.hub:
                if state.acked < state.sent:
                    await asyncio.wait_for(state.all_acked.wait(), ACK_TIMEOUT)
                for ws in connections:
                    await ws.close()
    finally:
        for ws in connections:
            await ws.close()
    ordered = sorted(late)
    published = None
    if spec.hub:
        published = PublisherResult(
            state.acked,
            state.acked,
            state.best_text,
            f"bench/l{state.best_seq % LATENCY_ENTITIES:04d}",
            state.best_seq,
        )
    return PacedResult(
        state.sent,
        ordered[len(ordered) // 2] if ordered else 0.0,
        ordered[int(len(ordered) * 0.99)] if ordered else 0.0,
        published,
        last,
    )


def _paced_process(spec: PacedSpec, board: Board, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = runner.run(drive_paced(spec, board))
        except Exception as exc:  # reported to the parent, which fails the run
            result = PacedResult(0, errors=1, first_error=f"publisher failed: {exc!r}")
    board.target.value = result.sent if not result.errors else 0
    results.send(result)


async def relay_server(sock: socket.socket, subscribers: int, deadline: float) -> None:
    """The bare server: every message of ``/publish`` is broadcast to the other clients."""
    clients: list[ServerConnection] = []
    gone = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/publish":
            with contextlib.suppress(ConnectionClosed):
                while True:
                    broadcast(clients, await ws.recv(decode=False), text=True)
            return
        clients.append(ws)
        await ws.wait_closed()
        clients.remove(ws)
        if not clients:
            gone.set()

    async with serve(handler, sock=sock, ping_interval=None, compression=None):
        # Serve until every subscriber has read everything and hung up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await gone.wait()


def _relay_process(
    sock: socket.socket, subscribers: int, deadline: float, results: Connection
) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        error = ""
        try:
            runner.run(relay_server(sock, subscribers, deadline))
        except Exception as exc:
            error = f"bare server failed: {exc!r}"
    results.send(error)


@dataclass
class LatencyFigure:
    """One latency phase, as printed and as a JSON line."""

    figure: str
    round: int
    events: int
    rate: float
    subscribers: int
    samples: int
    p50_us: int
    p90_us: int
    p99_us: int
    p999_us: int
    max_us: int
    steal_pct: float
    cpu_pct: dict[str, float]
    #: CPU microseconds per published event, per process role.
    cpu_us_per_event: dict[str, float]
    params: dict[str, Any]


def latency_stats(samples: Sequence[int]) -> dict[str, int]:
    ordered = sorted(samples)
    return {
        "p50_us": percentile(ordered, 50),
        "p90_us": percentile(ordered, 90),
        "p99_us": percentile(ordered, 99),
        "p999_us": percentile(ordered, 99.9),
        "max_us": ordered[-1] if ordered else 0,
    }


def measure_latency(
    system: str, url: str, redis_pid: int, options: Options, log: Path, round_no: int
) -> tuple[LatencyFigure, array[int]]:
    """One latency phase of ``system`` ("hub" or "bare"); returns the figure and samples."""
    hub = system == "hub"
    split = reader_processes(options.subscribers, options.reader_processes)
    board = Board(len(split), options.subscribers)
    timeout = START_TIMEOUT + options.warmup + options.latency_duration + DRAIN_TIMEOUT
    readers, publisher, server = Workers(), Workers(), Workers()
    with contextlib.ExitStack() as stack:
        if hub:
            reset_redis(url)
            port, server_pid = stack.enter_context(
                running_hub(url, f"bench-latency-{round_no}", log)
            )
            pids = {"hub": [server_pid], "redis": [redis_pid]}
        else:
            sock = listening_socket()
            port = sock.getsockname()[1]
            server.start(_relay_process, sock, options.subscribers, time.monotonic() + timeout)
            sock.close()
            pids = {"server": server.pids}
        stack.enter_context(cleanup(readers, publisher, server))
        deadline = time.monotonic() + timeout
        if hub:
            specs = [
                hub_reader_spec(port, n, slot, LAZY_PAUSE, options.probe_every, deadline)
                for slot, n in enumerate(split)
            ]
        else:
            specs = [
                ReaderSpec(
                    port,
                    n,
                    slot,
                    "/",
                    None,
                    None,
                    b"",
                    b'{"sent_ns":',
                    (),
                    LAZY_PAUSE,
                    options.probe_every,
                    deadline,
                )
                for slot, n in enumerate(split)
            ]
        start_readers(readers, board, specs)
        paced_spec = PacedSpec(port, hub, options.rate, options.publishers, deadline)
        publisher.start(_paced_process, paced_spec, board)
        start = time.monotonic() + 0.5
        begin = start + options.warmup
        end = begin + options.latency_duration
        board.set_schedule(start, begin, end)
        meter = CpuMeter({**pids, "publisher": publisher.pids, "subscribers": readers.pids})
        time.sleep(max(0.0, begin - time.monotonic()))
        meter.start()
        time.sleep(max(0.0, end - time.monotonic()))
        meter.stop()
        (paced,) = publisher.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
        results: list[ReaderResult] = readers.results(DRAIN_TIMEOUT + 10)
        if not hub:
            (error,) = server.results(DRAIN_TIMEOUT)
            if error:
                raise AssertionError(error)
    if paced.errors:
        raise AssertionError(paced.first_error)
    check_readers(results, f"{system} latency")
    last = [p for r in results for p in r.last]
    if hub:
        assert paced.published is not None
        _check_last_latency_delta(last, paced.published)
    elif set(last) != {paced.last}:
        raise AssertionError(
            f"bare: last frames {sorted(set(last))[:3]!r}, {paced.last!r} expected"
        )
    samples: array[int] = array("q")
    for result in results:
        samples.frombytes(result.latencies)
    events = round(options.rate * options.latency_duration)
    probes = sum(len(range(0, n, options.probe_every)) for n in split)
    if len(samples) < 0.95 * events * probes:
        raise AssertionError(f"{system}: {len(samples)} samples, ~{events * probes} expected")
    figure = LatencyFigure(
        system,
        round_no,
        paced.sent,
        options.rate,
        options.subscribers,
        len(samples),
        **latency_stats(samples),
        steal_pct=meter.steal_pct,
        cpu_pct=meter.cpu_pct,
        cpu_us_per_event={
            role: round(1e6 * s / max(1, events), 1) for role, s in meter.cpu_seconds.items()
        },
        params={
            "publisher": "flux.v1.msgpack, one event per frame"
            if hub
            else "websockets client, one text message per event",
            "subscriber_protocol": "flux.v1 (JSON)" if hub else "plain text frames",
            "subscriber_processes": len(split),
            "publisher_connections": options.publishers,
            "latency_probes": probes,
            "lazy_read_ms": 1000 * LAZY_PAUSE,
            "send_late_p50_us": round(1e6 * paced.late_p50),
            "send_late_p99_us": round(1e6 * paced.late_p99),
            "frame_bytes": round(
                sum(r.received for r in results) / max(1, sum(r.frames for r in results)), 1
            ),
        },
    )
    return figure, samples


def _check_last_latency_delta(payloads: Sequence[bytes], published: PublisherResult) -> None:
    if len(set(payloads)) != 1:
        raise AssertionError(f"subscribers ended on different frames: {list(payloads)[:3]!r}")
    delta = orjson.loads(payloads[0])
    expected = {
        "sub": SUB,
        "type": "delta",
        "id": published.last_entity,
        "position": published.last_position,
    }
    if {k: delta.get(k) for k in expected} != expected or delta["set"].get(
        "seq"
    ) != published.last_seq:
        raise AssertionError(f"last delta {delta} is not the last event {expected}")


# ---------------------------------------------------------------------- rounds and output


@dataclass
class Run:
    throughput: list[IngestFigure] = field(default_factory=list)
    latency: list[LatencyFigure] = field(default_factory=list)
    samples: dict[str, array[int]] = field(default_factory=dict)


def run_rounds(url: str, redis_pid: int, options: Options, log: Path) -> Run:
    """Interleave: bare and hub throughput, bare and hub latency; ``rounds`` times."""
    frames = publish_frames()
    run = Run()
    for n in range(1, options.rounds + 1):
        for system in ("bare", "hub") if options.only in (None, "a") else ():
            if system == "bare":
                figure = measure_bare(url, redis_pid, options, n)
            else:
                figure = measure_hub(url, redis_pid, options, frames, log, n)
            print(_human_throughput(figure), flush=True)
            run.throughput.append(figure)
        for system in ("bare", "hub") if options.only in (None, "b") else ():
            latency, samples = measure_latency(system, url, redis_pid, options, log, n)
            print(_human_latency(latency), flush=True)
            run.latency.append(latency)
            run.samples.setdefault(system, array("q")).extend(samples)
    return run


def _cpu_text(cpu_pct: dict[str, float], per: dict[str, float]) -> str:
    cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in cpu_pct.items())
    return f"CPU (% of a core): {cpu}; CPU us/event: " + ", ".join(
        f"{role} {us:.1f}" for role, us in per.items()
    )


def _human_throughput(figure: IngestFigure) -> str:
    return (
        f"[round {figure.round}] (a) {figure.figure:<8} {figure.events_per_s:>8,.0f} events/s "
        f"({figure.events:,} in {figure.window_s:.1f} s; steal {figure.steal_pct:.1f}%; "
        f"{_cpu_text(figure.cpu_pct, figure.cpu_us_per_event)})"
    )


def _human_latency(figure: LatencyFigure) -> str:
    return (
        f"[round {figure.round}] (b) {figure.figure:<8} p50 {figure.p50_us / 1000:.2f} ms, "
        f"p90 {figure.p90_us / 1000:.2f} ms, p99 {figure.p99_us / 1000:.2f} ms, "
        f"p99.9 {figure.p999_us / 1000:.2f} ms, max {figure.max_us / 1000:.1f} ms "
        f"({figure.samples:,} deliveries to {figure.params['latency_probes']} probes of "
        f"{figure.subscribers} subscribers; {figure.events:,} events at {figure.rate:,.0f}/s; "
        f"sends late p99 {figure.params['send_late_p99_us']} us; "
        f"steal {figure.steal_pct:.1f}%; {_cpu_text(figure.cpu_pct, figure.cpu_us_per_event)})"
    )


def report(facts: dict[str, Any], run: Run, options: Options, elapsed: float) -> int:
    """Print the summary and verdicts, and the JSON lines; returns the exit status."""
    windows = [(f.steal_pct, f.cpu_pct) for f in run.throughput]
    windows += [(f.steal_pct, f.cpu_pct) for f in run.latency]
    steal = max(s for s, _ in windows)
    other = max(cpu.get("other", 0.0) for _, cpu in windows)
    print()
    print(
        f"hub {facts['hub_revision']}; machine: {facts['cpu']}, {facts['cores']} cores, "
        f"Linux {facts['kernel']}, Python {facts['python']}, Redis {facts['redis']} "
        f"({facts['redis_setup']}), uvloop {facts['uvloop']}, websockets {facts['websockets']}, "
        f"redis-py {facts['redis_py']} (hiredis: {facts['hiredis']})"
    )
    print(
        f"{facts['date']}; load average {facts['loadavg']} at start, {facts['loadavg_end']} "
        f"at end; other processes kept {facts['foreign_cores']:.2f} cores busy before the "
        f"run; during the windows: steal up to {steal:.1f}%, other processes up to "
        f"{other:.0f}% of a core"
    )
    summaries = []
    if run.throughput:
        summaries.append(_throughput_summary(run.throughput, options))
    if run.latency:
        summaries.append(_latency_summary(run, options))
    print(f"elapsed {elapsed:.0f} s")
    date = facts["date"]
    emit({"bench": "publish_ws", "figure": "machine", **facts}, options.json_out)
    for figure in run.throughput:
        emit({"bench": "publish_ws", "date": date, **asdict(figure)}, options.json_out)
    for latency in run.latency:
        emit({"bench": "publish_ws", "date": date, **asdict(latency)}, options.json_out)
    for summary in summaries:
        emit({"bench": "publish_ws", "date": date, **summary}, options.json_out)
    return 0 if all(s["verdict"] == "PASS" for s in summaries) else 1


def _throughput_summary(figures: list[IngestFigure], options: Options) -> dict[str, Any]:
    bare, hub = combined(figures, "bare"), combined(figures, "hub_ws")
    ratio = hub / bare
    per_round = [
        combined([f for f in figures if f.round == n], "hub_ws")
        / combined([f for f in figures if f.round == n], "bare")
        for n in range(1, options.rounds + 1)
    ]
    bare_cpu, hub_cpu = combined_cpu(figures, "bare"), combined_cpu(figures, "hub_ws")
    cpu_ratio = sum(bare_cpu.values()) / sum(hub_cpu.values())
    verdict = "PASS" if ratio >= THROUGHPUT_THRESHOLD else "FAIL"
    print(f"(a) bare EVALSHA {bare:,.0f} events/s; hub (WebSocket, msgpack) {hub:,.0f} events/s")
    print(
        f"    CPU per event: bare {sum(bare_cpu.values()):.0f} us {bare_cpu}, hub "
        f"{sum(hub_cpu.values()):.0f} us {hub_cpu}; CPU-normalised ratio {cpu_ratio:.2f}"
    )
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"    ratio hub/bare = {ratio:.2f} ({100 * ratio:.0f} %; per round: {rounds}): "
        f"{verdict} (criterion: >= {100 * THROUGHPUT_THRESHOLD:.0f} % of bare EVALSHA "
        f"measured in the same run)"
    )
    return {
        "figure": "ratio_hub_ws_bare",
        "bare_events_per_s": round(bare, 1),
        "hub_events_per_s": round(hub, 1),
        "ratio": round(ratio, 3),
        "ratio_per_round": [round(r, 3) for r in per_round],
        "cpu_normalised_ratio": round(cpu_ratio, 3),
        "threshold": THROUGHPUT_THRESHOLD,
        "verdict": verdict,
    }


def _latency_summary(run: Run, options: Options) -> dict[str, Any]:
    stats = {system: latency_stats(run.samples[system]) for system in ("bare", "hub")}
    factor = stats["hub"]["p99_us"] / max(1, stats["bare"]["p99_us"])
    verdict = "PASS" if factor <= LATENCY_FACTOR else "FAIL"
    for system in ("bare", "hub"):
        s = stats[system]
        print(
            f"(b) {system:<4} p50 {s['p50_us'] / 1000:.2f} ms, p90 {s['p90_us'] / 1000:.2f} ms, "
            f"p99 {s['p99_us'] / 1000:.2f} ms, p99.9 {s['p999_us'] / 1000:.2f} ms, "
            f"max {s['max_us'] / 1000:.1f} ms (all rounds)"
        )
    per_round = [
        next(f.p99_us for f in run.latency if f.figure == "hub" and f.round == n)
        / max(1, next(f.p99_us for f in run.latency if f.figure == "bare" and f.round == n))
        for n in range(1, options.rounds + 1)
    ]
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"    hub p99 / bare p99 = {factor:.2f} (per round: {rounds}): {verdict} "
        f"(criterion: hub p99 <= {LATENCY_FACTOR:g}x bare p99, {options.rate:,.0f} events/s "
        f"to {options.subscribers} subscribers)"
    )
    return {
        "figure": "latency_hub_bare",
        "bare": stats["bare"],
        "hub": stats["hub"],
        "p99_factor": round(factor, 3),
        "p99_factor_per_round": [round(r, 3) for r in per_round],
        "threshold": LATENCY_FACTOR,
        "verdict": verdict,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Native WebSocket publish: throughput beside bare EVALSHA, and "
        "publish-to-deliver latency beside a bare websockets broadcast."
    )
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=6.0, help="(a) seconds measured")
    parser.add_argument("--latency-duration", type=float, default=6.0, help="(b) seconds measured")
    parser.add_argument("--rounds", type=int, default=2, help="times every phase runs")
    parser.add_argument("--connections", type=int, default=8, help="(a) publisher connections")
    parser.add_argument("--load-processes", type=int, default=2, help="(a) publisher processes")
    parser.add_argument("--bare-depth", type=int, default=4, help="(a) script calls per pipeline")
    parser.add_argument("--bare-pipelines", type=int, default=4, help="(a) pipelines in flight")
    parser.add_argument("--rate", type=float, default=1000.0, help="(b) events per second")
    parser.add_argument("--subscribers", type=int, default=100, help="(b) subscribers")
    parser.add_argument("--reader-processes", type=int, default=2, help="(b) subscriber processes")
    parser.add_argument(
        "--probe-every",
        type=int,
        default=5,
        help="(b) every n-th subscriber times every frame as it arrives; the others read "
        "every 10 ms (1: all of them)",
    )
    parser.add_argument(
        "--publishers", type=int, default=1, help="(b) publisher connections, used in turn"
    )
    parser.add_argument("--only", choices=["a", "b"], help="run one of the two measurements")
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(
        args.warmup,
        args.duration,
        args.latency_duration,
        args.rounds,
        args.connections,
        args.load_processes,
        args.bare_depth,
        args.bare_pipelines,
        args.rate,
        args.subscribers,
        args.reader_processes,
        args.probe_every,
        args.publishers,
        args.only,
        args.json_out,
    )
    started = time.monotonic()
    facts, run = on_embedded_redis(lambda url, pid, log: run_rounds(url, pid, options, log))
    return report(facts, run, options, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
