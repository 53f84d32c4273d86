"""The composition root: :class:`Hub` builds every component and runs their loops.

Nothing else in ``hub/`` receives the ``Hub``: each component is given only what it
uses (settings groups, the store, the clock, a few collaborators), so its dependencies
read off its constructor. docs/architecture.md draws the result::

    async with await Store.connect(url, keys, settings.log) as store:
        async with Hub(settings, store) as hub:
            print(hub.port)
            await anyio.sleep_forever()

:class:`Hub` is an async context manager that owns one anyio task group; every
long-lived loop (ingest, one delta-log tail per partition, runtime-config refresh,
token cache, directory, connectors, compat metrics, keepalive, checkpoints) and every
connection task runs in it.
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol

import anyio

from . import __version__
from .api.admin import AdminApi
from .api.events import EventsApi
from .api.http_api import HttpApi
from .api.metrics import MetricsApi
from .api.namespaces import NamespacesApi
from .api.openapi import OpenApiDocument
from .api.openapi_ops import CORE_OPERATIONS, CORE_SCHEMAS
from .api.openapi_stream import STREAM_OPERATIONS
from .api.state import StateApi
from .api.static import StaticFiles
from .api.stream import StreamApi
from .connectors import ConnectorsExtension
from .engine.directory import DirectoryKeeper
from .engine.expiry import ExpirySweeper
from .engine.fanout import Fanout
from .engine.ingest import Ingest
from .engine.metrics import HubMetrics
from .engine.publish import PublishPolicy, purge_namespace
from .engine.runtime import RuntimeConfig
from .engine.tenancy import Tenancy
from .mcp.http import McpExtension
from .store import Registry
from .store.expiry import LeaseTable
from .transport.native_ws import NativeContext
from .transport.server import Gateway
from .transport.sse import SseStreams
from .wire.envelope import EventLimits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

    from anyio.abc import TaskGroup

    from .api.openapi import JsonObject, Operations
    from .api.router import Route
    from .config import Settings
    from .store import Store

__all__ = ["Extension", "Hub"]

#: Hosts that mean "every interface".
ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})

logger = logging.getLogger("hub.gateway")


class Extension(Protocol):
    """A feature plugged into the hub: routes, plus one long-lived task."""

    def routes(self) -> list[Route]:
        """The feature's HTTP routes (served after the built-in ones)."""
        ...

    def openapi(self) -> tuple[Operations, Mapping[str, JsonObject]]:
        """The OpenAPI operations of :meth:`routes`, by ``(template, method)``, and
        the shared schemas they refer to (``GET /openapi.json`` serves them)."""
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
        self.metrics = HubMetrics()
        self.ingest = Ingest(
            store,
            max_batch=settings.ingest.max_batch,
            queue_size=settings.ingest.queue_size,
            clock=clock,
            metrics=self.metrics,
        )
        try:
            self._build(settings, store, clock)
        except BaseException:
            self.ingest.close()  # nothing will run it: free its streams now
            raise
        self._tg: TaskGroup | None = None
        self._stack = AsyncExitStack()
        #: Shutting down: ``/readyz`` answers 503 (set by :meth:`begin_shutdown`).
        self.stopping = False

    def _build(self, settings: Settings, store: Store, clock: Callable[[], float]) -> None:
        gateway = settings.gateway
        self.fanout = Fanout(store, read_count=settings.fanout.read_count)
        self.runtime = RuntimeConfig(store, settings.runtime)
        self.registry = Registry(store)
        self.tenancy = Tenancy(self.registry, gateway, self.runtime)
        limits = EventLimits(
            max_properties=gateway.max_properties,
            max_value_bytes=gateway.max_value_bytes,
            max_depth=gateway.max_nesting_depth,
        )
        self.policy = PublishPolicy(limits, self.tenancy, self.metrics, clock)
        self.directory = DirectoryKeeper(
            store, self.ingest, self.registry, auth_enabled=gateway.auth_enabled, clock=clock
        )
        self.connectors = ConnectorsExtension(
            settings.connectors,
            gateway,
            store=store,
            ingest=self.ingest,
            policy=self.policy,
            clock=clock,
            taps_dir=settings.redis.data_dir / "taps",
        )
        #: ``/mcp``: the MCP server on this hub (docs/mcp.md); REST calls in-process.
        self.mcp = McpExtension(
            gateway, lambda request: self.api.handle(request), lambda: self.port
        )
        self.extensions: list[Extension] = [self.connectors, self.mcp]
        #: Deletes entities whose lease ran out (docs/semantics.md, "Leases").
        self.expiry = ExpirySweeper(LeaseTable(store), settings.leases, self.metrics, clock)
        native = NativeContext(
            gateway=gateway,
            fanout_settings=settings.fanout,
            policy=self.policy,
            store=store,
            ingest=self.ingest,
            fanout=self.fanout,
            tenancy=self.tenancy,
            spawn=self.spawn,
        )
        #: ``GET /api/stream``: subscriptions as Server-Sent Events (docs/sse.md).
        self.streams = SseStreams(
            native,
            heartbeat=settings.fanout.sse_heartbeat_interval,
            retry_ms=settings.fanout.sse_retry_ms,
        )
        self.api = HttpApi(self.runtime, self._routes())
        self.gateway = Gateway(
            gateway,
            settings.fanout,
            api=self.api,
            store=store,
            fanout=self.fanout,
            tenancy=self.tenancy,
            metrics=self.metrics,
            native=native,
            clock=clock,
            spawn=self.spawn,
            streams=self.streams,
        )

    def _routes(self) -> list[Route]:
        """The route table, in resolution order (see hub/api/router.py)."""
        settings, store = self.settings, self.store
        gateway = settings.gateway
        events = EventsApi(store, self.ingest, self.policy, self.tenancy, gateway)
        state = StateApi(store, self.ingest, self.policy, self.tenancy, gateway)
        admin = AdminApi(store, self.runtime, self.tenancy, lambda: self.stopping)
        namespaces = NamespacesApi(
            self.registry, self.tenancy, store, gateway, self.purge_namespace, self.clock
        )
        metrics = MetricsApi(
            self.metrics,
            lambda: self.gateway.statistics(),
            self.fanout,
            self.ingest,
            self.tenancy,
            worker=gateway.worker,
        )
        operations = {**CORE_OPERATIONS, **STREAM_OPERATIONS}
        schemas = dict(CORE_SCHEMAS)
        for extension in self.extensions:
            extra_operations, extra_schemas = extension.openapi()
            operations.update(extra_operations)
            schemas.update(extra_schemas)
        #: ``GET /openapi.json``: the document of this very table (read when served).
        self.openapi = OpenApiDocument(
            lambda: self.api.router.templates(), operations, schemas, version=__version__
        )
        routes = [
            *events.routes(),
            *state.routes(),
            *StreamApi(self.streams, self.tenancy).routes(),
            *admin.routes(),
            *namespaces.routes(),
            *metrics.routes(),
            *self.openapi.routes(),
        ]
        for extension in self.extensions:
            routes += extension.routes()
        return routes + StaticFiles().routes()

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
                ("lease expiry", self.expiry.run),
                ("compat metrics", self.gateway.metrics_loop),
                ("keepalive", self.gateway.keepalive_loop),
                ("checkpoints", self.gateway.checkpoint_loop),
            ]
            loops += [(type(e).__name__, e.run) for e in self.extensions]
            for name, run in loops:
                self._tg.start_soon(_supervised, name, run)
            with anyio.fail_after(10):
                await self.fanout.ready.wait()
            await self.gateway.listen()
        except BaseException:
            await self._shutdown()
            raise
        self._announce()
        return self

    def _announce(self) -> None:
        """Say where everything is, and warn of an open hub on every interface."""
        gateway = self.settings.gateway
        host = gateway.host
        logger.info("listening on http://%s:%d", host, self.port)
        shown = "localhost" if host in ALL_INTERFACES else host
        if ":" in shown:
            shown = f"[{shown}]"
        base = f"{shown}:{self.port}"
        logger.info(
            "dashboard http://%s/ · REST http://%s/api · WebSocket ws://%s/api/ws · "
            "metrics http://%s/metrics",
            base,
            base,
            base,
            base,
        )
        if host in ALL_INTERFACES and not gateway.auth_enabled:
            logger.warning(
                "listening on every interface with auth off: anyone who can reach port "
                "%d can read and write every entity. Set FLUX_HOST=127.0.0.1 (or "
                "--host), or FLUX_AUTH_ENABLED=true (docs/tenancy.md)",
                self.port,
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    def begin_shutdown(self) -> None:
        """Answer 503 on ``/readyz`` from now on, still serving everything else (the
        drain: load balancers stop routing here before the listener closes)."""
        self.stopping = True

    async def _shutdown(self) -> None:
        self.stopping = True
        await self.gateway.close()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        self._tg = None

    @property
    def port(self) -> int:
        """The TCP port the hub listens on (useful with port 0)."""
        return self.gateway.port

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the hub's task group; its failure is logged, never raised."""
        assert self._tg is not None
        self._tg.start_soon(_guarded, fn)

    async def purge_namespace(self, name: str) -> int:
        """Delete every entity of a namespace (tombstones: subscribers hear of it).

        Returns:
            How many entities were deleted.
        """
        return await purge_namespace(self.store, self.ingest, name, self.policy.now_ms)

    async def metrics_message(self) -> bytes:
        """A compat ``metrics_update`` with cluster-wide figures."""
        return await self.gateway.metrics_message()


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
