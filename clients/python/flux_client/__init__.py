"""Python client of the Flux hub's native protocol.

``FluxClient`` (async) and ``SyncFluxClient`` (blocking) publish with acknowledgements
and safe retries, subscribe with snapshots and resume, and ``EntityCache`` keeps a
live local replica of a filter's entities. See clients/python/README.md.
"""

from __future__ import annotations

from .cache import EntityCache
from .client import FluxClient, Subscription, make_event
from .errors import ClientClosed, ConflictError, FluxError, GapError, PublishError, RequestError
from .model import Ack, Entity, Update
from .presence import Heartbeat, SyncHeartbeat
from .sync import SyncFluxClient

__all__ = [
    "Ack",
    "ClientClosed",
    "ConflictError",
    "Entity",
    "EntityCache",
    "FluxClient",
    "FluxError",
    "GapError",
    "Heartbeat",
    "PublishError",
    "RequestError",
    "Subscription",
    "SyncFluxClient",
    "SyncHeartbeat",
    "Update",
    "make_event",
]
