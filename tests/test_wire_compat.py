"""Messages of the Flux-compatible WebSocket protocol (hub/wire/compat.py).

FLUX_COMPAT.md §2 (client and server messages) and §7 (``metrics_update``) are the
contract; server messages are compared byte for byte.
"""

from __future__ import annotations

from typing import Any

import pytest

from hub.core import Delta, World
from hub.wire import parse_event
from hub.wire.compat import (
    ClientCommand,
    Metrics,
    delta_messages,
    metrics_message,
    parse_client_message,
)
from hub.wire.jsonutil import dumps, loads

T = 1_772_049_867_638
T_TEXT = b"2026-02-25T20:04:27.638Z"


def applied(world: World, properties: dict[str, Any], now_ms: int = T) -> Delta:
    """Publish ``properties`` for entity ``e/1`` through the envelope and the reducer."""
    envelope = parse_event(
        {
            "stream": "sensors",
            "source": "agent-1",
            "timestamp": 1,
            "payload": {"entity_id": "e/1", "properties": properties},
        },
        now_ms=now_ms,
        new_id=lambda: "gen",
    )
    delta = world.apply(envelope.change, now_ms).delta
    assert delta is not None
    return delta


# ---------------------------------------------------------------- client messages


@pytest.mark.parametrize(
    ("data", "command"),
    [
        pytest.param(
            '{"type":"subscribe","entity_id":"a/1"}',
            ClientCommand("subscribe", "a/1"),
            id="subscribe",
        ),
        pytest.param(
            '{"type":"unsubscribe","entity_id":"a/1"}',
            ClientCommand("unsubscribe", "a/1"),
            id="unsubscribe",
        ),
        pytest.param(
            '{"type":"subscribe","entity_id":"*"}', ClientCommand("subscribe", "*"), id="all"
        ),
        pytest.param(
            '{"type":"subscribe","entity_id":"matt/*"}',
            ClientCommand("subscribe", "matt/*"),
            id="literal-star-id",
        ),
        pytest.param(
            '{"type":"subscribe","entity_id":""}', ClientCommand("subscribe", ""), id="empty-id"
        ),
        pytest.param(
            b'{"type":"subscribe","entity_id":"a/1"}',
            ClientCommand("subscribe", "a/1"),
            id="bytes",
        ),
        pytest.param(
            '{"entity_id":"a/1","extra":[1],"type":"subscribe","token":"x"}',
            ClientCommand("subscribe", "a/1"),
            id="extra-fields-ignored",
        ),
        pytest.param(
            ' {\n "type" : "unsubscribe" , "entity_id" : "ü/1" } ',
            ClientCommand("unsubscribe", "ü/1"),
            id="whitespace-and-unicode",
        ),
    ],
)
def test_compat_client_message_parses_valid_command(
    data: str | bytes, command: ClientCommand
) -> None:
    assert parse_client_message(data) == command


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="invalid-json"),
        pytest.param('{"type":"subscribe","entity_id":"a"', id="truncated"),
        pytest.param(b"\xff", id="invalid-utf8"),
        pytest.param('{"type":"query","entity_id":"a"}', id="unknown-type"),
        pytest.param('{"type":"Subscribe","entity_id":"a"}', id="type-wrong-case"),
        pytest.param('{"type":"update","entity_id":"a"}', id="docs-only-type"),
        pytest.param('{"entity_id":"a"}', id="missing-type"),
        pytest.param('{"type":null,"entity_id":"a"}', id="null-type"),
        pytest.param('{"type":["subscribe"],"entity_id":"a"}', id="list-type"),
        pytest.param('{"type":{"subscribe":1},"entity_id":"a"}', id="object-type"),
        pytest.param('{"type":"subscribe"}', id="missing-entity-id"),
        pytest.param('{"type":"subscribe","entity_id":null}', id="null-entity-id"),
        pytest.param('{"type":"subscribe","entity_id":5}', id="number-entity-id"),
        pytest.param('{"type":"subscribe","entity_id":["a"]}', id="list-entity-id"),
        pytest.param('{"type":"subscribe","entityId":"a"}', id="camel-case-entity-id"),
        pytest.param('[{"type":"subscribe","entity_id":"a"}]', id="list"),
        pytest.param('"subscribe"', id="string"),
        pytest.param("5", id="number"),
        pytest.param("null", id="null"),
    ],
)
def test_compat_client_message_ignores_what_flux_ignores(data: str | bytes) -> None:
    assert parse_client_message(data) is None


# ---------------------------------------------------------------- state_update


def test_compat_delta_gives_one_state_update_per_property_in_sorted_order() -> None:
    delta = applied(World(), {"zeta": 1, "alpha": "on", "Mid": None})
    assert delta_messages(delta) == [
        b'{"type":"state_update","entity_id":"e/1","property":"Mid","value":null,'
        b'"timestamp":"' + T_TEXT + b'"}',
        b'{"type":"state_update","entity_id":"e/1","property":"alpha","value":"on",'
        b'"timestamp":"' + T_TEXT + b'"}',
        b'{"type":"state_update","entity_id":"e/1","property":"zeta","value":1,'
        b'"timestamp":"' + T_TEXT + b'"}',
    ]


