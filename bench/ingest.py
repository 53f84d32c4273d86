"""Acceptance benchmark: acknowledged events/s through the REST API, beside the bare ceiling.

Three figures, measured in one run against one embedded Redis (AOF, ``appendfsync
everysec``, unix socket), each phase on a fresh key prefix and an emptied Redis:

- **bare**: the ceiling. redis-py (asyncio, hiredis) sends the hub's own reduce script
  with the hub's own argument layout (:func:`hub.store.apply.reduce_call`), 100 events
  per EVALSHA, several calls pipelined per round trip, several pipelines in flight. The
  arguments are built once up front, so this measures Redis plus redis-py and nothing
  of the hub.
- **hub single**: ``POST /api/events``, one event per request, many keep-alive
  connections (the hub coalesces concurrent publishes into one script call).
- **hub batch**: ``POST /api/events/batch``, 100 events per request.

The hub runs as ``python -m hub.cli serve`` in a subprocess; load generators and the
bare client run in processes of their own, so nobody shares a GIL. Every reply is
checked (HTTP 200, and ``"failed":0`` for batches; ``ok`` for every event of a script
call): a wrong answer fails the run.

The acceptance criterion: hub batch ingest is at least 30 % of the bare ceiling
measured in the same run. The script exits 1 when it is not met.

Output: human-readable lines, then one JSON line per figure (lines starting with
``{``), to compare runs. Run ``python bench/ingest.py --help`` for the knobs; the
default run takes about 70 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
import uvloop
from redis.utils import HIREDIS_AVAILABLE

from hub.config import LogSettings
from hub.engine.ids import uuid7
from hub.store import EmbeddedRedis, Keys
from hub.store.apply import reduce_call
from hub.wire.envelope import Envelope, parse_event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from multiprocessing.connection import Connection

T = TypeVar("T")

# Also the toolkit bench/stacks.py imports.
__all__ = [
    "CpuMeter",
    "LoadResult",
    "LoadSpec",
    "Workers",
    "emit",
    "machine_facts",
    "main",
    "on_embedded_redis",
    "post_request",
    "process_cpu_seconds",
    "run_load",
    "split_connections",
    "stop_process",
]

#: Events per batch request and per bare script call.
BATCH_EVENTS = 100
#: Distinct entities written; every event changes its entity (see :func:`raw_event`).
ENTITIES = 10_000
#: Distinct batches pre-built; requests cycle through them.
POOL_BATCHES = 200
#: The acceptance criterion: hub batch ingest / bare ceiling.
THRESHOLD = 0.30
#: How long a hub or a load generator may take to start.
START_TIMEOUT = 30.0
#: How long in-flight requests may take to finish once a phase ends.
DRAIN_TIMEOUT = 10.0

_REDUCE_SOURCE = resources.files("hub.store").joinpath("reduce.lua").read_text()
_MP = multiprocessing.get_context("fork")


# ---------------------------------------------------------------------- the events


def raw_event(batch: int, slot: int) -> dict[str, Any]:
    """Event ``slot`` of pre-built batch ``batch``, as a client sends it.

    Entity ``(batch * 100 + slot) % ENTITIES`` gets ``seq = batch``. With 200 batches
    of 100 over 10,000 entities, each entity is written by batches ``b`` and ``b + 100``
    in turn, so every event changes a value (the reducer's full path: HSET, version
    bump, delta with ``=`` fields), also when the pool wraps around.
    """
    entity = (batch * BATCH_EVENTS + slot) % ENTITIES
    return {
        "stream": "bench.ingest",
        "source": "bench",
        "payload": {
            "entity_id": f"bench/e{entity:05d}",
            "properties": {
                "seq": batch,
                "temperature": 20 + (batch * 7 + slot) % 100 / 10,
                "status": "ok" if batch % 2 else "warn",
            },
        },
    }


def event_pool() -> list[list[dict[str, Any]]]:
    """:data:`POOL_BATCHES` batches of :data:`BATCH_EVENTS` raw events."""
    return [[raw_event(b, s) for s in range(BATCH_EVENTS)] for b in range(POOL_BATCHES)]


def post_request(path: str, body: bytes) -> bytes:
    """A complete keep-alive ``POST`` request, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def single_requests(pool: list[list[dict[str, Any]]]) -> tuple[bytes, ...]:
    """One ``POST /api/events`` request per event of the pool."""
    return tuple(post_request("/api/events", orjson.dumps(e)) for batch in pool for e in batch)


