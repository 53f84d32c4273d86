"""The gateway: the listening socket and every connection the hub holds open.

:class:`Gateway` is the ``App`` that ``http.HttpConnection`` calls: it admits or refuses
connections (``max_connections`` in all, ``max_connections_per_client`` per address),
bounds the requests whose head is still coming (:mod:`.heads`, against slowloris),
hands requests to the HTTP API, upgrades ``/api/ws`` to a compat or native WebSocket,
and runs the loops that every open WebSocket needs (keepalive pings, native
checkpoints, compat ``metrics_update``). It knows connections, not business rules.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from ..engine.auth import read_bearer
from ..errors import (
    Broken,
    Closed,
    ConfigError,
    LogUnavailable,
    Overloaded,
    ProtocolError,
    close_code_for,
)
from ..wire.codec import JSON, MSGPACK, codec_for
from ..wire.compat import Metrics, metrics_message
from ..wire.framing import encode_frame
from .compat_ws import CompatSession
from .heads import UnfinishedHeads
from .http import HttpConnection, error_response
from .native_ws import NativeSession
from .ws import WebSocket, handshake

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..config import FanoutSettings, GatewaySettings
    from ..engine.auth import BearerProblem
    from ..engine.fanout import Fanout
    from ..engine.metrics import HubMetrics
    from ..engine.tenancy import Tenancy
    from ..store import Store
    from .http import Request, Response
    from .native_ws import NativeContext
    from .sse import SseStatistics

__all__ = ["WS_PATH", "Gateway", "GatewayStatistics", "HttpHandler", "request_token"]

logger = logging.getLogger("hub.gateway")

WS_PATH = "/api/ws"
#: Seconds between keepalive pings; a connection silent for two intervals is closed.
PING_INTERVAL = 20.0
#: Flux: events/s is measured over the last 5 s; active publishers over 10 s.
RATE_WINDOW = 5.0
PUBLISHER_WINDOW = 10.0
#: Seconds given at shutdown to the native publishes already read: each is answered
#: when Redis has applied it. Redis can hold writes for ~2 s on its own (an append-only
#: file's fsync behind on a busy disk), and a publish applied but cut off before its
#: acknowledgement comes back as a duplicate on the next hub.
IN_FLIGHT_GRACE = 10.0
#: Seconds given to open connections to close at shutdown.
SHUTDOWN_GRACE = 2.0


class HttpHandler(Protocol):
    """What the gateway needs of the HTTP API (``hub.api.http_api.HttpApi``)."""

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The body limit of a route and the message of its 413."""
        ...

    async def handle(self, request: Request) -> Response:
        """The response to a request (errors already turned into responses)."""
        ...


class Streams(Protocol):
    """Subscriptions served outside WebSockets (``hub.transport.sse.SseStreams``)."""

    def reset_all(self, reason: str) -> None:
        """The hub missed deltas: every subscription starts over."""
        ...

    def statistics(self) -> SseStatistics: ...


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """Open connections and what they hold, for ``/metrics``."""

    http: int
    compat: int
    native: int
    frames_sent: dict[str, int]
    native_subscriptions: int
    native_requests_queued: int
    held_deltas: int
    conflated_pending: int
    conflations: int
    send_buffer_max: int
    send_buffer_sum: int
    #: Open event streams (``GET /api/stream``), each one connection and one subscription.
    sse: int = 0
    #: Since the start, by cap (``hub``, ``client``): connections refused (503, 429),
    #: and unfinished request heads closed with 408 (slowloris, :mod:`.heads`).
    connections_refused: dict[str, int] = field(default_factory=dict)
    heads_evicted: dict[str, int] = field(default_factory=dict)
    #: Event streams ended since the start, by code (:class:`.sse.SseStatistics`).
    sse_closes: dict[str, int] = field(default_factory=dict)


