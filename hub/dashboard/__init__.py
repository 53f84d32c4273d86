"""The dashboard the hub serves at ``/`` (static files, no build step, no CDN)."""

from __future__ import annotations

__all__: list[str] = []