def batch_requests(pool: list[list[dict[str, Any]]]) -> tuple[bytes, ...]:
    """One ``POST /api/events/batch`` request per batch of the pool."""
    return tuple(
        post_request("/api/events/batch", orjson.dumps({"events": batch})) for batch in pool
    )


# ---------------------------------------------------------------------- HTTP load generator


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one load-generator process does.

    It opens ``connections`` keep-alive connections, each with one request in flight
    (the next is written when the reply arrived), cycling through ``requests``.
    Replies between the monotonic times ``begin`` and ``end`` are counted.
    """

    host: str
    port: int
    requests: tuple[bytes, ...]
    connections: int
    begin: float
    end: float
    #: Bytes every reply body must contain (b"" checks the status only) ...
    expect: bytes = b""
    #: ... or equal exactly (None: not checked).
    expect_exact: bytes | None = None
    #: Offset into ``requests`` of this process's first connection.
    offset: int = 0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load-generator process measured."""

    #: Replies received between ``begin`` and ``end``.
    responses: int
    #: Their window, as measured (seconds).
    window: float
    #: Replies received in total, warm-up and drain included.
    total: int
    errors: int
    first_error: str = ""


@dataclass(slots=True)
class _Tally:
    responses: int = 0
    errors: int = 0
    first_error: str = ""
    running: bool = True
    in_flight: int = 0
    #: Set when the run is over and no request is in flight any more.
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        self.in_flight -= 1
        if not self.running and self.in_flight == 0:
            self.drained.set()

    def stop(self) -> None:
        self.running = False
        if self.in_flight == 0:
            self.drained.set()

    def fail(self, message: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = message


def split_response(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """``(status, body, rest)`` of the first complete response, or None if incomplete.

    Raises:
        ValueError: the response has no ``Content-Length`` (chunked replies are not
            expected from any server measured here).
    """
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buffer[:head_end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"response without content-length: {buffer[:head_end]!r}")
    line_end = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : line_end if line_end >= 0 else head_end])
    start = head_end + 4
    if len(buffer) < start + length:
        return None
    return int(buffer[9:12]), buffer[start : start + length], buffer[start + length :]


