"""The MCP server: tools, entity resources and their subscriptions, on the ``mcp`` SDK's
low-level :class:`~mcp.server.lowlevel.Server`.

One server object serves every session; what a session owns (its resource
subscriptions) lives in its lifespan context, which the SDK enters once per session
(per ``flux mcp`` process, per streamable-HTTP session) and leaves when it ends.
Who the caller is comes from ``backend_for``, given the transport's request (None on
stdio): a fixed hub and token for ``flux mcp``, the request's ``Authorization`` header
on the hub's ``/mcp``.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.shared.exceptions import McpError

from .backend import ToolError
from .tools import TOOLS, call_tool
from .watch import MAX_RESOURCE_SUBSCRIPTIONS, Watcher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from mcp.server.models import InitializationOptions
    from pydantic import AnyUrl

    from .backend import Backend

__all__ = ["ENTITY_URI", "build_server", "initialization_options"]

#: The resource template of an entity.
ENTITY_URI = "flux://entity/{id}"
_URI_PREFIX = "flux://entity/"
#: Entities per page of ``resources/list``.
RESOURCES_PAGE = 100

INSTRUCTIONS = (
    "A Flux hub: a shared world state of entities (id -> JSON properties, with a version) "
    "that agents publish to and watch. Ids look like 'namespace/name'. Use publish with "
    "if_version to claim things safely, wait_for_change to wait for others, and the "
    "resources flux://entity/{id} to read or subscribe to one entity."
)

_READ_ONLY = types.ToolAnnotations(readOnlyHint=True, openWorldHint=False)
_ANNOTATIONS = {
    "publish": types.ToolAnnotations(
        readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False
    ),
    "delete": types.ToolAnnotations(
        readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False
    ),
}


def entity_uri(entity_id: str) -> str:
    """``flux://entity/<id>``, the id percent-encoded except for ``/``."""
    return _URI_PREFIX + quote(entity_id, safe="/")


def entity_of(uri: AnyUrl | str) -> str:
    """The entity id a ``flux://entity/…`` URI names (``%2F`` and ``/`` alike)."""
    text = str(uri)
    if not text.startswith(_URI_PREFIX) or len(text) == len(_URI_PREFIX):
        raise McpError(
            types.ErrorData(
                code=types.INVALID_PARAMS,
                message=f"not an entity resource: {text!r} (expected flux://entity/<id>)",
            )
        )
    return unquote(text[len(_URI_PREFIX) :])


#: Why a stateless ``/mcp`` refuses resource subscriptions.
NO_SESSIONS = (
    "resource subscriptions need a session, and this hub serves /mcp without sessions "
    "(FLUX_MCP_STATELESS, the default under --workers): call the wait_for_change tool "
    "instead, or use `flux mcp` (stdio)"
)


def _tool_error(exc: ToolError) -> McpError:
    return McpError(types.ErrorData(code=types.INVALID_PARAMS, message=_describe(exc)))


def _describe(exc: ToolError) -> str:
    status = f"{exc.status} " if exc.status is not None else ""
    return f"{status}{exc.code}: {exc.message}"


def _result(value: Any, is_error: bool) -> types.CallToolResult:
    text = json.dumps(value, indent=1, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structuredContent=value if isinstance(value, dict) else {"result": value},
        isError=is_error,
    )


