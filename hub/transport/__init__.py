"""The transports the hub owns: HTTP/1.1 and WebSocket on asyncio.

``http`` serves requests on a connection and hands upgrades to ``ws``; a WebSocket
speaks either the Flux-compatible protocol (``compat_ws``) or the native one
(``native_ws``, a shell around the pure state machine in ``hub.core``). They parse
bytes, call the engine and write bytes; they hold no business rules. See
docs/architecture.md.
"""

from __future__ import annotations

__all__: list[str] = []
