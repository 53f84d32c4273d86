"""The HTTP API as the transport sees it: a route table, body limits, one error mapping.

:class:`HttpApi` is what ``hub.transport.http`` calls for every request (its ``App``
side): it resolves the route (:mod:`.router`), runs the handler and turns what the
handler raised into a response (:func:`.errors.response_for`). CORS preflights
(``OPTIONS``) are answered for every path before routing, as Flux does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..transport.http import Response, preflight_headers
from .errors import response_for
from .router import Router

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..engine.runtime import RuntimeConfig
    from ..transport.http import Request
    from .router import Route

__all__ = ["BATCH_PATHS", "HttpApi"]

#: Routes whose bodies may be as large as the batch limit (FLUX_COMPAT.md §1.9).
BATCH_PATHS = frozenset({"/api/events/batch", "/api/state/entities/delete"})


class HttpApi:
    """Routes requests to handlers. See the module docstring."""

    def __init__(self, runtime: RuntimeConfig, routes: Iterable[Route]) -> None:
        self.runtime = runtime
        self.router = Router(routes)

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The body limit of a route (FLUX_COMPAT.md: 413 ``payload too large``)."""
        values = self.runtime.values
        if path in BATCH_PATHS:
            return values.body_size_limit_batch_bytes, "payload too large"
        return values.body_size_limit_single_bytes, "payload too large"

    async def handle(self, request: Request) -> Response:
        """Route a request and turn errors into JSON responses."""
        if request.method == "OPTIONS":
            return Response(204, content_type=None, headers=preflight_headers())
        try:
            handler = self.router.resolve(request.method, request.path)
            return await handler(request)
        except Exception as exc:
            response = response_for(exc)
            if response is None:
                raise
            return response
