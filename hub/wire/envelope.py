"""The Flux event envelope: parsing and validation, with Flux's exact messages.

FLUX_COMPAT.md §1.2 is the contract. Type errors come first, phrased like serde's
(``invalid type: integer `5`, expected a string``); then the envelope rules, in Flux's
order: empty stream, empty source, null payload, stream format, timestamp sign,
payload is an object.

Differences from Flux (docs/compat.md): ``timestamp`` may be omitted (the hub's
time is used), and limits on properties are checked here when the caller gives them.

This module is pure: the caller passes the current time and an id generator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.lease import parse_ttl
from ..core.model import Change
from ..errors import InvalidEvent, MalformedEvent, PayloadTooLarge
from .jsonutil import JSONEncodeError, JSONError, canonical, dumps, loads, serde_message

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "STREAM_PATTERN",
    "Envelope",
    "EventLimits",
    "parse_batch_body",
    "parse_event",
    "parse_event_body",
    "serde_type_name",
]

STREAM_PATTERN = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)*")

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Bounds checked on each event's properties (0 disables a bound)."""

    max_properties: int = 0
    max_value_bytes: int = 0
    max_depth: int = 0


NO_LIMITS = EventLimits()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A validated event, ready for the store."""

    event_id: str
    stream: str
    source: str
    timestamp: int
    #: ``payload.entity_id`` if it is a string.
    entity_id: str | None
    #: The change the reducer will apply.
    change: Change
    #: The event as stored in the event log (unknown top-level fields dropped).
    stored: bytes


def serde_type_name(value: Any) -> str:
    """Describe a JSON value the way serde's ``invalid type`` errors do."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{dumps(value).decode()}`"
    if isinstance(value, str):
        return f"string {dumps(value).decode()}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _type_error(value: Any, expected: str) -> Any:
    raise MalformedEvent(f"invalid type: {serde_type_name(value)}, expected {expected}")


def parse_event(
    obj: Any,
    *,
    now_ms: int,
    new_id: Callable[[], str],
    limits: EventLimits = NO_LIMITS,
    if_version: int | None = None,
) -> Envelope:
    """Validate one decoded event object.

    Args:
        obj: the decoded JSON value.
        now_ms: the hub's time, used when ``timestamp`` is omitted.
        new_id: makes an ``eventId`` when the client gave none.
        limits: bounds on the properties.
        if_version: compare-and-set version for the reducer; when None, the event's
            own ``if_version`` field is used (an extension of the envelope: apply only
            if the entity is at that version, 0 meaning "must not exist").

    Raises:
        MalformedEvent: the value does not have the envelope's shape (serde's
            errors in Flux); fails a whole Flux batch.
        InvalidEvent: an envelope rule is broken, with Flux's message.
        PayloadTooLarge: if a property bound is exceeded.
    """
    if not isinstance(obj, dict):
        _type_error(obj, "struct FluxEvent")

    # Serde pass: types first, then required fields (serde reports missing fields
    # after it has read the whole object).
    event_id = obj.get("eventId")
    if event_id is not None and not isinstance(event_id, str):
        _type_error(event_id, "a string")
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, str):
        _type_error(stream, "a string")
    if "stream" in obj and stream is None:
        _type_error(None, "a string")
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        _type_error(source, "a string")
    if "source" in obj and source is None:
        _type_error(None, "a string")
    timestamp = obj.get("timestamp")
    if timestamp is not None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            _type_error(timestamp, "i64")
        if not _I64_MIN <= timestamp <= _I64_MAX:
            raise MalformedEvent(f"invalid value: integer `{timestamp}`, expected i64")
    for optional in ("key", "schema"):
        value = obj.get(optional)
        if value is not None and not isinstance(value, str):
            _type_error(value, "a string")
    for required in ("stream", "source", "payload"):
        if required not in obj:
            raise MalformedEvent(f"missing field `{required}`")
    assert isinstance(stream, str) and isinstance(source, str)  # checked above
    payload = obj["payload"]

    # Envelope rules, in Flux's order.
    if not stream:
        raise InvalidEvent("stream is required")
    if not source:
        raise InvalidEvent("source is required")
    if payload is None:
        raise InvalidEvent("payload is required")
    if STREAM_PATTERN.fullmatch(stream) is None:
        raise InvalidEvent(
            f"invalid stream format '{stream}': must be lowercase with optional dots"
        )
    if timestamp is None:
        timestamp = now_ms
    elif timestamp <= 0:
        raise InvalidEvent(f"timestamp must be positive, got {timestamp}")
    if not isinstance(payload, dict):
        raise InvalidEvent("payload must be a JSON object")

    if if_version is None and "if_version" in obj:
        if_version = _if_version(obj["if_version"])
    # The lease extension (hub/core/lease.py): absent or null leaves it as it is.
    ttl_ms = parse_ttl(obj["ttl"]) if "ttl" in obj else None
    if not event_id:
        event_id = new_id()
        dedup_id = None
    else:
        dedup_id = event_id

    entity_id = payload.get("entity_id")
    if not isinstance(entity_id, str):
        entity_id = None
    raw_properties = payload.get("properties")
    properties: dict[str, bytes] | None = None
    if isinstance(raw_properties, dict):
        if limits.max_properties and len(raw_properties) > limits.max_properties:
            raise PayloadTooLarge(
                f"too many properties: {len(raw_properties)} (limit {limits.max_properties})"
            )
        # Depth before encoding: a value nested past orjson's recursion cannot be encoded.
        if limits.max_depth:
            for name, value in raw_properties.items():
                if isinstance(value, dict | list) and _deeper_than(value, limits.max_depth):
                    raise PayloadTooLarge(
                        f"property '{name}' nests deeper than {limits.max_depth} levels"
                    )
        properties = {name: _encode(canonical, value) for name, value in raw_properties.items()}
        if limits.max_value_bytes:
            for name, value in properties.items():
                if len(value) > limits.max_value_bytes:
                    raise PayloadTooLarge(
                        f"property '{name}' is {len(value)} bytes (limit {limits.max_value_bytes})"
                    )

    stored: dict[str, Any] = {
        "eventId": event_id,
        "stream": stream,
        "source": source,
        "timestamp": timestamp,
    }
    key = obj.get("key")
    if key is not None:
        stored["key"] = key
    schema = obj.get("schema")
    if schema is not None:
        stored["schema"] = schema
    if ttl_ms is not None:
        stored["ttl"] = obj["ttl"]
    stored["payload"] = payload

    change = Change.from_parts(
        entity_id,
        properties,
        dedup_id=dedup_id,
        if_version=if_version,
        source=source,
        ttl_ms=ttl_ms,
    )
    return Envelope(event_id, stream, source, timestamp, entity_id, change, _encode(dumps, stored))