class Gateway:
    """Connections of one hub process. See the module docstring."""

    def __init__(
        self,
        gateway: GatewaySettings,
        fanout_settings: FanoutSettings,
        *,
        api: HttpHandler,
        store: Store,
        fanout: Fanout,
        tenancy: Tenancy,
        metrics: HubMetrics,
        native: NativeContext,
        clock: Callable[[], float],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        streams: Streams | None = None,
    ) -> None:
        self.settings = gateway
        self.fanout_settings = fanout_settings
        self.request_timeout = gateway.request_timeout
        self.keepalive_timeout = gateway.keepalive_timeout
        self.max_body_bytes = gateway.max_body_bytes
        self.api = api
        self.store = store
        self.fanout = fanout
        self.tenancy = tenancy
        self.metrics = metrics
        self.native = native
        self.clock = clock
        #: Runs a connection task in the hub's task group (its failure is logged).
        self.spawn = spawn
        self.connections: set[HttpConnection] = set()
        #: Connections whose request head has begun and is not complete.
        self.heads: UnfinishedHeads[HttpConnection] = UnfinishedHeads(
            timeout=gateway.header_timeout,
            max_total=gateway.max_unfinished_heads,
            max_per_client=gateway.max_unfinished_heads_per_client,
        )
        self._per_client: dict[str, int] = {}
        #: Connections refused since the start, at the hub's cap and at an address's.
        self.refused: dict[str, int] = {"hub": 0, "client": 0}
        self.websockets: set[WebSocket] = set()
        self.native_sessions: set[NativeSession] = set()
        #: Event streams (``GET /api/stream``): reset with the native sessions on a gap.
        self.streams = streams
        #: Under private reads, the admitted compat sessions' namespace watches.
        self._compat_watches: dict[CompatSession, Callable[[], None]] = {}
        self._server: asyncio.Server | None = None
        self._event_totals: deque[tuple[float, int]] = deque(maxlen=64)
        self._all_closed: anyio.Event | None = None
        fanout.on_gap = self._delta_gap

    # ------------------------------------------------------------------ lifecycle

    async def listen(self) -> None:
        """Open the listening socket (``settings.host``/``port``; port 0 picks one).

        Raises:
            ConfigError: the address cannot be listened on (the port is taken, the
                host is not this machine's); the message says which setting to change.
        """
        loop = asyncio.get_running_loop()
        host, port = self.settings.host, self.settings.port
        try:
            self._server = await loop.create_server(
                lambda: HttpConnection(self, self.heads),
                host,
                port,
                backlog=2048,
                reuse_address=True,
                reuse_port=self.settings.worker > 0 or None,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} is already in use on {host} (another flux serve?); "
                    "choose another with --port or PORT"
                ) from None
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"cannot listen on {host}:{port}: {reason}; check --host/FLUX_HOST and --port/PORT"
            ) from None

    async def close(self) -> None:
        """Stop listening; let what is in flight finish (a request being handled is
        answered, then its connection closes; native publishes already submitted are
        acknowledged); close every WebSocket with 1001; wait a little (docs/scaling.md)."""
        if self._server is not None:
            self._server.close()
        for ws in list(self.websockets):
            ws.transport.pause_reading()  # no new frames: what was read is finished
        with anyio.move_on_after(IN_FLIGHT_GRACE):  # polled: for a few ms, as a rule
            while any(map(_in_flight, self.native_sessions)):  # noqa: ASYNC110
                await anyio.sleep(0.005)
        for session in list(self.native_sessions):
            session.flush()  # acks queued for the next loop turn go out before the close
        closing = Closed("server shutting down")
        for ws in list(self.websockets):
            ws.close(close_code_for(closing), str(closing))
        for conn in list(self.connections):
            if conn.websocket is None:
                conn.shutdown()  # a streamed response says why, then closes
        if self.connections:
            self._all_closed = anyio.Event()
            with anyio.move_on_after(SHUTDOWN_GRACE):
                await self._all_closed.wait()
        for conn in list(self.connections):
            conn.abort()

    @property
    def port(self) -> int:
        """The TCP port listened on (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ App protocol (http.py)

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        return self.api.body_limit(method, path)

    async def handle(self, request: Request) -> Response:
        return await self.api.handle(request)

    def connection_opened(self, conn: HttpConnection) -> str | None:
        if len(self.connections) >= self.settings.max_connections:
            logger.warning(
                "connection limit (%d) reached: refusing %s", len(self.connections), conn.client
            )
            self.refused["hub"] += 1
            return "too many connections: try again later"
        address = conn.client.rpartition(":")[0]
        count = self._per_client.get(address, 0)
        if count >= self.settings.max_connections_per_client:
            logger.warning("%s has %d connections open: refusing another", address, count)
            self.refused["client"] += 1
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
        max_frame = self.settings.max_frame_bytes
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
            max_send_buffer=self.fanout_settings.max_send_buffer_bytes,
            on_closed=self._websocket_closed,
        )
        codec = codec_for(protocol.subprotocol)
        token = request_token(request)
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
            conflate = self.fanout_settings.conflate_after_bytes
            transport.set_write_buffer_limits(high=conflate, low=conflate // 4)
            session = NativeSession(ws, self.native, codec, token)
            ws.session = session
            self.native_sessions.add(session)
        self.websockets.add(ws)
        return ws

    # ------------------------------------------------------------------ events

    def _delta_gap(self, partition: int) -> None:
        """Deltas were trimmed before this hub read them: nobody may miss them silently."""
        for session in list(self.native_sessions):
            session.reset_all("the hub fell behind the delta log and missed updates")
        if self.streams is not None:
            self.streams.reset_all("the hub fell behind the delta log and missed updates")
        gap = Overloaded("the hub fell behind and missed updates; reconnect and re-read the state")
        for compat in list(self.fanout.compat_sessions):
            compat.ws.close(close_code_for(gap), str(gap))

    async def _admit_compat(self, session: CompatSession, token: str | BearerProblem) -> None:
        """Under private reads, a compat connection sees only its token's namespace."""
        principal = await self.tenancy.principal(token if isinstance(token, str) else None)
        scope = principal.read_prefix
        if scope is None:
            refusal = ProtocolError(
                "private reads: send a namespace token (Authorization: Bearer, or ?token=)"
            )
            session.ws.close(close_code_for(refusal), str(refusal))
        elif not session.ws.closed:
            session.activate(scope)
            # Its namespace may be deleted, and the name registered again by someone
            # else: the connection must not go on to show the new owner's entities.
            read = token if isinstance(token, str) else None
            self._compat_watches[session] = self.tenancy.watch(
                lambda: self.spawn(lambda: self._recheck_compat(session, read, scope))
            )

    async def _recheck_compat(self, session: CompatSession, token: str | None, scope: str) -> None:
        """A namespace was deleted: close the connection if its token no longer reads
        what it was admitted to."""
        if session.ws.closed or (await self.tenancy.principal(token)).read_prefix == scope:
            return
        revoked = ProtocolError(f"private reads: this token no longer reads {scope!r}")
        session.ws.close(close_code_for(revoked), str(revoked))

    def _websocket_closed(self, ws: WebSocket) -> None:
        if isinstance(ws.session, CompatSession):
            unwatch = self._compat_watches.pop(ws.session, None)
            if unwatch is not None:
                unwatch()
        self.websockets.discard(ws)
        # The code of whoever closed first: the hub's own (1013, 1001...) even when the
        # client never answered it, else the client's; 1006 with no close frame at all.
        sent = ws.protocol.close_sent
        ours = sent is not None and not ws.protocol.close_rcvd_then_sent
        code = sent.code if sent is not None and ours else ws.protocol.close_code
        self.metrics.closes[code or 1006] += 1
        self.metrics.frames_sent_closed["native" if ws.subprotocol else "compat"] += ws.frames_sent
        if isinstance(ws.session, NativeSession):
            self.metrics.conflations_closed += ws.session.statistics().conflated
            self.native_sessions.discard(ws.session)

    # ------------------------------------------------------------------ periodic work

    async def metrics_loop(self) -> None:
        """Send ``metrics_update`` to every compat connection (Flux: every 2 s)."""
        interval = self.fanout_settings.metrics_interval
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
        totals = await self.store.counts()
        entities, events = totals.entities, totals.events
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

    async def checkpoint_loop(self) -> None:
        """Tell live native subscriptions how far the hub has read, so that a resume
        after a quiet spell starts from a recent position."""
        while True:
            await anyio.sleep(self.fanout_settings.checkpoint_interval)
            for session in list(self.native_sessions):
                session.checkpoint()

    async def keepalive_loop(self) -> None:
        """Ping every WebSocket; close the ones that stopped answering."""
        while True:
            await anyio.sleep(PING_INTERVAL)
            now = asyncio.get_running_loop().time()
            timeout = Broken("keepalive ping timeout")
            for ws in list(self.websockets):
                if now - ws.last_seen > 2 * PING_INTERVAL:
                    ws.close(close_code_for(timeout), str(timeout))
                else:
                    ws.ping()

    def statistics(self) -> GatewayStatistics:
        """Open connections and what they hold (read at scrape time)."""
        frames = dict(self.metrics.frames_sent_closed)
        for ws in self.websockets:
            kind = "native" if ws.subprotocol else "compat"
            frames[kind] = frames.get(kind, 0) + ws.frames_sent
        sessions = [s.statistics() for s in self.native_sessions]
        sizes = [ws.transport.get_write_buffer_size() for ws in self.websockets if ws.open]
        native = len(self.native_sessions)
        websockets = len(self.websockets)
        streams = self.streams.statistics() if self.streams is not None else None
        sse = streams.streams if streams is not None else 0
        return GatewayStatistics(
            http=len(self.connections) - websockets - sse,
            compat=websockets - native,
            native=native,
            frames_sent=frames,
            native_subscriptions=sum(s.subscriptions for s in sessions),
            native_requests_queued=sum(s.requests_queued for s in sessions),
            held_deltas=sum(s.held_deltas for s in sessions)
            + (streams.held_deltas if streams is not None else 0),
            conflated_pending=sum(s.conflated_pending for s in sessions)
            + (streams.conflated_pending if streams is not None else 0),
            conflations=self.metrics.conflations_closed
            + sum(s.conflated for s in sessions)
            + (streams.conflated if streams is not None else 0),
            send_buffer_max=max(sizes, default=0),
            send_buffer_sum=sum(sizes),
            sse=sse,
            connections_refused=dict(self.refused),
            heads_evicted=dict(self.heads.evicted_at),
            sse_closes=streams.closes if streams is not None else {},
        )


def _in_flight(session: NativeSession) -> bool:
    """Whether a native session has requests read and not finished: publishes not yet
    acknowledged, or frames queued or being handled."""
    requests = session.requests
    return bool(len(session.acks) or requests.busy or requests.queue)


def request_token(request: Request) -> str | BearerProblem:
    """A WebSocket client's token: the Authorization header, else ``?token=``
    (browsers cannot set headers on a WebSocket); else what was wrong."""
    token = read_bearer(request.headers.get("authorization"))
    if isinstance(token, str):
        return token
    return request.query.get("token") or token
