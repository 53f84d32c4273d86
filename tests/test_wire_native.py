"""Server frames of the native protocol built as bytes (hub/wire/native.py).

A delta frame is a subscription's encoded ``"sub"`` entry spliced in front of a body
encoded once per (encoding, projection); these tests decode what comes out with the
clients' own decoders (``json``, ``msgpack``) and compare every field, in order.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import msgpack
import orjson
import pytest

from hub.core.cursor import Position
from hub.core.model import Delta, Entity, LeasedDelta
from hub.wire.codec import JSON, MSGPACK, Codec
from hub.wire.jsonutil import canonical
from hub.wire.native import DeltaEncoder, SubPrefix, delta_frame, entity_value

T = 1_772_049_867_638
T_TEXT = "2026-02-25T20:04:27.638Z"
AT = Position(2, 1700, 3)

CODECS = [pytest.param(JSON, id="json"), pytest.param(MSGPACK, id="msgpack")]


def encode(**values: Any) -> dict[str, bytes]:
    return {name: canonical(values[name]) for name in sorted(values)}


UPDATE = Delta("e/1", 4, 5, T, touched=encode(a=1, b="x", c=True), unchanged=frozenset({"b"}))
CREATED = Delta("e/1", 0, 1, T, touched=encode(a=1, n={"k": [1, 2]}), created=True)
DELETED = Delta("e/1", 5, 6, T, deleted=True)
TOUCH = Delta("e/1", 5, 5, T, touched=encode(a=1), unchanged=frozenset({"a"}))


def decode(codec: Codec, data: bytes) -> dict[str, Any]:
    """Decode a frame as a client does."""
    frame: dict[str, Any] = json.loads(data) if codec.text else msgpack.unpackb(data)
    return frame


def frame_of(
    codec: Codec,
    delta: Delta,
    position: Position = AT,
    *,
    sub: str = "s1",
    properties: frozenset[str] | None = None,
    touches: bool = False,
    conflated: bool = False,
) -> dict[str, Any] | None:
    """The decoded frame subscription ``sub`` gets, None if it gets nothing."""
    body = DeltaEncoder(delta, position).body(codec, properties, touches, conflated)
    if body is None:
        return None
    frame = decode(codec, delta_frame(codec, SubPrefix.of(codec, sub), body))
    # The entry count the MessagePack map header is written from.
    assert body[1] + 1 == len(frame)
    return frame


def assert_frame(frame: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    """Equal, with the fields in the same order."""
    assert frame is not None
    assert list(frame.items()) == list(expected.items())


# ---------------------------------------------------------------- SubPrefix


def test_sub_prefix_opens_json_object_with_sub() -> None:
    assert SubPrefix.of(JSON, "s1").data == b'{"sub":"s1",'
    assert SubPrefix.of(JSON, 'a"b\\é').data == b'{"sub":"a\\"b\\\\\xc3\xa9",'


def test_sub_prefix_is_msgpack_sub_entry() -> None:
    assert SubPrefix.of(MSGPACK, "s1").data == b"\xa3sub\xa2s1"


# ---------------------------------------------------------------- updates


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_carries_update_changes_only(codec: Codec) -> None:
    assert_frame(
        frame_of(codec, UPDATE),
        {
            "sub": "s1",
            "type": "delta",
            "id": "e/1",
            "base": 4,
            "version": 5,
            "set": {"a": 1, "c": True},
            "lastUpdated": T_TEXT,
            "position": "2:1700-3",
        },
    )


def test_delta_frame_in_json_is_compact_text() -> None:
    body = DeltaEncoder(UPDATE, AT).body(JSON)
    assert body is not None
    assert delta_frame(JSON, SubPrefix.of(JSON, "s1"), body) == (
        b'{"sub":"s1","type":"delta","id":"e/1","base":4,"version":5,'
        b'"set":{"a":1,"c":true},"lastUpdated":"2026-02-25T20:04:27.638Z",'
        b'"position":"2:1700-3"}'
    )


def test_delta_frame_in_msgpack_starts_with_fixmap_header() -> None:
    body = DeltaEncoder(UPDATE, AT).body(MSGPACK)
    assert body is not None
    data = delta_frame(MSGPACK, SubPrefix.of(MSGPACK, "s1"), body)
    assert body[1] == 7
    assert data[0] == 0x80 | 8
    assert data[1:].startswith(b"\xa3sub\xa2s1\xa4type\xa5delta")


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_prints_partition_zero_position_bare(codec: Codec) -> None:
    frame = frame_of(codec, UPDATE, Position(0, 1700, 3))
    assert frame is not None
    assert frame["position"] == "1700-3"


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_marks_creation(codec: Codec) -> None:
    assert_frame(
        frame_of(codec, CREATED),
        {
            "sub": "s1",
            "type": "delta",
            "id": "e/1",
            "base": 0,
            "version": 1,
            "created": True,
            "set": {"a": 1, "n": {"k": [1, 2]}},
            "lastUpdated": T_TEXT,
            "position": "2:1700-3",
        },
    )


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_carries_values_as_json_values(codec: Codec) -> None:
    values: dict[str, Any] = {
        "null": None,
        "float": 21.5,
        "big": 2**64 - 1,
        "neg": -(2**63),
        "text": 'é "quoted" \n',
        "nested": {"b": [1, {"c": None}], "a": True},
        "empty": {},
        'odd "name"': [],
    }
    delta = Delta("e/1", 1, 2, T, touched=encode(**values))
    frame = frame_of(codec, delta)
    assert frame is not None
    assert frame["set"] == values
    assert list(frame["set"]) == sorted(values)


# ---------------------------------------------------------------- deletions


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_carries_deletion(codec: Codec) -> None:
    assert_frame(
        frame_of(codec, DELETED),
        {
            "sub": "s1",
            "type": "deleted",
            "id": "e/1",
            "base": 5,
            "version": 6,
            "lastUpdated": T_TEXT,
            "position": "2:1700-3",
        },
    )


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_sends_deletion_whatever_the_projection(codec: Codec) -> None:
    # The client must learn that the entity is gone even if it watches no property.
    frame = frame_of(codec, DELETED, properties=frozenset({"zz"}), touches=True)
    assert frame is not None
    assert frame["type"] == "deleted"
    assert "touched" not in frame
    assert "set" not in frame


# ---------------------------------------------------------------- projections


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_carries_only_projected_properties(codec: Codec) -> None:
    frame = frame_of(codec, UPDATE, properties=frozenset({"a", "b", "zz"}))
    assert frame is not None
    assert frame["set"] == {"a": 1}


@pytest.mark.parametrize("codec", CODECS)
def test_delta_encoder_skips_delta_that_changed_nothing_in_projection(codec: Codec) -> None:
    # "b" was touched but did not change; "c" changed but is not projected.
    assert DeltaEncoder(UPDATE, AT).body(codec, frozenset({"b", "zz"})) is None


@pytest.mark.parametrize("codec", CODECS)
def test_delta_encoder_skips_touch_only_delta_without_touches(codec: Codec) -> None:
    assert DeltaEncoder(TOUCH, AT).body(codec) is None


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_sends_creation_even_if_nothing_projected_changed(codec: Codec) -> None:
    frame = frame_of(codec, CREATED, properties=frozenset({"zz"}))
    assert frame is not None
    assert (frame["created"], frame["set"]) == (True, {})


# ---------------------------------------------------------------- touches


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_lists_touched_properties_for_touches_subscription(codec: Codec) -> None:
    assert_frame(
        frame_of(codec, UPDATE, touches=True),
        {
            "sub": "s1",
            "type": "delta",
            "id": "e/1",
            "base": 4,
            "version": 5,
            "set": {"a": 1, "c": True},
            "touched": ["a", "b", "c"],
            "lastUpdated": T_TEXT,
            "position": "2:1700-3",
        },
    )


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_sends_touch_only_delta_to_touches_subscription(codec: Codec) -> None:
    frame = frame_of(codec, TOUCH, touches=True)
    assert frame is not None
    assert (frame["base"], frame["version"], frame["set"], frame["touched"]) == (5, 5, {}, ["a"])


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_lists_only_projected_touched_properties(codec: Codec) -> None:
    frame = frame_of(codec, UPDATE, properties=frozenset({"b"}), touches=True)
    assert frame is not None
    assert (frame["set"], frame["touched"]) == ({}, ["b"])


@pytest.mark.parametrize("codec", CODECS)
def test_delta_encoder_skips_delta_touching_nothing_in_projection_even_with_touches(
    codec: Codec,
) -> None:
    assert DeltaEncoder(UPDATE, AT).body(codec, frozenset({"zz"}), touches=True) is None


# ---------------------------------------------------------------- leases

T_LATER = T + 30_000
T_LATER_TEXT = "2026-02-25T20:04:57.638Z"


def with_deadline(delta: Delta, deadline: int) -> Delta:
    values = {f.name: getattr(delta, f.name) for f in fields(Delta)}
    return LeasedDelta(**values, deadline=deadline)


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_carries_the_new_deadline_after_the_time(codec: Codec) -> None:
    frame = frame_of(codec, with_deadline(UPDATE, T_LATER))
    assert frame is not None
    assert list(frame)[-3:] == ["lastUpdated", "expiresAt", "position"]
    assert frame["expiresAt"] == T_LATER_TEXT


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_says_null_when_the_lease_was_removed(codec: Codec) -> None:
    frame = frame_of(codec, with_deadline(UPDATE, 0))
    assert frame is not None
    assert "expiresAt" in frame and frame["expiresAt"] is None


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_without_news_of_the_lease_has_no_expires_at(codec: Codec) -> None:
    for delta in (UPDATE, CREATED, with_deadline(CREATED, 0)):
        frame = frame_of(codec, delta)
        assert frame is not None and "expiresAt" not in frame
    frame = frame_of(codec, with_deadline(CREATED, T_LATER))
    assert frame is not None and frame["expiresAt"] == T_LATER_TEXT


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_sends_a_beat_to_every_projection_with_the_news_alone(codec: Codec) -> None:
    # A heartbeat changes no value: it goes out anyway, for its deadline.
    beat = with_deadline(TOUCH, T_LATER)
    for properties in (None, frozenset({"zz"})):
        assert_frame(
            frame_of(codec, beat, properties=properties),
            {
                "sub": "s1",
                "type": "delta",
                "id": "e/1",
                "base": 5,
                "version": 5,
                "set": {},
                "lastUpdated": T_TEXT,
                "expiresAt": T_LATER_TEXT,
                "position": "2:1700-3",
            },
        )


@pytest.mark.parametrize("codec", CODECS)
def test_entity_value_carries_expires_at_only_for_a_leased_entity(codec: Codec) -> None:
    assert "expiresAt" not in entity_value(ENTITY, codec)
    leased = Entity(ENTITY.id, ENTITY.properties, 3, T, T_LATER)
    value = decode(codec, codec.encode(entity_value(leased, codec)))
    assert list(value) == ["id", "properties", "version", "lastUpdated", "expiresAt"]
    assert value["expiresAt"] == T_LATER_TEXT


# ---------------------------------------------------------------- conflated


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_marks_conflated_delta_last(codec: Codec) -> None:
    frame = frame_of(codec, UPDATE, touches=True, conflated=True)
    assert frame is not None
    assert list(frame)[-3:] == ["lastUpdated", "position", "conflated"]
    assert frame["conflated"] is True
    deleted = frame_of(codec, DELETED, conflated=True)
    assert deleted is not None
    assert list(deleted)[-1] == "conflated"


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_has_at_most_twelve_entries(codec: Codec) -> None:
    # Every optional field at once: the MessagePack header is always a fixmap.
    frame = frame_of(codec, with_deadline(CREATED, T_LATER), touches=True, conflated=True)
    assert frame is not None
    assert list(frame) == [
        "sub",
        "type",
        "id",
        "base",
        "version",
        "created",
        "set",
        "touched",
        "lastUpdated",
        "expiresAt",
        "position",
        "conflated",
    ]


# ---------------------------------------------------------------- sharing


def test_delta_encoder_encodes_each_body_once() -> None:
    encoder = DeltaEncoder(UPDATE, AT)
    body = encoder.body(JSON)
    assert body is not None
    assert encoder.body(JSON) is body
    assert encoder.body(JSON, None, False, False) is body
    # Equal projections share a body, whatever set object carries them.
    projected = encoder.body(JSON, frozenset({"a", "c"}))
    assert encoder.body(JSON, frozenset(["c", "a"])) is projected
    assert encoder.body(MSGPACK) is encoder.body(MSGPACK)


def test_delta_encoder_keeps_bodies_of_different_keys_apart() -> None:
    encoder = DeltaEncoder(UPDATE, AT)
    bodies = [
        encoder.body(JSON),
        encoder.body(MSGPACK),
        encoder.body(JSON, frozenset({"a"})),
        encoder.body(JSON, touches=True),
        encoder.body(JSON, conflated=True),
    ]
    assert all(body is not None for body in bodies)
    assert len({id(body) for body in bodies}) == len(bodies)
    assert len(set(bodies)) == len(bodies)


def test_delta_encoder_remembers_skipped_body() -> None:
    encoder = DeltaEncoder(TOUCH, AT)
    assert encoder.body(JSON) is None
    assert encoder.body(JSON) is None
    assert encoder.body(JSON, touches=True) is not None


@pytest.mark.parametrize("codec", CODECS)
def test_delta_frame_splices_each_subscription_in_front_of_shared_body(codec: Codec) -> None:
    body = DeltaEncoder(UPDATE, AT).body(codec)
    assert body is not None
    first = decode(codec, delta_frame(codec, SubPrefix.of(codec, "one"), body))
    second = decode(codec, delta_frame(codec, SubPrefix.of(codec, "twö"), body))
    assert (first.pop("sub"), second.pop("sub")) == ("one", "twö")
    assert first == second


# ---------------------------------------------------------------- DeltaEncoder.frame


def unframe(data: bytes) -> bytes:
    """The payload of an unmasked, unfragmented server frame."""
    second = data[1] & 0x7F
    offset = 2 if second < 126 else 4 if second == 126 else 10
    return data[offset:]


@pytest.mark.parametrize("codec", CODECS)
def test_delta_encoder_frame_is_the_delta_frame_in_a_websocket_frame(codec: Codec) -> None:
    prefix = SubPrefix.of(codec, "s1")
    encoder = DeltaEncoder(UPDATE, AT)
    data = encoder.frame(codec, prefix)
    assert data is not None
    assert data[0] == (0x81 if codec.text else 0x82)
    body = encoder.body(codec)
    assert body is not None
    assert unframe(data) == delta_frame(codec, prefix, body)


def test_delta_encoder_frame_is_shared_by_subscriptions_of_the_same_name() -> None:
    encoder = DeltaEncoder(UPDATE, AT)
    first = encoder.frame(JSON, SubPrefix.of(JSON, "s1"))
    assert encoder.frame(JSON, SubPrefix.of(JSON, "s1")) is first
    other = encoder.frame(JSON, SubPrefix.of(JSON, "s2"))
    assert other is not None and other != first


def test_delta_encoder_frame_is_none_when_the_projection_sends_nothing() -> None:
    encoder = DeltaEncoder(TOUCH, AT)
    assert encoder.frame(JSON, SubPrefix.of(JSON, "s1")) is None
    assert encoder.frame(JSON, SubPrefix.of(JSON, "s1"), touches=True) is not None


# ---------------------------------------------------------------- entity_value

ENTITY = Entity("ns/e", encode(a=1, b={"k": [1, None]}, c="é"), 3, T)


def test_entity_value_in_json_embeds_canonical_values_as_is() -> None:
    value = entity_value(ENTITY, JSON)
    assert value["properties"]["b"].__class__ is orjson.Fragment
    assert JSON.encode(value) == (
        b'{"id":"ns/e","properties":{"a":1,"b":{"k":[1,null]},"c":"\xc3\xa9"},'
        b'"version":3,"lastUpdated":"2026-02-25T20:04:27.638Z"}'
    )


def test_entity_value_in_msgpack_decodes_values() -> None:
    value = entity_value(ENTITY, MSGPACK)
    assert value == {
        "id": "ns/e",
        "properties": {"a": 1, "b": {"k": [1, None]}, "c": "é"},
        "version": 3,
        "lastUpdated": T_TEXT,
    }
    assert msgpack.unpackb(MSGPACK.encode(value)) == value


@pytest.mark.parametrize("codec", CODECS)
def test_entity_value_carries_only_projected_properties(codec: Codec) -> None:
    value = decode(codec, codec.encode(entity_value(ENTITY, codec, frozenset({"b", "zz"}))))
    assert value == {
        "id": "ns/e",
        "properties": {"b": {"k": [1, None]}},
        "version": 3,
        "lastUpdated": T_TEXT,
    }


@pytest.mark.parametrize("codec", CODECS)
def test_entity_value_with_empty_projection_carries_no_properties(codec: Codec) -> None:
    value = decode(codec, codec.encode(entity_value(ENTITY, codec, frozenset())))
    assert value["properties"] == {}
