"""Fan-out benchmark: deliveries/s to 1, 100 and 1,000 subscribers, beside a bare broadcast.

Two systems, measured in one run, each with the same subscribers:

- **hub**: ``python -m hub.cli serve`` (a subprocess, on an embedded Redis, a key prefix
  of its own per phase). Every subscriber speaks the native protocol (``flux.v1``, JSON
  text frames) and subscribes to the entities published (``{"filter": {"prefixes":
  ["bench/"]}}``; ``all`` would add the hub's own directory entity). A publisher
  process drives it with MessagePack ``publish`` frames of 100 events on 8 connections
  (``flux.v1.msgpack``, one frame in flight on each, every ``ack`` checked), as fast as
  the hub takes them: it pauses only while more than :func:`lag_cap` events
  (500-5,000) are published but not yet delivered to every subscriber, so that what is
  measured is the hub's steady rate, not a backlog it would drain after the window,
  and no subscriber gets near the slow-consumer threshold (conflation).
- **bare**: the smallest ``websockets`` server that does the same job:
  ``websockets.asyncio.server.serve`` plus ``broadcast`` of a 150-byte text frame in a
  loop (``stacks.frame_payload``), with the same lag bound (``broadcast`` has no
  backpressure of its own).

Deliveries/s: delta (or broadcast) frames received by all subscribers per second of
the measured window. The subscribers are raw sockets in 1-4 processes of their own,
reading lazily (every few ms, many frames per ``recv``) so that they stay cheap. Each
checks every frame header (FIN + text, unmasked, length), that every counted frame is
a delta of its subscription (or the broadcast payload), that every connection received
exactly every event (or broadcast frame), and that the last frame is the last event:
for the hub, the delta JSON of the last frame is parsed and compared with the event
the publisher's acks put last in the delta log (id, ``set.seq``, ``position``).

Criterion: at 1,000 subscribers, the hub delivers >= 60 % of the bare broadcast measured
in the same run. The script exits 1 when it is not met. Beside the rates it prints the
CPU time per delivery of each process and the CPU used by other processes (``other``):
this VM is shared and noisy (bench/README.md).

Subscriber processes connect from their own loopback addresses (127.0.0.10, .11, ...):
the hub allows 1,000 connections per client address by default, and the subscribers
plus the publisher are 1,001.

Output: human-readable lines, then one JSON line per figure. About 75 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import re
import select
import socket
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
import uvloop

# bench/ is not a package: ingest.py and stacks.py sit next to this file (sys.path[0]).
from ingest import (
    CpuMeter,
    Workers,
    emit,
    on_embedded_redis,
    reset_redis,
    running_hub,
    sleep_until,
    split_connections,
    stop_process_pid,
)
from stacks import FRAME_PAYLOAD, WS_GUID, WsProtocolError, frame_payload, listening_socket
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from multiprocessing.connection import Connection

__all__ = [
    "ACK_TIMEOUT",
    "DRAIN_TIMEOUT",
    "SUB",
    "Board",
    "LatencyLog",
    "PublisherResult",
    "ReaderResult",
    "ReaderSpec",
    "Subscriber",
    "check_ack",
    "check_readers",
    "cleanup",
    "client_frame",
    "hub_reader_spec",
    "main",
    "open_publisher",
    "parse_position",
    "percentile",
    "reader_processes",
    "start_readers",
    "us_per",
]

#: Subscriber counts measured.
SUBSCRIBERS = (1, 100, 1000)
#: The criterion: hub deliveries/s / bare deliveries/s, at 1,000 subscribers.
THRESHOLD = 0.60
#: Events per publish frame.
EVENTS_PER_FRAME = 100
#: Entities the publisher writes, round robin (every event changes its entity: seq).
ENTITIES = 10_000
#: How long a server may take to start, and subscribers to connect and subscribe.
START_TIMEOUT = 30.0
#: How long the subscribers may take to receive everything once the publisher stops.
DRAIN_TIMEOUT = 20.0
#: Seconds an ack may take.
ACK_TIMEOUT = 10.0
#: Bytes asked of one recv().
READ_SIZE = 1 << 18

HUB_SUBPROTOCOL = "flux.v1"
PUBLISH_SUBPROTOCOL = "flux.v1.msgpack"
#: The subscription every hub subscriber makes, and how its deltas begin.
SUB = "bench"
#: Subscribed to the entities published (``all`` would also get the hub's own
#: ``flux-core/directory`` updates).
SUBSCRIBE = orjson.dumps({"type": "subscribe", "sub": SUB, "filter": {"prefixes": ["bench/"]}})
HUB_DELTA = b'{"sub":"%b","type":"delta",' % SUB.encode()
#: Other frames a live subscription may get (every FLUX_CHECKPOINT_INTERVAL).
HUB_OTHERS: tuple[bytes, ...] = (b'{"type":"checkpoint",',)
BARE_FRAME = b'{"type":"state_update",'

_MP = multiprocessing.get_context("fork")


# ---------------------------------------------------------------------- shared state


class Board:
    """Shared memory between the parent, the subscriber processes and the producer.

    Lives in anonymous shared mappings, inherited by the forked processes: reading it
    costs no system call, so the producer can consult it before every frame.
    """

    def __init__(self, slots: int, subscribers: int) -> None:
        self.subscribers = subscribers
        #: Frames counted so far by each subscriber process (all its connections).
        self.counts = _MP.RawArray(ctypes.c_int64, slots)
        #: 1 once a subscriber process has every connection open (and subscribed).
        self.ready = _MP.RawArray(ctypes.c_int8, slots)
        #: Monotonic start, begin and end of the measured window; 0 until known.
        self.schedule = _MP.RawArray(ctypes.c_double, 3)
        #: Frames every connection must receive in all; -1 until the producer is done.
        self.target = _MP.RawValue(ctypes.c_int64, -1)

    def delivered(self) -> float:
        """Frames received per subscriber so far (the slowest readers lag up to a pause)."""
        return sum(self.counts) / self.subscribers

    def set_schedule(self, start: float, begin: float, end: float) -> None:
        self.schedule[1], self.schedule[2] = begin, end
        self.schedule[0] = start  # last: readers wait for it

    def wait_schedule(self, deadline: float) -> tuple[float, float, float]:
        while not self.schedule[0]:
            if time.monotonic() > deadline:
                raise TimeoutError("no schedule in time")
            time.sleep(0.005)
        return self.schedule[0], self.schedule[1], self.schedule[2]

    async def schedule_soon(self, deadline: float) -> tuple[float, float, float]:
        """:meth:`wait_schedule` for a process that serves while it waits."""
        while not self.schedule[0]:
            if time.monotonic() > deadline:
                raise TimeoutError("no schedule in time")
            await asyncio.sleep(0.005)
        return self.schedule[0], self.schedule[1], self.schedule[2]

    def wait_ready(self, workers: Workers, timeout: float) -> None:
        """Return once every subscriber process is connected; fail fast if one died."""
        deadline = time.monotonic() + timeout
        while not all(self.ready):
            for process, pipe in zip(workers.processes, workers.pipes, strict=True):
                if not process.is_alive() or pipe.poll():
                    result = pipe.recv() if pipe.poll() else None
                    raise RuntimeError(f"a subscriber process failed: {result!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscribers not connected after {timeout:.0f} s")
            time.sleep(0.01)


@contextlib.contextmanager
def cleanup(*groups: Workers) -> Iterator[None]:
    """Stop whatever process of ``groups`` is still running on the way out."""
    try:
        yield
    finally:
        for workers in groups:
            for process in workers.processes:
                if process.is_alive():
                    stop_process_pid(process.pid, timeout=5.0)


# ---------------------------------------------------------------------- WebSocket clients


def client_frame(payload: bytes, text: bool = True) -> bytes:
    """One masked client frame (RFC 6455 §5.3: every client frame is masked)."""
    head = bytearray((0x81 if text else 0x82,))
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return bytes(head) + key + masked


def split_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """``(first header byte, payload, rest)`` of the first whole server frame, or None."""
    if len(buffer) < 2:
        return None
    length, start = buffer[1], 2
    if length & 0x80:
        raise WsProtocolError(f"masked server frame: {buffer[:2]!r}")
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    if len(buffer) < start + length:
        return None
    return buffer[0], buffer[start : start + length], buffer[start + length :]


def open_websocket(
    port: int, source: str, path: str, subprotocol: str | None
) -> tuple[socket.socket, bytes]:
    """Connect from ``source`` and run the opening handshake; returns the socket and
    whatever followed the 101 response."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=START_TIMEOUT, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    asked = f"sec-websocket-protocol: {subprotocol}\r\n" if subprotocol else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n"
        f"connection: Upgrade\r\nsec-websocket-key: {key}\r\n{asked}"
        f"sec-websocket-version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise WsProtocolError("connection closed during the handshake")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
    lower = head.lower()
    if not head.startswith(b"HTTP/1.1 101") or accept.lower() not in lower:
        raise WsProtocolError(f"handshake refused: {head[:300]!r}")
    if subprotocol and f"sec-websocket-protocol: {subprotocol}".encode() not in lower:
        raise WsProtocolError(f"subprotocol {subprotocol} not granted: {head[:300]!r}")
    return sock, rest


