"""``flux serve`` as a user runs it: a real process, real signals, real crashes.

Each test starts ``python -m hub.cli serve --port 0`` on a data directory, talks to it
over HTTP, stops or kills it, and starts it again on the same directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.store import EmbeddedRedis, find_server_binary

from .conftest import timeout

LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")


class Served:
    """A ``flux serve`` subprocess and the port it listens on."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        env = {**os.environ, "FLUX_LOG_LEVEL": "info"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub.cli",
                "serve",
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        self.port = self._wait_for_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Keep reading its log, or a chatty hub would block on a full pipe.
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def _wait_for_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                return int(match.group(1))
        self.process.kill()
        self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()
        raise AssertionError("flux serve did not start:\n" + "".join(self.log))

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return self.wait()

    def wait(self) -> int:
        code = self.process.wait(timeout(30))
        self._drain.join(timeout(5))
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@pytest.fixture
def served(data_dir: Path) -> Iterator[list[Served]]:
    """Collects the servers a test starts; kills leftovers at the end."""
    started: list[Served] = []
    yield started
    for s in started:
        if s.process.poll() is None:
            s.process.kill()
        if s.process.stderr is not None and not s.process.stderr.closed:
            s.wait()


def _serve(started: list[Served], data_dir: Path, *extra: str) -> Served:
    s = Served(data_dir, *extra)
    started.append(s)
    return s


def _publish(url: str, entity: str, props: dict[str, object]) -> None:
    event = {"stream": "t", "source": "test", "payload": {"entity_id": entity, "properties": props}}
    reply = httpx.post(url + "/api/events", json=event, timeout=timeout(10))
    assert reply.status_code == 200, reply.text


def _entity(url: str, entity: str) -> dict[str, object]:
    reply = httpx.get(
        url + "/api/state/entities/" + entity.replace("/", "%2F"), timeout=timeout(10)
    )
    assert reply.status_code == 200, reply.text
    result: dict[str, object] = reply.json()
    return result


def _redis_pid(data_dir: Path) -> int:
    return int((data_dir / "redis.pid").read_text())


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + timeout(15)
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def test_serve_keeps_state_across_ctrl_c(served: list[Served], data_dir: Path) -> None:
    first = _serve(served, data_dir)
    _publish(first.url, "room/1", {"temp": 21.5, "tags": ["a"]})
    redis_pid = _redis_pid(data_dir)
    assert first.stop(signal.SIGINT) == 0
    _wait_gone(redis_pid)  # the embedded Redis stops with the hub

    second = _serve(served, data_dir)
    entity = _entity(second.url, "room/1")
    assert entity["properties"] == {"temp": 21.5, "tags": ["a"]}
    assert entity["version"] == 1


def test_serve_stops_cleanly_on_sigterm(served: list[Served], data_dir: Path) -> None:
    first = _serve(served, data_dir)
    _publish(first.url, "x", {"v": 1})
    assert first.stop(signal.SIGTERM) == 0
    second = _serve(served, data_dir)
    assert _entity(second.url, "x")["properties"] == {"v": 1}


def test_serve_restarts_cleanly_after_kill_9_of_the_hub(
    served: list[Served], data_dir: Path
) -> None:
    first = _serve(served, data_dir)
    _publish(first.url, "room/2", {"on": True})
    redis_pid = _redis_pid(data_dir)
    first.stop(signal.SIGKILL)
    # No orphan keeps the socket: the server follows the hub down (PDEATHSIG).
    _wait_gone(redis_pid)

    second = _serve(served, data_dir)
    assert _entity(second.url, "room/2")["properties"] == {"on": True}
    _publish(second.url, "room/2", {"on": False})
    assert _entity(second.url, "room/2")["version"] == 2


def test_acknowledged_event_survives_kill_9_of_hub_and_redis(
    served: list[Served], data_dir: Path
) -> None:
    first = _serve(served, data_dir)
    for n in range(50):
        _publish(first.url, "counter", {"n": n})
    # Kill Redis first, without warning, then the hub: the AOF was written before
    # each acknowledgement (everysec only delays the fsync).
    os.kill(_redis_pid(data_dir), signal.SIGKILL)
    first.stop(signal.SIGKILL)

    second = _serve(served, data_dir)
    entity = _entity(second.url, "counter")
    assert entity["properties"] == {"n": 49}
    assert entity["version"] == 50


def test_serve_stops_an_orphaned_redis_left_on_the_data_dir(
    served: list[Served], data_dir: Path
) -> None:
    # An orphan as a crash on a system without PDEATHSIG would leave it: a server
    # started from the directory's config, owned by nobody.
    first = _serve(served, data_dir)
    _publish(first.url, "kept", {"v": 1})
    assert first.stop() == 0
    orphan = subprocess.Popen(
        [find_server_binary(), str(data_dir / "redis.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout(10)
        while not (data_dir / "redis.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = _serve(served, data_dir)
        assert orphan.wait(timeout(15)) is not None  # it was stopped
        assert _entity(second.url, "kept")["properties"] == {"v": 1}
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_second_serve_on_same_data_dir_is_refused_with_a_reason(
    served: list[Served], data_dir: Path
) -> None:
    _serve(served, data_dir)
    second = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout(30),
    )
    assert second.returncode == 1
    assert "in use by another flux serve" in second.stderr
    assert "--redis unix://" in second.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)]
            + ["--host", "127.0.0.1", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout(60),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"flux serve: port {port} is already in use on 127.0.0.1 (another flux serve?); "
        "choose another with --port or PORT"
    )


def _logged(server: Served, text: str) -> bool:
    deadline = time.monotonic() + timeout(10)
    while time.monotonic() < deadline:
        if any(text in line for line in server.log):
            return True
        time.sleep(0.05)
    return False


def test_serve_says_where_the_dashboard_api_and_metrics_are(
    served: list[Served], data_dir: Path
) -> None:
    server = _serve(served, data_dir)
    base = f"127.0.0.1:{server.port}"
    assert _logged(server, f"dashboard http://{base}/ · REST http://{base}/api")
    assert _logged(server, f"metrics http://{base}/metrics")
    assert httpx.get(f"http://{base}/metrics").status_code == 200
    assert not any("every interface" in line for line in server.log)


def test_serve_warns_when_open_to_every_interface_with_auth_off(
    served: list[Served], data_dir: Path
) -> None:
    server = _serve(served, data_dir, "--host", "0.0.0.0")
    assert _logged(server, f"dashboard http://localhost:{server.port}/")
    assert _logged(server, "WARNING hub.gateway: listening on every interface with auth off")


def test_serve_rejects_a_bad_setting_with_its_name(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        env={**os.environ, "FLUX_PARTITIONS": "zero"},
    )
    assert result.returncode == 2
    assert "FLUX_PARTITIONS" in result.stderr


def test_embedded_redis_uses_a_short_socket_path_for_deep_data_dirs(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(deep) as server:
        assert len(str(server.socket_path)) <= 100
        assert server.url.startswith("unix:///tmp/")
