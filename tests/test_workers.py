"""``flux serve --workers N`` as a user runs it (docs/scaling.md, "Workers").

A real supervisor process with its embedded Redis and N real worker processes on one
port: connections reach distinct workers, a killed worker is replaced, ``kill -9`` of
a worker under load loses no acknowledged event, SIGTERM drains every worker and
stops the embedded Redis last, a crash loop is reported and ends the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flux_client import EntityCache, FluxClient, make_event
from hub.errors import ConfigError
from hub.supervisor import MAX_CRASHES, parse_workers, shares

from .conftest import timeout
from .doc_blocks import doc_blocks
from .native_client import rest_state
from .processes import free_port

PROCESS_INFO = re.compile(r'^flux_process_info\{pid="(\d+)",worker="(\d+)"\} 1\.0$', re.MULTILINE)


class Workers:
    """``flux serve --workers N`` on its own data directory, its log in a file."""

    def __init__(self, tmp: Path, workers: int, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "serve.log"
        self.args = [sys.executable, "-m", "hub.cli", "serve", "--workers", str(workers)]
        self.args += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.args += ["--data-dir", str(tmp / "data"), "--log-level", "info", *args]
        self.env = {**os.environ, **(env or {})}
        self.count = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> dict[int, int]:
        """Worker number -> pid, the latest start of each (from the supervisor's log)."""
        found = re.findall(
            r"\[supervisor\] hub\.supervisor: worker (\d+) started: pid (\d+)", self.log
        )
        return {int(n): int(pid) for n, pid in found}

    async def serving(self, pids: set[int] | None = None) -> dict[int, int]:
        """Wait until every worker answers; returns pid -> worker number, as /metrics says."""
        deadline = time.monotonic() + timeout(60)
        seen: dict[int, int] = {}
        while True:
            assert self.process is not None and self.process.poll() is None, self.log
            want = pids if pids is not None else set(self.started().values())
            if len(want) == self.count and want <= set(seen):
                return {pid: seen[pid] for pid in want}
            assert time.monotonic() < deadline, f"workers not serving: {seen}\n{self.log}"
            seen.update(await self.who_answers(8))
            await asyncio.sleep(0.1)

    async def who_answers(self, connections: int) -> dict[int, int]:
        """pid -> worker of the processes that answered, one new connection each."""
        found: dict[int, int] = {}
        for _ in range(connections):
            try:
                async with httpx.AsyncClient(timeout=timeout(5)) as http:
                    reply = await http.get(f"{self.url}/metrics")
            except httpx.TransportError:
                continue
            for pid, worker in PROCESS_INFO.findall(reply.text):
                found[int(pid)] = int(worker)
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout(60))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Workers:
    return Workers(tmp_path, 2)


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` that process ``pid`` holds (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def environment_of(pid: int) -> list[bytes]:
    """A process's environment, ``NAME=value`` each."""
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not alive either.
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


# ---------------------------------------------------------------------- pure rules


def test_workers_count_is_a_number_or_auto() -> None:
    assert parse_workers("3", "--workers") == 3
    assert parse_workers(" AUTO ", "FLUX_WORKERS") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "257", "two", ""):
        with pytest.raises(ConfigError, match=r"--workers='.*': give a number .* or auto"):
            parse_workers(bad, "--workers")


def test_limits_are_split_so_that_they_bound_the_whole() -> None:
    assert shares(10_000, 2) == [5000, 5000]
    assert shares(10, 3) == [4, 3, 3]
    assert sum(shares(1001, 4)) == 1001
    assert shares(1, 3) == [1, 1, 1]  # every worker admits at least one


def test_a_bad_workers_value_is_refused_with_its_name(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--workers", "lots"],
        capture_output=True,
        text=True,
        env={**os.environ, "FLUX_DATA_DIR": str(tmp_path)},
        timeout=timeout(60),
        check=False,
    )
    assert run.returncode == 2
    assert "--workers='lots': give a number of worker processes from 1 to 256" in run.stderr


# ---------------------------------------------------------------------- processes


@pytest.mark.slow
async def test_distinct_workers_serve_one_port_and_a_killed_one_is_replaced(
    workers: Workers,
) -> None:
    workers.start()
    try:
        serving = await workers.serving()
        assert sorted(serving.values()) == [1, 2]  # two processes answer on one port
        assert workers.process is not None and workers.process.pid not in serving
        victim = workers.started()[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + timeout(30)
        while workers.started()[1] == victim:
            assert time.monotonic() < deadline, workers.log
            await asyncio.sleep(0.05)
        replaced = await workers.serving(set(workers.started().values()))
        assert victim not in replaced and sorted(replaced.values()) == [1, 2]
        assert f"worker 1 (pid {victim}) was killed by SIGKILL; starting it again" in workers.log
        # Each worker admits its share of the connection limits (10,000 in all).
        for pid in replaced:
            environ = environment_of(pid)
            assert b"FLUX_MAX_CONNECTIONS=5000" in environ
            assert b"FLUX_MAX_CONNECTIONS_PER_CLIENT=500" in environ
        assert workers.process.poll() is None
    finally:
        workers.stop()


@pytest.mark.slow
async def test_kill_9_of_a_worker_under_load_loses_no_acknowledged_event(
    workers: Workers,
) -> None:
    workers.start()
    try:
        await workers.serving()
        await _publish_through_a_crash(workers)
    finally:
        workers.stop()


async def _publish_through_a_crash(workers: Workers) -> None:
    url = workers.url
    acked: dict[str, int] = {}  # entity id -> version acknowledged
    stop = asyncio.Event()
    options = {"request_timeout": timeout(60), "backoff": (0.05, 0.3)}
    # Several clients: each is one connection, and connections spread over the workers.
    clients: list[FluxClient] = []
    victim = workers.started()[2]
    # Until the victim holds some: the kernel hashes each connection to a worker.
    while len(clients) < 6 or connections_held(victim, workers.port) < 3:
        assert len(clients) < 30
        clients.append(FluxClient(url, **options))  # type: ignore[arg-type]
        await clients[-1].connect()
    subscriber = FluxClient(url, **options)  # type: ignore[arg-type]
    await subscriber.connect()
    try:
        async with EntityCache(subscriber, prefixes=["w9/"]) as cache:

            async def lane(k: int, client: FluxClient) -> None:
                n = 0
                while not stop.is_set():
                    entity = f"w9/{k}-{n}"
                    await client.publish_many([make_event(entity, {"n": n})], raise_on_error=True)
                    acked[entity] = 1
                    n += 1

            async def rest_lane() -> None:
                n = 0
                async with httpx.AsyncClient(base_url=url, timeout=timeout(10)) as http:
                    while not stop.is_set():
                        entity = f"w9/rest-{n}"
                        try:
                            reply = await http.post(
                                "/api/events", json=make_event(entity, {"n": n})
                            )
                        except httpx.TransportError:
                            await asyncio.sleep(0.02)  # its worker died: a new connection
                        else:
                            if reply.status_code == 200:
                                acked[entity] = 1
                        n += 1

            lanes = [asyncio.create_task(lane(k, c)) for k, c in enumerate(clients)]
            lanes.append(asyncio.create_task(rest_lane()))
            while len(acked) < 300:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            os.kill(victim, signal.SIGKILL)  # under load, without warning
            at_kill = len(acked)
            while len(acked) < at_kill + 600:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*lanes), timeout(60))
            assert f"worker 2 (pid {victim}) was killed by SIGKILL" in workers.log

            state = await rest_state(url, "w9/")
            lost = [e for e in acked if e not in state]
            assert lost == [], f"{len(lost)} acknowledged events lost"
            assert {state[e][0] for e in acked} == {1}  # each applied once
            await cache.wait_until(lambda _: cache.snapshot() == state, within=timeout(30))
            assert cache.gaps == 0
            assert sum(c.generation >= 2 for c in clients) >= 3  # the victim's resumed
    finally:
        for client in [*clients, subscriber]:
            await client.close()


@pytest.mark.slow
async def test_sigterm_drains_every_worker_and_stops_the_embedded_redis_last(
    tmp_path: Path,
) -> None:
    workers = Workers(tmp_path, 2, env={"FLUX_SHUTDOWN_DRAIN_SECONDS": "1"})
    workers.start()
    try:
        pids = await workers.serving()
        redis_pid = int(re.findall(r"embedded Redis started: pid (\d+)", workers.log)[0])
        assert workers.process is not None
        workers.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(timeout=timeout(5)) as http:

            async def ready() -> int:
                reply = await http.get(f"{workers.url}/readyz", headers={"connection": "close"})
                return reply.status_code

            while await ready() == 200:  # noqa: ASYNC110 (until the signal is passed on)
                await asyncio.sleep(0.01)
            # Every worker drains: 503 from any of them, new connections still served.
            statuses = {await ready() for _ in range(8)}
        assert statuses == {503}
        assert workers.process.wait(timeout(60)) == 0
    finally:
        workers.stop()
    log = workers.log
    exits = [log.index(f"worker {n} (pid {pid}) exited with status 0") for pid, n in pids.items()]
    assert max(exits) < log.index("every worker has stopped") < log.index("embedded Redis stopped")
    assert log.count("received: /readyz answers 503") == 2
    assert not any(_alive(pid) for pid in [*pids, redis_pid])


@pytest.mark.slow
def test_a_crash_loop_is_reported_and_ends_the_supervisor(tmp_path: Path) -> None:
    nothing = f"redis://127.0.0.1:{free_port()}"  # no Redis there: every worker exits
    workers = Workers(tmp_path, 2, "--redis", nothing)
    workers.start()
    assert workers.process is not None
    try:
        assert workers.process.wait(timeout(120)) == 1
    finally:
        workers.stop()
    log = workers.log
    assert re.search(rf"exited with status 1: {MAX_CRASHES} exits within 60 s, a crash loop", log)
    assert "starting it again in 0.5 s" in log and "starting it again in 1.0 s" in log
    assert "cannot reach Redis" in log  # the workers' own log says why


@pytest.mark.slow
async def test_the_workers_example_of_docs_scaling_md(tmp_path: Path) -> None:
    """docs/scaling.md's command, run as written (its port and data directory from
    the environment): one worker per core, a drain that a second SIGTERM cuts short."""
    (block,) = [
        b
        for b in doc_blocks()
        if b.path == "docs/scaling.md" and "flux serve --workers" in b.first_line
    ]
    words = shlex.split(block.text)
    assignments = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    assert words[:2] == ["flux", "serve"]
    workers = Workers(tmp_path, parse_workers("auto", "auto"))
    workers.args = [str(Path(sys.executable).parent / "flux"), *words[1:]]
    workers.env.update(
        assignments, PORT=str(workers.port), FLUX_HOST="127.0.0.1", FLUX_DATA_DIR=str(tmp_path)
    )
    workers.start()
    try:
        await workers.serving()
        assert workers.process is not None
        workers.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(timeout=timeout(5)) as http:
            while (await http.get(f"{workers.url}/readyz")).status_code == 200:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            reply = await http.get(f"{workers.url}/readyz")
        assert reply.status_code == 503
        assert reply.json()["error"] == "not ready: shutting down (docs/scaling.md)"
        await asyncio.sleep(0.5)  # the workers drain meanwhile
        assert workers.process.poll() is None  # draining for 5 s
        workers.process.send_signal(signal.SIGTERM)  # again: stop now
        began = time.monotonic()
        assert workers.process.wait(timeout(30)) == 0
        assert time.monotonic() - began < 5
    finally:
        workers.stop()
    assert workers.log.count("received: shutting down now") == workers.count


@pytest.mark.slow
async def test_a_supervisor_killed_with_9_leaves_no_process_behind(workers: Workers) -> None:
    workers.start()
    try:
        pids = await workers.serving()
        redis_pid = int(re.findall(r"embedded Redis started: pid (\d+)", workers.log)[0])
        assert workers.process is not None
        workers.process.kill()  # the kernel tells each worker and the Redis (SIGTERM)
        workers.process.wait()
        deadline = time.monotonic() + timeout(30)
        while any(_alive(pid) for pid in [*pids, redis_pid]):
            assert time.monotonic() < deadline, workers.log
            await asyncio.sleep(0.1)
    finally:
        workers.stop()
    assert workers.log.count("SIGTERM received: shutting down") == 2  # each worker drained


def test_a_port_in_use_is_reported_once_by_the_supervisor(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "hub.cli", "serve", "--workers", "2", "--host", "127.0.0.1"]
            + ["--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=timeout(60),
            check=False,
        )
    assert run.returncode == 1
    assert f"flux serve: cannot listen on 127.0.0.1:{port}: Address already in use" in run.stderr
    assert "worker" not in run.stderr  # refused before any worker started
