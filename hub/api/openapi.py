"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, built from data.

The document is assembled from the live route table (:meth:`Router.templates`) and
a table of operations keyed by ``(template, method)``: the built-in routes'
(:mod:`.openapi_ops`) and each extension's. A route without an operation, or an
operation without a route, is a bug that ``tests/test_openapi.py`` reports; at
runtime, :func:`build_document` raises :class:`UndocumentedRoutes` and the request
gets a 500, so a stale document is never served.

The helpers here (:func:`reply`, :func:`errors`, :func:`operation` …) are what the
operation tables are written with, so that every error response has the same
schema (``{"error", "code"}``) and every response the same conventions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeAlias

from ..transport.http import Response
from ..transport.responses import ERROR_CODES
from ..wire.jsonutil import dumps
from .errors import INVALID_EVENT
from .router import Route

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..transport.http import Request

__all__ = [
    "PATH",
    "SCHEMAS",
    "JsonObject",
    "OpenApiDocument",
    "Operations",
    "UndocumentedRoutes",
    "build_document",
    "errors",
    "json_body",
    "openapi_path",
    "operation",
    "path_param",
    "query_param",
    "ref",
    "reply",
]

#: Where the document is served.
PATH = "/openapi.json"

#: A JSON object of the document (an Operation, a Schema, a Response …).
JsonObject: TypeAlias = "dict[str, Any]"
#: Operation objects by ``(route template, method)``.
Operations: TypeAlias = "Mapping[tuple[str, str], JsonObject]"

_PATH_CAPTURE = re.compile(r"\{(\w+):path\}")

DESCRIPTION = """\
The Flux API (REST) of a Flux hub: publish events about entities, read the state they
build up, delete entities, manage namespaces, tokens and connectors.

**Modes.** With `FLUX_AUTH_ENABLED` unset (Internal mode) everything is open. In
Public mode a write needs `Authorization: Bearer <namespace token>` for the entity's
namespace (the text before the first `/` of its id); admin operations need
`Bearer <FLUX_ADMIN_TOKEN>` when one is set.

**Errors.** Every error is JSON `{"error": "<message>", "code": "<kind>"}`. `error` is
Flux's message, kept exactly as Flux words it; `code` is a stable slug to branch on
(`invalid_event`, `bad_request`, `unauthorized`, `forbidden`, `not_found`,
`method_not_allowed`, `conflict`, `payload_too_large`, `unprocessable`,
`rate_limited`, `unavailable`, `internal` …). Before a request reaches its handler,
the HTTP layer may refuse it: 400 (malformed HTTP), 405 with `Allow` (a method the
path does not have), 408 (too slow), 413 (body over the limit), 431 (head too
large), 501 (unsupported transfer coding), 505 (HTTP version), 429 or 503 (too many
connections). A 503 carries `Retry-After`: nothing was applied, retry.

**Not in this document.** `OPTIONS` on any path answers CORS preflights (204). The
WebSocket endpoint `GET /api/ws` (Flux's protocol, or the native one with the
`flux.v1` subprotocol) is described in docs/protocol.md.
"""

#: The default description of each error status (an operation may say more).
_ERROR_TEXT = {
    400: "The request is malformed: not JSON, or a value breaks a rule (the message says which).",
    401: "No usable token: missing, malformed, or not the one this operation needs.",
    403: "The token may not do this (another namespace's entity, or the hub's own `flux-core/`).",
    404: "Not found.",
    409: "Conflict with the current state.",
    413: "The body (or a property in it) is over its limit.",
    422: "The JSON has the wrong shape or types (the message names the field).",
    429: "The namespace's rate limit is spent; retry after `Retry-After` seconds.",
    500: "The hub cannot do this as configured (the message says what to set).",
    502: "An upstream service (the OAuth provider) failed.",
    503: "Storage (Redis) is unavailable or the hub is at a bound; nothing was applied. "
    "Retry after `Retry-After` seconds.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}

#: Shared schemas (``#/components/schemas``).
SCHEMAS: dict[str, JsonObject] = {
    "Error": {
        "type": "object",
        "description": "Every error response. More fields may be present (`version` of a "
        "conflict).",
        "required": ["error", "code"],
        "properties": {
            "error": {
                "type": "string",
                "description": "What went wrong, in Flux's words (Flux clients read this text).",
            },
            "code": {
                "type": "string",
                "description": "The kind of error, a stable slug for programs to branch on.",
                "enum": sorted(
                    {*ERROR_CODES.values(), INVALID_EVENT, "client_error", "server_error"}
                ),
            },
        },
    },
    "Conflict": {
        "description": "An `if_version` was not met: the entity is at another version.",
        "allOf": [
            {"$ref": "#/components/schemas/Error"},
            {
                "type": "object",
                "required": ["version"],
                "properties": {
                    "version": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "The entity's current version (0: it does not exist).",
                    }
                },
            },
        ],
    },
}


