"""The hub as an MCP server (Model Context Protocol), built on the official ``mcp`` SDK.

Two ways in, one set of tools (docs/mcp.md):

- ``flux mcp``: a stdio server that is a client of a running hub (:mod:`.stdio`);
- ``/mcp`` on the hub itself: the streamable-HTTP transport (:mod:`.http`).

Either way each tool acts with the caller's token through the hub's own REST and
native endpoints (:mod:`.backend`), so tokens, namespaces, limits and errors are
those of REST and the native protocol by construction.
"""

__all__: list[str] = []
