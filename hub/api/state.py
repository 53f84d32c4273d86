"""``/api/state/entities``: reading, listing and deleting entities.

Deleting publishes tombstones through the ingest (``flux.events.deletions``), so
subscribers hear of it like any other change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.index import namespace_prefix, narrow_prefix
from ..core.model import OutcomeStatus
from ..core.where import parse_where_json
from ..engine.listing import list_page, stream_entities
from ..engine.publish import make_tombstone
from ..errors import BadRequest, Closed, LogUnavailable
from ..transport.http import Response, json_response
from ..wire.names import RESERVED_NAMESPACE
from .common import (
    decode_cursor,
    encode_cursor,
    encode_entity,
    json_body,
    may_read,
    query_int,
    read_scope,
    unprocessable,
)
from .router import Route

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import GatewaySettings
    from ..core.model import Entity
    from ..engine.ingest import Ingest
    from ..engine.publish import PublishPolicy
    from ..engine.tenancy import Tenancy
    from ..store import Applied, Store
    from ..transport.http import Request

__all__ = ["StateApi"]

#: Entities read per round trip when listing (and per chunk when streaming).
LIST_PAGE = 1000
#: Largest ``limit`` a paginated listing accepts.
LIST_MAX_LIMIT = 10_000
#: Tombstones submitted per ingest call during a batch delete.
DELETE_CHUNK = 1000

RESERVED_PREFIX = RESERVED_NAMESPACE + "/"


class StateApi:
    """Handlers of ``/api/state/entities``."""

    def __init__(
        self,
        store: Store,
        ingest: Ingest,
        policy: PublishPolicy,
        tenancy: Tenancy,
        gateway: GatewaySettings,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.policy = policy
        self.tenancy = tenancy
        self.max_batch_delete = gateway.max_batch_delete

    def routes(self) -> list[Route]:
        # An entity may be called "delete": GET and DELETE reach it, POST the batch delete.
        return [
            Route("/api/state/entities", {"GET": self.list_entities}),
            Route("/api/state/entities/delete", {"POST": self.batch_delete}),
            Route(
                "/api/state/entities/{entity_id:path}",
                {"GET": self.get_entity, "DELETE": self.delete_entity},
            ),
        ]

    async def get_entity(self, request: Request, entity_id: str) -> Response:
        """``GET /api/state/entities/:id`` (the id percent-encoded, or with plain ``/``)."""
        may_read(await read_scope(self.tenancy, request), entity_id)
        entity = await self.store.get(entity_id)
        if entity is None:
            raise BadRequest("Entity not found", 404)
        return Response(200, encode_entity(entity))

    async def list_entities(self, request: Request) -> Response:
        """``GET /api/state/entities[?prefix&namespace&limit&cursor&where]``.

        Without ``limit``: every matching entity, streamed in chunks (as Flux returns
        all, but without building the whole answer in memory). With ``limit``: one
        page, and ``X-Next-Cursor`` when there may be more. ``where``: a value filter
        as JSON (hub/core/where.py; paging with one: hub/engine/listing.py).
        """
        query = request.query
        prefix = namespace_prefix(query.get("prefix"), query.get("namespace"))
        prefix = narrow_prefix(prefix, await read_scope(self.tenancy, request))
        cursor = decode_cursor(query.get("cursor"))
        text = query.get("where")
        where = parse_where_json(text) if text is not None else None
        if "limit" in query:
            limit = query_int(query, "limit", LIST_PAGE)
            if not 1 <= limit <= LIST_MAX_LIMIT:
                raise BadRequest(f"limit must be between 1 and {LIST_MAX_LIMIT}")
            if prefix is None:
                return Response(200, b"[]")
            page = await list_page(self.store, prefix, limit, cursor, where)
            body = b"[" + b",".join(encode_entity(e) for e in page.entities) + b"]"
            headers = []
            if page.next is not None:
                headers.append((b"x-next-cursor", encode_cursor(page.next)))
            return Response(200, body, headers=headers)
        if prefix is None:
            return Response(200, b"[]")
        # Read the first chunk before answering, so that a storage failure is still
        # a clean 503 rather than a cut stream.
        chunks = stream_entities(self.store, prefix, cursor, where)
        first = await anext(chunks)
        return Response(200, stream=_stream_entities(first, chunks))

    async def delete_entity(self, request: Request, entity_id: str) -> Response:
        """``DELETE /api/state/entities/:id``: publishes a tombstone (200 even if absent)."""
        await self.tenancy.authorize_delete(request.headers.get("authorization"), entity_id)
        tombstone = make_tombstone(entity_id, self.policy.now_ms())
        await self.ingest.submit([tombstone])
        return json_response({"entity_id": entity_id, "eventId": tombstone.event_id})

    async def batch_delete(self, request: Request) -> Response:
        """``POST /api/state/entities/delete`` with a namespace, prefix or id list."""
        body = json_body(request)
        header = request.headers.get("authorization")
        ids = await self._ids_to_delete(body, header)
        # Public mode: every id is authorized before anything is deleted (Flux).
        for entity_id in ids:
            await self.tenancy.authorize_delete(header, entity_id)
        deleted = failed = 0
        errors: list[str] = []
        for start in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[start : start + DELETE_CHUNK]
            now = self.policy.now_ms()
            try:
                results = await self.ingest.submit([make_tombstone(i, now) for i in chunk])
            except (LogUnavailable, Closed) as exc:
                failed += len(chunk)
                errors.extend(f"{i}: {exc}" for i in chunk)
                continue
            # Count entities that existed (Flux counts tombstones; see docs/compat.md).
            deleted += sum(1 for r in results if _removed(r))
        return json_response({"deleted": deleted, "failed": failed, "errors": errors})

    async def _ids_to_delete(self, body: Any, header: str | None) -> list[str]:
        if not isinstance(body, dict):
            raise unprocessable("expected an object with `namespace`, `prefix` or `entity_ids`")
        limit = self.max_batch_delete
        # Flux's filter is an untagged enum: the first variant whose field has the
        # right type wins (so {"namespace": null, "prefix": "p"} deletes by prefix).
        namespace = body.get("namespace")
        prefix_value = body.get("prefix")
        given = body.get("entity_ids")
        if isinstance(namespace, str):
            prefix: str | None = namespace_prefix(None, namespace)
        elif isinstance(prefix_value, str):
            prefix = prefix_value
        elif isinstance(given, list) and all(isinstance(i, str) for i in given):
            if len(given) > limit:
                raise BadRequest(
                    f"Batch too large: {len(given)} entities requested, max is {limit}"
                )
            return list(dict.fromkeys(given))
        else:
            raise unprocessable(
                "expected `namespace` (string), `prefix` (string) or `entity_ids` (list of strings)"
            )
        if prefix is None:
            return []
        if self.tenancy.private_reads:
            # The selection is authorized as a whole, before it is listed: per matched
            # id (Flux), a 403 or "deleted: 0" would tell whether ids the reader may
            # not see exist under the prefix (docs/security.md).
            await self.tenancy.authorize_delete_prefix(header, prefix)
        reserved = (
            await self.store.count_ids(RESERVED_PREFIX) if RESERVED_PREFIX.startswith(prefix) else 0
        )
        ids = await self.store.list_ids(prefix, limit + 1 + reserved)
        # The hub's own entities (flux-core/...) are not the client's to delete.
        ids = [i for i in ids if not i.startswith(RESERVED_PREFIX)]
        if len(ids) > limit:
            total = await self.store.count_ids(prefix) - reserved
            raise BadRequest(f"Batch too large: {total} entities requested, max is {limit}")
        return ids


async def _stream_entities(
    first: list[Entity], chunks: AsyncIterator[list[Entity]]
) -> AsyncIterator[bytes]:
    opened = False
    entities: list[Entity] | None = first
    while entities is not None:
        if entities:
            chunk = b",".join(encode_entity(e) for e in entities)
            yield (b"," if opened else b"[") + chunk
            opened = True
        entities = await anext(chunks, None)
    yield b"]" if opened else b"[]"


def _removed(result: Applied) -> bool:
    return result.status is OutcomeStatus.APPLIED and bool(result.delta_position)
