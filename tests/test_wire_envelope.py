"""The Flux event envelope (hub/wire/envelope.py), rule by rule, as FLUX_COMPAT.md §1.2.

Shape errors come first, phrased like serde's, and are :class:`MalformedEvent` (they
fail a whole Flux batch). Then the envelope rules in Flux's order, with Flux's
messages, as :class:`InvalidEvent` that is not a ``MalformedEvent``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from hub.core import ChangeKind
from hub.errors import InvalidEvent, MalformedEvent, PayloadTooLarge
from hub.wire import Envelope, EventLimits, parse_batch_body, parse_event, parse_event_body
from hub.wire.envelope import STREAM_PATTERN, serde_type_name
from hub.wire.jsonutil import JSONError, dumps, serde_message

TIMESTAMP = 1_772_049_867_638
NOW = 1_800_000_000_000

_MISSING = object()


class IdFactory:
    """Makes ``gen-1``, ``gen-2``, … and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"gen-{self.calls}"


def event(**fields: Any) -> dict[str, Any]:
    """A valid event with ``fields`` changed; a field set to ``_MISSING`` is left out."""
    obj: dict[str, Any] = {
        "stream": "sensors",
        "source": "agent-1",
        "timestamp": TIMESTAMP,
        "payload": {"entity_id": "e/1", "properties": {"temp": 21.5}},
    }
    obj.update(fields)
    return {name: value for name, value in obj.items() if value is not _MISSING}


def parse(
    obj: Any,
    *,
    new_id: IdFactory | None = None,
    limits: EventLimits | None = None,
    if_version: int | None = None,
) -> Envelope:
    return parse_event(
        obj,
        now_ms=NOW,
        new_id=new_id or IdFactory(),
        limits=limits or EventLimits(),
        if_version=if_version,
    )


def malformed(obj: Any) -> str:
    """The message of the :class:`MalformedEvent` that ``obj`` raises."""
    with pytest.raises(MalformedEvent) as info:
        parse(obj)
    return str(info.value)


def rule_error(obj: Any) -> str:
    """The message of the rule (not shape) error that ``obj`` raises."""
    with pytest.raises(InvalidEvent) as info:
        parse(obj)
    assert not isinstance(info.value, MalformedEvent), info.value
    return str(info.value)


# ---------------------------------------------------------------- a valid event


def test_envelope_parses_valid_event() -> None:
    envelope = parse(event(eventId="ev-1", payload={"entity_id": "e/1", "properties": {"a": 1}}))
    assert envelope.event_id == "ev-1"
    assert (envelope.stream, envelope.source, envelope.timestamp) == (
        "sensors",
        "agent-1",
        TIMESTAMP,
    )
    assert envelope.entity_id == "e/1"
    assert envelope.change.kind is ChangeKind.UPDATE
    assert envelope.change.entity_id == "e/1"
    assert envelope.change.properties == {"a": b"1"}
    assert envelope.change.dedup_id == "ev-1"
    assert envelope.change.source == "agent-1"
    assert envelope.change.if_version is None


def test_envelope_passes_if_version_to_change() -> None:
    assert parse(event(), if_version=4).change.if_version == 4


# ---------------------------------------------------------------- serde shape errors


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("eventId", 5, "invalid type: integer `5`, expected a string"),
        ("eventId", True, "invalid type: boolean `true`, expected a string"),
        ("eventId", [], "invalid type: sequence, expected a string"),
        ("eventId", {}, "invalid type: map, expected a string"),
        ("stream", 5, "invalid type: integer `5`, expected a string"),
        ("stream", None, "invalid type: null, expected a string"),
        ("stream", ["sensors"], "invalid type: sequence, expected a string"),
        ("source", 1.5, "invalid type: floating point `1.5`, expected a string"),
        ("source", None, "invalid type: null, expected a string"),
        ("source", False, "invalid type: boolean `false`, expected a string"),
        ("timestamp", 1.5, "invalid type: floating point `1.5`, expected i64"),
        ("timestamp", 1.0, "invalid type: floating point `1.0`, expected i64"),
        ("timestamp", "x", 'invalid type: string "x", expected i64'),
        ("timestamp", "1772049867638", 'invalid type: string "1772049867638", expected i64'),
        ("timestamp", True, "invalid type: boolean `true`, expected i64"),
        ("timestamp", [1], "invalid type: sequence, expected i64"),
        ("timestamp", {}, "invalid type: map, expected i64"),
        ("timestamp", 2**63, "invalid value: integer `9223372036854775808`, expected i64"),
        ("key", 5, "invalid type: integer `5`, expected a string"),
        ("key", True, "invalid type: boolean `true`, expected a string"),
        ("schema", {"a": 1}, "invalid type: map, expected a string"),
        ("schema", [], "invalid type: sequence, expected a string"),
    ],
)
def test_envelope_rejects_wrong_field_type_like_serde(field: str, value: Any, message: str) -> None:
    assert malformed(event(**{field: value})) == message


