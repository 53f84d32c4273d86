"""Frames the hub sends on the native protocol, in either encoding.

Deltas are the hot path. A delta frame is ``{"sub": <id>, <body>}``: the body — type,
entity id, versions, changed properties, time, position — is encoded once per
(encoding, property projection) and shared by every subscription it goes to; each
subscription's ``"sub"`` entry is encoded once when it subscribes and spliced in front.
For MessagePack the body is kept as encoded map entries plus their count, and the map
header is written per frame.

Everything else (acks, snapshots, errors) is built as values and encoded per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..core.timefmt import format_ms
from ..core.where import ViewDelta
from .codec import JSON, Codec
from .framing import encode_frame
from .jsonutil import dumps, loads

if TYPE_CHECKING:
    from ..core.cursor import Position
    from ..core.model import Delta, Entity

__all__ = [
    "DeltaEncoder",
    "SubPrefix",
    "delta_frame",
    "entity_value",
]


@dataclass(frozen=True, slots=True)
class SubPrefix:
    """The encoded ``"sub"`` entry of one subscription."""

    data: bytes

    @classmethod
    def of(cls, codec: Codec, sub: str) -> SubPrefix:
        if codec.text:
            return cls(b'{"sub":' + dumps(sub) + b",")
        return cls(codec.encode("sub") + codec.encode(sub))


def delta_frame(codec: Codec, prefix: SubPrefix, body: tuple[bytes, int]) -> bytes:
    """A complete delta frame from a subscription's prefix and a shared body."""
    data, entries = body
    if codec.text:
        return prefix.data + data
    return codec.map_header(entries + 1) + prefix.data + data


class DeltaEncoder:
    """Encodes one delta's bodies, each at most once.

    Args:
        delta: the delta.
        position: its position (partition-qualified).
    """

    __slots__ = ("_cache", "_frames", "delta", "position")

    def __init__(self, delta: Delta, position: Position) -> None:
        self.delta = delta
        self.position = str(position)
        self._frames: dict[tuple[str, frozenset[str] | None, bool, bytes], bytes | None] = {}
        self._cache: dict[
            tuple[str, frozenset[str] | None, bool, bool], tuple[bytes, int] | None
        ] = {}

    def body(
        self,
        codec: Codec,
        properties: frozenset[str] | None = None,
        touches: bool = False,
        conflated: bool = False,
    ) -> tuple[bytes, int] | None:
        """The encoded body for a subscription's projection; None if it sends nothing.

        A delta is skipped when, within the projection, it changed nothing — unless
        the subscription asked for touches. Creations and deletions always go out, so
        the client knows which entities exist.
        """
        key = (codec.name, properties, touches, conflated)
        try:
            return self._cache[key]
        except KeyError:
            pass
        body = self._encode(codec, properties, touches, conflated)
        self._cache[key] = body
        return body

    def frame(
        self,
        codec: Codec,
        prefix: SubPrefix,
        properties: frozenset[str] | None = None,
        touches: bool = False,
    ) -> bytes | None:
        """The complete WebSocket frame for a subscription, encoded once per
        (encoding, projection, subscription name): connections whose subscriptions
        share a name (clients often call theirs the same) share the bytes."""
        key = (codec.name, properties, touches, prefix.data)
        try:
            return self._frames[key]
        except KeyError:
            pass
        body = self.body(codec, properties, touches)
        frame = None if body is None else encode_frame(delta_frame(codec, prefix, body), codec.text)
        self._frames[key] = frame
        return frame

    def _encode(
        self, codec: Codec, properties: frozenset[str] | None, touches: bool, conflated: bool
    ) -> tuple[bytes, int] | None:
        d = self.delta
        fields: list[tuple[str, Any]]
        if d.deleted:
            fields = [
                ("type", "left" if isinstance(d, ViewDelta) and d.left else "deleted"),
                ("id", d.entity_id),
                ("base", d.base),
                ("version", d.version),
            ]
            if d.reason:
                # Only a lease's expiry names one (hub/core/lease.py): "expired".
                fields.append(("reason", d.reason))
        else:
            changed = d.changed
            touched_names = list(d.touched)
            if properties is not None:
                changed = {k: v for k, v in changed.items() if k in properties}
                touched_names = [k for k in touched_names if k in properties]
            if (
                not changed
                and not d.created
                and not (touches and touched_names)
                and d.deadline is None  # (a lease's news goes out: it predicts a deletion)
            ):
                return None
            fields = [
                ("type", "delta"),
                ("id", d.entity_id),
                ("base", d.base),
                ("version", d.version),
            ]
            if d.created:
                fields.append(("created", True))
                if isinstance(d, ViewDelta) and d.entered:
                    fields.append(("entered", True))
            fields.append(("set", _Values(changed)))
            if touches:
                fields.append(("touched", touched_names))
        fields.append(("lastUpdated", format_ms(d.last_updated)))
        deadline = d.deadline
        if deadline is not None and (deadline or not d.created):
            # The new deadline, or null: the lease was removed. A ``created`` delta
            # has one only if it says so (docs/protocol.md, "delta").
            fields.append(("expiresAt", format_ms(deadline) if deadline else None))
        fields.append(("position", self.position))
        if conflated:
            fields.append(("conflated", True))
        return _encode_entries(codec, fields), len(fields)


class _Values:
    """Property values given as canonical JSON, encoded without re-parsing for JSON."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values


def _encode_entries(codec: Codec, fields: list[tuple[str, Any]]) -> bytes:
    if codec.text:
        parts = []
        for name, value in fields:
            if isinstance(value, _Values):
                inner = b",".join(dumps(k) + b":" + v for k, v in value.values.items())
                parts.append(b'"%b":{%b}' % (name.encode(), inner))
            else:
                parts.append(b'"%b":%b' % (name.encode(), dumps(value)))
        return b",".join(parts) + b"}"
    out = []
    for name, value in fields:
        out.append(codec.encode(name))
        if isinstance(value, _Values):
            out.append(codec.encode({k: loads(v) for k, v in value.values.items()}))
        else:
            out.append(codec.encode(value))
    return b"".join(out)


def entity_value(
    entity: Entity, codec: Codec, properties: frozenset[str] | None = None
) -> dict[str, Any]:
    """An entity as a frame value: ``{id, properties, version, lastUpdated}``, and
    ``expiresAt`` when it holds a lease."""
    props = entity.properties
    if properties is not None:
        props = {k: v for k, v in props.items() if k in properties}
    if codec is JSON:
        values: dict[str, Any] = {k: orjson.Fragment(v) for k, v in props.items()}
    else:
        values = {k: loads(v) for k, v in props.items()}
    value = {
        "id": entity.id,
        "properties": values,
        "version": entity.version,
        "lastUpdated": format_ms(entity.last_updated),
    }
    if entity.expires_at is not None:
        value["expiresAt"] = format_ms(entity.expires_at)
    return value