class UndocumentedRoutes(Exception):
    """Routes of the table that have no operation in the document's tables."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("routes without an OpenAPI operation: " + ", ".join(missing))
        self.missing = missing


# ---------------------------------------------------------------------- helpers


def ref(name: str) -> JsonObject:
    """A reference to a shared schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def reply(
    description: str,
    schema: JsonObject | None = None,
    *,
    media_type: str = "application/json",
    headers: Mapping[str, JsonObject] | None = None,
) -> JsonObject:
    """A Response object (no content when ``schema`` is None)."""
    response: JsonObject = {"description": description}
    if headers:
        response["headers"] = dict(headers)
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    return response


def errors(statuses: Mapping[int, str | None]) -> dict[int, JsonObject]:
    """Error responses by status; None takes the status's default description."""
    result: dict[int, JsonObject] = {}
    for status, text in statuses.items():
        headers = _RETRY_AFTER if status in (429, 503) else None
        result[status] = reply(text or _ERROR_TEXT[status], ref("Error"), headers=headers)
    return result


def json_body(schema: JsonObject, description: str, *, example: Any = None) -> JsonObject:
    """A required JSON request body (any ``Content-Type`` is accepted, as in Flux)."""
    media: JsonObject = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "description": description, "content": {"application/json": media}}


def path_param(
    name: str, description: str, schema: JsonObject | None = None, *, example: str | None = None
) -> JsonObject:
    """A path parameter (a non-empty string unless ``schema`` says otherwise)."""
    param: JsonObject = {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }
    if example is not None:
        param["example"] = example
    return param


def query_param(
    name: str, description: str, schema: JsonObject, *, required: bool = False
) -> JsonObject:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def operation(
    operation_id: str,
    summary: str,
    description: str,
    *,
    tag: str,
    responses: Mapping[int, JsonObject],
    parameters: Iterable[JsonObject] = (),
    body: JsonObject | None = None,
    auth: bool = False,
) -> JsonObject:
    """An Operation object.

    Args:
        operation_id: unique over the document.
        summary: one line.
        description: what it does, for a user (Markdown).
        tag: the group it is listed under.
        responses: by status code.
        parameters: path and query parameters.
        body: the request body (:func:`json_body`).
        auth: whether a bearer token may matter (Public mode, admin token); the token
            stays optional in the document, since Internal mode needs none.
    """
    result: JsonObject = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": [tag],
    }
    params = list(parameters)
    if params:
        result["parameters"] = params
    if body is not None:
        result["requestBody"] = body
    if auth:
        result["security"] = [{}, {"bearer": []}]
    result["responses"] = {str(status): responses[status] for status in sorted(responses)}
    return result


def openapi_path(template: str) -> str:
    """A route template as an OpenAPI path (``{id:path}`` becomes ``{id}``)."""
    return _PATH_CAPTURE.sub(r"{\1}", template)


# ---------------------------------------------------------------------- the document


def build_document(
    templates: Iterable[tuple[str, Iterable[str]]],
    operations: Operations,
    schemas: Mapping[str, JsonObject],
    *,
    version: str,
) -> JsonObject:
    """The OpenAPI 3.1 document of a route table.

    Args:
        templates: the route table as :meth:`Router.templates` gives it.
        operations: an Operation object for every ``(template, method)``.
        schemas: the shared schemas the operations refer to.
        version: the hub's version (``info.version``).

    Raises:
        UndocumentedRoutes: a route has no operation.
    """
    paths: dict[str, JsonObject] = {}
    missing: list[str] = []
    for template, methods in templates:
        item = paths.setdefault(openapi_path(template), {})
        for method in methods:
            found = operations.get((template, method))
            if found is None:
                missing.append(f"{method} {template}")
            else:
                item[method.lower()] = found
    if missing:
        raise UndocumentedRoutes(missing)
    tags = sorted({tag for item in paths.values() for op in item.values() for tag in op["tags"]})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Flux hub",
            "version": version,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **schemas},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A namespace's token (writes in Public mode) or "
                    "`FLUX_ADMIN_TOKEN` (admin operations).",
                }
            },
        },
    }


class OpenApiDocument:
    """Serves ``GET /openapi.json``, built once, at the first request.

    Args:
        templates: gives the live route table (late-bound: the router is built
            after the routes, this one included).
        operations: every route's Operation object.
        schemas: the shared schemas the operations refer to.
        version: the hub's version.
    """

    def __init__(
        self,
        templates: Callable[[], Iterable[tuple[str, Iterable[str]]]],
        operations: Operations,
        schemas: Mapping[str, JsonObject],
        *,
        version: str,
    ) -> None:
        self.templates = templates
        self.operations = operations
        self.schemas = schemas
        self.version = version
        self._body: bytes | None = None

    def routes(self) -> list[Route]:
        return [Route(PATH, {"GET": self.get})]

    def document(self) -> JsonObject:
        """The document (raises :class:`UndocumentedRoutes`)."""
        return build_document(self.templates(), self.operations, self.schemas, version=self.version)

    async def get(self, request: Request) -> Response:
        """``GET /openapi.json``."""
        if self._body is None:
            self._body = dumps(self.document())
        return Response(200, self._body)