@pytest.mark.parametrize("field", ["stream", "source", "payload"])
def test_envelope_rejects_missing_required_field_like_serde(field: str) -> None:
    assert malformed(event(**{field: _MISSING})) == f"missing field `{field}`"


def test_envelope_reports_first_missing_field_in_struct_order() -> None:
    assert malformed({}) == "missing field `stream`"
    assert malformed({"payload": {}, "stream": "s"}) == "missing field `source`"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "invalid type: sequence, expected struct FluxEvent"),
        ("x", 'invalid type: string "x", expected struct FluxEvent'),
        (5, "invalid type: integer `5`, expected struct FluxEvent"),
        (None, "invalid type: null, expected struct FluxEvent"),
        (True, "invalid type: boolean `true`, expected struct FluxEvent"),
    ],
    ids=repr,
)
def test_envelope_rejects_non_object_event_like_serde(value: Any, message: str) -> None:
    assert malformed(value) == message


def test_envelope_reports_type_error_before_missing_field() -> None:
    assert malformed({"stream": 5}) == "invalid type: integer `5`, expected a string"


def test_envelope_reports_type_error_before_rules() -> None:
    assert (
        malformed(event(stream="", source="", timestamp=0, payload=None, key=7))
        == "invalid type: integer `7`, expected a string"
    )


def test_envelope_reports_missing_field_before_rules() -> None:
    assert malformed(event(stream="BAD", source="", payload=_MISSING)) == "missing field `payload`"


def test_envelope_error_kinds_form_a_hierarchy() -> None:
    # Callers catch InvalidEvent for "400" and MalformedEvent for "fails the batch".
    assert issubclass(MalformedEvent, InvalidEvent)
    assert not issubclass(PayloadTooLarge, InvalidEvent)


# ---------------------------------------------------------------- envelope rules


def test_envelope_requires_non_empty_stream() -> None:
    assert rule_error(event(stream="")) == "stream is required"


def test_envelope_requires_non_empty_source() -> None:
    assert rule_error(event(source="")) == "source is required"


@pytest.mark.parametrize("source", [" ", "\t", "Agent_1/x", "ünïcode"])
def test_envelope_accepts_any_non_empty_source(source: str) -> None:
    assert parse(event(source=source)).source == source


def test_envelope_requires_non_null_payload() -> None:
    assert rule_error(event(payload=None)) == "payload is required"


@pytest.mark.parametrize("timestamp", [0, -1, -(2**63)])
def test_envelope_requires_positive_timestamp(timestamp: int) -> None:
    assert rule_error(event(timestamp=timestamp)) == f"timestamp must be positive, got {timestamp}"


@pytest.mark.parametrize("timestamp", [1, 1_772_049_867, TIMESTAMP, 2**63 - 1])
def test_envelope_accepts_any_positive_i64_timestamp(timestamp: int) -> None:
    # Not checked for plausibility: seconds instead of milliseconds pass (Flux).
    assert parse(event(timestamp=timestamp)).timestamp == timestamp


@pytest.mark.parametrize("payload", [[], [1], "x", "", 5, 1.5, True, False], ids=repr)
def test_envelope_requires_object_payload(payload: Any) -> None:
    assert rule_error(event(payload=payload)) == "payload must be a JSON object"


