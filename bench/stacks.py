"""Server-stack comparison: why the hub runs its own httptools + websockets-sans-I/O server.

Every server runs in a subprocess of its own, on uvloop, doing the same trivial work:

- **HTTP**: requests/s of ``POST /echo`` (a ~200-byte JSON body, parsed with orjson;
  a small JSON reply), driven by the light keep-alive load generator of ``ingest.py``
  (pre-built requests, every reply checked byte for byte), for

  - ``hub``: :class:`hub.transport.http.HttpConnection` with a tiny ``App`` that spawns
    handlers in an anyio task group, exactly as :class:`hub.server.Hub` does;
  - ``uvicorn-asgi``: uvicorn (httptools) and a raw ASGI callable;
  - ``uvicorn-starlette``: uvicorn (httptools) and a Starlette route.

- **WebSocket broadcast**: 1,000 connected clients (raw asyncio readers, spread over
  several processes, checking every frame header and the last payload) each receive
  N text frames of 150 bytes, broadcast by the server as fast as it can; the figure is
  deliveries/s (frames x clients / time until the last client has its last frame), for

  - ``hub``: the hub's approach, :func:`hub.transport.ws.handshake` +
    :class:`hub.transport.ws.WebSocket`; each frame is encoded once with
    :func:`hub.transport.ws.encode_frame` and written to every connection;
  - ``websockets``: ``websockets.asyncio.server.serve`` + ``broadcast``;
  - ``uvicorn-starlette``: ``await websocket.send_text(...)`` per connection (uvicorn's
    ``websockets-sansio`` implementation, what ``ws="auto"`` picks).

Beside each rate it reports the server's CPU time per request or per delivery, which the
VM's noise (steal, other tenants) moves much less than the rates. Output: human-readable
lines, then one JSON line per figure. Takes about 50 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import uvicorn
import uvloop

# bench/ is not a package: ingest.py sits next to this file (sys.path[0]).
from ingest import (
    CpuMeter,
    LoadSpec,
    Workers,
    emit,
    machine_facts,
    post_request,
    process_cpu_seconds,
    run_load,
    split_connections,
    stop_process,
)
from starlette.applications import Starlette
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.server import broadcast as ws_broadcast
from websockets.asyncio.server import serve as ws_serve

from hub.transport.http import HttpConnection, Request, Response, error_response
from hub.transport.ws import WebSocket, handshake
from hub.wire.framing import encode_frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, MutableMapping
    from multiprocessing.connection import Connection

    from anyio.abc import TaskGroup
    from starlette.requests import Request as StarletteRequest
    from starlette.websockets import WebSocket as StarletteWebSocket
    from websockets.asyncio.server import ServerConnection

__all__ = ["main"]

HTTP_STACKS = ("hub", "uvicorn-asgi", "uvicorn-starlette")
WS_STACKS = ("hub", "websockets", "uvicorn-starlette", "hub-10-per-write")

#: Every text frame's payload is this long (a typical small delta).
FRAME_PAYLOAD = 150
#: Its frame on the wire: FIN+text, 126 (16-bit length follows), length, payload.
FRAME_HEADER = bytes((0x81, 126, 0, FRAME_PAYLOAD))
FRAME_SIZE = len(FRAME_HEADER) + FRAME_PAYLOAD
#: Seconds the server waits, once every client is in, before broadcasting.
SETTLE = 0.5
#: How long a server may take to start, and clients to connect.
START_TIMEOUT = 30.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------- the work


def echo_body() -> bytes:
    """A ~200-byte JSON event, the body of every ``POST /echo``."""
    event = {
        "stream": "bench.echo",
        "source": "stacks",
        "timestamp": 1_760_000_000_000,
        "payload": {
            "entity_id": "bench/e00042",
            "properties": {"temperature": 21.5, "status": "ok", "seq": 123456},
        },
    }
    body = orjson.dumps(event)
    return body[:-1] + b',"pad":"' + b"x" * max(0, 190 - len(body)) + b'"}'


def echo_reply(body: bytes) -> bytes:
    """What every server does with a request body: parse it, answer a small JSON."""
    event = orjson.loads(body)
    payload = event["payload"]
    return orjson.dumps(
        {"ok": True, "entity_id": payload["entity_id"], "properties": len(payload["properties"])}
    )


def frame_payload(seq: int) -> bytes:
    """Frame ``seq``'s 150-byte JSON text payload."""
    head = b'{"type":"state_update","entity_id":"bench/e00042","seq":%08d,"pad":"' % seq
    return head + b"x" * (FRAME_PAYLOAD - len(head) - 2) + b'"}'