def test_compat_delta_reports_unchanged_property_too() -> None:
    world = World()
    applied(world, {"a": 1, "b": 1}, T - 5_000)
    delta = applied(world, {"a": 1, "b": 2})
    assert [loads(m) for m in delta_messages(delta)] == [
        {
            "type": "state_update",
            "entity_id": "e/1",
            "property": "a",
            "value": 1,
            "timestamp": T_TEXT.decode(),
        },
        {
            "type": "state_update",
            "entity_id": "e/1",
            "property": "b",
            "value": 2,
            "timestamp": T_TEXT.decode(),
        },
    ]


def test_compat_delta_reports_event_that_changed_nothing() -> None:
    world = World()
    applied(world, {"a": 1}, T - 5_000)
    delta = applied(world, {"a": 1})
    assert delta.base == delta.version
    assert delta_messages(delta) == [
        b'{"type":"state_update","entity_id":"e/1","property":"a","value":1,'
        b'"timestamp":"' + T_TEXT + b'"}'
    ]


def test_compat_state_update_has_exactly_flux_fields_in_order() -> None:
    delta = applied(World(), {"pos": {"y": 2, "x": [1, {"b": 0, "a": 1}]}})
    (message,) = delta_messages(delta)
    assert list(loads(message)) == ["type", "entity_id", "property", "value", "timestamp"]
    assert loads(message)["value"] == {"x": [1, {"a": 1, "b": 0}], "y": 2}


def test_compat_state_update_embeds_value_bytes_verbatim() -> None:
    # ``1e2`` would come out as ``100.0`` if the value were decoded and re-encoded.
    delta = Delta("e", 0, 1, T, touched={"n": b"1e2", "s": b'"\\u00e9"'})
    assert delta_messages(delta) == [
        b'{"type":"state_update","entity_id":"e","property":"n","value":1e2,'
        b'"timestamp":"' + T_TEXT + b'"}',
        b'{"type":"state_update","entity_id":"e","property":"s","value":"\\u00e9",'
        b'"timestamp":"' + T_TEXT + b'"}',
    ]


def test_compat_state_update_escapes_entity_id_and_property_name() -> None:
    delta = Delta('a"b\\c/ü', 0, 1, T, touched={'say "hi"\n': b"1"})
    (message,) = delta_messages(delta)
    assert loads(message) == {
        "type": "state_update",
        "entity_id": 'a"b\\c/ü',
        "property": 'say "hi"\n',
        "value": 1,
        "timestamp": T_TEXT.decode(),
    }


@pytest.mark.parametrize(
    ("now_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_772_049_867_005, "2026-02-25T20:04:27.005Z"),
        (T, T_TEXT.decode()),
    ],
)
def test_compat_state_update_timestamp_is_rfc3339_z_millis(now_ms: int, text: str) -> None:
    (message,) = delta_messages(Delta("e", 0, 1, now_ms, touched={"a": b"1"}))
    assert loads(message)["timestamp"] == text


# ---------------------------------------------------------------- entity_deleted


def test_compat_deletion_gives_one_entity_deleted() -> None:
    world = World()
    applied(world, {"a": 1, "b": 2}, T - 5_000)
    delta = applied(world, {"__deleted__": True, "a": 3})
    assert delta.deleted
    assert delta_messages(delta) == [
        b'{"type":"entity_deleted","entity_id":"e/1","timestamp":"' + T_TEXT + b'"}'
    ]


def test_compat_entity_deleted_escapes_entity_id() -> None:
    (message,) = delta_messages(Delta('x"/y', 3, 4, T, deleted=True))
    assert loads(message) == {
        "type": "entity_deleted",
        "entity_id": 'x"/y',
        "timestamp": T_TEXT.decode(),
    }


# ---------------------------------------------------------------- metrics_update


def test_compat_metrics_message_has_flux_layout() -> None:
    metrics = Metrics(
        entities_total=3,
        events_total=120,
        events_rate_per_second=1.2,
        websocket_connections=2,
        publishers_active=1,
    )
    assert metrics_message(metrics, T) == (
        b'{"type":"metrics_update","timestamp":"2026-02-25T20:04:27.638Z",'
        b'"entities":{"total":3},'
        b'"events":{"total":120,"rate_per_second":1.2},'
        b'"websocket":{"connections":2},'
        b'"publishers":{"active":1}}'
    )


def test_compat_metrics_message_writes_zero_rate_as_float() -> None:
    metrics = Metrics(0, 0, 0.0, 0, 0)
    assert loads(metrics_message(metrics, 0)) == {
        "type": "metrics_update",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "entities": {"total": 0},
        "events": {"total": 0, "rate_per_second": 0.0},
        "websocket": {"connections": 0},
        "publishers": {"active": 0},
    }
    assert b'"rate_per_second":0.0' in metrics_message(metrics, 0)


def test_compat_messages_are_valid_json() -> None:
    world = World()
    deltas = [
        applied(world, {"a": [1, 2], "b": {"c": None}, "d": "x\ny"}, T - 1),
        applied(world, {"__deleted__": True}),
    ]
    messages = [m for d in deltas for m in delta_messages(d)]
    messages.append(metrics_message(Metrics(1, 2, 0.4, 3, 4), T))
    assert [dumps(loads(m)) for m in messages] == messages