VALID_STREAMS = [
    "a",
    "0",
    "sensors",
    "sensors.temperature",
    "a.b.c.d",
    "a1.b2",
    "123.456",
    "flux.events",
    "x" * 300,
]
INVALID_STREAMS = [
    "Sensors",
    "SENSORS",
    "a.B",
    "a..b",
    ".a",
    "a.",
    ".",
    "..",
    "a-b",
    "a_b",
    "a/b",
    "a b",
    " a",
    "a ",
    "a\n",
    "\na",
    "a\t",
    "é",
    "café",
    "ａ",  # fullwidth "a"
    "١٢",  # Arabic-Indic digits
    "a.*",
    "a>",
    "a:b",
]


@pytest.mark.parametrize("stream", VALID_STREAMS)
def test_envelope_accepts_lowercase_dotted_stream(stream: str) -> None:
    assert parse(event(stream=stream)).stream == stream
    assert STREAM_PATTERN.fullmatch(stream)


@pytest.mark.parametrize("stream", INVALID_STREAMS, ids=repr)
def test_envelope_rejects_malformed_stream(stream: str) -> None:
    assert (
        rule_error(event(stream=stream))
        == f"invalid stream format '{stream}': must be lowercase with optional dots"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"stream": "", "source": "", "payload": None, "timestamp": 0},
            "stream is required",
            id="stream-first",
        ),
        pytest.param(
            {"stream": "", "payload": []}, "stream is required", id="stream-before-object"
        ),
        pytest.param(
            {"stream": "BAD", "source": "", "payload": None, "timestamp": 0},
            "source is required",
            id="source-before-format",
        ),
        pytest.param(
            {"stream": "BAD", "payload": None, "timestamp": -1},
            "payload is required",
            id="null-payload-before-format",
        ),
        pytest.param(
            {"stream": "BAD", "timestamp": 0, "payload": []},
            "invalid stream format 'BAD': must be lowercase with optional dots",
            id="format-before-timestamp",
        ),
        pytest.param(
            {"timestamp": 0, "payload": "x"},
            "timestamp must be positive, got 0",
            id="timestamp-before-object",
        ),
        pytest.param(
            {"timestamp": _MISSING, "payload": "x"},
            "payload must be a JSON object",
            id="omitted-timestamp-then-object",
        ),
    ],
)
def test_envelope_reports_first_broken_rule_in_flux_order(
    fields: dict[str, Any], message: str
) -> None:
    assert rule_error(event(**fields)) == message


# ---------------------------------------------------------------- timestamp and eventId


def test_envelope_uses_hub_time_when_timestamp_omitted() -> None:
    envelope = parse(event(timestamp=_MISSING, eventId="ev-1"))
    assert envelope.timestamp == NOW
    assert b'"timestamp":1800000000000' in envelope.stored


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param(_MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
    ],
)
def test_envelope_generates_event_id_when_client_gives_none(event_id: Any) -> None:
    new_id = IdFactory()
    envelope = parse(event(eventId=event_id), new_id=new_id)
    assert new_id.calls == 1
    assert envelope.event_id == "gen-1"
    assert envelope.change.dedup_id is None
    assert envelope.stored.startswith(b'{"eventId":"gen-1",')


@pytest.mark.parametrize(
    "event_id", ["ev-1", "not-a-uuid", " ", "0190a6f0-0000-7000-8000-000000000000"]
)
def test_envelope_keeps_client_event_id_as_dedup_id(event_id: str) -> None:
    new_id = IdFactory()
    envelope = parse(event(eventId=event_id), new_id=new_id)
    assert new_id.calls == 0
    assert envelope.event_id == event_id
    assert envelope.change.dedup_id == event_id
    assert envelope.stored.startswith(b'{"eventId":' + dumps(event_id) + b",")


# ---------------------------------------------------------------- what is stored


def test_envelope_stores_fields_in_flux_order_and_drops_unknown_ones() -> None:
    obj = {
        "extra": 1,
        "payload": {"entity_id": "e/1", "properties": {"a": 1}, "note": "kept"},
        "Stream": "other",
        "timestamp": TIMESTAMP,
        "source": "agent-1",
        "event_id": "snake",
        "stream": "sensors",
        "eventId": "ev-1",
    }
    assert parse(obj).stored == (
        b'{"eventId":"ev-1","stream":"sensors","source":"agent-1","timestamp":1772049867638,'
        b'"payload":{"entity_id":"e/1","properties":{"a":1},"note":"kept"}}'
    )


