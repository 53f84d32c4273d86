"""The hub's I/O shell: HTTP/WebSocket gateway, ingest, fan-out, REST API."""

from __future__ import annotations

from .app import Hub
from .runner import serve

__all__ = ["Hub", "serve"]
