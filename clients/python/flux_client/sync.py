"""A blocking client for scripts: the async client on an event loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .client import FluxClient, Subscription
from .presence import SyncHeartbeat

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable, Iterator, Mapping

    from .errors import PublishError
    from .model import Ack, Entity, Update

__all__ = ["SyncFluxClient"]

T = TypeVar("T")


class SyncFluxClient:
    """The same calls as :class:`FluxClient`, blocking. Use ``with``::

    with SyncFluxClient("http://localhost:3000") as flux:
        flux.publish("crew/task-7", {"state": "open"})
        for update in flux.subscribe(ids=["crew/task-7"]):
            print(update)
    """

    def __init__(self, url: str = "http://localhost:3000", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="flux-sync", daemon=True
        )
        self._thread.start()
        self._client = FluxClient(url, **options)
        try:
            self._call(self._client.connect())
        except BaseException:
            self.close()  # else its thread would live on, reconnecting
            raise

    def __enter__(self) -> SyncFluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def publish(self, entity_id: str, properties: Mapping[str, Any], **options: Any) -> Ack:
        return self._call(self._client.publish(entity_id, properties, **options))

    def publish_many(
        self, events: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[Ack | PublishError]:
        return self._call(self._client.publish_many(list(events), **options))

    def heartbeat(
        self, entity_id: str, properties: Mapping[str, Any], **options: Any
    ) -> SyncHeartbeat:
        """Keep an entity alive while a ``with`` block runs (see
        :meth:`FluxClient.heartbeat`: ``ttl=``, ``every=``, ``delete_on_exit=``)."""
        return SyncHeartbeat(self._client.heartbeat(entity_id, properties, **options), self._call)

    def delete(self, entity_id: str) -> Ack:
        return self._call(self._client.delete(entity_id))

    def get(self, *entity_ids: str) -> dict[str, Entity]:
        return self._call(self._client.get(*entity_ids))

    def list_entities(self, prefix: str = "", **options: Any) -> tuple[list[Entity], str | None]:
        return self._call(self._client.list_entities(prefix, **options))

    def history(self, entity_id: str, **options: Any) -> list[dict[str, Any]]:
        return self._call(self._client.history(entity_id, **options))

    def subscribe(self, **filter_: Any) -> Iterator[Update]:
        """Updates of a filter, blocking between them; close the iterator to stop."""
        subscription: Subscription = self._call(self._client.subscribe(**filter_))
        try:
            while True:
                try:
                    yield self._call(subscription.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call(subscription.close())
