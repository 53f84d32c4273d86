"""Messages of the Flux-compatible WebSocket protocol (FLUX_COMPAT.md §2).

Server messages are built as bytes directly: property values are already canonical
JSON, so a ``state_update`` is assembled without re-encoding its value. Each message is
built once per delta and the same bytes go to every matching connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.timefmt import format_ms
from .jsonutil import JSONError, dumps, loads

if TYPE_CHECKING:
    from ..core.model import Delta

__all__ = [
    "ClientCommand",
    "Metrics",
    "delta_messages",
    "metrics_message",
    "parse_client_message",
]


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A valid client message: ``subscribe`` or ``unsubscribe`` one id (or ``*``)."""

    action: str
    entity_id: str


def parse_client_message(data: str | bytes) -> ClientCommand | None:
    """Parse a client text frame; ``None`` for anything Flux would ignore.

    Flux ignores invalid JSON, unknown types, a missing or non-string ``entity_id``
    (including the camelCase ``entityId``), and extra fields.
    """
    try:
        obj: Any = loads(data)
    except JSONError:
        return None
    if not isinstance(obj, dict):
        return None
    action = obj.get("type")
    entity_id = obj.get("entity_id")
    if action not in ("subscribe", "unsubscribe") or not isinstance(entity_id, str):
        return None
    return ClientCommand(action, entity_id)


def delta_messages(delta: Delta) -> list[bytes]:
    """The compat messages one delta produces, in order.

    An update gives one ``state_update`` per property the event carried, changed or
    not, in sorted property order (as Flux). A deletion gives one ``entity_deleted``.
    """
    timestamp = format_ms(delta.last_updated).encode()
    entity = dumps(delta.entity_id)
    if delta.deleted:
        return [b'{"type":"entity_deleted","entity_id":%b,"timestamp":"%b"}' % (entity, timestamp)]
    head = b'{"type":"state_update","entity_id":%b,"property":' % entity
    tail = b',"timestamp":"%b"}' % timestamp
    return [
        b'%b%b,"value":%b%b' % (head, dumps(name), value, tail)
        for name, value in delta.touched.items()
    ]


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures of one ``metrics_update``."""

    entities_total: int
    events_total: int
    events_rate_per_second: float
    websocket_connections: int
    publishers_active: int


def metrics_message(metrics: Metrics, now_ms: int) -> bytes:
    """Encode a ``metrics_update`` message."""
    return dumps(
        {
            "type": "metrics_update",
            "timestamp": format_ms(now_ms),
            "entities": {"total": metrics.entities_total},
            "events": {
                "total": metrics.events_total,
                "rate_per_second": metrics.events_rate_per_second,
            },
            "websocket": {"connections": metrics.websocket_connections},
            "publishers": {"active": metrics.publishers_active},
        }
    )