def build_server(
    backend_for: Callable[[Any], Backend], *, subscriptions: bool = True
) -> Server[Watcher, Any]:
    """The MCP server; ``backend_for(request)`` gives the caller's view of the hub.

    Without ``subscriptions`` (a stateless ``/mcp``: no session to notify), resource
    subscriptions are not declared, and a ``resources/subscribe`` is refused saying why.
    """

    @asynccontextmanager
    async def session_lifespan(_: Server[Watcher, Any]) -> AsyncIterator[Watcher]:
        async with anyio.create_task_group() as tg:
            watcher = Watcher(tg)
            try:
                yield watcher
            finally:
                await watcher.close()
                tg.cancel_scope.cancel()

    server = _Server(
        "flux-hub", version=_version(), instructions=INSTRUCTIONS, lifespan=session_lifespan
    )
    server.declares_subscriptions = subscriptions
    # The SDK's registration decorators are untyped: register through Any.
    sdk: Any = server

    def backend() -> Backend:
        return backend_for(server.request_context.request)

    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=tool["name"],
                description=tool["description"],
                inputSchema=tool["inputSchema"],
                annotations=_ANNOTATIONS.get(tool["name"], _READ_ONLY),
            )
            for tool in TOOLS
        ]

    async def handle_call(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        try:
            value, is_error = await call_tool(backend(), name, arguments)
        except ToolError as exc:
            return _result(exc.as_dict(), True)
        return _result(value, is_error)

    async def list_templates() -> list[types.ResourceTemplate]:
        return [
            types.ResourceTemplate(
                uriTemplate=ENTITY_URI,
                name="entity",
                title="An entity of the world state",
                description="One entity's current state: {id, properties, version, "
                "lastUpdated}, and expiresAt while it holds a lease. Subscribe to hear of "
                "every change.",
                mimeType="application/json",
            )
        ]

    async def list_resources(request: types.ListResourcesRequest) -> types.ListResourcesResult:
        cursor = request.params.cursor if request.params is not None else None
        try:
            page = await backend().list_entities(limit=RESOURCES_PAGE, cursor=cursor)
        except ToolError as exc:
            raise _tool_error(exc) from None
        return types.ListResourcesResult(
            resources=[_resource(entity) for entity in page["entities"]],
            nextCursor=page["next_cursor"],
        )

    async def read_resource(uri: AnyUrl) -> Iterable[ReadResourceContents]:
        try:
            entity = await backend().get(entity_of(uri))
        except ToolError as exc:
            raise _tool_error(exc) from None
        return [ReadResourceContents(json.dumps(entity), "application/json")]

    async def subscribe(uri: AnyUrl) -> None:
        if not subscriptions:
            raise McpError(types.ErrorData(code=types.INVALID_REQUEST, message=NO_SESSIONS))
        entity_id = entity_of(uri)
        context = server.request_context
        try:
            await context.lifespan_context.subscribe(
                str(uri), entity_id, backend(), context.session
            )
        except ToolError as exc:
            raise _tool_error(exc) from None

    async def unsubscribe(uri: AnyUrl) -> None:
        await server.request_context.lifespan_context.unsubscribe(str(uri))

    sdk.list_tools()(list_tools)
    sdk.call_tool(validate_input=True)(handle_call)
    sdk.list_resource_templates()(list_templates)
    sdk.list_resources()(list_resources)
    sdk.read_resource()(read_resource)
    sdk.subscribe_resource()(subscribe)
    sdk.unsubscribe_resource()(unsubscribe)
    return server


def _version() -> str:
    try:
        return metadata.version("flux-hub")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


def _resource(entity: dict[str, Any]) -> types.Resource:
    return types.Resource(
        uri=entity_uri(entity["id"]),  # type: ignore[arg-type]  # pydantic coerces
        name=entity["id"],
        description=f"version {entity.get('version')}, updated {entity.get('lastUpdated')}",
        mimeType="application/json",
    )


class _Server(Server[Watcher, Any]):
    #: Whether ``initialize`` declares resource subscriptions (not without sessions).
    declares_subscriptions = True

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        """Declares resource subscriptions too: the SDK's low-level server says
        ``subscribe: false`` whatever handlers it has (its session manager calls this)."""
        options = super().create_initialization_options(
            notification_options, experimental_capabilities
        )
        resources = options.capabilities.resources
        assert resources is not None
        resources.subscribe = self.declares_subscriptions
        return options


def initialization_options(server: Server[Watcher, Any]) -> InitializationOptions:
    return server.create_initialization_options(NotificationOptions())


__all__ += ["MAX_RESOURCE_SUBSCRIPTIONS", "entity_of", "entity_uri"]
