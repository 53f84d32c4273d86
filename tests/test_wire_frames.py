"""Client frames of the native protocol (hub/wire/frames.py) and their error messages.

Every frame type validates through the one :data:`CLIENT_FRAMES` adapter; a frame
that does not gets one line naming the problem (:func:`describe_error`), sent back in
an ``error`` frame with the client's ``ref`` when it has a usable one (:func:`ref_of`).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hub.wire.frames import (
    CLIENT_FRAMES,
    MAX_ITEMS,
    Filter,
    GetFrame,
    ListFrame,
    PublishFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    describe_error,
    ref_of,
)

EVENT = {"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {"p": 1}}}


def error_of(raw: Any) -> str:
    """The one-line description of why ``raw`` is not a valid frame."""
    with pytest.raises(ValidationError) as info:
        CLIENT_FRAMES.validate_python(raw)
    return describe_error(info.value)


def subscribe(**fields: Any) -> dict[str, Any]:
    return {"type": "subscribe", "sub": "s1", "filter": {"all": True}, **fields}


# ---------------------------------------------------------------- valid frames


def test_client_frames_validates_publish() -> None:
    frame = CLIENT_FRAMES.validate_python(
        {"type": "publish", "ref": "r1", "events": [EVENT, "not-an-event", 5]}
    )
    # Events are checked one by one later (per-event results): anything goes here.
    assert frame == PublishFrame(type="publish", ref="r1", events=[EVENT, "not-an-event", 5])


def test_client_frames_validates_subscribe_with_every_filter_field() -> None:
    frame = CLIENT_FRAMES.validate_python(
        {
            "type": "subscribe",
            "ref": 7,
            "sub": "live",
            "filter": {
                "all": False,
                "ids": ["a", "b"],
                "prefixes": ["sensor-"],
                "namespaces": ["matt"],
                "globs": ["*/temp"],
            },
            "properties": ["temp", "hum"],
            "snapshot": True,
            "touches": True,
        }
    )
    assert isinstance(frame, SubscribeFrame)
    assert frame.ref == 7
    assert frame.sub == "live"
    assert frame.filter == Filter(
        all=False, ids=["a", "b"], prefixes=["sensor-"], namespaces=["matt"], globs=["*/temp"]
    )
    assert frame.properties == ["temp", "hum"]
    assert (frame.snapshot, frame.from_, frame.touches) == (True, None, True)


def test_client_frames_validates_subscribe_with_defaults() -> None:
    frame = CLIENT_FRAMES.validate_python(subscribe())
    assert isinstance(frame, SubscribeFrame)
    assert frame.ref is None
    assert frame.filter == Filter(all=True)
    assert frame.filter.ids == frame.filter.prefixes == frame.filter.namespaces == []
    assert frame.filter.globs == []
    assert (frame.properties, frame.snapshot, frame.from_, frame.touches) == (
        None,
        False,
        None,
        False,
    )


@pytest.mark.parametrize(
    "spec",
    [{"all": True}, {"ids": ["a"]}, {"prefixes": ["p"]}, {"namespaces": ["n"]}, {"globs": ["g*"]}],
)
def test_client_frames_accepts_filter_with_any_one_field(spec: dict[str, Any]) -> None:
    frame = CLIENT_FRAMES.validate_python(subscribe(filter=spec))
    assert isinstance(frame, SubscribeFrame)


def test_client_frames_reads_resume_cursor_from_from_field() -> None:
    frame = CLIENT_FRAMES.validate_python(subscribe(**{"from": "1700-3,1:1699-0"}))
    assert isinstance(frame, SubscribeFrame)
    assert frame.from_ == "1700-3,1:1699-0"
    assert frame.snapshot is False


def test_client_frames_accepts_null_from_with_snapshot() -> None:
    frame = CLIENT_FRAMES.validate_python(subscribe(snapshot=True, **{"from": None}))
    assert isinstance(frame, SubscribeFrame)
    assert (frame.snapshot, frame.from_) == (True, None)


def test_client_frames_validates_unsubscribe() -> None:
    frame = CLIENT_FRAMES.validate_python({"type": "unsubscribe", "ref": 1, "sub": "s1"})
    assert frame == UnsubscribeFrame(type="unsubscribe", ref=1, sub="s1")


def test_client_frames_validates_get() -> None:
    frame = CLIENT_FRAMES.validate_python({"type": "get", "ids": ["a", "b", "a"]})
    assert frame == GetFrame(type="get", ids=["a", "b", "a"])
    assert frame.ref is None


def test_client_frames_validates_list_with_defaults() -> None:
    frame = CLIENT_FRAMES.validate_python({"type": "list"})
    assert isinstance(frame, ListFrame)
    assert (frame.ref, frame.prefix, frame.namespace, frame.limit, frame.cursor) == (
        None,
        "",
        None,
        100,
        None,
    )


def test_client_frames_validates_list_with_every_field() -> None:
    frame = CLIENT_FRAMES.validate_python(
        {"type": "list", "ref": "x", "prefix": "a/", "namespace": "a", "limit": 5, "cursor": "c"}
    )
    assert frame == ListFrame(type="list", ref="x", prefix="a/", namespace="a", limit=5, cursor="c")


@pytest.mark.parametrize("limit", [1, 10_000])
def test_client_frames_accepts_list_limit_within_bounds(limit: int) -> None:
    frame = CLIENT_FRAMES.validate_python({"type": "list", "limit": limit})
    assert isinstance(frame, ListFrame)
    assert frame.limit == limit


def test_client_frames_accepts_bounds_of_lists_and_names() -> None:
    assert CLIENT_FRAMES.validate_python({"type": "get", "ids": ["a"] * 1000})
    assert CLIENT_FRAMES.validate_python(subscribe(sub="s" * 128, filter={"globs": ["g*"] * 100}))
    assert CLIENT_FRAMES.validate_python(
        subscribe(filter={"ids": ["a"] * MAX_ITEMS}, properties=["p"] * MAX_ITEMS)
    )


def test_client_frames_ignores_unknown_fields() -> None:
    # Newer clients may send fields this hub does not know.
    frame = CLIENT_FRAMES.validate_python(
        {"type": "get", "ids": ["a"], "future": {"x": 1}, "priority": 3}
    )
    assert frame == GetFrame(type="get", ids=["a"])
    frame = CLIENT_FRAMES.validate_python(subscribe(filter={"all": True, "regex": ".*"}))
    assert isinstance(frame, SubscribeFrame)
    assert frame.filter == Filter(all=True)


def test_client_frames_are_immutable() -> None:
    frame = CLIENT_FRAMES.validate_python({"type": "get", "ids": ["a"]})
    assert isinstance(frame, GetFrame)
    with pytest.raises(ValidationError):
        frame.ids = ["b"]


# ---------------------------------------------------------------- describe_error


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"type": "nope"}, "unknown frame type 'nope'", id="unknown-type"),
        pytest.param({"type": 5}, "unknown frame type '5'", id="type-not-a-string"),
        pytest.param({"type": "Publish"}, "unknown frame type 'Publish'", id="case-sensitive"),
        pytest.param({}, "frame has no 'type'", id="empty-object"),
        pytest.param({"ref": 1, "ids": ["a"]}, "frame has no 'type'", id="missing-type"),
        pytest.param([{"type": "get"}], "frame must be an object", id="array"),
        pytest.param("get", "frame must be an object", id="string"),
        pytest.param(5, "frame must be an object", id="number"),
        pytest.param(None, "frame must be an object", id="null"),
    ],
)
def test_describe_error_names_frame_level_problem(raw: Any, message: str) -> None:
    assert error_of(raw) == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"type": "unsubscribe"}, "sub: Field required", id="missing-sub"),
        pytest.param({"type": "get"}, "ids: Field required", id="missing-ids"),
        pytest.param({"type": "publish"}, "events: Field required", id="missing-events"),
        pytest.param(
            {"type": "subscribe", "sub": "s1"}, "filter: Field required", id="missing-filter"
        ),
        pytest.param(
            {"type": "publish", "events": []},
            "events: List should have at least 1 item after validation, not 0",
            id="no-events",
        ),
        pytest.param(
            {"type": "get", "ids": []},
            "ids: List should have at least 1 item after validation, not 0",
            id="no-ids",
        ),
        pytest.param(
            {"type": "get", "ids": ["a"] * 1001},
            "ids: List should have at most 1000 items after validation, not 1001",
            id="too-many-ids",
        ),
        pytest.param(
            {"type": "list", "limit": 0},
            "limit: Input should be greater than or equal to 1",
            id="limit-zero",
        ),
        pytest.param(
            {"type": "list", "limit": 10_001},
            "limit: Input should be less than or equal to 10000",
            id="limit-too-big",
        ),
        pytest.param(
            subscribe(sub=""),
            "sub: String should have at least 1 character",
            id="empty-sub",
        ),
        pytest.param(
            {"type": "unsubscribe", "sub": "s" * 129},
            "sub: String should have at most 128 characters",
            id="long-sub",
        ),
        pytest.param(
            subscribe(filter={"ids": "a"}),
            "filter.ids: Input should be a valid list",
            id="nested-location",
        ),
        pytest.param(
            subscribe(filter={"globs": ["g*"] * 101}),
            "filter.globs: List should have at most 100 items after validation, not 101",
            id="too-many-globs",
        ),
        pytest.param(
            subscribe(properties=["p"] * (MAX_ITEMS + 1)),
            "properties: List should have at most 10000 items after validation, not 10001",
            id="too-many-properties",
        ),
        pytest.param(
            subscribe(filter={"ids": [1]}),
            "filter.ids.0: Input should be a valid string",
            id="item-location",
        ),
    ],
)
def test_describe_error_names_field_and_problem(raw: Any, message: str) -> None:
    assert error_of(raw) == message


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="empty"),
        pytest.param({"all": False}, id="all-false"),
        pytest.param({"ids": [], "prefixes": [], "namespaces": [], "globs": []}, id="all-empty"),
    ],
)
def test_describe_error_names_empty_filter_without_pydantic_prefix(spec: dict[str, Any]) -> None:
    assert error_of(subscribe(filter=spec)) == (
        "filter: filter matches nothing: give all, ids, prefixes, namespaces or globs"
    )


def test_describe_error_names_snapshot_together_with_from() -> None:
    assert error_of(subscribe(snapshot=True, **{"from": "1-0"})) == (
        "frame: give either snapshot or from, not both"
    )


@pytest.mark.parametrize("value", [5, "all", ["all"]], ids=["number", "string", "array"])
def test_describe_error_blames_filter_not_frame_when_filter_is_not_object(value: Any) -> None:
    # The frame is an object; its filter is not. "frame must be an object" would send
    # the client looking in the wrong place.
    message = error_of(subscribe(filter=value))
    assert message.startswith("filter"), message
    assert "frame" not in message, message


# ---------------------------------------------------------------- ref_of


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({"ref": "r1"}, "r1", id="string"),
        pytest.param({"ref": ""}, "", id="empty-string"),
        pytest.param({"ref": 7}, 7, id="int"),
        pytest.param({"ref": 0}, 0, id="zero"),
        pytest.param({"ref": -3}, -3, id="negative"),
        pytest.param({"type": "nope", "ref": 7}, 7, id="invalid-frame"),
        pytest.param({"ref": True}, None, id="bool"),
        pytest.param({"ref": False}, None, id="false"),
        pytest.param({"ref": 1.5}, None, id="float"),
        pytest.param({"ref": None}, None, id="null"),
        pytest.param({"ref": ["r1"]}, None, id="array"),
        pytest.param({"ref": {"id": 1}}, None, id="object"),
        pytest.param({"type": "get"}, None, id="missing"),
        pytest.param([{"ref": "r1"}], None, id="array-frame"),
        pytest.param("r1", None, id="string-frame"),
        pytest.param(None, None, id="null-frame"),
    ],
)
def test_ref_of_returns_only_usable_ref(raw: Any, expected: str | int | None) -> None:
    ref = ref_of(raw)
    assert ref == expected
    assert type(ref) is type(expected)
