"""Presence: an entity kept alive by heartbeats, gone when its owner stops.

The hub deletes an entity published with a ``ttl`` when no event with a ``ttl``
refreshes it in time (docs/semantics.md, "Leases"). A :class:`Heartbeat` publishes an
entity's properties with a ``ttl`` at once and then every ``every`` seconds, until it
is stopped: an agent that crashes, hangs or loses its network disappears within
``ttl`` seconds, with a ``deleted`` (``reason: "expired"``) to every subscriber; one
that stops cleanly deletes its entity at once. docs/presence.md shows the pattern.

Each beat re-publishes the whole property set: it changes no value (subscribers hear
only the new deadline: a delta with no changes that moves ``expires_at``), moves
``lastUpdated`` ("seen now"), and creates the entity again if it expired meanwhile (a
beat that came too late, or a network outage longer than ``ttl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .errors import ClientClosed, FluxError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from .client import FluxClient
    from .model import Ack

__all__ = ["Heartbeat", "SyncHeartbeat"]

logger = logging.getLogger("flux_client")

#: The hub's longest ``ttl`` (docs/limits.md).
MAX_TTL = 30 * 24 * 3600


class Heartbeat:
    """Keeps ``entity_id`` alive while it runs. Use ``async with``; see the module
    docstring.

    Args:
        client: the client that publishes.
        entity_id: the entity.
        properties: published with every beat (:meth:`update` changes them).
        ttl: seconds the entity lives after each beat (0 < ttl <= 30 days).
        every: seconds between beats; default ``ttl / 3``, so that two beats in a row
            may be lost or late before the entity expires. Must be less than ``ttl``.
        delete_on_exit: delete the entity when the heartbeat stops (default); False
            leaves it to expire ``ttl`` seconds after the last beat.
        stream: the events' ``stream``.

    Raises:
        ValueError: ``ttl`` or ``every`` out of range, or no property to publish.
    """

    def __init__(
        self,
        client: FluxClient,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        ttl: float,
        every: float | None = None,
        delete_on_exit: bool = True,
        stream: str = "presence",
    ) -> None:
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_TTL} seconds, not {ttl}")
        if not properties:
            # An event without properties creates nothing: the entity would never exist.
            raise ValueError("a heartbeat needs at least one property to publish")
        every = ttl / 3 if every is None else every
        if not 0 < every < ttl:
            raise ValueError(f"every must be more than 0 and less than ttl ({ttl}), not {every}")
        self.client = client
        self.entity_id = entity_id
        self.properties = dict(properties)
        self.ttl = ttl
        self.every = every
        self.delete_on_exit = delete_on_exit
        self.stream = stream
        #: Beats the hub acknowledged.
        self.beats = 0
        #: The last beat's failure, until a beat succeeds again (the heartbeat goes on).
        self.error: FluxError | TimeoutError | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> Ack:
        """Publish the first beat (its errors are raised), then beat in a task.

        Raises:
            PublishError: the hub refused the event (a bad ``ttl``, a token that may not
                write the entity...).
        """
        ack = await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"flux-heartbeat {self.entity_id}")
        return ack

    async def stop(self) -> None:
        """Stop beating; then delete the entity, unless ``delete_on_exit`` is False."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.delete_on_exit and not self.client.closed:
            with contextlib.suppress(ClientClosed):
                await self.client.delete(self.entity_id)

    async def beat(self) -> Ack:
        """Publish the properties with the ``ttl`` now."""
        ack = await self.client.publish(
            self.entity_id, self.properties, stream=self.stream, ttl=self.ttl
        )
        self.beats += 1
        self.error = None
        return ack

    async def update(self, properties: Mapping[str, Any]) -> Ack:
        """Merge ``properties`` into what the beats publish, and publish them now."""
        self.properties.update(properties)
        return await self.beat()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.every
        while True:
            await asyncio.sleep(max(0.0, next_beat - loop.time()))
            next_beat += self.every
            try:
                # Not cut short: the hub may apply a slow beat anyway, and the client's
                # request_timeout bounds it.
                await self.beat()
            except ClientClosed:
                return
            except (FluxError, TimeoutError) as exc:
                # The client reconnects by itself; the next beat tries again.
                self.error = exc
                logger.warning("heartbeat of %s failed: %r", self.entity_id, exc)
            if next_beat < loop.time():  # a slow beat: do not fire the missed ones at once
                next_beat = loop.time() + self.every


class SyncHeartbeat:
    """:class:`Heartbeat` for :class:`~flux_client.SyncFluxClient`: a plain ``with``
    block; the beats run on the client's event loop thread."""

    def __init__(
        self, heartbeat: Heartbeat, call: Callable[[Coroutine[Any, Any, Any]], Any]
    ) -> None:
        self.heartbeat = heartbeat
        self._call = call

    def __enter__(self) -> SyncHeartbeat:
        self._call(self.heartbeat.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self.heartbeat.stop())

    @property
    def beats(self) -> int:
        return self.heartbeat.beats

    def update(self, properties: Mapping[str, Any]) -> Ack:
        """Merge ``properties`` into what the beats publish, and publish them now."""
        result: Ack = self._call(self.heartbeat.update(properties))
        return result
