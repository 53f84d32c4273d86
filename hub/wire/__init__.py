"""Wire formats: the Flux event envelope, compat WebSocket messages, JSON helpers.

Pure code (no I/O, no clock): shared by the hub and its clients.
"""

from __future__ import annotations

from .envelope import Envelope, EventLimits, parse_batch_body, parse_event, parse_event_body

__all__ = ["Envelope", "EventLimits", "parse_batch_body", "parse_event", "parse_event_body"]