def _encode(encode: Callable[[Any], bytes], value: Any) -> bytes:
    """``encode(value)``, or the event is refused (400, a whole batch too).

    Raises:
        MalformedEvent: the value cannot be encoded: nested deeper than the encoder
            recurses (as deep JSON is to serde in Flux: ``recursion limit exceeded``),
            or, from a decoder other than JSON's, a key that is not a string.
    """
    try:
        return encode(value)
    except JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            raise MalformedEvent("recursion limit exceeded") from None
        raise MalformedEvent(f"invalid value: {exc}") from None


def _if_version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(
            f"if_version must be a non-negative integer, got {dumps(value).decode()}"
        )
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels (a scalar is level 0)."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            nxt.extend(c for c in children if isinstance(c, dict | list))
        level = nxt
    return False


def _decode(body: bytes) -> Any:
    try:
        return loads(body)
    except JSONError as exc:
        raise MalformedEvent(serde_message(exc)) from None


def parse_event_body(
    body: bytes, *, now_ms: int, new_id: Callable[[], str], limits: EventLimits = NO_LIMITS
) -> Envelope:
    """Parse and validate the body of ``POST /api/events``."""
    return parse_event(_decode(body), now_ms=now_ms, new_id=new_id, limits=limits)


def parse_batch_body(body: bytes) -> list[Any]:
    """Parse the body of ``POST /api/events/batch`` into its list of raw events.

    Each element is validated separately by the caller (per-item errors), except
    for the checks here, which fail the whole batch as in Flux.

    Raises:
        InvalidEvent: the body is not ``{"events": [ ... ]}`` or the list is empty.
    """
    obj = _decode(body)
    if not isinstance(obj, dict):
        _type_error(obj, "struct BatchRequest")
    if "events" not in obj:
        raise MalformedEvent("missing field `events`")
    events = obj["events"]
    if not isinstance(events, list):
        _type_error(events, "a sequence")
    if not events:
        raise InvalidEvent("Batch request must contain at least one event")
    return list(events)
