"""The project's fixtures (a real Redis, a key prefix, hubs on port 0), for this package."""

from __future__ import annotations

from ..conftest import base_url, hub, key_prefix, redis_url, settings, store

__all__ = ["base_url", "hub", "key_prefix", "redis_url", "settings", "store"]
