"""Delta-log positions and cursors (hub/core/cursor.py).

A position is ``<ms>-<seq>`` in partition 0 (plain Redis stream ids for the default
single-partition hub) and ``<p>:<ms>-<seq>`` elsewhere; a cursor is one position per
partition, comma-separated.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.cursor import Position, format_cursor, parse_cursor, parse_stream_id

# Redis stream ids are two unsigned 64-bit integers.
U64 = 2**64 - 1

# ---------------------------------------------------------------- parse_stream_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-0", (0, 0)),
        ("1700-3", (1700, 3)),
        ("1772049867638-12", (1_772_049_867_638, 12)),
        (f"{U64}-{U64}", (U64, U64)),
        ("007-01", (7, 1)),
    ],
)
def test_parse_stream_id_splits_milliseconds_and_sequence(
    text: str, expected: tuple[int, int]
) -> None:
    assert parse_stream_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("1700", id="no-dash"),
        pytest.param("1700-", id="no-seq"),
        pytest.param("-3", id="no-ms"),
        pytest.param("-", id="dash-only"),
        pytest.param("1-2-3", id="two-dashes"),
        pytest.param("a-1", id="letters"),
        pytest.param("1-b", id="letters-in-seq"),
        pytest.param(" 1-2", id="leading-space"),
        pytest.param("1-2 ", id="trailing-space"),
        pytest.param("+1-2", id="sign"),
        pytest.param("1.5-2", id="fraction"),
        pytest.param("$", id="redis-special-id"),
        pytest.param("*", id="redis-auto-id"),
    ],
)
def test_parse_stream_id_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="^not a stream id: "):
        parse_stream_id(text)


# ---------------------------------------------------------------- Position


def test_position_of_parses_stream_id_in_given_partition() -> None:
    assert Position.of(2, "1700-3") == Position(2, 1700, 3)


def test_position_of_refuses_malformed_stream_id() -> None:
    with pytest.raises(ValueError, match="^not a stream id: '1700'$"):
        Position.of(0, "1700")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700-3", Position(0, 1700, 3)),
        ("0-0", Position(0, 0, 0)),
        ("0:1700-3", Position(0, 1700, 3)),
        ("1:1700-3", Position(1, 1700, 3)),
        ("15:0-0", Position(15, 0, 0)),
    ],
)
def test_position_parse_reads_bare_and_partition_qualified_text(
    text: str, expected: Position
) -> None:
    assert Position.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("x:1-2", "not a position: 'x:1-2'", id="partition-not-a-number"),
        pytest.param(":1-2", "not a position: ':1-2'", id="empty-partition"),
        pytest.param("-1:1-2", "not a position: '-1:1-2'", id="negative-partition"),
        pytest.param("1:", "not a stream id: ''", id="no-stream-id"),
        pytest.param("1:2:3-4", "not a stream id: '2:3-4'", id="two-colons"),
        pytest.param("1:1700", "not a stream id: '1700'", id="bad-stream-id"),
        pytest.param("1700", "not a stream id: '1700'", id="bare-bad-stream-id"),
        pytest.param("", "not a stream id: ''", id="empty"),
    ],
)
def test_position_parse_refuses_malformed_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Position.parse(text)


def test_position_str_prints_partition_zero_bare() -> None:
    position = Position(0, 1700, 3)
    assert str(position) == "1700-3"
    assert position.stream_id == "1700-3"


def test_position_str_prints_other_partitions_qualified() -> None:
    position = Position(3, 1700, 0)
    assert str(position) == "3:1700-0"
    # The stream id is what Redis knows: never qualified.
    assert position.stream_id == "1700-0"


def test_position_orders_by_milliseconds_then_sequence_within_partition() -> None:
    positions = [Position(0, 2, 0), Position(0, 1, 10), Position(0, 1, 2), Position(0, 10, 0)]
    assert sorted(positions) == [
        Position(0, 1, 2),
        Position(0, 1, 10),  # numerically, not as text ("1-10" < "1-2")
        Position(0, 2, 0),
        Position(0, 10, 0),
    ]
    assert Position(0, 1, 2) <= Position(0, 1, 2)
    assert not Position(0, 1, 3) <= Position(0, 1, 2)


def test_position_is_hashable_and_immutable() -> None:
    position = Position(1, 2, 3)
    assert {position: "x"}[Position(1, 2, 3)] == "x"
    with pytest.raises(AttributeError):
        position.ms = 5  # type: ignore[misc]


positions = st.builds(Position, st.integers(0, 64), st.integers(0, U64), st.integers(0, U64))


@settings(max_examples=200, deadline=None)
@given(position=positions)
def test_position_parse_reads_back_its_text(position: Position) -> None:
    assert Position.parse(str(position)) == position
    assert Position.of(position.partition, position.stream_id) == position


# ---------------------------------------------------------------- cursors


def test_parse_cursor_reads_single_partition_cursor() -> None:
    assert parse_cursor("1700-3") == {0: Position(0, 1700, 3)}


def test_parse_cursor_reads_several_partitions_in_any_order() -> None:
    assert parse_cursor("2:5-0,1700-3,1:1699-7") == {
        0: Position(0, 1700, 3),
        1: Position(1, 1699, 7),
        2: Position(2, 5, 0),
    }


def test_parse_cursor_ignores_whitespace_around_positions() -> None:
    assert parse_cursor(" 1700-3 ,\t1:1699-7\n") == {
        0: Position(0, 1700, 3),
        1: Position(1, 1699, 7),
    }


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1-0,2-0", id="bare-twice"),
        pytest.param("1-0,0:2-0", id="bare-and-qualified-zero"),
        pytest.param("1:1-0,1:1-0", id="same-position-twice"),
    ],
)
def test_parse_cursor_refuses_partition_given_twice(text: str) -> None:
    with pytest.raises(ValueError, match=r"^partition \d appears twice in "):
        parse_cursor(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" ", id="blank"),
        pytest.param("1-0,", id="trailing-comma"),
        pytest.param(",1-0", id="leading-comma"),
        pytest.param("1-0,,1:2-0", id="empty-part"),
        pytest.param("1-0;1:2-0", id="wrong-separator"),
        pytest.param("1-0 1:2-0", id="space-separated"),
        pytest.param("x:1-0", id="bad-partition"),
        pytest.param("1-0,1:abc", id="bad-stream-id"),
    ],
)
def test_parse_cursor_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="^not a (stream id|position): "):
        parse_cursor(text)


def test_format_cursor_writes_partitions_in_order() -> None:
    cursor = {2: Position(2, 5, 0), 0: Position(0, 1700, 3), 1: Position(1, 1699, 7)}
    assert format_cursor(cursor) == "1700-3,1:1699-7,2:5-0"


def test_format_cursor_writes_single_partition_as_plain_stream_id() -> None:
    assert format_cursor({0: Position(0, 1700, 3)}) == "1700-3"


cursors = st.dictionaries(st.integers(0, 64), st.tuples(st.integers(0, U64), st.integers(0, U64)))


@settings(max_examples=200, deadline=None)
@given(ids=cursors.filter(bool), data=st.data())
def test_parse_cursor_reads_back_formatted_cursor(
    ids: dict[int, tuple[int, int]], data: st.DataObject
) -> None:
    cursor = {p: Position(p, ms, seq) for p, (ms, seq) in ids.items()}
    text = format_cursor(cursor)
    assert parse_cursor(text) == cursor
    # In any order, with blanks around the parts: the same cursor.
    parts = data.draw(st.permutations(text.split(",")))
    spaced = ",".join(f"{data.draw(st.sampled_from(['', ' ', '  ']))}{part} " for part in parts)
    assert parse_cursor(spaced) == cursor
    assert format_cursor(parse_cursor(spaced)) == text
