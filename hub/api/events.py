"""``/api/events``: publishing one event or a batch, and an entity's history.

Flux's order for every event: validation, then authorization, then the namespace's
rate limit (:class:`~hub.engine.publish.PublishPolicy`); a publish is answered once
Redis applied it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.model import OutcomeStatus
from ..core.timefmt import parse_rfc3339_ms
from ..engine.ids import uuid7
from ..engine.tenancy import AuthFailure, RateLimited
from ..errors import (
    BadRequest,
    Closed,
    LogUnavailable,
    MalformedEvent,
    PayloadTooLarge,
    ProtocolError,
)
from ..transport.http import Response, error_response, json_response
from ..wire.envelope import parse_batch_body, parse_event_body
from .common import may_read, query_int, read_scope
from .router import Route

if TYPE_CHECKING:
    from ..config import GatewaySettings
    from ..engine.ingest import Ingest
    from ..engine.publish import PublishPolicy
    from ..engine.tenancy import Tenancy
    from ..store import Applied, Store
    from ..transport.http import Request
    from ..wire.envelope import Envelope

__all__ = ["EventsApi"]

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 500
HISTORY_DEFAULT_WINDOW_MS = 24 * 3600 * 1000


class EventsApi:
    """Handlers of ``/api/events`` and ``/api/events/batch``."""

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
        self.metrics = policy.metrics
        self.max_events_per_batch = gateway.max_events_per_batch

    def routes(self) -> list[Route]:
        return [
            Route("/api/events", {"POST": self.publish, "GET": self.history}),
            Route("/api/events/batch", {"POST": self.publish_batch}),
        ]

    async def publish(self, request: Request) -> Response:
        """``POST /api/events``: one event; 200 once its state is applied."""
        try:
            return await self._publish(request)
        except (ProtocolError, AuthFailure, RateLimited) as exc:
            self.metrics.rejected[_reason(exc)] += 1
            raise

    async def _publish(self, request: Request) -> Response:
        now = self.policy.now_ms()
        policy = self.policy
        envelope = parse_event_body(
            request.body, now_ms=now, new_id=lambda: uuid7(now), limits=policy.limits
        )
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
        now = self.policy.now_ms()
        # Shape errors in any element fail the whole batch before anything is
        # published (Flux parses the whole body first); rule errors fail one item.
        valid, failed = self.policy.parse_many(raw_events, now)
        results: list[dict[str, Any] | None] = [None] * len(raw_events)
        for index, raw, exc in failed:
            if isinstance(exc, MalformedEvent):
                raise exc
            stream = raw.get("stream") if isinstance(raw, dict) else None
            results[index] = {
                "eventId": None,
                "stream": stream,
                "error": f"validation failed: {exc}",
            }
        header = request.headers.get("authorization")

        async def authorize(entity_id: str | None) -> str | None:
            return await self.tenancy.authorize_write(header, entity_id)

        admission = await self.policy.admit(valid, authorize)
        for index, envelope, why in admission.refused:
            message = why.batch_message if isinstance(why, AuthFailure) else "rate limit exceeded"
            results[index] = _failed(envelope, message)
        accepted = admission.accepted
        if accepted:
            try:
                applied = await self.ingest.submit([e for _, e in accepted])
            except (LogUnavailable, Closed) as exc:
                for index, envelope in accepted:
                    results[index] = _failed(envelope, f"publish failed: {exc}")
            else:
                for (index, envelope), result in zip(accepted, applied, strict=True):
                    results[index] = _failed(envelope, _conflict(result))
        count = sum(1 for r in results if r is not None and r["error"] is not None)
        return json_response(
            {"successful": len(results) - count, "failed": count, "results": results}
        )

    async def history(self, request: Request) -> Response:
        """``GET /api/events?entity=…``: the newest ``limit`` events, newest first."""
        query = request.query
        entity = query.get("entity")
        if not entity:
            raise BadRequest("entity parameter is required")
        since_text = query.get("since")
        if since_text is None:
            since = self.policy.now_ms() - HISTORY_DEFAULT_WINDOW_MS
        else:
            try:
                since = parse_rfc3339_ms(since_text)
            except ValueError:
                raise BadRequest("invalid `since` timestamp (expected ISO 8601)") from None
        limit = query_int(query, "limit", HISTORY_DEFAULT_LIMIT)
        limit = max(1, min(limit, HISTORY_MAX_LIMIT))
        may_read(await read_scope(self.tenancy, request), entity)
        events = await self.store.history(entity, since, limit)
        return Response(200, b"[" + b",".join(events) + b"]")


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
