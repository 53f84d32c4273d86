"""Which Server-Sent Events carry an id (hub/core/session/sse.py): the id is always a
cursor from which a resume delivers exactly what followed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.core.cursor import Position, format_cursor, parse_cursor
from hub.core.session.sse import EventIds


def test_no_id_before_the_cursor_is_known() -> None:
    ids = EventIds()
    assert ids.delta(Position(0, 5, 0)) is None
    assert ids.at("10-0") == "10-0"
    assert ids.delta(Position(0, 11, 0)) == "11-0"


def test_a_resume_starts_from_its_cursor_and_advances_per_partition() -> None:
    ids = EventIds(parse_cursor("5-0,1:7-0"))
    assert ids.delta(Position(1, 8, 0)) == "5-0,1:8-0"
    assert ids.delta(Position(0, 6, 2)) == "6-2,1:8-0"
    # A partition the cursor did not name is added.
    assert ids.delta(Position(2, 1, 0)) == "6-2,1:8-0,2:1-0"


def test_an_older_position_never_moves_the_cursor_back() -> None:
    ids = EventIds(parse_cursor("9-0"))
    assert ids.delta(Position(0, 3, 0)) == "9-0"


def test_behind_gives_no_id_and_keeps_the_cursor() -> None:
    ids = EventIds(parse_cursor("9-0"))
    assert ids.at("12-0", behind=True) is None
    assert ids.cursor == parse_cursor("9-0")


def test_a_reset_clears_the_id_and_the_cursor() -> None:
    ids = EventIds(parse_cursor("9-0"))
    assert ids.reset() == ""
    assert ids.delta(Position(0, 10, 0)) is None


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 1000)), max_size=40))
def test_the_id_is_the_newest_position_per_partition(steps: list[tuple[int, int]]) -> None:
    start = {p: Position(p, 0, 0) for p in range(3)}
    ids = EventIds(start)
    newest = dict(start)
    for partition, ms in steps:
        position = Position(partition, ms, 0)
        newest[partition] = max(newest[partition], position)
        assert ids.delta(position) == format_cursor(newest)
