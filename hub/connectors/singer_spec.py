"""A Singer tap's configuration, and how its records become events.

``POST /api/connectors/singer`` registers a tap (docs/connectors.md, "Singer taps"):

.. code-block:: json

    {"name": "orders", "tap": "tap-jsonl", "namespace": "shop",
     "config": {"path": "/srv/orders/*.jsonl", "stream_name": "orders"},
     "streams": {"orders": {"entity_id": "order-{id}", "properties": ["total"]}}}

:func:`parse_tap_request` validates it (422 naming the field otherwise);
:class:`TapSpec` is the stored form; :class:`RecordMapper` turns the tap's ``RECORD``
messages into events with idempotent ``eventId`` values (stream + key + bookmark).
No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from ..wire.envelope import serde_type_name
from ..wire.jsonutil import JSONError, canonical, dumps, loads
from ..wire.names import RESERVED_NAMESPACE, namespace_error
from .base import CONNECTOR_NAME
from .poller import as_number

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_STREAMS",
    "TAP_SOURCE_PREFIX",
    "TAP_STREAM",
    "MappingError",
    "RecordMapper",
    "StreamMap",
    "TapRequest",
    "TapSpec",
    "parse_tap_request",
]

#: The ``stream`` of every tap event; the Singer stream name goes in ``key``.
TAP_STREAM = "singer"
#: Events of tap ``orders`` have the source ``tap.orders``.
TAP_SOURCE_PREFIX = "tap."
DEFAULT_INTERVAL = 300.0
MAX_INTERVAL = 86_400.0
#: A run may last this long in all, then the tap is killed (seconds).
DEFAULT_TIMEOUT = 3600.0
#: A tap silent on stdout this long is taken as hung and killed (seconds).
DEFAULT_IDLE_TIMEOUT = 300.0
MAX_STREAMS = 100
MAX_PROPERTIES = 1000
MAX_TEMPLATE = 256
#: The configuration (with secrets) as JSON, at most.
MAX_CONFIG_BYTES = 64 * 1024
MAX_EXECUTABLE = 1024
MAX_PIP_SPEC = 512
#: What the tap name may be: an executable's file name, no path.
_TAP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_FIELD = re.compile(r"\{([^{}]*)\}")


class MappingError(Exception):
    """A record cannot become an event (a template field is missing...)."""


@dataclass(frozen=True, slots=True)
class StreamMap:
    """How one Singer stream's records become entities."""

    #: ``{field}`` placeholders filled from the record; None: the stream name and the
    #: record's key properties, joined by ``/``.
    entity_id: str | None
    #: The record fields kept as properties; None: every field not starting ``_sdc_``.
    properties: tuple[str, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "properties": None if self.properties is None else list(self.properties),
        }


@dataclass(frozen=True, slots=True)
class TapRequest:
    """A validated registration (secrets in clear: seal them before storing)."""

    name: str
    tap: str
    pip: str | None
    executable: str | None
    namespace: str
    config: dict[str, Any]
    secrets: dict[str, Any] | None
    streams: dict[str, StreamMap]
    interval: float
    timeout: float
    idle_timeout: float