def test_envelope_stores_key_and_schema_when_set() -> None:
    envelope = parse(event(eventId="ev-1", key="k-1", schema="temp.v1", payload={}))
    assert envelope.stored == (
        b'{"eventId":"ev-1","stream":"sensors","source":"agent-1","timestamp":1772049867638,'
        b'"key":"k-1","schema":"temp.v1","payload":{}}'
    )


def test_envelope_leaves_out_null_key_and_schema() -> None:
    envelope = parse(event(eventId="ev-1", key=None, schema=None, payload={}))
    assert envelope.stored == (
        b'{"eventId":"ev-1","stream":"sensors","source":"agent-1","timestamp":1772049867638,'
        b'"payload":{}}'
    )


def test_envelope_keeps_empty_key_string() -> None:
    assert b'"key":"",' in parse(event(key="")).stored


# ---------------------------------------------------------------- payload -> change


def test_envelope_canonicalises_and_sorts_properties() -> None:
    properties = {
        "zeta": {"y": [{"b": 1, "a": 2}], "x": None},
        "alpha": 1.5,
        "Mid": "ü",
        "list": [3, 1, 2],
    }
    change = parse(event(payload={"entity_id": "e", "properties": properties})).change
    assert list(change.properties) == ["Mid", "alpha", "list", "zeta"]
    assert change.properties == {
        "Mid": '"ü"'.encode(),
        "alpha": b"1.5",
        "list": b"[3,1,2]",
        "zeta": b'{"x":null,"y":[{"a":2,"b":1}]}',
    }


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"properties": {"a": 1}}, id="no-entity-id"),
        pytest.param({"entity_id": 5, "properties": {"a": 1}}, id="entity-id-not-a-string"),
        pytest.param({"entity_id": None, "properties": {"a": 1}}, id="entity-id-null"),
    ],
)
def test_envelope_makes_log_only_change_without_string_entity_id(payload: dict[str, Any]) -> None:
    envelope = parse(event(payload=payload))
    assert envelope.entity_id is None
    assert envelope.change.kind is ChangeKind.LOG_ONLY


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param(_MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param([{"a": 1}], id="list"),
        pytest.param("a=1", id="string"),
        pytest.param({}, id="empty"),
    ],
)
def test_envelope_makes_log_only_change_without_properties(properties: Any) -> None:
    payload = {"entity_id": "e/1", "properties": properties}
    envelope = parse(event(payload={k: v for k, v in payload.items() if v is not _MISSING}))
    assert envelope.entity_id == "e/1"
    assert envelope.change.kind is ChangeKind.LOG_ONLY
    assert envelope.change.properties == {}


def test_envelope_makes_delete_change_from_tombstone() -> None:
    payload = {"entity_id": "e/1", "properties": {"__deleted__": True, "a": 1}}
    change = parse(event(payload=payload)).change
    assert change.kind is ChangeKind.DELETE
    assert change.entity_id == "e/1"


@pytest.mark.parametrize("marker", [False, "true", 1, None], ids=repr)
def test_envelope_makes_update_from_other_deleted_marker(marker: Any) -> None:
    payload = {"entity_id": "e/1", "properties": {"__deleted__": marker}}
    change = parse(event(payload=payload)).change
    assert change.kind is ChangeKind.UPDATE
    assert change.properties == {"__deleted__": dumps(marker)}


# ---------------------------------------------------------------- limits


def properties_event(properties: dict[str, Any]) -> dict[str, Any]:
    return event(payload={"entity_id": "e", "properties": properties})


def test_envelope_applies_no_limits_by_default() -> None:
    many = {f"p{n:04d}": "x" * 1000 for n in range(1000)}
    assert len(parse(properties_event(many)).change.properties) == 1000


def test_envelope_accepts_property_count_at_limit() -> None:
    limits = EventLimits(max_properties=2)
    assert len(parse(properties_event({"a": 1, "b": 2}), limits=limits).change.properties) == 2