class KeepAliveClient(asyncio.Protocol):
    """One connection: writes pre-built requests, one at a time, and checks each reply."""

    def __init__(
        self, tally: _Tally, requests: Sequence[bytes], first: int, spec: LoadSpec
    ) -> None:
        self.tally = tally
        self.requests = requests
        self.index = first % len(requests)
        self.expect = spec.expect
        self.expect_exact = spec.expect_exact
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send_next()

    def _send_next(self) -> None:
        if not self.tally.running or self.transport is None:
            return
        self.tally.in_flight += 1
        self.transport.write(self.requests[self.index])
        self.index = (self.index + 1) % len(self.requests)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        try:
            while (parsed := split_response(buffer)) is not None:
                status, body, buffer = parsed
                self.tally.answered()
                self._check(status, body)
                self._send_next()
        except ValueError as exc:
            self.tally.fail(str(exc))
            buffer = b""
            if self.transport is not None:
                self.transport.close()
        self.buffer = buffer

    def _check(self, status: int, body: bytes) -> None:
        if status != 200:
            self.tally.fail(f"HTTP {status}: {body[:200]!r}")
        elif self.expect_exact is not None and body != self.expect_exact:
            self.tally.fail(f"unexpected body: {body[:200]!r}")
        elif self.expect and self.expect not in body:
            self.tally.fail(f"body without {self.expect!r}: {body[:200]!r}")
        else:
            self.tally.responses += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tally.running:
            self.tally.fail(f"connection lost during the run: {exc}")
        self.transport = None


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def drive_load(spec: LoadSpec) -> LoadResult:
    """Run one load generator (see :class:`LoadSpec`) in the running loop."""
    loop = asyncio.get_running_loop()
    tally = _Tally()
    stride = max(1, len(spec.requests) // max(1, spec.connections))
    clients: list[KeepAliveClient] = []
    for n in range(spec.connections):
        factory = functools.partial(
            KeepAliveClient, tally, spec.requests, spec.offset + n * stride, spec
        )
        _, client = await loop.create_connection(factory, spec.host, spec.port)
        clients.append(client)
    await sleep_until(spec.begin)
    t0, n0 = time.monotonic(), tally.responses
    await sleep_until(spec.end)
    t1, n1 = time.monotonic(), tally.responses
    tally.stop()
    try:
        await asyncio.wait_for(tally.drained.wait(), DRAIN_TIMEOUT)
    except TimeoutError:
        tally.fail(f"{tally.in_flight} requests unanswered {DRAIN_TIMEOUT:.0f} s after the end")
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return LoadResult(n1 - n0, t1 - t0, tally.responses, tally.errors, tally.first_error)


def _load_process(spec: LoadSpec, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = runner.run(drive_load(spec))
        except Exception as exc:  # reported to the parent, which fails the run
            result = LoadResult(0, 0.0, 0, 1, f"load generator failed: {exc!r}")
    results.send(result)


@dataclass
class Workers:
    """Child processes started for one phase, and the pipes their results come back on."""

    processes: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)

    def start(self, target: Callable[..., None], *args: Any) -> None:
        receive, send = _MP.Pipe(duplex=False)
        process = _MP.Process(target=target, args=(*args, send), daemon=True)
        process.start()
        send.close()
        self.processes.append(process)
        self.pipes.append(receive)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def results(self, timeout: float) -> list[Any]:
        """Each process's result; a process that sent none fails the run."""
        results = []
        for process, pipe in zip(self.processes, self.pipes, strict=True):
            if not pipe.poll(timeout):
                raise RuntimeError(f"worker {process.pid} sent no result in {timeout:.0f} s")
            results.append(pipe.recv())
            process.join(5)
            if process.is_alive():
                stop_process_pid(process.pid)
        return results


def run_load(specs: Sequence[LoadSpec]) -> Workers:
    """Start one load-generator process per spec; collect with :meth:`Workers.results`."""
    workers = Workers()
    for spec in specs:
        workers.start(_load_process, spec)
    return workers


def split_connections(total: int, processes: int) -> list[int]:
    """Spread ``total`` connections over ``processes`` as evenly as possible."""
    return [total // processes + (1 if n < total % processes else 0) for n in range(processes)]


# ---------------------------------------------------------------------- bare ceiling


@dataclass(frozen=True, slots=True)
class BareSpec:
    url: str
    prefix: str
    #: Script calls per pipeline (one round trip).
    depth: int
    #: Pipelines in flight at once (one connection each).
    pipelines: int
    begin: float
    end: float


def build_envelopes(now_ms: int) -> list[list[Envelope]]:
    """The event pool, validated by the hub's own parser."""
    return [
        [parse_event(raw, now_ms=now_ms, new_id=lambda: uuid7(now_ms)) for raw in batch]
        for batch in event_pool()
    ]


def build_script_calls(prefix: str) -> list[tuple[list[str], list[Any]]]:
    """``(KEYS, ARGV)`` of one reduce-script call per batch, laid out by the hub itself."""
    now_ms = time.time_ns() // 1_000_000
    keys, log = Keys(prefix), LogSettings()
    return [reduce_call(keys, log, 0, batch, now_ms) for batch in build_envelopes(now_ms)]


async def _pipeline_loop(
    client: aioredis.Redis,
    sha: str,
    calls: list[tuple[list[str], list[Any]]],
    first: int,
    depth: int,
    tally: _Tally,
) -> None:
    index = first
    while tally.running:
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(depth):
                keys, args = calls[index]
                index = (index + 1) % len(calls)
                pipe.evalsha(sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            statuses = reply[0::4] if isinstance(reply, list) else [reply]
            if len(statuses) != BATCH_EVENTS or any(s != b"ok" for s in statuses):
                tally.fail(f"unexpected script reply: {str(reply)[:200]}")
                tally.running = False
                return
        tally.responses += depth * BATCH_EVENTS


async def drive_bare(spec: BareSpec) -> LoadResult:
    """Pipelined EVALSHA of the reduce script until ``spec.end``; events counted in the window."""
    calls = build_script_calls(spec.prefix)
    client = aioredis.Redis.from_url(spec.url, max_connections=spec.pipelines + 1)
    tally = _Tally()
    try:
        sha = str(await client.script_load(_REDUCE_SOURCE))
        stride = len(calls) // spec.pipelines
        async with asyncio.TaskGroup() as tg:
            for n in range(spec.pipelines):
                tg.create_task(_pipeline_loop(client, sha, calls, n * stride, spec.depth, tally))
            await sleep_until(spec.begin)
            t0, n0 = time.monotonic(), tally.responses
            await sleep_until(spec.end)
            t1, n1 = time.monotonic(), tally.responses
            tally.running = False
    finally:
        await client.aclose(close_connection_pool=True)
    return LoadResult(n1 - n0, t1 - t0, tally.responses, tally.errors, tally.first_error)


def _bare_process(spec: BareSpec, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = runner.run(drive_bare(spec))
        except Exception as exc:
            result = LoadResult(0, 0.0, 0, 1, f"bare client failed: {exc!r}")
    results.send(result)


# ---------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def hub_revision() -> str:
    """The commit of the hub code measured, with ``+dirty`` if ``hub/`` has changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "hub"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_facts() -> dict[str, Any]:
    """CPU, cores, OS, Python and library versions: what a reader needs to weigh the figures."""
    return {
        "hub_revision": hub_revision(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": version("uvloop"),
        "httptools": version("httptools"),
        "websockets": version("websockets"),
        "redis_py": redis.__version__,
        "hiredis": bool(HIREDIS_AVAILABLE),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _proc_stat_cpu() -> tuple[int, int, int, int]:
    """``(total, busy, irq, steal)`` jiffies of all CPUs since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
    # is already counted in user and nice.
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    total = sum(values[:8])
    return total, user + nice + system + irq + softirq, irq + softirq, steal


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and of its reaped children (0 if gone).

    Children count because Redis's AOF rewrites run in forked children.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime (proc(5) fields 14-17).
    return sum(int(f) for f in fields[11:15]) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU use over a window: call :meth:`start`, then :meth:`stop`.

    The VM is shared and noisy, so besides steal it reports the interrupt time (the
    loopback network is processed there) and the CPU used by everybody else
    (``other``): a window where that is high measured a busy machine.
    """

    pids: dict[str, list[int]]
    _t0: float = 0.0
    _stat0: tuple[int, int, int, int] = (0, 0, 0, 0)
    _cpu0: dict[str, float] = field(default_factory=dict)
    #: After :meth:`stop`: steal, in % of all CPU time.
    steal_pct: float = 0.0
    #: After :meth:`stop`: CPU seconds per role.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: After :meth:`stop`: % of one core per role, "irq", and "other" for everyone else.
    cpu_pct: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    _machine: float = 0.0
    _irq: float = 0.0

    def _cpu(self) -> dict[str, float]:
        return {role: sum(process_cpu_seconds(p) for p in pids) for role, pids in self.pids.items()}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._stat0 = _proc_stat_cpu()
        self._cpu0 = self._cpu()

    def stop(self) -> None:
        self.elapsed = time.monotonic() - self._t0
        total, busy, irq, steal = _proc_stat_cpu()
        self.steal_pct = round(100 * (steal - self._stat0[3]) / max(1, total - self._stat0[0]), 1)
        self._machine = (busy - self._stat0[1]) / _CLK_TCK
        self._irq = (irq - self._stat0[2]) / _CLK_TCK
        cpu = self._cpu()
        self.cpu_seconds = {role: cpu[role] - self._cpu0[role] for role in cpu}
        self._percentages()

    def add(self, role: str, seconds: float) -> None:
        """Account CPU time a process reported itself (it is gone by :meth:`stop`)."""
        self.cpu_seconds[role] = seconds
        self._percentages()

    def _percentages(self) -> None:
        elapsed = max(self.elapsed, 1e-9)
        self.cpu_pct = {
            role: round(100 * seconds / elapsed, 1) for role, seconds in self.cpu_seconds.items()
        }
        self.cpu_pct["irq"] = round(100 * self._irq / elapsed, 1)
        other = self._machine - self._irq - sum(self.cpu_seconds.values())
        self.cpu_pct["other"] = round(100 * max(0.0, other) / elapsed, 1)

    def us_per(self, count: int) -> dict[str, float]:
        """CPU microseconds per item (event) for each role."""
        return {
            role: round(1e6 * seconds / max(1, count), 1)
            for role, seconds in self.cpu_seconds.items()
        }


def foreign_load(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes while this one sleeps (a quietness check)."""
    _, busy0, _, _ = _proc_stat_cpu()
    time.sleep(seconds)
    _, busy1, _, _ = _proc_stat_cpu()
    return (busy1 - busy0) / _CLK_TCK / seconds


# ---------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get_status(port: int, path: str, timeout: float = 2.0) -> int:
    """Status of a ``GET`` on 127.0.0.1 (0 when nobody answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            reply = sock.recv(64)
    except OSError:
        return 0
    return int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else 0


def stop_process_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``: only for processes this script started."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a subprocess this script started: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_hub(
    redis_url: str, prefix: str, log: Path, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """Run ``flux serve`` on a free port; yields ``(port, pid)`` once it is ready.

    ``settings``: ``FLUX_*`` variables to run it with (otherwise its defaults).
    """
    port = free_port()
    # The hub's defaults (auth off, so no rate limits), whatever this shell's FLUX_*.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_") and k != "PORT"}
    env = {
        **inherited,
        "FLUX_KEY_PREFIX": prefix,
        "FLUX_HOST": "127.0.0.1",
        "FLUX_LOG_LEVEL": "warning",
        **(settings or {}),
    }
    command = [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--redis", redis_url]
    with log.open("ab") as out:
        hub = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=log.parent
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while http_get_status(port, "/readyz") != 200:
            if hub.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not start; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield port, hub.pid
    finally:
        stop_process(hub)


def reset_redis(url: str) -> None:
    """Empty Redis and rewrite its AOF, so each phase starts from the same state."""
    client = redis.Redis.from_url(url)
    try:
        _wait_for_rewrite(client)
        client.flushall()
        client.bgrewriteaof()
        _wait_for_rewrite(client)
    finally:
        client.close()


def _wait_for_rewrite(client: redis.Redis, timeout: float = 60.0) -> None:
    """Wait until no AOF rewrite runs or is scheduled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"Redis still rewrites its AOF after {timeout:.0f} s")


def redis_info(url: str, section: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        return dict(client.info(section))
    finally:
        client.close()


# ---------------------------------------------------------------------- phases


@dataclass
class Figure:
    """One measured figure, as printed and as a JSON line."""

    figure: str
    events_per_s: float
    events: int
    window_s: float
    steal_pct: float
    #: % of one core per process role; "other" is everybody else on the machine.
    cpu_pct: dict[str, float]
    #: CPU microseconds per event, per process role.
    cpu_us_per_event: dict[str, float]
    params: dict[str, Any]
    round: int = 1
    #: Forks (AOF rewrites) Redis made during the phase.
    redis_forks: int = 0


@dataclass(frozen=True)
class Options:
    warmup: float
    duration: float
    rounds: int
    single_connections: int
    batch_connections: int
    load_processes: int
    bare_depth: int
    bare_pipelines: int
    json_out: Path | None


def _window(options: Options, setup: float) -> tuple[float, float]:
    begin = time.monotonic() + setup + options.warmup
    return begin, begin + options.duration


def _measure(workers: Workers, meter: CpuMeter, begin: float, end: float) -> list[LoadResult]:
    """Sample CPU over ``[begin, end]`` and collect the workers' results (all must be good)."""
    time.sleep(max(0.0, begin - time.monotonic()))
    meter.start()
    time.sleep(max(0.0, end - time.monotonic()))
    meter.stop()
    results: list[LoadResult] = workers.results(DRAIN_TIMEOUT + 20)
    for result in results:
        if result.errors:
            raise AssertionError(f"{result.errors} bad replies; first: {result.first_error}")
        if result.responses <= 0:
            raise AssertionError("no reply at all in the measured window")
    return results


def _forks(url: str) -> int:
    return int(redis_info(url, "stats").get("total_forks", 0))


def measure_bare(url: str, redis_pid: int, options: Options, round_no: int) -> Figure:
    """The ceiling: redis-py sending the reduce script, pipelined (see :func:`drive_bare`)."""
    reset_redis(url)
    forks = _forks(url)
    begin, end = _window(options, setup=1.0)
    prefix = f"bench-bare-{round_no}"
    spec = BareSpec(url, prefix, options.bare_depth, options.bare_pipelines, begin, end)
    workers = Workers()
    workers.start(_bare_process, spec)
    meter = CpuMeter({"redis": [redis_pid], "client": workers.pids})
    (result,) = _measure(workers, meter, begin, end)
    return Figure(
        "bare",
        result.responses / result.window,
        result.responses,
        result.window,
        meter.steal_pct,
        meter.cpu_pct,
        meter.us_per(result.responses),
        {
            "client": "redis-py asyncio + hiredis",
            "events_per_call": BATCH_EVENTS,
            "calls_per_pipeline": options.bare_depth,
            "pipelines_in_flight": options.bare_pipelines,
        },
        round_no,
        _forks(url) - forks,
    )


def measure_hub(
    kind: str,
    url: str,
    redis_pid: int,
    options: Options,
    requests: tuple[bytes, ...],
    log: Path,
    round_no: int,
) -> Figure:
    """One hub phase: ``kind`` is "single" (``/api/events``) or "batch" (``/api/events/batch``)."""
    single = kind == "single"
    per_reply = 1 if single else BATCH_EVENTS
    connections = options.single_connections if single else options.batch_connections
    expect = b'"eventId":"' if single else b'"failed":0,'
    reset_redis(url)
    forks = _forks(url)
    with running_hub(url, f"bench-{kind}-{round_no}", log) as (port, hub_pid):
        begin, end = _window(options, setup=1.0)
        split = [n for n in split_connections(connections, options.load_processes) if n]
        specs = [
            LoadSpec("127.0.0.1", port, requests, n, begin, end, expect, offset=i * 7919)
            for i, n in enumerate(split)
        ]
        workers = run_load(specs)
        meter = CpuMeter({"hub": [hub_pid], "redis": [redis_pid], "load": workers.pids})
        results = _measure(workers, meter, begin, end)
    replies = sum(r.responses for r in results)
    window = max(r.window for r in results)
    return Figure(
        f"hub_{kind}",
        replies * per_reply / window,
        replies * per_reply,
        window,
        meter.steal_pct,
        meter.cpu_pct,
        meter.us_per(replies * per_reply),
        {
            "endpoint": "/api/events" if single else "/api/events/batch",
            "events_per_request": per_reply,
            "connections": connections,
            "load_processes": len(specs),
            "requests_per_s": round(replies / window, 1),
        },
        round_no,
        _forks(url) - forks,
    )


def run_rounds(url: str, redis_pid: int, options: Options, log: Path) -> list[Figure]:
    """Interleave the phases, ``rounds`` times: bare, batch, single, bare, batch, ..."""
    pool = event_pool()
    single, batch = single_requests(pool), batch_requests(pool)
    figures = []
    for n in range(1, options.rounds + 1):
        for phase in ("bare", "batch", "single"):
            if phase == "bare":
                figure = measure_bare(url, redis_pid, options, n)
            else:
                requests = single if phase == "single" else batch
                figure = measure_hub(phase, url, redis_pid, options, requests, log, n)
            print(_human(figure), flush=True)
            figures.append(figure)
    return figures


# ---------------------------------------------------------------------- output


def _human(figure: Figure) -> str:
    cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in figure.cpu_pct.items())
    per_event = ", ".join(f"{role} {us:.0f}" for role, us in figure.cpu_us_per_event.items())
    params = ", ".join(f"{k}={v}" for k, v in figure.params.items())
    return (
        f"[round {figure.round}] {figure.figure:<10} {figure.events_per_s:>8,.0f} events/s  "
        f"({figure.events:,} events in {figure.window_s:.1f} s; steal {figure.steal_pct:.1f}%; "
        f"CPU (% of a core): {cpu}; CPU us/event: {per_event}; "
        f"Redis forks {figure.redis_forks}; {params})"
    )


def emit(record: dict[str, Any], json_out: Path | None) -> None:
    """Print a JSON line (and append it to ``json_out``)."""
    line = json.dumps(record, sort_keys=True)
    print(line)
    if json_out is not None:
        with json_out.open("a") as out:
            out.write(line + "\n")


def combined(figures: list[Figure], name: str) -> float:
    """Events/s of one figure over all rounds (total events / total window)."""
    chosen = [f for f in figures if f.figure == name]
    return sum(f.events for f in chosen) / sum(f.window_s for f in chosen)


def combined_cpu(figures: list[Figure], name: str) -> dict[str, float]:
    """CPU microseconds per event of each role of one figure, over all rounds."""
    chosen = [f for f in figures if f.figure == name]
    events = sum(f.events for f in chosen)
    roles = chosen[0].cpu_us_per_event
    return {
        role: round(sum(f.cpu_us_per_event[role] * f.events for f in chosen) / events, 1)
        for role in roles
    }


def report(facts: dict[str, Any], figures: list[Figure], options: Options, elapsed: float) -> int:
    """Print the summary, the verdict and the JSON lines; returns the exit status."""
    rates = {name: combined(figures, name) for name in ("bare", "hub_batch", "hub_single")}
    ratio = rates["hub_batch"] / rates["bare"]
    per_round = [
        combined([f for f in figures if f.round == n], "hub_batch")
        / combined([f for f in figures if f.round == n], "bare")
        for n in range(1, options.rounds + 1)
    ]
    verdict = "PASS" if ratio >= THRESHOLD else "FAIL"
    steal = max(f.steal_pct for f in figures)
    other = max(f.cpu_pct.get("other", 0.0) for f in figures)
    print()
    print(
        f"hub {facts['hub_revision']}; machine: {facts['cpu']}, {facts['cores']} cores, "
        f"Linux {facts['kernel']}, "
        f"Python {facts['python']}, Redis {facts['redis']} ({facts['redis_setup']}), "
        f"uvloop {facts['uvloop']}, httptools {facts['httptools']}, "
        f"redis-py {facts['redis_py']} (hiredis: {facts['hiredis']})"
    )
    print(
        f"{facts['date']}; load average {facts['loadavg']} at start, "
        f"{facts['loadavg_end']} at end; other processes kept {facts['foreign_cores']:.2f} "
        f"cores busy before the run; during the windows: steal up to {steal:.1f}%, "
        f"other processes up to {other:.0f}% of a core"
    )
    for name, rate in rates.items():
        print(f"{name:<10} {rate:>8,.0f} events/s (all rounds)")
    bare_cpu, batch_cpu = combined_cpu(figures, "bare"), combined_cpu(figures, "hub_batch")
    cpu_ratio = sum(bare_cpu.values()) / sum(batch_cpu.values())
    print(
        f"CPU per event: bare {sum(bare_cpu.values()):.0f} us {bare_cpu}, hub batch "
        f"{sum(batch_cpu.values()):.0f} us {batch_cpu}; CPU-normalised ratio "
        f"{cpu_ratio:.2f} (less sensitive to other tenants; not the criterion)"
    )
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"ratio hub_batch/bare = {ratio:.2f} ({100 * ratio:.0f} %; per round: {rounds}): "
        f"{verdict} (criterion: batch ingest >= {100 * THRESHOLD:.0f} % of the bare ceiling "
        f"measured in the same run)"
    )
    print(f"elapsed {elapsed:.0f} s")
    emit({"bench": "ingest", "figure": "machine", **facts}, options.json_out)
    for figure in figures:
        emit({"bench": "ingest", "date": facts["date"], **asdict(figure)}, options.json_out)
    for name, rate in rates.items():
        emit(
            {
                "bench": "ingest",
                "date": facts["date"],
                "figure": f"{name}_all_rounds",
                "events_per_s": round(rate, 1),
            },
            options.json_out,
        )
    emit(
        {
            "bench": "ingest",
            "date": facts["date"],
            "figure": "ratio_hub_batch_bare",
            "ratio": round(ratio, 3),
            "ratio_per_round": [round(r, 3) for r in per_round],
            "cpu_normalised_ratio": round(cpu_ratio, 3),
            "threshold": THRESHOLD,
            "verdict": verdict,
        },
        options.json_out,
    )
    return 0 if verdict == "PASS" else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Hub ingest (REST single and batch) beside the bare Redis ceiling."
    )
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per phase")
    parser.add_argument("--rounds", type=int, default=2, help="times the three phases run")
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--bare-depth", type=int, default=4, help="script calls per pipeline")
    parser.add_argument("--bare-pipelines", type=int, default=4, help="pipelines in flight")
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    return parser


def on_embedded_redis(run: Callable[[str, int, Path], T]) -> tuple[dict[str, Any], T]:
    """Run ``run(redis_url, redis_pid, hub_log)`` on a fresh embedded Redis (AOF
    everysec, unix socket) in a temporary directory; returns the machine facts (load
    before and after included) and what ``run`` returned. Every script's frame."""
    facts = machine_facts()
    facts["foreign_cores"] = round(foreign_load(), 2)
    with tempfile.TemporaryDirectory(prefix="flux-bench-") as tmp:
        with EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec") as server:
            assert server.process is not None
            facts["redis"] = redis_info(server.url, "server").get("redis_version")
            facts["redis_setup"] = "embedded, AOF appendfsync everysec, unix socket"
            result = run(server.url, server.process.pid, Path(tmp) / "hub.log")
    facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return facts, result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(
        args.warmup,
        args.duration,
        args.rounds,
        args.single_connections,
        args.batch_connections,
        args.load_processes,
        args.bare_depth,
        args.bare_pipelines,
        args.json_out,
    )
    started = time.monotonic()
    facts, figures = on_embedded_redis(lambda url, pid, log: run_rounds(url, pid, options, log))
    return report(facts, figures, options, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
