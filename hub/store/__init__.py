"""Storage: the only package that talks to Redis.

:class:`Store` is the seam (apply, get, list, history, tail); :class:`Keys` names every
key; :class:`EmbeddedRedis` runs the private server ``flux serve`` uses by default.
"""

from __future__ import annotations

from .audit import EntityRecord, EventLogAudit, LogExtent, stream_id
from .connectors import ConnectorStore
from .embedded import EmbeddedRedis, find_server_binary
from .keys import Keys
from .registry import Namespace, Registry
from .store import (
    MIN_REDIS_VERSION,
    Applied,
    PendingApply,
    Store,
    Submission,
    decode_delta,
    entry_seq,
)

__all__ = [
    "MIN_REDIS_VERSION",
    "Applied",
    "ConnectorStore",
    "EmbeddedRedis",
    "EntityRecord",
    "EventLogAudit",
    "Keys",
    "LogExtent",
    "Namespace",
    "PendingApply",
    "Registry",
    "Store",
    "Submission",
    "decode_delta",
    "entry_seq",
    "find_server_binary",
    "stream_id",
]
