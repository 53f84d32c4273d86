"""``/api/namespaces``: registering, reading and deleting namespaces (FLUX_COMPAT.md §1.8).

Differences from Flux (docs/compat.md): the token is stored only as its SHA-256;
``entityCount`` is real; deleting a namespace deletes its entities (tombstones, so
subscribers hear of it), and registering a name that was deleted before clears any
leftovers, so a later owner of the name inherits nothing. The hub's own namespace
(``flux-core``) cannot be registered, and under private reads a namespace's record is
read with its own token or the admin's (docs/security.md).
"""

from __future__ import annotations

import math
import secrets
import string
import uuid
from typing import TYPE_CHECKING, Any

from ..core.timefmt import format_ms
from ..engine.auth import hash_token, read_bearer
from ..errors import BadRequest, Closed, LogUnavailable
from ..transport.http import Request, Response, json_response
from ..wire.names import RESERVED_NAMESPACE, namespace_error
from .common import json_body, may_read, read_scope
from .router import Route

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..config import GatewaySettings
    from ..engine.tenancy import Tenancy
    from ..store import Registry, Store

__all__ = ["NamespacesApi"]

PREFIX = "/api/namespaces"
_ID_ALPHABET = string.digits + string.ascii_lowercase


class NamespacesApi:
    """Route group mounted at ``/api/namespaces``."""

    def __init__(
        self,
        registry: Registry,
        tenancy: Tenancy,
        store: Store,
        gateway: GatewaySettings,
        purge: Callable[[str], Awaitable[int]],
        clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.tenancy = tenancy
        self.store = store
        self.auth_enabled = gateway.auth_enabled
        self.admin_token = gateway.admin_token
        #: Deletes every entity of a namespace (tombstones); returns how many.
        self.purge = purge
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX, {"POST": self.register}),
            Route(PREFIX + "/{name}", {"GET": self.get, "DELETE": self.delete}),
        ]

    def _internal_mode(self) -> BadRequest:
        return BadRequest("Namespace registration not available (auth disabled)", 404)

    def _require_admin(self, request: Request) -> None:
        token = read_bearer(request.headers.get("authorization"))
        if self.admin_token is not None and not self.tenancy.is_admin(
            token if isinstance(token, str) else None
        ):
            raise BadRequest("Admin token required", 401)

    async def register(self, request: Request) -> Response:
        """``POST /api/namespaces`` ``{"name": …}`` -> the token, shown this once."""
        body = _json_object(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise BadRequest(
                "Failed to deserialize the JSON body into the target type: name: expected a string",
                422,
            )
        if not self.auth_enabled:
            raise self._internal_mode()
        self._require_admin(request)
        problem = namespace_error(name)
        if problem is not None:
            raise BadRequest(problem[0])
        if name == RESERVED_NAMESPACE:
            # Its token would read the directory (every namespace's name and size)
            # under private reads, and could write nothing.
            raise BadRequest(f"namespace '{RESERVED_NAMESPACE}' is reserved for the hub", 409)
        if await self.registry.get(name) is not None:
            raise BadRequest("Namespace name already exists", 409)
        if await self.registry.was_deleted(name):
            # A name given up before: its old entities must not pass to the new owner.
            await self.purge(name)
        namespace_id = "ns_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        token = str(uuid.uuid4())
        now = math.floor(self.clock() * 1000)
        if not await self.registry.register(name, namespace_id, hash_token(token), now):
            raise BadRequest("Namespace name already exists", 409)
        return json_response({"namespaceId": namespace_id, "name": name, "token": token})

    async def get(self, request: Request, name: str) -> Response:
        """``GET /api/namespaces/:name``: open, except under private reads, where every
        read needs a token: the namespace's own, or the admin's (401, 403)."""
        if not self.auth_enabled:
            raise self._internal_mode()
        # Checked before the lookup: a 403 must not depend on whether the name exists.
        may_read(await read_scope(self.tenancy, request), name + "/")
        record = await self.registry.get(name)
        if record is None:
            raise BadRequest("Namespace not found", 404)
        count = await self.store.count_ids(name + "/")
        return json_response(
            {
                "namespaceId": record.id,
                "name": name,
                "createdAt": format_ms(record.created_ms),
                "entityCount": count,
            }
        )

    async def delete(self, request: Request, name: str) -> Response:
        """``DELETE /api/namespaces/:name`` (admin): its token stops working and its
        entities are deleted. Works in either mode, as in Flux."""
        self._require_admin(request)
        if not await self.registry.unregister(name):
            raise BadRequest("Namespace not found", 404)
        self.tenancy.forget()
        try:
            await self.purge(name)
        except (LogUnavailable, Closed):
            # The name is gone and marked deleted: registering it again purges first.
            pass
        return Response(204, content_type=None)


def _json_object(request: Request) -> dict[str, Any]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise BadRequest(
            "Failed to deserialize the JSON body into the target type: expected an object", 422
        )
    return body
