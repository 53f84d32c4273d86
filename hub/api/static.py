"""Static files: the dashboard at ``/`` and the JavaScript client.

Files come from the ``hub.dashboard`` package (so they are in the wheel); the JS client
is ``clients/js/flux-client.js``, linked into that package. Only files in the package
directory are served (no path traversal), browsers revalidate each load by ETag.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from ..errors import BadRequest
from ..transport.http import Request, Response
from .router import Route

__all__ = ["StaticFiles"]

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
}


class StaticFiles:
    """Serves ``GET /`` (index.html) and ``GET /static/<file>`` from ``hub.dashboard``."""

    def __init__(self) -> None:
        root = resources.files("hub.dashboard")
        self._files: dict[str, tuple[bytes, bytes, bytes]] = {}
        for entry in root.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if entry.is_file() and suffix in _TYPES:
                body = entry.read_bytes()
                etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:16].encode()
                self._files[entry.name] = (_TYPES[suffix], body, etag)

    def routes(self) -> list[Route]:
        methods = {"GET": self._get, "HEAD": self._get}
        return [
            Route("/", methods),
            Route("/index.html", methods),
            Route("/static/{name:path}", methods),
        ]

    async def _get(self, request: Request, name: str = "index.html") -> Response:
        found = self._files.get(name)
        if found is None:
            raise BadRequest(f"no such file: {request.path}", 404)
        content_type, body, etag = found
        # Revalidated on every load (cheap: 304), so that after an upgrade a browser
        # never mixes an old dashboard.js with a new flux-client.js.
        headers = [(b"cache-control", b"no-cache"), (b"etag", etag)]
        if request.headers.get("if-none-match", "").encode() == etag:
            return Response(304, content_type=None, headers=headers)
        return Response(200, body, content_type=content_type, headers=headers)