# ---------------------------------------------------------------------- server side


def announce(**fields: Any) -> None:
    """Tell the parent something (one JSON line on stdout)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@dataclass
class Broadcast:
    """What a WebSocket server broadcasts, and to how many clients."""

    clients: int
    frames: int
    everyone_in: asyncio.Event = field(default_factory=asyncio.Event)

    def joined(self, count: int) -> None:
        if count >= self.clients:
            self.everyone_in.set()

    async def wait_for_clients(self) -> None:
        await self.everyone_in.wait()
        await asyncio.sleep(SETTLE)
        announce(start=time.monotonic(), cpu=time.process_time())

    def done(self) -> None:
        announce(sent=time.monotonic(), cpu=time.process_time())


class EchoApp:
    """The smallest :class:`hub.transport.http.App`: ``POST /echo`` and WebSocket ``/ws``."""

    request_timeout = 30.0
    keepalive_timeout = 75.0
    max_body_bytes = 1 << 20

    def __init__(self, tg: TaskGroup, broadcast: Broadcast) -> None:
        self.tg = tg
        self.broadcast = broadcast
        self.websockets: list[WebSocket] = []

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        return self.max_body_bytes, "payload too large"

    async def handle(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/echo":
            return Response(200, echo_reply(request.body))
        return error_response(404, "no such endpoint")

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        # As hub.app.Hub.spawn does: one task per burst of requests.
        self.tg.start_soon(_guarded, fn)

    def upgrade(self, request: Request, transport: asyncio.Transport) -> WebSocket | None:
        protocol = handshake(request, transport, max_frame_bytes=1 << 20, subprotocols=[])
        if protocol is None:
            return None
        ws = WebSocket(
            transport,
            protocol,
            client=request.client,
            # The hub's default (FanoutSettings.max_send_buffer_bytes).
            max_send_buffer=8 << 20,
            on_closed=lambda ws: None,
        )
        self.websockets.append(ws)
        self.broadcast.joined(len(self.websockets))
        return ws

    def connection_opened(self, conn: HttpConnection) -> str | None:
        return None  # never refused

    def connection_closed(self, conn: HttpConnection) -> None:
        pass


async def _guarded(fn: Callable[[], Awaitable[None]]) -> None:
    # hub.app._guarded: a handler's failure must not cancel the task group.
    try:
        await fn()
    except Exception as exc:
        print(f"handler failed: {exc!r}", file=sys.stderr)


async def broadcast_hub(app: EchoApp, per_write: int = 1) -> None:
    """The hub's fan-out: encode each frame once, write the bytes to every connection.

    With ``per_write`` > 1, that many consecutive frames are joined and written at once
    (what a fan-out that coalesces one XREAD batch per connection would do).
    """
    await app.broadcast.wait_for_clients()
    frames = app.broadcast.frames
    for first in range(0, frames, per_write):
        seqs = range(first, min(first + per_write, frames))
        data = b"".join(encode_frame(frame_payload(seq)) for seq in seqs)
        for ws in app.websockets:
            ws.write_frames(data, len(seqs))
        await asyncio.sleep(0)
    app.broadcast.done()


async def serve_hub(broadcast: Broadcast, per_write: int = 1) -> None:
    sock = listening_socket()
    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as tg:
        app = EchoApp(tg, broadcast)
        server = await loop.create_server(lambda: HttpConnection(app), sock=sock)
        announce(port=sock.getsockname()[1])
        if broadcast.clients:
            tg.start_soon(broadcast_hub, app, per_write)
        async with server:
            await server.serve_forever()


async def serve_websockets(broadcast: Broadcast) -> None:
    connections: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        broadcast.joined(len(connections))
        await ws.wait_closed()

    sock = listening_socket()
    async with ws_serve(handler, sock=sock, ping_interval=None, compression=None):
        announce(port=sock.getsockname()[1])
        await broadcast.wait_for_clients()
        for seq in range(broadcast.frames):
            ws_broadcast(connections, frame_payload(seq), text=True)
            await asyncio.sleep(0)
        broadcast.done()
        await asyncio.Future()


async def raw_asgi(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """``POST /echo`` as a bare ASGI application."""
    assert scope["type"] == "http"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    reply = echo_reply(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


def starlette_app(broadcast: Broadcast) -> Starlette:
    connections: list[StarletteWebSocket] = []
    tasks: set[asyncio.Task[None]] = set()

    async def echo(request: StarletteRequest) -> StarletteResponse:
        return StarletteResponse(echo_reply(await request.body()), media_type="application/json")

    async def send_all() -> None:
        await broadcast.wait_for_clients()
        for seq in range(broadcast.frames):
            text = frame_payload(seq).decode()
            for ws in connections:
                await ws.send_text(text)
        broadcast.done()

    async def ws_endpoint(ws: StarletteWebSocket) -> None:
        await ws.accept()
        connections.append(ws)
        broadcast.joined(len(connections))
        if len(connections) == broadcast.clients:
            tasks.add(asyncio.create_task(send_all()))
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    return Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), WebSocketRoute("/ws", ws_endpoint)]
    )


async def serve_uvicorn(app: Any) -> None:
    sock = listening_socket()
    config = uvicorn.Config(
        app,
        http="httptools",
        ws="websockets-sansio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    announce(port=sock.getsockname()[1])
    await server.serve(sockets=[sock])


def serve(stack: str, clients: int, frames: int) -> None:
    """Run one server until killed (the child side of :func:`running_server`)."""
    broadcast = Broadcast(clients, frames)
    servers: dict[str, Callable[[], Awaitable[None]]] = {
        "hub": lambda: serve_hub(broadcast),
        "hub-10-per-write": lambda: serve_hub(broadcast, 10),
        "websockets": lambda: serve_websockets(broadcast),
        "uvicorn-asgi": lambda: serve_uvicorn(raw_asgi),
        "uvicorn-starlette": lambda: serve_uvicorn(starlette_app(broadcast)),
    }
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(servers[stack]())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- parent side


class Announcements:
    """Reads the JSON lines a server child writes on its stdout, with timeouts."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"server {self.process.args!r} said nothing in {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise RuntimeError(f"server {self.process.args!r} exited")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result


@contextlib.contextmanager
def running_server(
    stack: str, clients: int = 0, frames: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], Announcements, int]]:
    """Start ``stack`` in a subprocess; yields it, its announcements and its port."""
    command = [sys.executable, __file__, "serve", stack, str(clients), str(frames)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        announcements = Announcements(process)
        port = int(announcements.next(START_TIMEOUT)["port"])
        yield process, announcements, port
    finally:
        stop_process(process)


@dataclass
class Figure:
    """One measured figure, as printed and as a JSON line."""

    figure: str
    stack: str
    rate: float
    unit: str
    count: int
    window_s: float
    #: Server CPU microseconds per request (HTTP) or per delivered frame (WebSocket).
    server_cpu_us: float
    steal_pct: float
    cpu_pct: dict[str, float]
    params: dict[str, Any]


def measure_http(
    stack: str, duration: float, warmup: float, connections: int, processes: int
) -> Figure:
    body = echo_body()
    request = post_request("/echo", body)
    expected = echo_reply(body)
    with running_server(stack) as (process, _, port):
        begin = time.monotonic() + 1.0 + warmup
        end = begin + duration
        specs = [
            LoadSpec("127.0.0.1", port, (request,), n, begin, end, expect_exact=expected)
            for n in split_connections(connections, processes)
            if n
        ]
        workers = run_load(specs)
        meter = CpuMeter({"server": [process.pid], "load": workers.pids})
        time.sleep(max(0.0, begin - time.monotonic()))
        meter.start()
        time.sleep(max(0.0, end - time.monotonic()))
        meter.stop()
        results = workers.results(30)
    for result in results:
        if result.errors or result.responses <= 0:
            raise AssertionError(f"{stack}: {result.errors} bad replies: {result.first_error}")
    count = sum(r.responses for r in results)
    window = max(r.window for r in results)
    return Figure(
        "http_echo",
        stack,
        count / window,
        "requests/s",
        count,
        window,
        round(1e6 * meter.cpu_seconds["server"] / count, 1),
        meter.steal_pct,
        meter.cpu_pct,
        {
            "body_bytes": len(body),
            "reply_bytes": len(expected),
            "connections": connections,
            "load_processes": len(specs),
        },
    )


# ---------------------------------------------------------------------- WebSocket clients


@dataclass(frozen=True, slots=True)
class WsClientSpec:
    port: int
    connections: int
    frames: int
    deadline: float


@dataclass(frozen=True, slots=True)
class WsClientResult:
    connections: int
    completed: int
    #: Monotonic time the last connection of this process had its last frame.
    done_at: float
    errors: int
    first_error: str = ""
    #: CPU time this process spent from the first frame to the last.
    cpu_seconds: float = 0.0


class WsProtocolError(Exception):
    """A server sent something other than the expected frames."""


def check_frame_headers(chunk: bytes, offset: int) -> bool:
    """Every frame header byte in ``chunk`` is right; ``offset``: stream bytes before it.

    All frames have the same size, so header bytes sit at fixed positions modulo
    :data:`FRAME_SIZE`; slicing checks them at C speed, whatever the chunking.
    """
    for i, expected in enumerate(FRAME_HEADER):
        start = (i - offset) % FRAME_SIZE
        found = chunk[start::FRAME_SIZE]
        if found.count(expected) != len(found):
            return False
    return True


class WsReader:
    """One raw WebSocket client connection: handshake, then check and count frames."""

    def __init__(self, port: int, frames: int) -> None:
        self.expected_bytes = frames * FRAME_SIZE
        self.last_payload = frame_payload(frames - 1)
        self.received = 0
        self.tail = b""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handshake(self) -> None:
        """Send the opening handshake and check the 101 answer (RFC 6455 §4)."""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n"
            f"connection: Upgrade\r\nsec-websocket-key: {key}\r\n"
            f"sec-websocket-version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WsProtocolError("connection closed during the handshake")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise WsProtocolError(f"handshake refused: {head[:200]!r}")
        self.sock.setblocking(False)
        if rest:
            self.feed(rest)

    def feed(self, data: bytes) -> bool:
        """Check and count received bytes; True once every frame is in."""
        if not check_frame_headers(data, self.received):
            raise WsProtocolError(f"bad frame header after {self.received} bytes")
        self.received += len(data)
        self.tail = data[-FRAME_SIZE:] if len(data) >= FRAME_SIZE else self.tail + data
        if self.received > self.expected_bytes:
            raise WsProtocolError(f"{self.received} bytes, {self.expected_bytes} expected")
        if self.received < self.expected_bytes:
            return False
        if self.tail[-FRAME_PAYLOAD:] != self.last_payload:
            raise WsProtocolError(f"the last frame is not the last payload: {self.tail!r}")
        return True


#: Seconds a client process sleeps between two rounds of reads. Reading lazily lets
#: frames pile up in the kernel, so one recv() takes many frames: the clients stay
#: cheap, and the figure measures the server rather than its clients.
READ_PAUSE = 0.03


def read_broadcast(readers: list[WsReader], deadline: float) -> WsClientResult:
    """Read until every connection has every frame (or the deadline)."""
    poller = select.epoll()
    by_fd = {r.sock.fileno(): r for r in readers}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    completed = 0
    cpu_first = done_at = 0.0
    try:
        while completed < len(readers) and time.monotonic() < deadline:
            for fd, _ in poller.poll(0.1):
                reader = by_fd[fd]
                data = reader.sock.recv(65536)
                if not data:
                    raise WsProtocolError(f"connection closed after {reader.received} bytes")
                if not cpu_first:
                    cpu_first = time.process_time()
                if reader.feed(data):
                    poller.unregister(fd)
                    completed += 1
                    done_at = time.monotonic()
            time.sleep(READ_PAUSE)
    except (OSError, WsProtocolError) as exc:
        return WsClientResult(len(readers), completed, done_at, 1, repr(exc))
    finally:
        poller.close()
    cpu = time.process_time() - cpu_first
    if completed < len(readers):
        missing = f"only {completed} of {len(readers)} connections got every frame in time"
        return WsClientResult(len(readers), completed, done_at, 1, missing, cpu)
    return WsClientResult(len(readers), completed, done_at, 0, "", cpu)


def _ws_client_process(spec: WsClientSpec, results: Connection) -> None:
    readers: list[WsReader] = []
    try:
        for _ in range(spec.connections):
            reader = WsReader(spec.port, spec.frames)
            readers.append(reader)
            reader.handshake()
        result = read_broadcast(readers, spec.deadline)
    except (OSError, WsProtocolError) as exc:
        result = WsClientResult(spec.connections, 0, 0.0, 1, f"clients failed: {exc!r}")
    finally:
        for reader in readers:
            reader.sock.close()
    results.send(result)


def measure_ws(stack: str, clients: int, frames: int, processes: int, timeout: float) -> Figure:
    with running_server(stack, clients, frames) as (process, announcements, port):
        deadline = time.monotonic() + START_TIMEOUT + timeout
        workers = Workers()
        for n in split_connections(clients, processes):
            workers.start(_ws_client_process, WsClientSpec(port, n, frames, deadline))
        start = announcements.next(START_TIMEOUT)
        meter = CpuMeter({"server": [process.pid]})
        meter.start()
        results: list[WsClientResult] = workers.results(START_TIMEOUT + timeout + 10)
        meter.stop()
        meter.add("clients", sum(r.cpu_seconds for r in results))
        server_cpu = process_cpu_seconds(process.pid) - float(start["cpu"])
    for result in results:
        if result.errors or result.completed != result.connections:
            raise AssertionError(f"{stack}: {result.errors} errors; first: {result.first_error}")
    elapsed = max(r.done_at for r in results) - float(start["start"])
    deliveries = clients * frames
    return Figure(
        "ws_broadcast",
        stack,
        deliveries / elapsed,
        "deliveries/s",
        deliveries,
        elapsed,
        round(1e6 * server_cpu / deliveries, 2),
        meter.steal_pct,
        meter.cpu_pct,
        {
            "clients": clients,
            "frames": frames,
            "payload_bytes": FRAME_PAYLOAD,
            "client_processes": processes,
            "client_cpu_us_per_delivery": round(
                1e6 * sum(r.cpu_seconds for r in results) / deliveries, 2
            ),
        },
    )


# ---------------------------------------------------------------------- main


def _human(figure: Figure) -> str:
    cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in figure.cpu_pct.items())
    per = "request" if figure.figure == "http_echo" else "delivery"
    return (
        f"{figure.figure:<12} {figure.stack:<18} {figure.rate:>10,.0f} {figure.unit:<13} "
        f"server CPU {figure.server_cpu_us:6.2f} us/{per}  "
        f"({figure.count:,} in {figure.window_s:.1f} s; steal {figure.steal_pct:.1f}%; "
        f"CPU (% of a core): {cpu})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="HTTP echo and WebSocket broadcast on the hub's stack, uvicorn, "
        "starlette and websockets."
    )
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the comparison (the default)")
    run.add_argument("--duration", type=float, default=6.0, help="HTTP seconds measured")
    run.add_argument("--warmup", type=float, default=1.5, help="HTTP seconds before that")
    run.add_argument("--connections", type=int, default=32, help="HTTP connections")
    run.add_argument("--load-processes", type=int, default=2)
    run.add_argument("--clients", type=int, default=1000, help="WebSocket clients")
    run.add_argument("--client-processes", type=int, default=4)
    run.add_argument("--frames", type=int, default=500, help="frames broadcast")
    run.add_argument("--ws-timeout", type=float, default=60.0, help="per WebSocket stack")
    run.add_argument("--only", choices=["http", "ws"], help="run one of the two tests")
    run.add_argument("--json-out", type=Path, help="also append the JSON lines here")
    child = commands.add_parser("serve", help="(internal) run one server")
    child.add_argument("stack", choices=sorted({*HTTP_STACKS, *WS_STACKS}))
    child.add_argument("clients", type=int)
    child.add_argument("frames", type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["run"])
    if args.command == "serve":
        serve(args.stack, args.clients, args.frames)
        return 0
    started = time.monotonic()
    facts = machine_facts()
    for package in ("uvicorn", "starlette"):
        facts[package] = version(package)
    figures = []
    if args.only in (None, "http"):
        for stack in HTTP_STACKS:
            figure = measure_http(
                stack, args.duration, args.warmup, args.connections, args.load_processes
            )
            print(_human(figure), flush=True)
            figures.append(figure)
    if args.only in (None, "ws"):
        for stack in WS_STACKS:
            figure = measure_ws(
                stack, args.clients, args.frames, args.client_processes, args.ws_timeout
            )
            print(_human(figure), flush=True)
            figures.append(figure)
    facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"hub {facts['hub_revision']}; machine: {facts['cpu']}, {facts['cores']} cores, "
        f"Linux {facts['kernel']}, "
        f"Python {facts['python']}, uvloop {facts['uvloop']}, httptools {facts['httptools']}, "
        f"websockets {facts['websockets']}, uvicorn {facts['uvicorn']}, "
        f"starlette {facts['starlette']}; {facts['date']}; load average {facts['loadavg']} "
        f"at start, {facts['loadavg_end']} at end; elapsed {time.monotonic() - started:.0f} s"
    )
    emit({"bench": "stacks", "figure": "machine", **facts}, args.json_out)
    for figure in figures:
        emit({"bench": "stacks", "date": facts["date"], **asdict(figure)}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