def test_envelope_rejects_too_many_properties() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse(properties_event({"a": 1, "b": 2, "c": 3}), limits=EventLimits(max_properties=2))
    assert str(info.value) == "too many properties: 3 (limit 2)"
    assert not isinstance(info.value, InvalidEvent)


def test_envelope_accepts_value_at_byte_limit() -> None:
    limits = EventLimits(max_value_bytes=5)
    assert parse(properties_event({"a": "abc"}), limits=limits).change.properties == {"a": b'"abc"'}


def test_envelope_rejects_value_over_byte_limit_measured_canonically() -> None:
    limits = EventLimits(max_value_bytes=12)
    # Canonical {"x":2,"y":1} is 13 bytes, whatever spacing the client used.
    with pytest.raises(PayloadTooLarge) as info:
        parse(properties_event({"a": "ok", "b": {"y": 1, "x": 2}}), limits=limits)
    assert str(info.value) == "property 'b' is 13 bytes (limit 12)"


def test_envelope_skips_limits_when_properties_not_an_object() -> None:
    limits = EventLimits(max_properties=1, max_value_bytes=1)
    payload = {"entity_id": "e", "properties": ["a", "b", "c"]}
    assert parse(event(payload=payload), limits=limits).change.kind is ChangeKind.LOG_ONLY


def test_envelope_accepts_nesting_at_depth_limit() -> None:
    limits = EventLimits(max_depth=2)
    value = {"a": [1, 2], "c": {}}
    assert (
        parse(properties_event({"v": value, "s": 1}), limits=limits).change.properties["s"] == b"1"
    )


@pytest.mark.parametrize("value", [{"a": {"b": {}}}, [[[1]]], {"a": [{"b": 1}]}])
def test_envelope_rejects_nesting_over_depth_limit(value: Any) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse(properties_event({"ok": 1, "deep": value}), limits=EventLimits(max_depth=2))
    assert str(info.value) == "property 'deep' nests deeper than 2 levels"


def _nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_envelope_checks_depth_before_encoding_a_property_too_deep_to_encode() -> None:
    # 300 levels: orjson cannot encode it (it stops at 254); the limit answers first.
    with pytest.raises(PayloadTooLarge) as info:
        parse(properties_event({"deep": _nested_lists(300)}), limits=EventLimits(max_depth=32))
    assert str(info.value) == "property 'deep' nests deeper than 32 levels"


@pytest.mark.parametrize("where", ["property", "payload"])
def test_envelope_refuses_a_value_too_deep_to_encode_like_serde(where: str) -> None:
    # Without a depth limit (or outside properties), as serde refuses deep JSON in Flux.
    deep = _nested_lists(300)
    if where == "property":
        obj = properties_event({"deep": deep})
    else:
        obj = event(payload={"entity_id": "e/1", "properties": {}, "extra": deep})
    assert malformed(obj) == "recursion limit exceeded"


def test_envelope_refuses_a_key_json_cannot_hold() -> None:
    # Not from JSON (whose keys are strings), but another decoder may produce it.
    message = malformed(properties_event({"p": {1: "one"}}))
    assert message.startswith("invalid value: "), message


# ---------------------------------------------------------------- if_version in the body


@pytest.mark.parametrize("value", [0, 7])
def test_envelope_reads_if_version_from_the_event(value: int) -> None:
    assert parse(event(if_version=value)).change.if_version == value


def test_envelope_reads_null_if_version_as_none() -> None:
    assert parse(event(if_version=None)).change.if_version is None


def test_envelope_prefers_the_callers_if_version() -> None:
    assert parse(event(if_version=2), if_version=5).change.if_version == 5


@pytest.mark.parametrize(
    ("value", "text"), [(-1, "-1"), (True, "true"), (1.5, "1.5"), ("3", '"3"')]
)
def test_envelope_rejects_if_version_that_is_not_a_non_negative_integer(
    value: Any, text: str
) -> None:
    assert rule_error(event(if_version=value)) == (
        f"if_version must be a non-negative integer, got {text}"
    )


# ---------------------------------------------------------------- bodies


def test_envelope_parses_event_body() -> None:
    body = dumps(event(eventId="ev-1"))
    envelope = parse_event_body(body, now_ms=NOW, new_id=IdFactory())
    assert envelope == parse(event(eventId="ev-1"))


