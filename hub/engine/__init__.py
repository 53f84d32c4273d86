"""The engine: what the hub does, without sockets.

Ingest (coalescing publishes into reduce-script calls), the fan-out (tailing the delta
log and dispatching to subscriptions), tenancy (tokens, namespaces, rate limits), the
publish policy shared by every way in (REST, native WebSocket, connectors), runtime
configuration and the ``flux-core/directory`` entity. Transports (``hub.transport``)
and the HTTP API (``hub.api``) call it; it calls the store (``hub.store``) and the pure
core (``hub.core``). See docs/architecture.md.
"""

from __future__ import annotations

__all__: list[str] = []
