"""The server frames (hub/wire/replies.py) are shaped as docs/protocol.md writes them."""

from __future__ import annotations

from typing import Any

import pytest

from hub.wire.replies import (
    Ack,
    Authenticated,
    Checkpoint,
    Entities,
    ErrorReply,
    Reset,
    ServerFrame,
    Snapshot,
    Subscribed,
    Synced,
    Unsubscribed,
)

ENTITY = {"id": "crew/task-7", "properties": {}, "version": 1, "lastUpdated": "2026-…Z"}


@pytest.mark.parametrize(
    ("frame", "value"),
    [
        (Ack(1, [None]), {"type": "ack", "ref": 1, "results": [None]}),
        (
            ErrorReply(9, "bad_frame", "ids: Field required"),
            {"type": "error", "ref": 9, "code": "bad_frame", "message": "ids: Field required"},
        ),
        (
            ErrorReply(None, "unavailable", "ended", sub="s"),
            {"type": "error", "ref": None, "code": "unavailable", "message": "ended", "sub": "s"},
        ),
        (
            Authenticated("r", "crew", admin=False),
            {"type": "authenticated", "ref": "r", "namespace": "crew", "admin": False},
        ),
        (
            Entities(4, [ENTITY], missing=["crew/task-8"]),
            {"type": "entities", "ref": 4, "entities": [ENTITY], "missing": ["crew/task-8"]},
        ),
        (
            Entities(5, [ENTITY], next="crew/task-7"),
            {"type": "entities", "ref": 5, "entities": [ENTITY], "next": "crew/task-7"},
        ),
        (Entities(5, []), {"type": "entities", "ref": 5, "entities": [], "next": None}),
        (Subscribed(2, "tasks"), {"type": "subscribed", "ref": 2, "sub": "tasks"}),
        (
            Subscribed(2, "live", "1796003592903-0"),
            {"type": "subscribed", "ref": 2, "sub": "live", "cursor": "1796003592903-0"},
        ),
        (Unsubscribed(3, "tasks"), {"type": "unsubscribed", "ref": 3, "sub": "tasks"}),
        (
            Snapshot("tasks", [], done=True),
            {"type": "snapshot", "sub": "tasks", "entities": [], "done": True},
        ),
        (Synced("t", "1-0"), {"type": "synced", "sub": "t", "cursor": "1-0"}),
        (Checkpoint("t", "2-0"), {"type": "checkpoint", "sub": "t", "cursor": "2-0"}),
        (Reset("t", "why"), {"type": "reset", "sub": "t", "reason": "why"}),
    ],
)
def test_server_frame_value_is_the_documented_shape(
    frame: ServerFrame, value: dict[str, Any]
) -> None:
    assert frame.value() == value
    assert list(frame.value())[0] == "type"  # first, as every example shows it