#: Where a frame's send time is (hub deltas: in ``set``; bare frames: first).
_SENT_NS = re.compile(rb'"sent_ns":(\d+)')


@dataclass
class LatencyLog:
    """Send-to-receive times (µs) of frames sent in ``[begin_ns, end_ns)``."""

    begin_ns: int
    end_ns: int
    samples: array[int] = field(default_factory=lambda: array("q"))

    def record(self, buffer: bytes, start: int, end: int, now_ns: int) -> None:
        match = _SENT_NS.search(buffer, start, end)
        if match is None:
            raise WsProtocolError(f"frame without sent_ns: {buffer[start:end][:200]!r}")
        sent = int(match[1])
        if self.begin_ns <= sent < self.end_ns:
            self.samples.append((now_ns - sent) // 1000)


class Subscriber:
    """One raw WebSocket connection: checks every server frame and counts the wanted ones.

    Counted frames are text frames whose payload starts with ``prefix``; text frames
    starting with one of ``others`` are allowed and counted apart, pings are allowed;
    anything else is a protocol error.
    """

    __slots__ = ("deltas", "last", "others", "pings", "prefix", "received", "rest", "sock", "valid")

    def __init__(
        self, sock: socket.socket, prefix: bytes, others: tuple[bytes, ...], rest: bytes = b""
    ) -> None:
        self.sock = sock
        self.prefix = prefix
        self.valid = others
        self.rest = rest
        self.deltas = 0
        self.others = 0
        self.pings = 0
        self.received = 0
        #: Payload of the last counted frame.
        self.last = b""

    def read(self, latency: LatencyLog | None) -> int:
        """Read what is there (non-blocking); returns the number of new counted frames."""
        before = self.deltas
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                raise WsProtocolError(f"connection closed after {self.deltas} frames")
            self.feed(data, time.monotonic_ns() if latency is not None else 0, latency)
            if len(data) < READ_SIZE:
                break
        return self.deltas - before

    def feed(self, data: bytes, now_ns: int, latency: LatencyLog | None) -> None:
        """Check and count the frames in ``data`` (a partial frame waits for more)."""
        self.received += len(data)
        buf = self.rest + data if self.rest else data
        size = len(buf)
        prefix, valid = self.prefix, self.valid
        pos = counted = 0
        last_start = last_end = -1
        while pos + 2 <= size:
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if pos + 4 > size:
                    break
                start = pos + 4
                length = buf[pos + 2] << 8 | buf[pos + 3]
            else:  # masked (>= 128), or a 64-bit length no frame here needs
                raise WsProtocolError(f"bad frame header {buf[pos : pos + 2]!r}")
            end = start + length
            if end > size:
                break
            first = buf[pos]
            if first == 0x81:  # FIN + text
                if buf.startswith(prefix, start):
                    counted += 1
                    last_start, last_end = start, end
                    if latency is not None:
                        latency.record(buf, start, end, now_ns)
                elif buf.startswith(valid, start):
                    self.others += 1
                else:
                    raise WsProtocolError(f"unexpected frame: {buf[start:end][:300]!r}")
            elif first == 0x89:  # FIN + ping: the hub's keepalive
                self.pings += 1
            else:
                raise WsProtocolError(f"unexpected frame header {buf[pos : pos + 2]!r}")
            pos = end
        self.rest = buf[pos:] if pos < size else b""
        if counted:
            self.deltas += counted
            self.last = buf[last_start:last_end]


# ---------------------------------------------------------------------- subscriber processes


@dataclass(frozen=True, slots=True)
class ReaderSpec:
    """What one subscriber process does."""

    port: int
    connections: int
    #: Its slot on the :class:`Board`; it connects from 127.0.0.(10 + slot).
    slot: int
    path: str
    subprotocol: str | None
    #: A frame payload to send once connected (the subscription), answered by a frame
    #: starting with ``reply``.
    subscribe: bytes | None
    reply: bytes
    #: Counted frames start with this; ``others`` are allowed.
    prefix: bytes
    others: tuple[bytes, ...]
    #: Seconds between two reads of a lazy connection.
    pause: float
    #: 0: every connection is lazy (throughput). n: every n-th connection is a latency
    #: probe, read as soon as data arrives and timing every frame; the others are lazy.
    probe_every: int
    deadline: float


@dataclass(frozen=True, slots=True)
class ReaderResult:
    """What one subscriber process measured and checked."""

    slot: int
    connections: int
    #: Counted frames received in the measured window, and the window as seen here.
    window_frames: int = 0
    window_s: float = 0.0
    #: Counted frames per connection, lowest and highest.
    least: int = 0
    most: int = 0
    #: Bytes received, counted frames (all connections), other frames, pings.
    received: int = 0
    frames: int = 0
    others: int = 0
    pings: int = 0
    #: Distinct last counted payloads (one unless something is wrong).
    last: tuple[bytes, ...] = ()
    #: Latency samples (µs, array "q" as bytes).
    latencies: bytes = b""
    errors: int = 0
    first_error: str = ""


def reader_processes(subscribers: int, processes: int) -> list[int]:
    """Connections per subscriber process: ``processes`` of them, or fewer if fewer clients."""
    return [n for n in split_connections(subscribers, min(subscribers, processes)) if n]


def start_readers(
    workers: Workers, board: Board, specs: Sequence[ReaderSpec], timeout: float = START_TIMEOUT
) -> None:
    """Start one subscriber process per spec and wait until all are connected."""
    for spec in specs:
        workers.start(_reader_process, spec, board)
    board.wait_ready(workers, timeout)


def hub_reader_spec(
    port: int, connections: int, slot: int, pause: float, probe_every: int, deadline: float
) -> ReaderSpec:
    """A subscriber process of native hub connections, each subscribed to ``bench/``."""
    return ReaderSpec(
        port,
        connections,
        slot,
        "/api/ws",
        HUB_SUBPROTOCOL,
        SUBSCRIBE,
        b'{"type":"subscribed",',
        HUB_DELTA,
        HUB_OTHERS,
        pause,
        probe_every,
        deadline,
    )


def _connect(spec: ReaderSpec) -> Subscriber:
    source = f"127.0.0.{10 + spec.slot}"
    sock, rest = open_websocket(spec.port, source, spec.path, spec.subprotocol)
    if spec.subscribe is not None:
        sock.sendall(client_frame(spec.subscribe))
        while (parsed := split_frame(rest)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise WsProtocolError("connection closed before the subscription was confirmed")
            rest += chunk
        first, payload, rest = parsed
        if first != 0x81 or not payload.startswith(spec.reply):
            raise WsProtocolError(f"subscription refused: {payload[:300]!r}")
    sock.setblocking(False)
    return Subscriber(sock, spec.prefix, spec.others, rest)


def _reader_process(spec: ReaderSpec, board: Board, results: Connection) -> None:
    subscribers: list[Subscriber] = []
    try:
        # Appended one by one: those opened are closed below if one fails.
        subscribers.extend(_connect(spec) for _ in range(spec.connections))
        board.ready[spec.slot] = 1
        result = _read(spec, board, subscribers)
    except (OSError, WsProtocolError, TimeoutError) as exc:
        result = ReaderResult(spec.slot, spec.connections, errors=1, first_error=repr(exc))
    finally:
        for subscriber in subscribers:
            subscriber.sock.close()
    results.send(result)


def _read(spec: ReaderSpec, board: Board, subscribers: list[Subscriber]) -> ReaderResult:
    """Read until every connection has ``board.target`` frames (or the deadline)."""
    _, begin, end = board.wait_schedule(spec.deadline)
    every = spec.probe_every
    latency = LatencyLog(int(begin * 1e9), int(end * 1e9)) if every else None
    probes = [s for n, s in enumerate(subscribers) if every and n % every == 0]
    lazy = [s for n, s in enumerate(subscribers) if not every or n % every]
    poller = select.epoll()
    # Latency: wake up for the probes only. Throughput: for everyone, after a pause.
    by_fd = {s.sock.fileno(): s for s in (probes if every else lazy)}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    total = 0
    marks: list[tuple[float, int]] = []
    slot, counts, pause = spec.slot, board.counts, spec.pause
    next_lazy = 0.0
    error = ""
    try:
        while True:
            now = time.monotonic()
            if len(marks) < 2 and now >= (begin, end)[len(marks)]:
                marks.append((now, total))
            target = board.target.value
            if target >= 0 and total >= target * len(subscribers):
                break
            if now > spec.deadline:
                error = f"deadline: {total} frames, {target} per connection expected"
                break
            if every:
                for fd, _ in poller.poll(max(0.0, min(0.05, next_lazy - now))):
                    total += by_fd[fd].read(latency)
                if time.monotonic() >= next_lazy:
                    next_lazy = time.monotonic() + pause
                    for subscriber in lazy:
                        total += subscriber.read(None)
            else:
                for fd, _ in poller.poll(0.05):
                    total += by_fd[fd].read(None)
                time.sleep(pause)
            counts[slot] = total
    except (OSError, WsProtocolError) as exc:
        error = repr(exc)
    finally:
        poller.close()
    per_connection = [s.deltas for s in subscribers]
    if not error and any(n != board.target.value for n in per_connection):
        error = f"frames per connection {min(per_connection)}-{max(per_connection)}, "
        error += f"{board.target.value} expected"
    if len(marks) < 2:
        marks += [(time.monotonic(), total)] * (2 - len(marks))
    (t0, n0), (t1, n1) = marks
    return ReaderResult(
        slot,
        len(subscribers),
        n1 - n0,
        t1 - t0,
        min(per_connection),
        max(per_connection),
        sum(s.received for s in subscribers),
        total,
        sum(s.others for s in subscribers),
        sum(s.pings for s in subscribers),
        tuple({s.last for s in subscribers}),
        latency.samples.tobytes() if latency is not None else b"",
        1 if error else 0,
        error,
    )


def check_readers(results: Sequence[ReaderResult], what: str) -> None:
    for result in results:
        if result.errors:
            raise AssertionError(f"{what}: subscriber process {result.slot}: {result.first_error}")


# ---------------------------------------------------------------------- the hub's publisher


def parse_position(text: str) -> tuple[int, int, int]:
    """A delta position (``ms-seq``, ``p:ms-seq`` past partition 0) as a sortable tuple."""
    partition, _, stream_id = text.rpartition(":")
    ms, _, seq = stream_id.partition("-")
    return int(partition or 0), int(ms), int(seq)


def entity_of(seq: int) -> str:
    return f"bench/e{seq % ENTITIES:05d}"


def publish_frame(ref: int, first: int) -> bytes:
    """A publish frame of events ``first`` .. ``first + 99``; each carries its ``seq``."""
    events = [
        {
            "stream": "bench.fanout",
            "source": "bench",
            "payload": {
                "entity_id": entity_of(seq),
                "properties": {"seq": seq, "status": "ok" if seq & 1 else "warn"},
            },
        }
        for seq in range(first, first + EVENTS_PER_FRAME)
    ]
    return bytes(msgpack.packb({"type": "publish", "ref": ref, "events": events}))


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    port: int
    connections: int
    #: Events published but not yet delivered to every subscriber, at most.
    lag_cap: int
    deadline: float


@dataclass(frozen=True, slots=True)
class PublisherResult:
    events: int
    frames: int
    #: The event the acks placed last in the delta log.
    last_position: str = ""
    last_entity: str = ""
    last_seq: int = -1
    errors: int = 0
    first_error: str = ""


@dataclass
class _Published:
    sent: int = 0
    acked: int = 0
    frames: int = 0
    next_ref: int = 0
    best: tuple[int, int, int] = (-1, 0, 0)
    best_text: str = ""
    best_seq: int = -1


def check_ack(
    reply: bytes | str, ref: int, count: int, changed: bool = True
) -> list[dict[str, Any]]:
    """The results of an ack to publish frame ``ref`` of ``count`` events, all ``ok``
    (and, if ``changed``, each with the position of its delta).

    Raises:
        AssertionError: anything else.
    """
    if not isinstance(reply, bytes):
        raise AssertionError(f"text frame on a MessagePack connection: {reply[:200]!r}")
    ack = msgpack.unpackb(reply)
    if not isinstance(ack, dict) or ack.get("type") != "ack" or ack.get("ref") != ref:
        raise AssertionError(f"expected the ack of {ref}: {str(ack)[:300]}")
    results: list[dict[str, Any]] = ack["results"]
    if len(results) != count:
        raise AssertionError(f"ack of {ref} has {len(results)} results, {count} expected")
    for result in results:
        if (
            result.get("status") != "ok"
            or not isinstance(result.get("eventId"), str)
            or not isinstance(result.get("version"), int)
            or not isinstance(result.get("position"), str if changed else (str, type(None)))
        ):
            raise AssertionError(f"event refused or unchanged: {result}")
    return results


async def _publish_loop(
    ws: ClientConnection, state: _Published, board: Board, spec: PublisherSpec, stop: float
) -> None:
    while time.monotonic() < stop:
        while state.sent - board.delivered() > spec.lag_cap:
            if time.monotonic() >= stop:
                return
            await asyncio.sleep(0.001)
        ref, first = state.next_ref, state.sent
        state.next_ref += 1
        state.sent += EVENTS_PER_FRAME
        await ws.send(publish_frame(ref, first))
        results = check_ack(await asyncio.wait_for(ws.recv(), ACK_TIMEOUT), ref, EVENTS_PER_FRAME)
        state.acked += EVENTS_PER_FRAME
        state.frames += 1
        for n, result in enumerate(results):
            position = parse_position(result["position"])
            if position > state.best:
                state.best, state.best_text, state.best_seq = (
                    position,
                    result["position"],
                    first + n,
                )


async def open_publisher(port: int) -> ClientConnection:
    """A native MessagePack connection to the hub."""
    ws = await connect(
        f"ws://127.0.0.1:{port}/api/ws",
        subprotocols=[Subprotocol(PUBLISH_SUBPROTOCOL)],
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=START_TIMEOUT,
    )
    if ws.subprotocol != PUBLISH_SUBPROTOCOL:
        raise AssertionError(f"subprotocol {ws.subprotocol!r} instead of {PUBLISH_SUBPROTOCOL}")
    return ws


async def drive_publisher(spec: PublisherSpec, board: Board) -> PublisherResult:
    connections = [await open_publisher(spec.port) for _ in range(spec.connections)]
    state = _Published()
    try:
        start, _, end = await board.schedule_soon(spec.deadline)
        await sleep_until(start)
        async with asyncio.TaskGroup() as tg:
            for ws in connections:
                tg.create_task(_publish_loop(ws, state, board, spec, end))
    finally:
        for ws in connections:
            await ws.close()
    return PublisherResult(
        state.acked, state.frames, state.best_text, entity_of(state.best_seq), state.best_seq
    )


def _publisher_process(spec: PublisherSpec, board: Board, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = runner.run(drive_publisher(spec, board))
        except Exception as exc:  # reported to the parent, which fails the run
            result = PublisherResult(0, 0, errors=1, first_error=f"publisher failed: {exc!r}")
    # Every event is acknowledged: each connection must get exactly this many deltas.
    board.target.value = result.events if not result.errors else 0
    results.send(result)


def check_last_delta(payloads: Sequence[bytes], published: PublisherResult) -> None:
    """Every subscriber's last frame is the delta of the last event in the log."""
    if len(set(payloads)) != 1:
        raise AssertionError(f"subscribers ended on different frames: {list(payloads)[:3]!r}")
    delta = orjson.loads(payloads[0])
    expected = {
        "sub": SUB,
        "type": "delta",
        "id": published.last_entity,
        "position": published.last_position,
    }
    if {k: delta.get(k) for k in expected} != expected:
        raise AssertionError(f"last delta {delta} is not the last event {expected}")
    if delta["set"].get("seq") != published.last_seq or delta["version"] != delta["base"] + 1:
        raise AssertionError(f"last delta {delta}: seq {published.last_seq} expected")
    if not isinstance(delta.get("lastUpdated"), str):
        raise AssertionError(f"last delta without lastUpdated: {delta}")


# ---------------------------------------------------------------------- the bare server


@dataclass(frozen=True, slots=True)
class BareSpec:
    clients: int
    lag_cap: int
    deadline: float


@dataclass(frozen=True, slots=True)
class BareResult:
    frames: int
    errors: int = 0
    first_error: str = ""


async def broadcast_server(sock: socket.socket, spec: BareSpec, board: Board) -> int:
    """``serve`` + ``broadcast`` of 150-byte text frames from ``start`` to ``end``."""
    clients: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        clients.append(ws)
        await ws.wait_closed()

    sent = 0
    async with serve(handler, sock=sock, ping_interval=None, compression=None):
        start, _, end = await board.schedule_soon(spec.deadline)
        await sleep_until(start)
        if len(clients) != spec.clients:
            raise AssertionError(f"{len(clients)} clients, {spec.clients} expected")
        while time.monotonic() < end:
            if sent - board.delivered() > spec.lag_cap:
                await asyncio.sleep(0.001)
                continue
            broadcast(clients, frame_payload(sent), text=True)
            sent += 1
            await asyncio.sleep(0)
        board.target.value = sent
        # Keep serving until the clients have read everything and hung up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, spec.deadline - time.monotonic())):
                await asyncio.gather(*(ws.wait_closed() for ws in clients))
    return sent


def _bare_process(sock: socket.socket, spec: BareSpec, board: Board, results: Connection) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            result = BareResult(runner.run(broadcast_server(sock, spec, board)))
        except Exception as exc:
            board.target.value = 0
            result = BareResult(0, 1, f"bare server failed: {exc!r}")
    results.send(result)


# ---------------------------------------------------------------------- phases


@dataclass
class Figure:
    """One measured figure, as printed and as a JSON line."""

    figure: str
    subscribers: int
    deliveries_per_s: float
    deliveries: int
    window_s: float
    steal_pct: float
    #: % of one core per process role; "other" is everybody else on the machine.
    cpu_pct: dict[str, float]
    #: CPU microseconds per delivery, per process role.
    cpu_us_per_delivery: dict[str, float]
    params: dict[str, Any]
    round: int = 1


@dataclass(frozen=True)
class Options:
    warmup: float
    duration: float
    rounds: int
    subscribers: tuple[int, ...]
    reader_processes: int
    publisher_connections: int
    lag_deliveries: int
    json_out: Path | None


def lag_cap(options: Options, subscribers: int) -> int:
    """Events (frames, bare) a producer may be ahead of its subscribers."""
    return max(500, min(5000, options.lag_deliveries // subscribers))


def read_pause(subscribers: int) -> float:
    """Seconds between read rounds: ~30 µs per connection, 2-30 ms, so that each recv()
    takes many frames at every fan-out."""
    return min(0.03, max(0.002, subscribers * 30e-6))


def _schedule(board: Board, options: Options) -> tuple[float, float, float]:
    start = time.monotonic() + 0.5
    begin = start + options.warmup
    end = begin + options.duration
    board.set_schedule(start, begin, end)
    return start, begin, end


def _window(meter: CpuMeter, begin: float, end: float) -> None:
    time.sleep(max(0.0, begin - time.monotonic()))
    meter.start()
    time.sleep(max(0.0, end - time.monotonic()))
    meter.stop()


def _figure(
    name: str,
    subscribers: int,
    results: Sequence[ReaderResult],
    meter: CpuMeter,
    params: dict[str, Any],
    round_no: int,
) -> Figure:
    deliveries = sum(r.window_frames for r in results)
    # Each process counted over its own window (within a read pause of the others').
    rate = sum(r.window_frames / r.window_s for r in results if r.window_s > 0)
    frames = sum(r.frames for r in results)
    params = {
        **params,
        "subscriber_processes": len(results),
        "read_pause_ms": round(1000 * read_pause(subscribers), 1),
        "frame_bytes": round(sum(r.received for r in results) / max(1, frames), 1),
        "other_frames": sum(r.others for r in results),
    }
    return Figure(
        name,
        subscribers,
        rate,
        deliveries,
        deliveries / rate if rate else 0.0,
        meter.steal_pct,
        meter.cpu_pct,
        us_per(meter, deliveries),
        params,
        round_no,
    )


def us_per(meter: CpuMeter, count: int) -> dict[str, float]:
    """CPU microseconds per item of each role (finer than ``CpuMeter.us_per``: deliveries
    cost fractions of a microsecond)."""
    return {role: round(1e6 * s / max(1, count), 3) for role, s in meter.cpu_seconds.items()}


def measure_bare(subscribers: int, options: Options, round_no: int) -> Figure:
    split = reader_processes(subscribers, options.reader_processes)
    board = Board(len(split), subscribers)
    deadline = time.monotonic() + START_TIMEOUT + options.warmup + options.duration + DRAIN_TIMEOUT
    readers, server = Workers(), Workers()
    sock = listening_socket()
    port = sock.getsockname()[1]
    with cleanup(readers, server):
        server.start(
            _bare_process,
            sock,
            BareSpec(subscribers, lag_cap(options, subscribers), deadline),
            board,
        )
        sock.close()
        pause = read_pause(subscribers)
        specs = [
            ReaderSpec(port, n, slot, "/", None, None, b"", BARE_FRAME, (), pause, 0, deadline)
            for slot, n in enumerate(split)
        ]
        start_readers(readers, board, specs)
        _, begin, end = _schedule(board, options)
        meter = CpuMeter({"server": server.pids, "subscribers": readers.pids})
        _window(meter, begin, end)
        results: list[ReaderResult] = readers.results(DRAIN_TIMEOUT + 10)
        (sent,) = server.results(DRAIN_TIMEOUT + 10)
    if sent.errors:
        raise AssertionError(sent.first_error)
    check_readers(results, f"bare, {subscribers} subscribers")
    last = {payload for r in results for payload in r.last}
    if last != {frame_payload(sent.frames - 1)}:
        raise AssertionError(
            f"bare: last frames {sorted(last)[:3]!r}, frame {sent.frames - 1} expected"
        )
    params = {
        "server": "websockets serve + broadcast",
        "payload_bytes": FRAME_PAYLOAD,
        "frames_broadcast": sent.frames,
        "lag_cap_frames": lag_cap(options, subscribers),
    }
    return _figure("bare", subscribers, results, meter, params, round_no)


def measure_hub(
    subscribers: int, url: str, redis_pid: int, options: Options, log: Path, round_no: int
) -> Figure:
    split = reader_processes(subscribers, options.reader_processes)
    board = Board(len(split), subscribers)
    reset_redis(url)
    with running_hub(url, f"bench-fanout-{subscribers}-{round_no}", log) as (port, hub_pid):
        deadline = (
            time.monotonic() + START_TIMEOUT + options.warmup + options.duration + DRAIN_TIMEOUT
        )
        readers, publisher = Workers(), Workers()
        with cleanup(readers, publisher):
            pause = read_pause(subscribers)
            specs = [
                hub_reader_spec(port, n, slot, pause, 0, deadline) for slot, n in enumerate(split)
            ]
            start_readers(readers, board, specs)
            cap = lag_cap(options, subscribers)
            spec = PublisherSpec(port, options.publisher_connections, cap, deadline)
            publisher.start(_publisher_process, spec, board)
            _, begin, end = _schedule(board, options)
            meter = CpuMeter(
                {
                    "hub": [hub_pid],
                    "redis": [redis_pid],
                    "publisher": publisher.pids,
                    "subscribers": readers.pids,
                }
            )
            _window(meter, begin, end)
            (published,) = publisher.results(DRAIN_TIMEOUT + ACK_TIMEOUT)
            results: list[ReaderResult] = readers.results(DRAIN_TIMEOUT + 10)
    if published.errors:
        raise AssertionError(published.first_error)
    check_readers(results, f"hub, {subscribers} subscribers")
    check_last_delta([p for r in results for p in r.last], published)
    params = {
        "protocol": f"{HUB_SUBPROTOCOL} subscribers, {PUBLISH_SUBPROTOCOL} publisher",
        "events_per_publish": EVENTS_PER_FRAME,
        "publisher_connections": options.publisher_connections,
        "events_published": published.events,
        "lag_cap_events": cap,
    }
    figure = _figure("hub", subscribers, results, meter, params, round_no)
    figure.params["events_per_s"] = round(figure.deliveries_per_s / subscribers, 1)
    return figure


def run_rounds(url: str, redis_pid: int, options: Options, log: Path) -> list[Figure]:
    """Interleave the phases: for each count, bare then hub; all counts, ``rounds`` times."""
    figures = []
    for n in range(1, options.rounds + 1):
        for subscribers in options.subscribers:
            for system in ("bare", "hub"):
                if system == "bare":
                    figure = measure_bare(subscribers, options, n)
                else:
                    figure = measure_hub(subscribers, url, redis_pid, options, log, n)
                print(_human(figure), flush=True)
                figures.append(figure)
    return figures


# ---------------------------------------------------------------------- output


def _human(figure: Figure) -> str:
    cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in figure.cpu_pct.items())
    per = ", ".join(f"{role} {us:.2f}" for role, us in figure.cpu_us_per_delivery.items())
    extra = figure.params.get("events_per_s")
    events = f"; {extra:,.0f} events/s" if extra is not None else ""
    return (
        f"[round {figure.round}] {figure.figure:<4} {figure.subscribers:>5} subscribers "
        f"{figure.deliveries_per_s:>10,.0f} deliveries/s ({figure.deliveries:,} in "
        f"{figure.window_s:.1f} s{events}; {figure.params['frame_bytes']:.0f} B/frame; "
        f"steal {figure.steal_pct:.1f}%; CPU (% of a core): {cpu}; CPU us/delivery: {per})"
    )


def combined(figures: Sequence[Figure], name: str, subscribers: int) -> float:
    """Deliveries/s of one figure over all rounds (total deliveries / total window)."""
    chosen = [f for f in figures if f.figure == name and f.subscribers == subscribers]
    return sum(f.deliveries for f in chosen) / sum(f.window_s for f in chosen)


def combined_cpu(figures: Sequence[Figure], name: str, subscribers: int, role: str) -> float:
    chosen = [f for f in figures if f.figure == name and f.subscribers == subscribers]
    total = sum(f.deliveries for f in chosen)
    return sum(f.cpu_us_per_delivery[role] * f.deliveries for f in chosen) / total


def percentile(samples: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted ``samples`` (``q`` in 0-100)."""
    if not samples:
        return 0
    rank = max(1, -(-len(samples) * q // 100))
    return samples[min(len(samples), int(rank)) - 1]


def report(facts: dict[str, Any], figures: list[Figure], options: Options, elapsed: float) -> int:
    """Print the summary, the verdict and the JSON lines; returns the exit status."""
    steal = max(f.steal_pct for f in figures)
    other = max(f.cpu_pct.get("other", 0.0) for f in figures)
    print()
    print(
        f"hub {facts['hub_revision']}; machine: {facts['cpu']}, {facts['cores']} cores, "
        f"Linux {facts['kernel']}, Python {facts['python']}, Redis {facts['redis']} "
        f"({facts['redis_setup']}), uvloop {facts['uvloop']}, websockets {facts['websockets']}"
    )
    print(
        f"{facts['date']}; load average {facts['loadavg']} at start, {facts['loadavg_end']} "
        f"at end; other processes kept {facts['foreign_cores']:.2f} cores busy before the "
        f"run; during the windows: steal up to {steal:.1f}%, other processes up to "
        f"{other:.0f}% of a core"
    )
    print(
        f"{'subscribers':>11} {'hub deliveries/s':>17} {'bare deliveries/s':>18} "
        f"{'hub/bare':>8} {'hub CPU us/delivery':>20} {'bare server CPU us/delivery':>28}"
    )
    summary: list[dict[str, Any]] = []
    for subscribers in options.subscribers:
        hub, bare = combined(figures, "hub", subscribers), combined(figures, "bare", subscribers)
        hub_cpu = combined_cpu(figures, "hub", subscribers, "hub")
        bare_cpu = combined_cpu(figures, "bare", subscribers, "server")
        print(
            f"{subscribers:>11,} {hub:>17,.0f} {bare:>18,.0f} {hub / bare:>8.2f} "
            f"{hub_cpu:>20.2f} {bare_cpu:>28.2f}"
        )
        summary.append(
            {
                "subscribers": subscribers,
                "hub_deliveries_per_s": round(hub, 1),
                "bare_deliveries_per_s": round(bare, 1),
                "ratio": round(hub / bare, 3),
                "hub_cpu_us_per_delivery": round(hub_cpu, 2),
                "bare_server_cpu_us_per_delivery": round(bare_cpu, 2),
            }
        )
    at = max(options.subscribers)
    ratio = combined(figures, "hub", at) / combined(figures, "bare", at)
    per_round = [
        combined([f for f in figures if f.round == n], "hub", at)
        / combined([f for f in figures if f.round == n], "bare", at)
        for n in range(1, options.rounds + 1)
    ]
    verdict = "PASS" if ratio >= THRESHOLD else "FAIL"
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"ratio hub/bare at {at:,} subscribers = {ratio:.2f} ({100 * ratio:.0f} %; per round: "
        f"{rounds}): {verdict} (criterion: >= {100 * THRESHOLD:.0f} % of the bare broadcast "
        f"at {at:,} measured in the same run)"
    )
    print(f"elapsed {elapsed:.0f} s")
    emit({"bench": "fanout", "figure": "machine", **facts}, options.json_out)
    for figure in figures:
        emit({"bench": "fanout", "date": facts["date"], **asdict(figure)}, options.json_out)
    for row in summary:
        emit(
            {"bench": "fanout", "date": facts["date"], "figure": "all_rounds", **row},
            options.json_out,
        )
    emit(
        {
            "bench": "fanout",
            "date": facts["date"],
            "figure": "ratio_hub_bare",
            "subscribers": at,
            "ratio": round(ratio, 3),
            "ratio_per_round": [round(r, 3) for r in per_round],
            "threshold": THRESHOLD,
            "verdict": verdict,
        },
        options.json_out,
    )
    return 0 if verdict == "PASS" else 1


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(n) for n in text.split(","))
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("subscriber counts must be positive integers")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Hub fan-out (deliveries/s) beside a bare websockets broadcast server."
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per phase")
    parser.add_argument("--rounds", type=int, default=2, help="times every phase runs")
    parser.add_argument(
        "--subscribers", type=_counts, default=SUBSCRIBERS, help="comma-separated counts"
    )
    parser.add_argument("--reader-processes", type=int, default=4, help="subscriber processes")
    parser.add_argument("--publisher-connections", type=int, default=8)
    parser.add_argument(
        "--lag-deliveries",
        type=int,
        default=1_000_000,
        help="deliveries a producer may be ahead of its subscribers (500-5,000 events)",
    )
    parser.add_argument("--json-out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument(
        "--where",
        help="hub subscribers subscribe with this value filter (JSON; docs/protocol.md): "
        'e.g. \'{"seq": {"gte": 0}}\', which every event matches, to measure its cost',
    )
    return parser


def use_where(text: str) -> None:
    """Make every hub subscriber subscribe with a ``where`` (``--where``): a live
    ``where`` subscription also gets ``synced`` (docs/protocol.md, Value filters)."""
    global SUBSCRIBE, HUB_OTHERS
    frame = {"type": "subscribe", "sub": SUB, "filter": {"prefixes": ["bench/"]}}
    SUBSCRIBE = orjson.dumps({**frame, "where": orjson.loads(text)})
    HUB_OTHERS = (*HUB_OTHERS, b'{"type":"synced",')


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.where is not None:
        use_where(args.where)
    options = Options(
        args.warmup,
        args.duration,
        args.rounds,
        args.subscribers,
        args.reader_processes,
        args.publisher_connections,
        args.lag_deliveries,
        args.json_out,
    )
    started = time.monotonic()
    facts, figures = on_embedded_redis(lambda url, pid, log: run_rounds(url, pid, options, log))
    return report(facts, figures, options, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
