"""Storage: the only package that talks to Redis.

:class:`Store` is the seam (apply, get, list, history, tail); :class:`Keys` names every
key; :class:`EmbeddedRedis` runs the private server ``flux serve`` uses by default.
"""

from __future__ import annotations

from .apply import PendingApply
from .audit import EntityRecord, EventLogAudit, LogExtent, stream_id
from .batches import (
    Applied,
    DeltaBatch,
    LogHead,
    NamespaceTotals,
    SnapshotPage,
    Submission,
    Totals,
)
from .connectors import ConnectorStore
from .embedded import EmbeddedRedis, find_server_binary
from .keys import Keys
from .registry import Namespace, Registry
from .store import MIN_REDIS_VERSION, Store

__all__ = [
    "MIN_REDIS_VERSION",
    "Applied",
    "ConnectorStore",
    "DeltaBatch",
    "EmbeddedRedis",
    "EntityRecord",
    "EventLogAudit",
    "Keys",
    "LogExtent",
    "LogHead",
    "Namespace",
    "NamespaceTotals",
    "PendingApply",
    "Registry",
    "SnapshotPage",
    "Store",
    "Submission",
    "Totals",
    "find_server_binary",
    "stream_id",
]
