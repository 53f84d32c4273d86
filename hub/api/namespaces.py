"""``/api/namespaces``: registering, reading and deleting namespaces (FLUX_COMPAT.md §1.8).

Differences from Flux (docs/compat.md): the token is stored only as its SHA-256;
``entityCount`` is real; deleting a namespace deletes its entities (tombstones, so
subscribers hear of it), and registering a name that was deleted before clears any
leftovers, so a later owner of the name inherits nothing.
"""

from __future__ import annotations

import math
import secrets
import string
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..core.timefmt import format_ms
from ..engine.auth import hash_token, read_bearer
from ..errors import BadRequest, Closed, LogUnavailable
from ..transport.http import Request, Response, json_response
from ..wire.names import namespace_error

if TYPE_CHECKING:
    from ..app import Hub
    from .rest import Handler

__all__ = ["NamespacesApi"]

PREFIX = "/api/namespaces"
_ID_ALPHABET = string.digits + string.ascii_lowercase


class NamespacesApi:
    """Route group mounted at ``/api/namespaces``."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = hub.registry

    def match(self, method: str, path: str) -> Handler | None:
        from .rest import MethodNotAllowed

        if path == PREFIX:
            if method == "POST":
                return self.register
            raise MethodNotAllowed(f"method {method} not allowed on {path} (allowed: POST)", "POST")
        if path.startswith(PREFIX + "/") and len(path) > len(PREFIX) + 1:
            if method == "GET":
                return self.get
            if method == "DELETE":
                return self.delete
            raise MethodNotAllowed(
                f"method {method} not allowed on {path} (allowed: DELETE, GET)", "DELETE, GET"
            )
        return None

    def _internal_mode(self) -> BadRequest:
        return BadRequest("Namespace registration not available (auth disabled)", 404)

    def _require_admin(self, request: Request) -> None:
        token = read_bearer(request.headers.get("authorization"))
        if self.hub.settings.gateway.admin_token is not None and not self.hub.tenancy.is_admin(
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
        if not self.hub.settings.gateway.auth_enabled:
            raise self._internal_mode()
        self._require_admin(request)
        problem = namespace_error(name)
        if problem is not None:
            raise BadRequest(problem[0])
        if await self.registry.get(name) is not None:
            raise BadRequest("Namespace name already exists", 409)
        if await self.registry.was_deleted(name):
            # A name given up before: its old entities must not pass to the new owner.
            await self.hub.purge_namespace(name)
        namespace_id = "ns_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        token = str(uuid.uuid4())
        now = math.floor(self.hub.clock() * 1000)
        if not await self.registry.register(name, namespace_id, hash_token(token), now):
            raise BadRequest("Namespace name already exists", 409)
        return json_response({"namespaceId": namespace_id, "name": name, "token": token})

    async def get(self, request: Request) -> Response:
        """``GET /api/namespaces/:name`` (open)."""
        if not self.hub.settings.gateway.auth_enabled:
            raise self._internal_mode()
        name = unquote(request.path[len(PREFIX) + 1 :])
        record = await self.registry.get(name)
        if record is None:
            raise BadRequest("Namespace not found", 404)
        count = await self.hub.store.count_ids(name + "/")
        return json_response(
            {
                "namespaceId": record.id,
                "name": name,
                "createdAt": format_ms(record.created_ms),
                "entityCount": count,
            }
        )

    async def delete(self, request: Request) -> Response:
        """``DELETE /api/namespaces/:name`` (admin): its token stops working and its
        entities are deleted. Works in either mode, as in Flux."""
        self._require_admin(request)
        name = unquote(request.path[len(PREFIX) + 1 :])
        if not await self.registry.unregister(name):
            raise BadRequest("Namespace not found", 404)
        self.hub.tenancy.forget()
        try:
            await self.hub.purge_namespace(name)
        except (LogUnavailable, Closed):
            # The name is gone and marked deleted: registering it again purges first.
            pass
        return Response(204, content_type=None)


def _json_object(request: Request) -> dict[str, Any]:
    from .rest import json_body

    body = json_body(request)
    if not isinstance(body, dict):
        raise BadRequest(
            "Failed to deserialize the JSON body into the target type: expected an object", 422
        )
    return body