def test_envelope_body_applies_limits() -> None:
    body = dumps(properties_event({"a": 1, "b": 2}))
    with pytest.raises(PayloadTooLarge):
        parse_event_body(body, now_ms=NOW, new_id=IdFactory(), limits=EventLimits(max_properties=1))


SERDE_POSITION = re.compile(r"^\S.* at line (\d+) column (\d+)$")


@pytest.mark.parametrize(
    ("body", "line"),
    [
        pytest.param(b"", 1, id="empty"),
        pytest.param(b"{", 1, id="truncated"),
        pytest.param(b'{"stream": "s",}', 1, id="trailing-comma"),
        pytest.param(b'{\n  "stream": sensors\n}', 2, id="bare-word"),
        pytest.param(b'{"a":1}\n\n{"b":2}', 3, id="two-documents"),
        pytest.param(b"NaN", 1, id="nan"),
        pytest.param(b"\xff", 1, id="not-utf8"),
    ],
)
def test_envelope_rejects_bad_json_body_with_serde_position(body: bytes, line: int) -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_event_body(body, now_ms=NOW, new_id=IdFactory())
    match = SERDE_POSITION.match(str(info.value))
    assert match is not None, str(info.value)
    assert int(match.group(1)) == line
    assert "(char" not in str(info.value)


def test_envelope_rejects_non_object_body_like_serde() -> None:
    with pytest.raises(MalformedEvent, match="^invalid type: sequence, expected struct FluxEvent$"):
        parse_event_body(b"[]", now_ms=NOW, new_id=IdFactory())


def test_serde_message_keeps_message_without_position() -> None:
    class Unpositioned(JSONError):
        """A decode error whose text carries no position (a future orjson, say)."""

        def __str__(self) -> str:
            return "recursion limit exceeded"

    assert serde_message(Unpositioned("x", "", 0)) == "recursion limit exceeded"


def test_batch_body_returns_raw_events_unvalidated() -> None:
    body = b'{"events": [{"stream": "s"}, 5, null], "extra": true}'
    assert parse_batch_body(body) == [{"stream": "s"}, 5, None]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{}", "missing field `events`", id="missing-events"),
        pytest.param(b'{"Events": []}', "missing field `events`", id="wrong-case"),
        pytest.param(
            b'{"events": {}}', "invalid type: map, expected a sequence", id="events-object"
        ),
        pytest.param(
            b'{"events": null}', "invalid type: null, expected a sequence", id="events-null"
        ),
        pytest.param(
            b'{"events": "x"}', 'invalid type: string "x", expected a sequence', id="events-string"
        ),
        pytest.param(b"[]", "invalid type: sequence, expected struct BatchRequest", id="body-list"),
        pytest.param(
            b"5", "invalid type: integer `5`, expected struct BatchRequest", id="body-number"
        ),
    ],
)
def test_batch_body_rejects_wrong_shape_like_serde(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_batch_body(body)
    assert str(info.value) == message


def test_batch_body_rejects_empty_event_list() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_batch_body(b'{"events": []}')
    assert str(info.value) == "Batch request must contain at least one event"
    assert not isinstance(info.value, MalformedEvent)


def test_batch_body_rejects_bad_json_with_serde_position() -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_batch_body(b'{"events": [\n{"stream": }]}')
    match = SERDE_POSITION.match(str(info.value))
    assert match is not None, str(info.value)
    assert match.group(1) == "2"


# ---------------------------------------------------------------- serde_type_name


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean `true`"),
        (False, "boolean `false`"),
        (0, "integer `0`"),
        (-7, "integer `-7`"),
        (2**64 - 1, "integer `18446744073709551615`"),
        (1.5, "floating point `1.5`"),
        (-0.25, "floating point `-0.25`"),
        ("x", 'string "x"'),
        ("", 'string ""'),
        ('say "hi"', 'string "say \\"hi\\""'),
        ([], "sequence"),
        ([1, 2], "sequence"),
        ({}, "map"),
        ({"a": 1}, "map"),
    ],
    ids=repr,
)
def test_serde_type_name_describes_json_value(value: Any, name: str) -> None:
    assert serde_type_name(value) == name
