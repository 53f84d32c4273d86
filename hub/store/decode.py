"""Redis reply shapes → core values: entity hashes, delta-log entries, snapshot replies.

The field names are the ones reduce.lua writes (see keys.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.model import Delta, Entity, ExpiredDelta, LeasedDelta

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["decode_delta", "decode_delta_fields", "decode_entity", "decode_snapshot", "entry_seq"]

# Delta-log fields (see keys.py).
_ID, _BASE, _VERSION, _TIME, _SOURCE = b"i", b"b", b"v", b"t", b"s"
_DELETED, _CREATED, SEQ, _REASON, _DEADLINE = b"d", b"c", b"n", b"r", b"x"
#: Not a field of the entity hash: snapshot.lua adds it to a reply, with the deadline
#: of the entity's lease (read in the same call, so of the same incarnation).
_EXPIRES = b"#x"
_CHANGED, _SAME = ord("="), ord("~")


def decode_entity(entity_id: str, fields: Mapping[bytes, bytes]) -> Entity | None:
    """An entity from its hash (with ``#x``, its lease's deadline, when snapshot.lua
    read one), or None when it is deleted or was never written."""
    version = fields.get(b"#v")
    if version is None or b"#d" in fields:
        return None
    properties = {k[1:].decode(): v for k, v in sorted(fields.items()) if k[:1] == b"."}
    deadline = fields.get(_EXPIRES)
    return Entity(
        entity_id,
        properties,
        int(version),
        int(fields.get(b"#t", b"0")),
        None if deadline is None else int(deadline),
    )


def decode_snapshot(reply: list[Any]) -> tuple[list[Entity], str | None]:
    """Entities of a snapshot.lua reply, and the last id it read."""
    entities = []
    last = None
    for n in range(2, len(reply), 2):
        entity_id = reply[n].decode()
        last = entity_id
        flat = reply[n + 1]
        fields = dict(zip(flat[0::2], flat[1::2], strict=True))
        entity = decode_entity(entity_id, fields)
        if entity is not None:
            entities.append(entity)
    return entities, last


def entry_seq(flat: list[bytes]) -> int:
    """The sequence number (field ``n``, always at index 10) of an undecoded entry."""
    return int(flat[11]) if len(flat) > 11 and flat[10] == SEQ else 0


def decode_delta(position: bytes, flat: list[bytes]) -> Delta:
    """A delta from an undecoded delta-log entry (fields as a flat list)."""
    return decode_delta_fields(position, dict(zip(flat[0::2], flat[1::2], strict=True)))


def decode_delta_fields(position: bytes, fields: Mapping[bytes, bytes]) -> Delta:
    """A delta from a delta-log entry's fields."""
    touched: dict[str, bytes] = {}
    same: list[str] = []
    for name, value in fields.items():
        mark = name[0]
        if mark == _CHANGED:
            touched[name[1:].decode()] = value
        elif mark == _SAME:
            key = name[1:].decode()
            touched[key] = value
            same.append(key)
    deleted = _DELETED in fields
    if _DEADLINE in fields:
        # The event set or removed a lease (keys.py): the only deltas that say so.
        return LeasedDelta(
            fields[_ID].decode(),
            int(fields[_BASE]),
            int(fields[_VERSION]),
            int(fields[_TIME]),
            touched=touched,
            unchanged=frozenset(same),
            created=_CREATED in fields,
            source=fields.get(_SOURCE, b"").decode(),
            position=position.decode(),
            seq=int(fields.get(SEQ, b"0")),
            deadline=int(fields[_DEADLINE]),
        )
    # Only a lease's expiry names a reason (keys.py): a subclass, so that every other
    # delta is built as before.
    return (ExpiredDelta if deleted and _REASON in fields else Delta)(
        fields[_ID].decode(),
        int(fields[_BASE]),
        int(fields[_VERSION]),
        int(fields[_TIME]),
        touched=touched,
        unchanged=frozenset(same),
        deleted=deleted,
        created=_CREATED in fields,
        source=fields.get(_SOURCE, b"").decode(),
        position=position.decode(),
        seq=int(fields.get(SEQ, b"0")),
    )
