"""``flux-core/directory``: the entity that lists the world's namespaces.

The Flux skill's first steps read it. Its properties::

    namespaces       {<name>: {"entity_count": n, "last_updated": "<RFC 3339>" | null}}
    namespace_count  number of namespaces listed
    total_entities   live entities outside flux-core (namespaced or not)
    updated_at       when this version of the directory was written

Namespaces are the texts before the first ``/`` of live entity ids, plus (in auth
mode) every registered namespace, even empty. The counts come from per-namespace
counters the reduce script keeps, so building the directory costs one read per
partition, whatever the number of entities.

One hub at a time writes it (a Redis lease, renewed every interval and lost 3
intervals after its holder stops); it is published through the reducer like any
event, so it is read and subscribed to like any entity, at most
:data:`INTERVAL` seconds behind. Clients cannot write it (the namespace is reserved).
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from ..core.timefmt import format_ms
from ..errors import Closed, HubError, LogUnavailable
from ..store.batches import NamespaceTotals
from ..wire.envelope import parse_event
from ..wire.names import RESERVED_NAMESPACE
from .ids import uuid7

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store import Registry, Store
    from .ingest import Ingest

__all__ = ["DIRECTORY_ID", "DirectoryKeeper"]

logger = logging.getLogger("hub.directory")

DIRECTORY_ID = f"{RESERVED_NAMESPACE}/directory"
INTERVAL = 2.0
LEASE = "directory"


class DirectoryKeeper:
    """Keeps ``flux-core/directory`` current (run it in the hub's task group)."""

    def __init__(
        self,
        store: Store,
        ingest: Ingest,
        registry: Registry,
        *,
        auth_enabled: bool,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.registry = registry
        #: Public mode: registered namespaces are listed even while empty.
        self.auth_enabled = auth_enabled
        self.clock = clock
        self.holder = f"hub-{uuid.uuid4().hex[:12]}"
        self._last: dict[str, Any] | None = None
        self.writes = 0

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (LogUnavailable, Closed) as exc:
                logger.debug("directory not refreshed: %s", exc)
            except HubError:
                logger.exception("directory not refreshed")
            await anyio.sleep(INTERVAL)

    async def refresh(self) -> bool:
        """Write the directory if this hub holds the lease and it changed."""
        store = self.store
        if not await store.lease(LEASE, self.holder, int(INTERVAL * 3000)):
            self._last = None  # another hub writes it; start afresh if we take over
            return False
        body = await self.build()
        if body == self._last:
            return False
        now = math.floor(self.clock() * 1000)
        event = {
            "stream": "flux.core",
            "source": "hub",
            "timestamp": now,
            "payload": {
                "entity_id": DIRECTORY_ID,
                "properties": {**body, "updated_at": format_ms(now)},
            },
        }
        envelope = parse_event(event, now_ms=now, new_id=lambda: uuid7(now))
        await self.ingest.submit([envelope])
        self._last = body
        self.writes += 1
        return True

    async def build(self) -> dict[str, Any]:
        """The directory's properties, without ``updated_at``."""
        stats = await self.store.namespace_stats()
        total = sum(t.entities for ns, t in stats.items() if ns != RESERVED_NAMESPACE)
        listed = {
            ns: totals
            for ns, totals in stats.items()
            if ns and ns != RESERVED_NAMESPACE and totals.entities > 0
        }
        if self.auth_enabled:
            for name in await self.registry.names():
                listed.setdefault(name, stats.get(name, NamespaceTotals(0, 0)))
        namespaces = {
            ns: {
                "entity_count": totals.entities,
                "last_updated": format_ms(totals.last_update_ms) if totals.last_update_ms else None,
            }
            for ns, totals in sorted(listed.items())
        }
        return {
            "namespaces": namespaces,
            "namespace_count": len(namespaces),
            "total_entities": total,
        }
