"""Flux hub: a shared, event-sourced world-state engine on Redis Streams.

Agents publish events about entities; the hub merges each event's properties into
the entity's state and pushes every change, live, to subscribers. It speaks the
Flux API (REST + WebSocket) and its own native WebSocket protocol.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
