"""The Flux REST API (FLUX_COMPAT.md §1), with the "Fix or extend" decisions.

Handlers return :class:`Response` objects; errors are raised as
:class:`~hub.errors.ProtocolError` and turned into ``{"error": …}`` with their status
by :meth:`RestApi.handle`.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from ..core.model import Change, Entity, OutcomeStatus
from ..core.timefmt import format_ms, parse_rfc3339_ms
from ..engine.auth import read_bearer
from ..engine.ids import uuid7
from ..engine.tenancy import AuthFailure, RateLimited
from ..errors import (
    BadRequest,
    Closed,
    InvalidEvent,
    LogUnavailable,
    MalformedEvent,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
)
from ..transport.http import Request, Response, error_response, json_response, preflight_headers
from ..wire.envelope import Envelope, EventLimits, parse_batch_body, parse_event, parse_event_body
from ..wire.jsonutil import JSONError, dumps, loads, serde_message
from ..wire.names import RESERVED_NAMESPACE
from .metrics import HubMetrics

if TYPE_CHECKING:
    from ..config import GatewaySettings
    from ..engine.ingest import Ingest
    from ..engine.runtime import RuntimeConfig
    from ..engine.tenancy import Tenancy
    from ..store import Applied, Store

__all__ = ["Handler", "MethodNotAllowed", "RestApi", "RouteGroup", "json_body", "unprocessable"]

logger = logging.getLogger("hub.gateway")

Handler = Callable[[Request], Awaitable[Response]]


class RouteGroup(Protocol):
    """Routes mounted under a path prefix (see :meth:`RestApi.mount`)."""

    def match(self, method: str, path: str) -> Handler | None:
        """The handler of ``method path``; None if no such path.

        Raises:
            MethodNotAllowed: the path exists, not with this method.
        """
        ...


HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 500
HISTORY_DEFAULT_WINDOW_MS = 24 * 3600 * 1000
#: Entities read per round trip when listing (and per chunk when streaming).
LIST_PAGE = 1000
#: Largest ``limit`` a paginated listing accepts.
LIST_MAX_LIMIT = 10_000
#: Tombstones submitted per ingest call during a batch delete.
DELETE_CHUNK = 1000

ENTITIES_PREFIX = "/api/state/entities/"
RESERVED_PREFIX = RESERVED_NAMESPACE + "/"


class RestApi:
    """Routes and handlers of the REST surface."""

    def __init__(
        self,
        store: Store,
        ingest: Ingest,
        runtime: RuntimeConfig,
        tenancy: Tenancy,
        gateway: GatewaySettings,
        *,
        clock: Callable[[], float] = time.time,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.metrics = metrics if metrics is not None else HubMetrics()
        self.runtime = runtime
        self.tenancy = tenancy
        self.max_batch_delete = gateway.max_batch_delete
        self.max_events_per_batch = gateway.max_events_per_batch
        self.clock = clock
        self.limits = EventLimits(
            max_properties=gateway.max_properties,
            max_value_bytes=gateway.max_value_bytes,
            max_depth=gateway.max_nesting_depth,
        )
        self._routes: dict[str, dict[str, Handler]] = {
            "/api/events": {"POST": self.publish, "GET": self.history},
            "/api/events/batch": {"POST": self.publish_batch},
            "/api/state/entities": {"GET": self.list_entities},
            "/api/state/entities/delete": {"POST": self.batch_delete},
            "/api/admin/config": {"GET": self.get_config, "PUT": self.put_config},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
        }
        self._entity_routes: dict[str, Handler] = {
            "GET": self.get_entity,
            "DELETE": self.delete_entity,
        }
        self._mounts: list[tuple[str, RouteGroup]] = []

    def mount(self, prefix: str, group: RouteGroup) -> None:
        """Offer every path equal to ``prefix`` or under ``prefix/`` to ``group``
        (``"/"``: every path); groups are asked in mounting order, then the built-in
        routes."""
        self._mounts.append((prefix, group))

    # ------------------------------------------------------------------ routing

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The body limit of a route (FLUX_COMPAT.md: 413 ``payload too large``)."""
        values = self.runtime.values
        if path in ("/api/events/batch", "/api/state/entities/delete"):
            return values.body_size_limit_batch_bytes, "payload too large"
        return values.body_size_limit_single_bytes, "payload too large"

    async def handle(self, request: Request) -> Response:
        """Route a request and turn errors into JSON responses."""
        try:
            handler = self._route(request)
            return await handler(request)
        except MethodNotAllowed as exc:
            return error_response(405, str(exc), [(b"allow", exc.allowed.encode())])
        except AuthFailure as exc:
            return error_response(exc.status, exc.message)
        except RateLimited as exc:
            return error_response(
                429, "rate limit exceeded", [(b"retry-after", b"%d" % exc.retry_after)]
            )
        except ProtocolError as exc:
            return error_response(exc.status, str(exc))
        except Overloaded as exc:
            return error_response(503, str(exc), [(b"retry-after", b"1")])
        except (LogUnavailable, Closed) as exc:
            return error_response(503, f"storage unavailable: {exc}", [(b"retry-after", b"1")])

    def _route(self, request: Request) -> Handler:
        path = request.path
        if request.method == "OPTIONS":
            return _preflight
        for prefix, group in self._mounts:
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                handler = group.match(request.method, path)
                if handler is not None:
                    return handler
        methods = self._routes.get(path)
        if (
            methods is None
            and path.startswith(ENTITIES_PREFIX)
            and len(path) > len(ENTITIES_PREFIX)
        ):
            if request.method == "POST" and path == "/api/state/entities/delete":
                methods = self._routes[path]
            else:
                methods = self._entity_routes
        elif (
            methods is not None
            and path == "/api/state/entities/delete"
            and request.method != "POST"
        ):
            # An entity may be called "delete": GET/DELETE reach it.
            methods = self._entity_routes
        if methods is None:
            raise BadRequest(f"no such endpoint: {path}", 404)
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise BadRequest(
                f"method {request.method} not allowed on {path} (allowed: {allowed})", 405
            )
        return handler

    # ------------------------------------------------------------------ publishing

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    async def publish(self, request: Request) -> Response:
        """``POST /api/events``: one event; 200 once its state is applied."""
        try:
            return await self._publish(request)
        except (ProtocolError, AuthFailure, RateLimited) as exc:
            self.metrics.rejected[_reason(exc)] += 1
            raise

    async def _publish(self, request: Request) -> Response:
        now = self._now_ms()
        envelope = parse_event_body(
            request.body, now_ms=now, new_id=lambda: uuid7(now), limits=self.limits
        )
        # Flux's order: validation, then authorization, then the rate limit.
        header = request.headers.get("authorization")
        namespace = await self.tenancy.authorize_write(header, envelope.entity_id)
        await self.tenancy.check_one(namespace)
        (result,) = await self.ingest.submit([envelope])
        if result.status is OutcomeStatus.CONFLICT:
            # Only with the if_version extension: the entity is not at that version.
            return error_response(
                409, f"conflict: entity is at version {result.version}", version=result.version
            )
        return json_response({"eventId": envelope.event_id, "stream": envelope.stream})

    async def publish_batch(self, request: Request) -> Response:
        """``POST /api/events/batch``: per-event results, always 200."""
        raw_events = parse_batch_body(request.body)
        if len(raw_events) > self.max_events_per_batch:
            raise BadRequest(
                f"Batch too large: {len(raw_events)} events, max is {self.max_events_per_batch}"
            )
        now = self._now_ms()
        results: list[dict[str, Any] | None] = []
        valid: list[tuple[int, Envelope]] = []
        # Shape errors in any element fail the whole batch before anything is
        # published (Flux parses the whole body first); rule errors fail one item.
        for raw in raw_events:
            try:
                envelope = parse_event(
                    raw, now_ms=now, new_id=lambda: uuid7(now), limits=self.limits
                )
            except MalformedEvent:
                raise
            except (InvalidEvent, PayloadTooLarge) as exc:
                self.metrics.rejected[_reason(exc)] += 1
                stream = raw.get("stream") if isinstance(raw, dict) else None
                results.append(
                    {"eventId": None, "stream": stream, "error": f"validation failed: {exc}"}
                )
                continue
            valid.append((len(results), envelope))
            results.append(None)

        # Then, per event in order: authorization, then the namespace's rate limit.
        header = request.headers.get("authorization")
        allowed: dict[str | None, list[tuple[int, Envelope]]] = {}
        for index, envelope in valid:
            try:
                namespace = await self.tenancy.authorize_write(header, envelope.entity_id)
            except AuthFailure as exc:
                self.metrics.rejected[exc.code] += 1
                results[index] = _failed(envelope, exc.batch_message)
                continue
            allowed.setdefault(namespace, []).append((index, envelope))
        accepted: list[tuple[int, Envelope]] = []
        for namespace, items in allowed.items():
            granted = len(items)
            if namespace is not None:
                granted, _ = await self.tenancy.take(namespace, len(items))
            accepted += items[:granted]
            for index, envelope in items[granted:]:
                self.metrics.rejected["rate_limited"] += 1
                results[index] = _failed(envelope, "rate limit exceeded")
        accepted.sort(key=lambda item: item[0])

        if accepted:
            try:
                applied = await self.ingest.submit([e for _, e in accepted])
            except (LogUnavailable, Closed) as exc:
                for index, envelope in accepted:
                    results[index] = _failed(envelope, f"publish failed: {exc}")
            else:
                for (index, envelope), result in zip(accepted, applied, strict=True):
                    results[index] = _failed(envelope, _conflict(result))
        failed = sum(1 for r in results if r is not None and r["error"] is not None)
        return json_response(
            {"successful": len(results) - failed, "failed": failed, "results": results}
        )

    # ------------------------------------------------------------------ history

    async def history(self, request: Request) -> Response:
        """``GET /api/events?entity=…``: the newest ``limit`` events, newest first."""
        query = request.query
        entity = query.get("entity")
        if not entity:
            raise BadRequest("entity parameter is required")
        since_text = query.get("since")
        if since_text is None:
            since = self._now_ms() - HISTORY_DEFAULT_WINDOW_MS
        else:
            try:
                since = parse_rfc3339_ms(since_text)
            except ValueError:
                raise BadRequest("invalid `since` timestamp (expected ISO 8601)") from None
        limit = _query_int(query, "limit", HISTORY_DEFAULT_LIMIT)
        limit = max(1, min(limit, HISTORY_MAX_LIMIT))
        self._may_read(await self._read_scope(request), entity)
        events = await self.store.history(entity, since, limit)
        return Response(200, b"[" + b",".join(events) + b"]")

    # ------------------------------------------------------------------ state

    async def _read_scope(self, request: Request) -> str:
        """The id prefix this request may read ("" = everything).

        Raises:
            AuthFailure: private reads, and no valid token.
        """
        if not self.tenancy.private_reads:
            return ""
        header = request.headers.get("authorization")
        principal = await self.tenancy.principal_from_header(header)
        scope = principal.read_prefix
        if scope is None:
            message = "Authorization token not provided" if header is None else "Invalid token"
            raise AuthFailure(401, message)
        return scope

    @staticmethod
    def _may_read(scope: str, entity_id: str) -> None:
        if not entity_id.startswith(scope):
            namespace = entity_id.split("/", 1)[0]
            raise AuthFailure(
                403, f"Token does not have permission to read namespace '{namespace}'"
            )

    async def get_entity(self, request: Request) -> Response:
        entity_id = _entity_id(request.path)
        self._may_read(await self._read_scope(request), entity_id)
        entity = await self.store.get(entity_id)
        if entity is None:
            raise BadRequest("Entity not found", 404)
        return Response(200, encode_entity(entity))

    async def list_entities(self, request: Request) -> Response:
        """``GET /api/state/entities[?prefix&namespace&limit&cursor]``.

        Without ``limit``: every matching entity, streamed in chunks (as Flux returns
        all, but without building the whole answer in memory). With ``limit``: one
        page, and ``X-Next-Cursor`` when there may be more.
        """
        query = request.query
        prefix = _effective_prefix(query.get("prefix"), query.get("namespace"))
        prefix = _narrow(prefix, await self._read_scope(request))
        cursor = _decode_cursor(query.get("cursor"))
        if "limit" in query:
            limit = _query_int(query, "limit", LIST_PAGE)
            if not 1 <= limit <= LIST_MAX_LIMIT:
                raise BadRequest(f"limit must be between 1 and {LIST_MAX_LIMIT}")
            if prefix is None:
                return Response(200, b"[]")
            ids = await self.store.list_ids(prefix, limit, cursor)
            entities = await self.store.get_many(ids)
            body = b"[" + b",".join(encode_entity(e) for e in entities) + b"]"
            headers = []
            if len(ids) == limit:
                headers.append((b"x-next-cursor", _encode_cursor(ids[-1])))
            return Response(200, body, headers=headers)
        if prefix is None:
            return Response(200, b"[]")
        # Read the first page before answering, so that a storage failure is still
        # a clean 503 rather than a cut stream.
        first_ids = await self.store.list_ids(prefix, LIST_PAGE, cursor)
        first = await self.store.get_many(first_ids)
        return Response(200, stream=self._stream_entities(prefix, first_ids, first))

    async def _stream_entities(
        self, prefix: str, ids: list[str], entities: list[Entity]
    ) -> AsyncIterator[bytes]:
        opened = False
        while True:
            if entities:
                chunk = b",".join(encode_entity(e) for e in entities)
                yield (b"," if opened else b"[") + chunk
                opened = True
            if len(ids) < LIST_PAGE:
                break
            ids = await self.store.list_ids(prefix, LIST_PAGE, ids[-1])
            entities = await self.store.get_many(ids)
        yield b"]" if opened else b"[]"

    # ------------------------------------------------------------------ deletion

    async def delete_entity(self, request: Request) -> Response:
        """``DELETE /api/state/entities/:id``: publishes a tombstone (200 even if absent)."""
        entity_id = _entity_id(request.path)
        await self.tenancy.authorize_delete(request.headers.get("authorization"), entity_id)
        tombstone = make_tombstone(entity_id, self._now_ms())
        await self.ingest.submit([tombstone])
        return json_response({"entity_id": entity_id, "eventId": tombstone.event_id})

    async def batch_delete(self, request: Request) -> Response:
        """``POST /api/state/entities/delete`` with a namespace, prefix or id list."""
        body = json_body(request)
        ids = await self._ids_to_delete(body)
        # Public mode: every id is authorized before anything is deleted (Flux).
        header = request.headers.get("authorization")
        for entity_id in ids:
            await self.tenancy.authorize_delete(header, entity_id)
        deleted = failed = 0
        errors: list[str] = []
        for start in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[start : start + DELETE_CHUNK]
            now = self._now_ms()
            try:
                results = await self.ingest.submit([make_tombstone(i, now) for i in chunk])
            except (LogUnavailable, Closed) as exc:
                failed += len(chunk)
                errors.extend(f"{i}: {exc}" for i in chunk)
                continue
            # Count entities that existed (Flux counts tombstones; see docs/compat.md).
            deleted += sum(1 for r in results if _removed(r))
        return json_response({"deleted": deleted, "failed": failed, "errors": errors})

    async def _ids_to_delete(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            raise unprocessable("expected an object with `namespace`, `prefix` or `entity_ids`")
        limit = self.max_batch_delete
        # Flux's filter is an untagged enum: the first variant whose field has the
        # right type wins (so {"namespace": null, "prefix": "p"} deletes by prefix).
        namespace = body.get("namespace")
        prefix_value = body.get("prefix")
        given = body.get("entity_ids")
        if isinstance(namespace, str):
            prefix: str | None = _effective_prefix(None, namespace)
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

    # ------------------------------------------------------------------ admin

    async def get_config(self, request: Request) -> Response:
        return json_response(self.runtime.values.as_json())

    async def put_config(self, request: Request) -> Response:
        # Flux checks the token after parsing the body, shape and types included.
        changes = self.runtime.parse(json_body(request))
        token = read_bearer(request.headers.get("authorization"))
        if self.tenancy.admin_token is not None and not self.tenancy.is_admin(
            token if isinstance(token, str) else None
        ):
            raise BadRequest("Unauthorized", 401)
        values = await self.runtime.apply(changes)
        return json_response(values.as_json())

    # ------------------------------------------------------------------ health

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: Redis answers and the reduce script is loaded."""
        if await self.store.ready():
            return json_response({"status": "ready"})
        return error_response(
            503, "not ready: Redis does not answer or the reduce script is not loaded"
        )


# ---------------------------------------------------------------------- helpers


class MethodNotAllowed(BadRequest):
    """405, with the methods the path does allow (for the ``Allow`` header)."""

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message, 405)
        self.allowed = allowed


async def _preflight(request: Request) -> Response:
    return Response(204, content_type=None, headers=preflight_headers())


def make_tombstone(entity_id: str, now: int) -> Envelope:
    """The event Flux publishes to delete an entity (FLUX_COMPAT.md §1.7)."""
    event_id = uuid7(now)
    payload = {
        "entity_id": entity_id,
        "properties": {"__deleted__": True, "__deleted_at__": now},
    }
    stored = {
        "eventId": event_id,
        "stream": "flux.events.deletions",
        "source": "api",
        "timestamp": now,
        "key": entity_id,
        "payload": payload,
    }
    change = Change.from_parts(
        entity_id, {"__deleted__": b"true", "__deleted_at__": b"%d" % now}, source="api"
    )
    return Envelope(event_id, "flux.events.deletions", "api", now, entity_id, change, dumps(stored))


def encode_entity(entity: Entity) -> bytes:
    """An entity as Flux shows it, plus its ``version``; values are already JSON."""
    props = b",".join(dumps(name) + b":" + value for name, value in entity.properties.items())
    return b'{"id":%b,"properties":{%b},"lastUpdated":"%b","version":%d}' % (
        dumps(entity.id),
        props,
        format_ms(entity.last_updated).encode(),
        entity.version,
    )


def _entity_id(path: str) -> str:
    # Flux clients send the id percent-encoded (a/b as a%2Fb); an unencoded "/" is
    # accepted too, as the rest of the path.
    return unquote(path[len(ENTITIES_PREFIX) :])


def _effective_prefix(prefix: str | None, namespace: str | None) -> str | None:
    """Combine the ``prefix`` and ``namespace`` filters; None when nothing can match."""
    if namespace is None:
        return prefix or ""
    if "/" in namespace:
        return None  # The text before the first "/" can never contain a "/".
    ns_prefix = namespace + "/"
    if not prefix or ns_prefix.startswith(prefix):
        return ns_prefix
    if prefix.startswith(ns_prefix):
        return prefix
    return None


def _narrow(prefix: str | None, scope: str) -> str | None:
    """The ids starting with both ``prefix`` and ``scope``, as one prefix (None: none)."""
    if prefix is None:
        return None
    if prefix.startswith(scope):
        return prefix
    if scope.startswith(prefix):
        return scope
    return None


def _reason(exc: Exception) -> str:
    """The ``flux_events_rejected`` reason of an error."""
    if isinstance(exc, AuthFailure):
        return exc.code
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    return "invalid"


def _conflict(result: Applied) -> str | None:
    """The batch error of an event refused by its ``if_version``, else None."""
    if result.status is OutcomeStatus.CONFLICT:
        return f"conflict: entity is at version {result.version}"
    return None


def _failed(envelope: Envelope, error: str | None) -> dict[str, Any]:
    """A batch result: Flux keeps the eventId once validation has passed."""
    return {"eventId": envelope.event_id, "stream": envelope.stream, "error": error}


def _query_int(query: dict[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        reason = (
            "cannot parse integer from empty string"
            if not text
            else "invalid digit found in string"
        )
        raise BadRequest(f"Failed to deserialize query string: {name}: {reason}")
    return int(text)


def json_body(request: Request) -> Any:
    """The request body as JSON, or a 400 in Flux's (axum's) words."""
    try:
        return loads(request.body)
    except JSONError as exc:
        raise BadRequest(
            f"Failed to parse the request body as JSON: {serde_message(exc)}"
        ) from None


def unprocessable(detail: str) -> BadRequest:
    """A 422 in Flux's (axum's) words, as JSON."""
    return BadRequest(f"Failed to deserialize the JSON body into the target type: {detail}", 422)


def _removed(result: Applied) -> bool:
    return result.status is OutcomeStatus.APPLIED and bool(result.delta_position)


def _encode_cursor(entity_id: str) -> bytes:
    """A listing cursor: the last id, base64url without padding.

    It reads the same whether or not a client percent-encodes it again, and holds any
    id (spaces, non-ASCII, ``%``) in a header value.
    """
    return base64.urlsafe_b64encode(entity_id.encode()).rstrip(b"=")


def _decode_cursor(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"invalid cursor {text!r}: pass back the X-Next-Cursor value") from None
