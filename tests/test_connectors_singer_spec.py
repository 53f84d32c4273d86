"""A Singer tap's registration and record mapping (hub/connectors/singer_spec.py), no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from hub.connectors.singer_spec import (
    MappingError,
    RecordMapper,
    StreamMap,
    TapSpec,
    parse_tap_request,
)
from hub.errors import BadRequest


def spec(**streams: StreamMap) -> TapSpec:
    return TapSpec(
        name="orders",
        tap="tap-x",
        pip="tap-x==1.0",
        executable=None,
        namespace="shop",
        config={"path": "/srv"},
        sealed_secrets=b"\x01sealed",
        streams=streams or {"orders": StreamMap("order-{id}", None)},
        interval=300.0,
        timeout=3600.0,
        idle_timeout=300.0,
        created_ms=1,
    )


def test_request_defaults_pip_to_the_tap_name_and_times_to_the_documented_values() -> None:
    body = {"name": "orders", "tap": "tap-x", "namespace": "shop", "streams": {"s": {}}}
    request = parse_tap_request(body, min_interval=1.0, reserved=set())
    assert (request.pip, request.executable, request.config, request.secrets) == (
        "tap-x",
        None,
        {},
        None,
    )
    assert (request.interval, request.timeout, request.idle_timeout) == (300.0, 3600.0, 300.0)
    assert request.streams == {"s": StreamMap(None, None)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": 5}, "name: expected a string, got integer `5`"),
        ({"executable": "relative/tap"}, "executable: an absolute path of at most 1024"),
        ({"pip": ""}, "pip: a requirement of at most 512 characters, no option"),
        ({"config": [1]}, "config: expected an object, got sequence"),
        ({"config": {"k": "v" * 70_000}}, "config: config and secrets are"),
        ({"streams": {"s": []}}, "streams.s: expected an object, got sequence"),
        ({"streams": {"s": {"properties": "x"}}}, "streams.s.properties: a list of at most"),
        ({"streams": {"s": {"entity_id": "{}"}}}, "streams.s.entity_id: unbalanced or empty"),
        ({"timeout_secs": True}, "timeout_secs: expected a number, got boolean"),
        ({"idle_timeout_secs": 1e9}, "idle_timeout_secs: must be at most 86400"),
        ({"namespace": "x"}, "namespace: "),
    ],
)
def test_request_refusal_names_the_field(change: dict[str, Any], message: str) -> None:
    body = {"name": "orders", "tap": "tap-x", "namespace": "shop", "streams": {"s": {}}}
    with pytest.raises(BadRequest) as caught:
        parse_tap_request({**body, **change}, min_interval=1.0, reserved=set())
    assert caught.value.status == 422
    assert str(caught.value).startswith(message), str(caught.value)


def test_stored_form_round_trips_and_a_damaged_one_reads_as_none() -> None:
    original = spec(orders=StreamMap("order-{id}", ("total",)))
    assert TapSpec.from_json("orders", original.to_json()) == original
    assert TapSpec.from_json("orders", b"{not json") is None
    assert TapSpec.from_json("orders", b'{"tap": "x"}') is None
    view = original.describe()
    assert view["has_secrets"] is True and "secrets" not in view and "sealed_secrets" not in view


def test_event_id_depends_on_stream_key_and_bookmark_only() -> None:
    mapper = RecordMapper(spec())
    mapper.schema("orders", ["id"], ["updated"])
    first = mapper.event("orders", {"id": 1, "updated": "t1", "total": 3})
    # The same key and bookmark: the same id, whatever else the record says.
    same = mapper.event("orders", {"total": 4, "updated": "t1", "id": 1})
    moved = mapper.event("orders", {"id": 1, "updated": "t2", "total": 3})
    other = mapper.event("orders", {"id": 2, "updated": "t1", "total": 3})
    assert first["eventId"] == same["eventId"]
    assert len({first["eventId"], moved["eventId"], other["eventId"]}) == 3
    assert first["payload"] == {
        "entity_id": "shop/order-1",
        "properties": {"id": 1, "updated": "t1", "total": 3},
    }
    assert (first["stream"], first["source"], first["key"]) == ("singer", "tap.orders", "orders")


def test_without_keys_the_whole_record_makes_the_id() -> None:
    mapper = RecordMapper(spec())
    a = mapper.event("orders", {"id": 1, "v": 1})
    assert a["eventId"] == mapper.event("orders", {"v": 1, "id": 1})["eventId"]
    assert a["eventId"] != mapper.event("orders", {"id": 1, "v": 2})["eventId"]


def test_default_entity_id_and_property_selection() -> None:
    mapper = RecordMapper(spec(users=StreamMap(None, ("name", "absent"))))
    with pytest.raises(MappingError, match="has no key_properties"):
        mapper.event("users", {"org": "a", "id": 1})
    mapper.schema("users", ["org", "id"], None)
    event = mapper.event("users", {"org": "a", "id": 1, "name": "Ann", "_sdc_x": 1})
    assert event["payload"] == {"entity_id": "shop/users/a/1", "properties": {"name": "Ann"}}
    with pytest.raises(MappingError, match="field 'id' is null, not a string or number"):
        mapper.event("users", {"org": "a", "id": None})


def test_metadata_fields_are_dropped_by_default_and_templates_need_their_fields() -> None:
    mapper = RecordMapper(spec())
    event = mapper.event("orders", {"id": "7", "_sdc_batched_at": "t"})
    assert event["payload"] == {"entity_id": "shop/order-7", "properties": {"id": "7"}}
    with pytest.raises(MappingError, match="the record has no field 'id'"):
        mapper.event("orders", {"total": 1})
    assert mapper.wanted("orders") and not mapper.wanted("logs")