@dataclass(frozen=True, slots=True)
class TapSpec:
    """A registered tap, as stored: the secrets sealed, never in clear."""

    name: str
    tap: str
    #: What ``pip install`` is given (None with ``executable``).
    pip: str | None
    executable: str | None
    namespace: str
    config: dict[str, Any]
    #: The secrets object as JSON, sealed by :class:`~hub.connectors.crypto.SecretBox`.
    sealed_secrets: bytes | None
    streams: dict[str, StreamMap]
    interval: float
    timeout: float
    idle_timeout: float
    created_ms: int

    @property
    def source(self) -> str:
        return TAP_SOURCE_PREFIX + self.name

    def to_json(self) -> bytes:
        secret = self.sealed_secrets
        return dumps(
            {
                **self._settings(),
                "secrets": None if secret is None else base64.b64encode(secret).decode(),
                "created_ms": self.created_ms,
            }
        )

    @classmethod
    def from_json(cls, name: str, data: bytes) -> TapSpec | None:
        """Read the stored form; None if it is damaged."""
        try:
            value = loads(data)
            secret = value["secrets"]
            streams = {
                stream: StreamMap(
                    m["entity_id"], None if m["properties"] is None else tuple(m["properties"])
                )
                for stream, m in value["streams"].items()
            }
            return cls(
                name=name,
                tap=value["tap"],
                pip=value["pip"],
                executable=value["executable"],
                namespace=value["namespace"],
                config=dict(value["config"]),
                sealed_secrets=None if secret is None else base64.b64decode(secret),
                streams=streams,
                interval=float(value["interval_secs"]),
                timeout=float(value["timeout_secs"]),
                idle_timeout=float(value["idle_timeout_secs"]),
                created_ms=int(value["created_ms"]),
            )
        except (JSONError, KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            return None

    def _settings(self) -> dict[str, Any]:
        return {
            "tap": self.tap,
            "pip": self.pip,
            "executable": self.executable,
            "namespace": self.namespace,
            "config": self.config,
            "streams": {s: m.to_json() for s, m in self.streams.items()},
            "interval_secs": as_number(self.interval),
            "timeout_secs": as_number(self.timeout),
            "idle_timeout_secs": as_number(self.idle_timeout),
        }

    def describe(self) -> dict[str, Any]:
        """The public view: everything but the secrets (their names only)."""
        return {
            "name": self.name,
            **self._settings(),
            "has_secrets": self.sealed_secrets is not None,
        }


def parse_tap_request(body: Any, *, min_interval: float, reserved: set[str]) -> TapRequest:
    """Validate a tap registration.

    Args:
        body: the decoded JSON body.
        min_interval: the shortest interval accepted (``FLUX_MIN_POLL_INTERVAL``).
        reserved: names taken by the catalogue (a tap is listed beside them).

    Raises:
        BadRequest: 422 ``<field>: <problem>``.
    """
    if not isinstance(body, dict):
        raise _invalid("body", "expected a JSON object with name, tap, namespace and streams")
    name = body.get("name")
    if not isinstance(name, str):
        raise _invalid("name", _type_problem(name))
    if CONNECTOR_NAME.fullmatch(name) is None:
        raise _invalid("name", "1 to 32 of [a-z0-9_], starting with a letter")
    if name in reserved:
        raise _invalid("name", f"'{name}' is taken by a connector of the catalogue")
    tap = body.get("tap")
    if not isinstance(tap, str):
        raise _invalid("tap", _type_problem(tap))
    if _TAP_NAME.fullmatch(tap) is None:
        raise _invalid("tap", "an executable's name, e.g. 'tap-jsonl' (no path, no spaces)")
    pip, executable = body.get("pip"), body.get("executable")
    if pip is not None and executable is not None:
        raise _invalid("executable", "give pip or executable, not both")
    if executable is not None:
        if not isinstance(executable, str):
            raise _invalid("executable", _type_problem(executable))
        if not executable.startswith("/") or len(executable) > MAX_EXECUTABLE:
            raise _invalid("executable", f"an absolute path of at most {MAX_EXECUTABLE} characters")
        if any(ord(c) < 0x20 for c in executable):
            raise _invalid("executable", "must not contain control characters")
    else:
        if pip is None:
            pip = tap
        if not isinstance(pip, str):
            raise _invalid("pip", _type_problem(pip))
        if not pip.strip() or len(pip) > MAX_PIP_SPEC or pip.startswith("-"):
            raise _invalid("pip", f"a requirement of at most {MAX_PIP_SPEC} characters, no option")
        if any(ord(c) < 0x20 for c in pip):
            raise _invalid("pip", "must not contain control characters")
    namespace = body.get("namespace")
    if not isinstance(namespace, str):
        raise _invalid("namespace", _type_problem(namespace))
    problem = namespace_error(namespace)
    if problem is not None:
        raise _invalid("namespace", problem[0])
    if namespace == RESERVED_NAMESPACE:
        raise _invalid("namespace", f"'{RESERVED_NAMESPACE}' is reserved for the hub")
    config = _object(body, "config", {})
    secrets = _object(body, "secrets", None)
    size = len(dumps(config)) + (0 if secrets is None else len(dumps(secrets)))
    if size > MAX_CONFIG_BYTES:
        raise _invalid(
            "config", f"config and secrets are {size} bytes (at most {MAX_CONFIG_BYTES})"
        )
    return TapRequest(
        name=name,
        tap=tap,
        pip=pip,
        executable=executable,
        namespace=namespace,
        config=config,
        secrets=secrets,
        streams=_streams(body.get("streams")),
        interval=_seconds(body, "interval_secs", DEFAULT_INTERVAL, min_interval),
        timeout=_seconds(body, "timeout_secs", DEFAULT_TIMEOUT, 1.0),
        idle_timeout=_seconds(body, "idle_timeout_secs", DEFAULT_IDLE_TIMEOUT, 0.1),
    )


class RecordMapper:
    """Turns a tap's ``RECORD`` messages into events, per its ``SCHEMA`` messages.

    The ``eventId`` of a record is a digest of the tap's name, the stream, the
    record's key (its ``key_properties``, else the whole record) and its bookmark (its
    ``bookmark_properties``, else the whole record): a run that reads the same record
    again — a re-run after a lost bookmark — makes the same id, which the hub applies
    once (docs/semantics.md, "De-duplication").
    """

    def __init__(self, spec: TapSpec) -> None:
        self.spec = spec
        #: ``stream -> (key properties, bookmark properties)`` from ``SCHEMA`` messages.
        self._schemas: dict[str, tuple[list[str], list[str]]] = {}

    def schema(self, stream: str, key_properties: Any, bookmark_properties: Any) -> None:
        """Remember a ``SCHEMA`` message's keys."""
        self._schemas[stream] = (_names(key_properties), _names(bookmark_properties))

    def wanted(self, stream: str) -> bool:
        """Whether records of this stream are mapped (others are skipped)."""
        return stream in self.spec.streams

    def event(self, stream: str, record: dict[str, Any]) -> dict[str, Any]:
        """The event of one record.

        Raises:
            MappingError: the entity id cannot be made from this record.
        """
        mapping = self.spec.streams[stream]
        keys, bookmarks = self._schemas.get(stream, ([], []))
        whole = canonical(record)
        key = canonical([record.get(k) for k in keys]) if keys else whole
        mark = canonical([record.get(b) for b in bookmarks]) if bookmarks else whole
        digest = hashlib.sha256(b"\0".join([self.spec.name.encode(), stream.encode(), key, mark]))
        if mapping.entity_id is None:
            if not keys:
                raise MappingError(
                    f"stream '{stream}' has no key_properties: give it an entity_id template"
                )
            local = "/".join([stream, *(_text(record.get(k), k) for k in keys)])
        else:
            local = _FIELD.sub(
                lambda m: _text(_field(record, m.group(1)), m.group(1)), mapping.entity_id
            )
        if mapping.properties is None:
            properties = {k: v for k, v in record.items() if not k.startswith("_sdc_")}
        else:
            properties = {k: record[k] for k in mapping.properties if k in record}
        return {
            "eventId": "tap-" + digest.hexdigest()[:40],
            "stream": TAP_STREAM,
            "source": self.spec.source,
            "key": stream,
            "payload": {
                "entity_id": f"{self.spec.namespace}/{local}",
                "properties": properties,
            },
        }


# ---------------------------------------------------------------------- helpers


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record:
        raise MappingError(f"the record has no field '{name}' for the entity_id template")
    return record[name]


def _text(value: Any, name: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise MappingError(f"field '{name}' is {dumps(value).decode()[:40]}, not a string or number")


def _names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _invalid(field: str, problem: str) -> BadRequest:
    return BadRequest(f"{field}: {problem}", 422)


def _type_problem(value: Any, expected: str = "a string") -> str:
    return "required" if value is None else f"expected {expected}, got {serde_type_name(value)}"


def _object(body: dict[str, Any], field: str, default: dict[str, Any] | None) -> Any:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, dict):
        raise _invalid(field, _type_problem(value, "an object"))
    return value


def _seconds(body: dict[str, Any], field: str, default: float, least: float) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(field, f"expected a number, got {serde_type_name(value)}")
    if not math.isfinite(value) or value < least:
        raise _invalid(field, f"must be at least {as_number(least)} (seconds)")
    if value > MAX_INTERVAL:
        raise _invalid(field, f"must be at most {as_number(MAX_INTERVAL)}")
    return float(value)


def _streams(value: Any) -> dict[str, StreamMap]:
    if not isinstance(value, dict) or not value:
        raise _invalid(
            "streams",
            'expected an object of at least one stream, e.g. {"orders": {"entity_id": "order-{id}"}}',
        )
    if len(value) > MAX_STREAMS:
        raise _invalid("streams", f"at most {MAX_STREAMS} streams")
    streams: dict[str, StreamMap] = {}
    for stream, mapping in value.items():
        where = f"streams.{stream}"
        if not isinstance(mapping, dict):
            raise _invalid(where, _type_problem(mapping, "an object"))
        template = mapping.get("entity_id")
        if template is not None:
            if not isinstance(template, str) or not template or len(template) > MAX_TEMPLATE:
                raise _invalid(
                    f"{where}.entity_id", f"a template of 1 to {MAX_TEMPLATE} characters"
                )
            if template.count("{") != template.count("}") or any(
                not name for name in _FIELD.findall(template)
            ):
                raise _invalid(f"{where}.entity_id", "unbalanced or empty {field} placeholder")
        properties = mapping.get("properties")
        if properties is not None:
            if (
                not isinstance(properties, list)
                or not all(isinstance(p, str) for p in properties)
                or len(properties) > MAX_PROPERTIES
            ):
                raise _invalid(
                    f"{where}.properties", f"a list of at most {MAX_PROPERTIES} field names"
                )
            properties = tuple(properties)
        streams[stream] = StreamMap(template, properties)
    return streams
