"""The hub process: gateway, ingest and fan-out over one :class:`~hub.store.Store`.

:class:`Hub` is an async context manager that owns one anyio task group; every
long-lived loop (ingest, one delta-log tail per partition, runtime-config refresh,
compat metrics, WebSocket keepalive) and every request handler runs in it::

    async with await Store.connect(url, keys, settings.log) as store:
        async with Hub(settings, store) as hub:
            print(hub.port)
            await anyio.sleep_forever()
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol

import anyio

from .api.metrics import HubMetrics, render
from .api.namespaces import NamespacesApi
from .api.rest import MethodNotAllowed, RestApi, make_tombstone
from .api.static import StaticFiles
from .connectors import ConnectorsExtension
from .engine.auth import BearerProblem, read_bearer
from .engine.directory import DirectoryKeeper
from .engine.fanout import Fanout
from .engine.ingest import Ingest
from .engine.runtime import RuntimeConfig
from .engine.tenancy import Tenancy
from .errors import LogUnavailable
from .store import Registry
from .transport.compat_ws import CompatSession
from .transport.http import HttpConnection, Request, Response, error_response
from .transport.native_ws import NativeSession
from .transport.ws import WebSocket, handshake
from .wire.codec import JSON, MSGPACK, codec_for
from .wire.compat import Metrics, metrics_message
from .wire.framing import encode_frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from anyio.abc import TaskGroup

    from .config import Settings
    from .store import Store

__all__ = ["Extension", "Hub"]

logger = logging.getLogger("hub.gateway")

WS_PATH = "/api/ws"
#: Seconds between keepalive pings; a connection silent for two intervals is closed.
PING_INTERVAL = 20.0
#: Flux: events/s is measured over the last 5 s; active publishers over 10 s.
RATE_WINDOW = 5.0
PUBLISHER_WINDOW = 10.0
#: Seconds given to open connections to close at shutdown.
SHUTDOWN_GRACE = 2.0


class Extension(Protocol):
    """A feature plugged into the hub: routes, plus one long-lived task."""

    def mount(self) -> None:
        """Register routes (``hub.rest.mount``); called once, before serving."""
        ...

    async def run(self) -> None:
        """Run in the hub's task group until cancelled (may return at once)."""
        ...


