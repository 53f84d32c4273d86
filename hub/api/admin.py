"""``/api/admin/config`` (runtime limits, FLUX_COMPAT.md §1.9) and the health checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.auth import read_bearer
from ..errors import BadRequest
from ..transport.http import error_response, json_response
from .common import json_body
from .router import Route

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..engine.runtime import RuntimeConfig
    from ..engine.tenancy import Tenancy
    from ..store import Store
    from ..transport.http import Request, Response

__all__ = ["AdminApi"]


class AdminApi:
    """Handlers of ``/api/admin/config``, ``/healthz`` and ``/readyz``."""

    def __init__(
        self,
        store: Store,
        runtime: RuntimeConfig,
        tenancy: Tenancy,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.tenancy = tenancy
        #: Whether the hub is shutting down (``/readyz`` then answers 503).
        self.stopping = stopping

    def routes(self) -> list[Route]:
        return [
            Route("/api/admin/config", {"GET": self.get_config, "PUT": self.put_config}),
            Route("/healthz", {"GET": self.healthz}),
            Route("/readyz", {"GET": self.readyz}),
        ]

    async def get_config(self, request: Request) -> Response:
        """``GET /api/admin/config``: the runtime limits (open, as in Flux)."""
        return json_response(self.runtime.values.as_json())

    async def put_config(self, request: Request) -> Response:
        """``PUT /api/admin/config`` (admin): change runtime limits on every hub."""
        # Flux checks the token after parsing the body, shape and types included.
        changes = self.runtime.parse(json_body(request))
        token = read_bearer(request.headers.get("authorization"))
        if self.tenancy.admin_token is not None and not self.tenancy.is_admin(
            token if isinstance(token, str) else None
        ):
            raise BadRequest("Unauthorized", 401)
        values = await self.runtime.apply(changes)
        return json_response(values.as_json())

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the hub is not shutting down, Redis answers and the reduce
        script is loaded."""
        if self.stopping():
            return error_response(503, "not ready: shutting down (docs/scaling.md)")
        if await self.store.ready():
            return json_response({"status": "ready"})
        return error_response(
            503, "not ready: Redis does not answer or the reduce script is not loaded"
        )
