"""The Server-Sent Events text format (hub/wire/sse.py), read back by a reader that
follows the WHATWG parsing rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.wire.sse import sse_comment, sse_event, sse_retry


def parse(stream: bytes) -> list[dict[str, str]]:
    """The events of a stream, as a browser dispatches them (WHATWG HTML §9.2.6)."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    fields: dict[str, str] = {}
    text = stream.decode()
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data or fields:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def test_an_event_with_an_id() -> None:
    raw = sse_event("delta", b'{"a":1}', "1-0")
    assert raw == b'event: delta\nid: 1-0\ndata: {"a":1}\n\n'
    assert parse(raw) == [{"event": "delta", "id": "1-0", "data": '{"a":1}'}]


def test_no_id_and_an_empty_id_differ() -> None:
    assert b"id" not in sse_event("snapshot", b"{}")
    # An empty id clears the reader's last event id.
    assert parse(sse_event("reset", b"{}", "")) == [{"event": "reset", "id": "", "data": "{}"}]


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_data_survives_line_breaks(text: str) -> None:
    events = parse(sse_event("x", text.encode()))
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [{"event": "x", "data": expected}]


@pytest.mark.parametrize(("name", "event_id"), [("a\nb", None), ("a", "1\r"), ("a", "\x00")])
def test_a_name_or_id_that_would_split_the_event_is_refused(
    name: str, event_id: str | None
) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        sse_event(name, b"{}", event_id)


def test_comments_and_retry() -> None:
    assert sse_comment() == b":\n\n"
    assert sse_comment("heartbeat") == b": heartbeat\n\n"
    assert sse_comment("a\nb") == b": a\n: b\n\n"
    assert parse(sse_comment("heartbeat") + sse_event("x", b"1")) == [{"event": "x", "data": "1"}]
    assert sse_retry(2000) == b"retry: 2000\n\n"