class Hub:
    """One hub process. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        gateway = settings.gateway
        self.request_timeout = gateway.request_timeout
        self.keepalive_timeout = gateway.keepalive_timeout
        self.max_body_bytes = gateway.max_body_bytes
        self.metrics = HubMetrics()
        self.ingest = Ingest(
            store,
            max_batch=settings.ingest.max_batch,
            queue_size=settings.ingest.queue_size,
            clock=clock,
            metrics=self.metrics,
        )
        self.fanout = Fanout(store, read_count=settings.fanout.read_count)
        self.fanout.on_gap = self._delta_gap
        self.runtime = RuntimeConfig(store, settings.runtime)
        self.registry = Registry(store)
        self.tenancy = Tenancy(self.registry, gateway, self.runtime)
        self.rest = RestApi(
            store,
            self.ingest,
            self.runtime,
            self.tenancy,
            gateway,
            clock=clock,
            metrics=self.metrics,
        )
        self.rest.mount("/metrics", _MetricsRoute(self))
        self.rest.mount("/api/namespaces", NamespacesApi(self))
        self.directory = DirectoryKeeper(self)
        try:
            self.extensions: list[Extension] = [ConnectorsExtension(self)]
            for extension in self.extensions:
                extension.mount()
        except BaseException:
            self.ingest.close()  # nothing will run it: free its streams now
            raise
        self.rest.mount("/", StaticFiles())
        self.connections: set[HttpConnection] = set()
        self._per_client: dict[str, int] = {}
        self.websockets: set[WebSocket] = set()
        self.native_sessions: set[NativeSession] = set()
        self._server: asyncio.Server | None = None
        self._tg: TaskGroup | None = None
        self._stack = AsyncExitStack()
        self._event_totals: deque[tuple[float, int]] = deque(maxlen=64)
        self._all_closed: anyio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Hub:
        try:
            self._tg = await self._stack.enter_async_context(anyio.create_task_group())
            await self.runtime.refresh()
            loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("ingest", self.ingest.run),
                ("fan-out", self.fanout.run),
                ("runtime config", self.runtime.run),
                ("token cache", self.tenancy.run),
                ("directory", self.directory.run),
                ("compat metrics", self._metrics_loop),
                ("keepalive", self._keepalive_loop),
                ("checkpoints", self._checkpoint_loop),
            ]
            loops += [(type(e).__name__, e.run) for e in self.extensions]
            for name, run in loops:
                self._tg.start_soon(_supervised, name, run)
            with anyio.fail_after(10):
                await self.fanout.ready.wait()
            gateway = self.settings.gateway
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: HttpConnection(self),
                gateway.host,
                gateway.port,
                backlog=2048,
                reuse_address=True,
            )
        except BaseException:
            await self._shutdown()
            raise
        logger.info("listening on http://%s:%d", self.settings.gateway.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for ws in list(self.websockets):
            ws.close(1001, "server shutting down")
        for conn in list(self.connections):
            if conn.websocket is None:
                conn.close()
        if self.connections:
            self._all_closed = anyio.Event()
            with anyio.move_on_after(SHUTDOWN_GRACE):
                await self._all_closed.wait()
        for conn in list(self.connections):
            conn.abort()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        self._tg = None

    @property
    def port(self) -> int:
        """The TCP port the hub listens on (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ App protocol (http.py)

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        return self.rest.body_limit(method, path)

    async def handle(self, request: Request) -> Response:
        return await self.rest.handle(request)

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        assert self._tg is not None
        self._tg.start_soon(_guarded, fn)

    def connection_opened(self, conn: HttpConnection) -> str | None:
        gateway = self.settings.gateway
        if len(self.connections) >= gateway.max_connections:
            logger.warning(
                "connection limit (%d) reached: refusing %s", len(self.connections), conn.client
            )
            return "too many connections: try again later"
        address = conn.client.rpartition(":")[0]
        count = self._per_client.get(address, 0)
        if count >= gateway.max_connections_per_client:
            logger.warning("%s has %d connections open: refusing another", address, count)
            return "too many connections from your address: close some and try again"
        self._per_client[address] = count + 1
        self.connections.add(conn)
        return None

    def connection_closed(self, conn: HttpConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            address = conn.client.rpartition(":")[0]
            count = self._per_client.get(address, 1) - 1
            if count > 0:
                self._per_client[address] = count
            else:
                self._per_client.pop(address, None)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def upgrade(self, request: Request, transport: asyncio.Transport) -> WebSocket | None:
        if request.path != WS_PATH:
            error = error_response(404, f"no WebSocket endpoint at {request.path}; use {WS_PATH}")
            transport.write(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(error.body), error.body)
            )
            return None
        max_frame = self.settings.gateway.max_frame_bytes
        protocol = handshake(
            request,
            transport,
            max_frame_bytes=max_frame,
            subprotocols=[JSON.subprotocol, MSGPACK.subprotocol],
        )
        if protocol is None:
            return None
        ws = WebSocket(
            transport,
            protocol,
            client=request.client,
            max_send_buffer=self.settings.fanout.max_send_buffer_bytes,
            on_closed=self._websocket_closed,
        )
        codec = codec_for(protocol.subprotocol)
        token = _request_token(request)
        if codec is None:
            if self.tenancy.private_reads:
                compat = CompatSession(ws, self.fanout, scope=None)
                ws.session = compat
                self.spawn(lambda: self._admit_compat(compat, token))
            else:
                ws.session = CompatSession(ws, self.fanout)
        else:
            # Native clients get an error frame for a frame over the limit; only one
            # far over it (4x, where buffering it would cost) ends the connection.
            protocol.max_message_size = 4 * max_frame
            conflate = self.settings.fanout.conflate_after_bytes
            transport.set_write_buffer_limits(high=conflate, low=conflate // 4)
            session = NativeSession(ws, self, codec, token)
            ws.session = session
            self.native_sessions.add(session)
        self.websockets.add(ws)
        return ws

    async def purge_namespace(self, name: str) -> int:
        """Delete every entity of a namespace (tombstones: subscribers hear of it).

        Returns:
            How many entities were deleted.
        """
        deleted = 0
        prefix = name + "/"
        while True:
            ids = await self.store.list_ids(prefix, 1000)
            if not ids:
                return deleted
            now = math.floor(self.clock() * 1000)
            results = await self.ingest.submit([make_tombstone(i, now) for i in ids])
            deleted += sum(1 for r in results if r.delta_position)

    def _delta_gap(self, partition: int) -> None:
        """Deltas were trimmed before this hub read them: nobody may miss them silently."""
        for session in list(self.native_sessions):
            session.reset_all("the hub fell behind the delta log and missed updates")
        for compat in list(self.fanout.compat_sessions):
            compat.ws.close(
                1013, "the hub fell behind and missed updates; reconnect and re-read the state"
            )

    async def _admit_compat(self, session: CompatSession, token: str | BearerProblem) -> None:
        """Under private reads, a compat connection sees only its token's namespace."""
        principal = await self.tenancy.principal(token if isinstance(token, str) else None)
        scope = principal.read_prefix
        if scope is None:
            session.ws.close(
                1008,
                "private reads: send a namespace token (Authorization: Bearer, or ?token=)",
            )
        elif not session.ws.closed:
            session.activate(scope)

    def _websocket_closed(self, ws: WebSocket) -> None:
        self.websockets.discard(ws)
        self.metrics.closes[ws.protocol.close_code or 1006] += 1
        self.metrics.frames_sent_closed["native" if ws.subprotocol else "compat"] += ws.frames_sent
        if isinstance(ws.session, NativeSession):
            self.metrics.conflations_closed += ws.session.conflated
        if isinstance(ws.session, NativeSession):
            self.native_sessions.discard(ws.session)

    # ------------------------------------------------------------------ periodic work

    async def _metrics_loop(self) -> None:
        """Send ``metrics_update`` to every compat connection (Flux: every 2 s)."""
        interval = self.settings.fanout.metrics_interval
        while True:
            try:
                message = await self.metrics_message()
            except LogUnavailable as exc:
                logger.debug("metrics skipped: %s", exc)
            else:
                frame = encode_frame(message)
                for session in list(self.fanout.compat_sessions):
                    session.ws.write_frames(frame, 1)
            await anyio.sleep(interval)

    async def metrics_message(self) -> bytes:
        """Build a ``metrics_update`` with cluster-wide figures."""
        entities, events = await self.store.counts()
        now = anyio.current_time()
        self._event_totals.append((now, events))
        rate = 0.0
        past = [(t, n) for t, n in self._event_totals if now - t >= RATE_WINDOW - 0.5]
        if past:
            t0, n0 = past[-1]
            rate = round((events - n0) / max(now - t0, 1e-9), 2)
        metrics = Metrics(
            entities_total=entities,
            events_total=events,
            events_rate_per_second=rate,
            websocket_connections=len(self.websockets),
            publishers_active=self.fanout.active_sources(now, PUBLISHER_WINDOW),
        )
        return metrics_message(metrics, math.floor(self.clock() * 1000))

    async def _checkpoint_loop(self) -> None:
        """Tell live native subscriptions how far the hub has read, so that a resume
        after a quiet spell starts from a recent position."""
        while True:
            await anyio.sleep(self.settings.fanout.checkpoint_interval)
            for session in list(self.native_sessions):
                session.checkpoint()

    async def _keepalive_loop(self) -> None:
        """Ping every WebSocket; close the ones that stopped answering."""
        while True:
            await anyio.sleep(PING_INTERVAL)
            now = asyncio.get_running_loop().time()
            for ws in list(self.websockets):
                if now - ws.last_seen > 2 * PING_INTERVAL:
                    ws.close(1011, "keepalive ping timeout")
                else:
                    ws.ping()


class _MetricsRoute:
    """``GET /metrics``: Prometheus text format (open, like Flux's admin GET; no secrets)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def match(self, method: str, path: str) -> Callable[[Request], Awaitable[Response]] | None:
        if path != "/metrics":
            return None
        if method != "GET":
            raise MethodNotAllowed(f"method {method} not allowed on /metrics (allowed: GET)", "GET")
        return self._get

    async def _get(self, request: Request) -> Response:
        return render(self.hub)


def _request_token(request: Request) -> str | BearerProblem:
    """A WebSocket client's token: the Authorization header, else ``?token=``
    (browsers cannot set headers on a WebSocket); else what was wrong."""
    token = read_bearer(request.headers.get("authorization"))
    if isinstance(token, str):
        return token
    return request.query.get("token") or token


async def _supervised(name: str, fn: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived loop; if it fails, say so before the hub stops.

    A failure here is a bug: the task group then cancels everything, and without this
    the log would show only the cancellations, not their cause.
    """
    try:
        await fn()
    except Exception:
        logger.critical("the hub's %s loop failed; the hub stops", name, exc_info=True)
        raise


async def _guarded(fn: Callable[[], Awaitable[None]]) -> None:
    # A handler's failure must never cancel the hub's task group.
    try:
        await fn()
    except Exception:
        logger.exception("unhandled error in a connection task")
