"""Value filters (hub/core/where.py): parsing, errors that name the part, matching."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.where import (
    MAX_DEPTH,
    MAX_IN,
    MAX_NAME,
    MAX_TERMS,
    Where,
    WhereError,
    parse_where,
    parse_where_json,
    where_from_words,
)
from hub.errors import BadRequest
from hub.wire.jsonutil import canonical

TASK = {"status": "open", "load": 3, "zone": "a", "owner": None, "tags": ["x", "y"]}

# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({}, True),
        ({"status": "open"}, True),
        ({"status": "closed"}, False),
        ({"status": {"eq": "open"}}, True),
        ({"status": {"ne": "open"}}, False),
        ({"status": {"ne": "closed"}}, True),
        ({"missing": {"ne": "x"}}, True),
        ({"missing": "x"}, False),
        ({"load": 3.0}, True),
        ({"load": True}, False),
        ({"load": {"lt": 5}}, True),
        ({"load": {"lt": 3}}, False),
        ({"load": {"lte": 3}}, True),
        ({"load": {"gt": 3}}, False),
        ({"load": {"gte": 3}}, True),
        ({"load": {"gt": 1, "lt": 5}}, True),
        ({"load": {"gt": 1, "lt": 2}}, False),
        ({"load": {"lt": "z"}}, False),
        ({"zone": {"lt": "b"}}, True),
        ({"zone": {"gte": "b"}}, False),
        ({"zone": {"lt": 5}}, False),
        ({"missing": {"lt": 5}}, False),
        ({"zone": {"in": ["a", "b"]}}, True),
        ({"zone": {"in": ["c"]}}, False),
        ({"zone": {"in": []}}, False),
        ({"missing": {"in": [None]}}, False),
        ({"owner": {"in": [None]}}, True),
        ({"owner": {"exists": True}}, True),
        ({"owner": {"exists": False}}, False),
        ({"missing": {"exists": False}}, True),
        ({"missing": {"exists": True}}, False),
        ({"tags": ["x", "y"]}, True),
        ({"tags": ["y", "x"]}, False),
        ({"tags": {"eq": ["x", "y"]}}, True),
        ({"status": "open", "zone": "b"}, False),
        ({"status": "open", "zone": "a", "load": {"lt": 4}}, True),
    ],
)
def test_where_matches_task(where: dict[str, Any], expected: bool) -> None:
    parsed = parse_where(where)
    assert parsed.matches(TASK) is expected
    assert parsed.matches_encoded({k: canonical(v) for k, v in TASK.items()}) is expected


def test_where_equality_is_json_equality() -> None:
    assert parse_where({"v": {"eq": {"a": [1, True]}}}).matches({"v": {"a": [1.0, True]}})
    assert not parse_where({"v": {"eq": {"a": [1, True]}}}).matches({"v": {"a": [1, 1]}})
    assert not parse_where({"v": {"eq": {"a": 1}}}).matches({"v": {"a": 1, "b": 2}})
    assert not parse_where({"v": {"eq": {"a": 1}}}).matches({"v": [1]})
    assert not parse_where({"v": [1]}).matches({"v": [1, 2]})
    assert not parse_where({"v": [1]}).matches({"v": {"a": 1}})
    assert not parse_where({"v": 1}).matches({"v": "1"})
    assert not parse_where({"v": "1"}).matches({"v": 1})
    assert not parse_where({"v": False}).matches({"v": 0})
    assert parse_where({"v": None}).matches({"v": None})
    assert not parse_where({"v": None}).matches({"v": False})


def test_where_records_fields_terms_and_source() -> None:
    source = {"status": "open", "load": {"gt": 1, "lt": 5}}
    where = parse_where(source)
    assert where.fields == frozenset({"status", "load"})
    assert where.terms == (("status", "eq", "open"), ("load", "gt", 1), ("load", "lt", 5))
    assert where.source is source
    assert repr(where) == f"Where({source!r})"
    assert where == parse_where({"status": "open", "load": {"gt": 1, "lt": 5}})
    assert where != parse_where({"status": "open"})
    assert where != source
    assert hash(where) == hash(parse_where(dict(source)))


def test_where_in_keeps_its_values_as_a_tuple() -> None:
    assert parse_where({"z": {"in": ["a", 1]}}).terms == (("z", "in", ("a", 1)),)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ([], "where: must be an object of property name -> condition"),
        ("status=open", "where: must be an object of property name -> condition"),
        ({1: "x"}, "where: property names must be strings"),
        ({"x" * (MAX_NAME + 1): 1}, f"where: a property name over {MAX_NAME} characters"),
        ({"load": {}}, "where.load: an empty condition (give a value or an operator)"),
        ({"load": {"lt": "5", "le": 3}}, "where.load: unknown operator 'le'"),
        ({"load": {"lt": None}}, "where.load.lt: 'lt' needs a number or a string"),
        ({"load": {"gte": True}}, "where.load.gte: 'gte' needs a number or a string"),
        ({"load": {"gt": [1]}}, "where.load.gt: 'gt' needs a number or a string"),
        ({"owner": {"exists": 1}}, "where.owner.exists: 'exists' needs true or false"),
        ({"zone": {"in": "a"}}, "where.zone.in: 'in' needs a list of values"),
        (
            {"zone": {"in": list(range(MAX_IN + 1))}},
            f"where.zone.in: 'in' takes at most {MAX_IN} values, not {MAX_IN + 1}",
        ),
    ],
)
def test_parse_where_refuses_naming_the_part(where: object, message: str) -> None:
    with pytest.raises(WhereError) as info:
        parse_where(where)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, BadRequest)
    assert info.value.status == 400


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_parse_where_bounds_the_nesting_of_values() -> None:
    parse_where({"v": nested(MAX_DEPTH)})
    parse_where({"v": {"in": [nested(MAX_DEPTH)]}})
    parse_where({"v": {"eq": {"a": nested(MAX_DEPTH - 1)}}})
    with pytest.raises(WhereError, match=f"where.v: values may nest at most {MAX_DEPTH} deep"):
        parse_where({"v": nested(MAX_DEPTH + 1)})
    with pytest.raises(WhereError, match=r"where.v.in: values may nest"):
        parse_where({"v": {"in": [nested(MAX_DEPTH + 1)]}})
    with pytest.raises(WhereError, match=r"where.v.eq: values may nest"):
        parse_where({"v": {"eq": {"a": nested(MAX_DEPTH)}}})


def test_parse_where_bounds_the_terms() -> None:
    parse_where({f"p{i}": i for i in range(MAX_TERMS)})
    with pytest.raises(WhereError, match=f"where: at most {MAX_TERMS} conditions in all"):
        parse_where({f"p{i}": i for i in range(MAX_TERMS + 1)})
    with pytest.raises(WhereError, match=f"at most {MAX_TERMS}"):
        parse_where({"a": {"gt": 1, "lt": 9}} | {f"p{i}": i for i in range(MAX_TERMS - 1)})


def test_parse_where_json_reads_text() -> None:
    assert parse_where_json('{"load": {"lt": 5}}') == parse_where({"load": {"lt": 5}})
    assert parse_where_json(b"{}").terms == ()
    with pytest.raises(WhereError, match=r"^where: not JSON \("):
        parse_where_json("{status: open}")
    with pytest.raises(WhereError, match="where: must be an object"):
        parse_where_json("[1]")


# ---------------------------------------------------------------- properties

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.5]),
    st.sampled_from(["", "a", "b", "ab"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("xy"), inner, max_size=2)
    ),
    max_leaves=6,
)
NAMES = st.sampled_from(["p", "q", "r"])
ENTITIES = st.dictionaries(NAMES, VALUES, max_size=3)


@st.composite
def conditions(draw: st.DrawFn) -> Any:
    op = draw(st.sampled_from(["bare", "eq", "ne", "lt", "lte", "gt", "gte", "in", "exists"]))
    if op == "bare":
        return draw(VALUES.filter(lambda v: not isinstance(v, dict)))
    if op in ("lt", "lte", "gt", "gte"):
        return {op: draw(st.one_of(st.integers(-3, 3), st.sampled_from([1.5, "a", "b"])))}
    if op == "in":
        return {op: draw(st.lists(VALUES, max_size=3))}
    if op == "exists":
        return {op: draw(st.booleans())}
    return {op: draw(VALUES)}


WHERES = st.dictionaries(NAMES, conditions(), max_size=3)


@settings(max_examples=400, deadline=None)
@given(where=WHERES, entity=ENTITIES)
def test_matches_encoded_agrees_with_matches(where: dict[str, Any], entity: dict[str, Any]) -> None:
    parsed = parse_where(where)
    encoded = {k: canonical(v) for k, v in entity.items()}
    assert parsed.matches_encoded(encoded) is parsed.matches(entity)


@settings(max_examples=400, deadline=None)
@given(where=WHERES, entity=ENTITIES)
def test_where_is_the_conjunction_of_its_terms(
    where: dict[str, Any], entity: dict[str, Any]
) -> None:
    parsed = parse_where(where)
    singles = [Where((term,), {}) for term in parsed.terms]
    assert parsed.matches(entity) is all(s.matches(entity) for s in singles)


@settings(max_examples=300, deadline=None)
@given(entity=ENTITIES, name=NAMES)
def test_an_entity_matches_its_own_values(entity: dict[str, Any], name: str) -> None:
    if name in entity:
        value = entity[name]
        assert parse_where({name: {"eq": value}}).matches(entity)
        assert parse_where({name: {"in": [value]}}).matches(entity)
        assert not parse_where({name: {"ne": value}}).matches(entity)
    assert parse_where({name: {"exists": name in entity}}).matches(entity)
    assert parse_where({name: {"exists": name not in entity}}).matches(entity) is False


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.integers(-3, 3), st.floats(-3, 3)), operand=st.integers(-3, 3))
def test_numbers_fall_in_exactly_one_order(value: float, operand: int) -> None:
    entity = {"n": value}
    below = parse_where({"n": {"lt": operand}}).matches(entity)
    equal = parse_where({"n": operand}).matches(entity)
    above = parse_where({"n": {"gt": operand}}).matches(entity)
    assert [below, equal, above].count(True) == 1
    assert parse_where({"n": {"lte": operand}}).matches(entity) is (below or equal)
    assert parse_where({"n": {"gte": operand}}).matches(entity) is (above or equal)


# ---------------------------------------------------------------- command-line words


def test_where_from_words_reads_the_command_line_syntax() -> None:
    words = [
        "status=open",
        "load<5",
        "load >= 1",
        "zone in a, b,3",
        "owner?",
        "!gone?",
        'name="5"',
        "x!=null",
        "y>2.5",
        "z<=z9",
        '{"w": {"gt": 2}, "v": 1}',
    ]
    assert where_from_words(words) == {
        "status": {"eq": "open"},
        "load": {"lt": 5, "gte": 1},
        "zone": {"in": ["a", "b", 3]},
        "owner": {"exists": True},
        "gone": {"exists": False},
        "name": {"eq": "5"},
        "x": {"ne": None},
        "y": {"gt": 2.5},
        "z": {"lte": "z9"},
        "w": {"gt": 2},
        "v": {"eq": 1},
    }
    assert where_from_words([]) == {}


@pytest.mark.parametrize("word", ["=5", "in a", "load", "a b", "?"])
def test_where_from_words_refuses_a_word_in_no_form(word: str) -> None:
    with pytest.raises(WhereError, match=f"^--where {re.escape(repr(word))}: expected NAME=VALUE"):
        where_from_words([word])


def test_where_from_words_checks_the_result() -> None:
    with pytest.raises(WhereError, match=r"^where.load.lt: 'lt' needs a number or a string"):
        where_from_words(["load<[1]"])
    with pytest.raises(WhereError, match=r"^where: not JSON"):
        where_from_words(["{load"])


def test_where_equality_tells_json_types_apart() -> None:
    # Equal filters may share one object (the hub interns them): 1, 1.0 and true differ.
    assert parse_where({"a": 1}) != parse_where({"a": True})
    assert parse_where({"a": 1}) != parse_where({"a": 1.0})
    assert parse_where({"a": {"in": [0]}}) != parse_where({"a": {"in": [False]}})


def test_matches_state_remembers_the_last_answer_per_entity_version() -> None:
    where = parse_where({"s": "open"})
    assert where.matches_state("a", 1, {"s": b'"open"'})
    # The same (id, version) is the same state: answered from memory.
    assert where.matches_state("a", 1, {"s": b'"done"'})
    assert not where.matches_state("a", 2, {"s": b'"done"'})
    assert not where.matches_state("b", 2, {"s": b'"done"'})
    assert where.matches_state("b", 2, {"s": b'"open"'}) is False
    assert where.matches_state("b", 3, {"s": b'"open"'})
