"""A local replica of a filter's entities, kept exact from a snapshot plus deltas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .errors import GapError
from .model import Entity, Update

if TYPE_CHECKING:
    from collections.abc import Callable

    from .client import FluxClient, Subscription

__all__ = ["EntityCache"]

logger = logging.getLogger("flux_client")


class EntityCache:
    """Every entity a filter matches, as the hub has it, updated live.

    It applies the protocol's rules and checks them: a delta must start from the
    version held (or create an entity not held). A violation — which the hub promises
    never happens — raises :class:`GapError` to :meth:`wait_until` and :meth:`run`
    callers and counts in :attr:`gaps`, rather than leaving a wrong copy silently.

    Use::

        async with EntityCache(client, prefixes=["crew/"]) as cache:
            await cache.wait_until(lambda entities: "crew/task-7" in entities)
            print(cache.entities["crew/task-7"].properties)
    """

    def __init__(self, client: FluxClient, **filter_: Any) -> None:
        self.client = client
        self.filter = filter_
        #: The replica: entity id -> entity.
        self.entities: dict[str, Entity] = {}
        #: True once the snapshot was applied (and again after each reset).
        self.synced = False
        self.gaps = 0
        self.updates = 0
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._error: BaseException | None = None

    async def __aenter__(self) -> EntityCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Subscribe (with a snapshot) and keep the replica current in a task."""
        self._subscription = await self.client.subscribe(snapshot=True, **self.filter)
        self._task = asyncio.create_task(self.run(), name="flux-entity-cache")

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Apply updates as they come (started by :meth:`start`)."""
        assert self._subscription is not None
        try:
            async for update in self._subscription:
                self.apply(update)
                async with self._changed:
                    self._changed.notify_all()
        except BaseException as exc:
            self._error = exc
            async with self._changed:
                self._changed.notify_all()
            raise

    def apply(self, update: Update) -> None:
        """Apply one update to the replica.

        Raises:
            GapError: the update does not follow what is held.
        """
        self.updates += 1
        if update.kind == "reset":
            self.entities.clear()
            self.synced = False
        elif update.kind == "synced":
            self.synced = True
        elif update.kind == "snapshot":
            assert update.entity is not None
            self.entities[update.entity_id] = update.entity
        elif update.kind == "delta":
            held = self.entities.get(update.entity_id)
            if held is None:
                if not update.created:
                    self._gap(f"delta for {update.entity_id}, which is not held: {update}")
                self.entities[update.entity_id] = Entity(
                    update.entity_id,
                    dict(update.changes),
                    update.version,
                    update.last_updated,
                    update.expires_at,
                )
                return
            # On a `where` subscription, an entity coming back into the view replaces
            # the copy held whatever its version (docs/protocol.md, Value filters).
            if update.base != held.version and not (update.created and "where" in self.filter):
                self._gap(
                    f"{update.entity_id}: held version {held.version}, delta from {update.base}"
                )
            if update.created:
                held.properties = dict(update.changes)
            else:
                held.properties.update(update.changes)
            held.version = update.version
            held.last_updated = update.last_updated
            if update.lease_news:  # (else the lease is as it was)
                held.expires_at = update.expires_at
        elif update.kind == "left":
            self.entities.pop(update.entity_id, None)
        elif update.kind == "deleted":
            held = self.entities.pop(update.entity_id, None)
            if held is None or update.base != held.version:
                self._gap(f"deletion of {update.entity_id} from {update.base}, held {held}")

    def _gap(self, message: str) -> None:
        self.gaps += 1
        raise GapError(message)

    async def wait_until(
        self, predicate: Callable[[dict[str, Entity]], bool], within: float | None = 30
    ) -> None:
        """Wait until ``predicate(entities)`` holds.

        The predicate is only asked of a complete view: once the snapshot has arrived
        (and again after a reset), never of the half-filled replica before it, so it
        may index entities that exist (``entities["crew/task-1"]``).

        Raises:
            TimeoutError: it did not within ``within`` seconds.
            GapError: the replica broke.
        """

        async def wait() -> None:
            async with self._changed:
                while not (self.synced and predicate(self.entities)):
                    if self._error is not None:
                        raise self._error
                    await self._changed.wait()

        await asyncio.wait_for(wait(), within)

    def snapshot(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """``{id: (version, properties)}``, to compare with what the hub shows."""
        return {i: (e.version, dict(e.properties)) for i, e in self.entities.items()}
