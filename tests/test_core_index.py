"""The subscription index (hub/core/index.py): filters, add/remove, and its reference.

:meth:`Pattern.matches` is the unindexed definition of a filter; the index must return
exactly the keys whose patterns match, whatever sequence of adds and removes built it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import Pattern, PatternKind, SubscriptionIndex
from hub.core.index import confine

# ---------------------------------------------------------------- Pattern


def test_pattern_all_matches_every_id() -> None:
    pattern = Pattern.all()
    assert pattern == Pattern(PatternKind.ALL)
    assert all(pattern.matches(entity_id) for entity_id in ["", "a", "ns/a/b", "*"])


def test_pattern_exact_matches_only_that_id() -> None:
    pattern = Pattern.exact("ns/a")
    assert pattern.matches("ns/a")
    assert not pattern.matches("ns/a/b")
    assert not pattern.matches("ns/")
    assert not pattern.matches("NS/a")


def test_pattern_exact_treats_wildcards_literally() -> None:
    # Flux: "matt/*" subscribes to an entity literally called "matt/*".
    pattern = Pattern.exact("matt/*")
    assert pattern.matches("matt/*")
    assert not pattern.matches("matt/sensor")


def test_pattern_prefix_matches_ids_starting_with_it() -> None:
    pattern = Pattern.prefix("sensor-")
    assert pattern == Pattern(PatternKind.PREFIX, "sensor-")
    assert pattern.matches("sensor-")
    assert pattern.matches("sensor-01")
    assert not pattern.matches("sensor")
    assert not pattern.matches("a/sensor-01")


def test_pattern_prefix_empty_is_all() -> None:
    assert Pattern.prefix("") == Pattern.all()


def test_pattern_namespace_matches_ids_inside_namespace_only() -> None:
    pattern = Pattern.namespace("matt")
    assert pattern == Pattern(PatternKind.PREFIX, "matt/")
    assert pattern.matches("matt/sensor-01")
    assert pattern.matches("matt/a/b")
    assert not pattern.matches("matt")
    assert not pattern.matches("matthew/sensor-01")


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        pytest.param("abc", Pattern(PatternKind.EXACT, "abc"), id="no-wildcard-is-exact"),
        pytest.param("ns/a", Pattern(PatternKind.EXACT, "ns/a"), id="path-is-exact"),
        pytest.param("", Pattern(PatternKind.EXACT, ""), id="empty-is-exact"),
        pytest.param("abc*", Pattern(PatternKind.PREFIX, "abc"), id="trailing-star-is-prefix"),
        pytest.param("ns/*", Pattern(PatternKind.PREFIX, "ns/"), id="namespace-star-is-prefix"),
        pytest.param("*", Pattern(PatternKind.ALL), id="star-is-all"),
        pytest.param("a*c", Pattern(PatternKind.GLOB, "a*c"), id="inner-star"),
        pytest.param("a**", Pattern(PatternKind.GLOB, "a**"), id="double-star"),
        pytest.param("a?*", Pattern(PatternKind.GLOB, "a?*"), id="question-then-star"),
        pytest.param("a[bc]*", Pattern(PatternKind.GLOB, "a[bc]*"), id="class-then-star"),
        pytest.param("a?", Pattern(PatternKind.GLOB, "a?"), id="question"),
        pytest.param("[ab]", Pattern(PatternKind.GLOB, "[ab]"), id="class"),
    ],
)
def test_pattern_glob_normalises_to_cheapest_kind(glob: str, expected: Pattern) -> None:
    assert Pattern.glob(glob) == expected


@pytest.mark.parametrize(
    ("glob", "entity_id", "expected"),
    [
        ("a*c", "ac", True),
        ("a*c", "a/b/c", True),  # "*" crosses "/"
        ("a*c", "acd", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "a/c", True),
        ("s-[0-9][0-9]", "s-07", True),
        ("s-[0-9][0-9]", "s-7x", False),
        ("s-[!0-9]", "s-x", True),
        ("s-[!0-9]", "s-1", False),
        ("*/temp", "matt/temp", True),
        ("*/temp", "matt/temp/x", False),
        ("*/temp", "MATT/TEMP", False),  # case-sensitive
        ("a[", "a[", True),  # an unclosed class is literal
        ("x*\n", "xy\n", True),
    ],
)
def test_pattern_glob_matches_like_shell(glob: str, entity_id: str, expected: bool) -> None:
    assert Pattern.glob(glob).matches(entity_id) is expected


# ---------------------------------------------------------------- confine


def test_confine_with_empty_scope_keeps_every_pattern() -> None:
    patterns = [Pattern.all(), Pattern.exact("x")]
    assert confine(patterns, "") == patterns


def test_confine_turns_all_into_the_scope() -> None:
    assert confine([Pattern.all()], "lab/") == [Pattern.prefix("lab/")]


def test_confine_keeps_exact_ids_inside_the_scope_only() -> None:
    patterns = [Pattern.exact("lab/a"), Pattern.exact("other/a")]
    assert confine(patterns, "lab/") == [Pattern.exact("lab/a")]


def test_confine_keeps_prefixes_inside_and_narrows_those_containing_it() -> None:
    patterns = [Pattern.prefix("lab/s-"), Pattern.prefix("la"), Pattern.prefix("other/")]
    assert confine(patterns, "lab/") == [Pattern.prefix("lab/s-"), Pattern.prefix("lab/")]


def test_confine_keeps_globs_for_the_matcher_to_check() -> None:
    glob = Pattern.glob("*/temp")
    assert confine([glob], "lab/") == [glob]


def test_confine_returns_each_pattern_once() -> None:
    assert confine([Pattern.all(), Pattern.prefix("l")], "lab/") == [Pattern.prefix("lab/")]


@given(
    st.lists(st.sampled_from(["", "l", "lab/", "lab/s", "o/", "o/s"]), max_size=4),
    st.sampled_from(["lab/a", "lab/s1", "o/s1", "x"]),
)
def test_confine_matches_exactly_the_ids_in_scope_that_matched(
    prefixes: list[str], entity_id: str
) -> None:
    patterns = [Pattern.prefix(p) for p in prefixes]
    before = any(p.matches(entity_id) for p in patterns)
    after = any(p.matches(entity_id) for p in confine(patterns, "lab/"))
    assert after == (before and entity_id.startswith("lab/"))


# ---------------------------------------------------------------- SubscriptionIndex


def test_index_starts_empty() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert len(index) == 0
    assert index.is_empty()
    assert index.match("a") == set()


@pytest.mark.parametrize(
    "pattern", [Pattern.all(), Pattern.exact("a"), Pattern.prefix("a"), Pattern.glob("a?")]
)
def test_index_is_empty_again_after_its_last_removal(pattern: Pattern) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("k", pattern)
    assert not index.is_empty()
    index.remove("k", pattern)
    assert index.is_empty()


def test_index_matches_exact_subscription() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.exact("a/1"))
    index.add("c2", Pattern.exact("a/2"))
    assert index.match("a/1") == {"c1"}
    assert index.match("a/2") == {"c2"}
    assert index.match("a/3") == set()


def test_index_matches_all_subscription_for_every_id() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.all())
    index.add("c2", Pattern.exact("x"))
    assert index.match("x") == {"c1", "c2"}
    assert index.match("anything/else") == {"c1"}


def test_index_matches_prefixes_of_every_length() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("short", Pattern.prefix("a"))
    index.add("ns", Pattern.namespace("ab"))
    index.add("long", Pattern.prefix("ab/cd"))
    assert index.match("ab/cd/e") == {"short", "ns", "long"}
    assert index.match("ab/c") == {"short", "ns"}
    assert index.match("a") == {"short"}
    assert index.match("b/ab/cd") == set()


def test_index_skips_prefix_longer_than_id() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.prefix("abcdef"))
    assert index.match("abc") == set()
    assert index.match("abcdef") == {"c1"}


def test_index_matches_glob_subscription() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.glob("*/temp"))
    index.add("c2", Pattern.glob("room-?/temp"))
    assert index.match("room-1/temp") == {"c1", "c2"}
    assert index.match("kitchen/temp") == {"c1"}
    assert index.match("kitchen/temp/x") == set()


def test_index_glob_star_matches_newline_like_reference() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.glob("a*b"))
    assert Pattern.glob("a*b").matches("a\nb")
    assert index.match("a\nb") == {"c1"}


def test_index_returns_each_key_once_when_several_patterns_match() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for pattern in [
        Pattern.all(),
        Pattern.exact("ns/a"),
        Pattern.namespace("ns"),
        Pattern.glob("ns/?"),
    ]:
        index.add("c1", pattern)
    assert index.match("ns/a") == {"c1"}
    assert len(index) == 4


def test_index_shares_pattern_between_keys() -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for key in range(3):
        index.add(key, Pattern.glob("x*y"))
        index.add(key, Pattern.prefix("p"))
    assert index.match("xzy") == {0, 1, 2}
    assert index.match("p1") == {0, 1, 2}
    assert len(index) == 6


def test_index_counts_repeated_add_once() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.exact("a"))
    index.add("c1", Pattern.exact("a"))
    assert len(index) == 1
    index.remove("c1", Pattern.exact("a"))
    assert len(index) == 0
    assert index.match("a") == set()


@pytest.mark.parametrize(
    "pattern",
    [Pattern.all(), Pattern.exact("a/1"), Pattern.namespace("a"), Pattern.glob("a/?")],
    ids=lambda p: p.kind.value,
)
def test_index_forgets_removed_subscription(pattern: Pattern) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", pattern)
    index.add("c2", pattern)
    assert index.match("a/1") == {"c1", "c2"}
    index.remove("c1", pattern)
    assert index.match("a/1") == {"c2"}
    assert len(index) == 1
    index.remove("c2", pattern)
    assert index.match("a/1") == set()
    assert len(index) == 0


@pytest.mark.parametrize(
    "pattern",
    [Pattern.all(), Pattern.exact("a/1"), Pattern.namespace("a"), Pattern.glob("a/?")],
    ids=lambda p: p.kind.value,
)
def test_index_ignores_removal_of_unknown_subscription(pattern: Pattern) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.remove("c1", pattern)  # nothing registered at all
    index.add("c2", pattern)
    index.remove("c1", pattern)  # the pattern exists, under another key
    assert index.match("a/1") == {"c2"}
    assert len(index) == 1


def test_index_keeps_other_prefix_of_same_length_after_removal() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.prefix("ab"))
    index.add("c2", Pattern.prefix("cd"))
    index.remove("c1", Pattern.prefix("ab"))
    assert index.match("ab1") == set()
    assert index.match("cd1") == {"c2"}


def test_index_keeps_prefix_after_removing_unknown_prefix_of_same_length() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.prefix("ab"))
    index.remove("c1", Pattern.prefix("cd"))
    assert index.match("ab1") == {"c1"}


def test_index_match_returns_a_fresh_set() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("c1", Pattern.all())
    index.add("c2", Pattern.exact("a"))
    index.match("a").clear()
    index.match("b").add("intruder")
    assert index.match("a") == {"c1", "c2"}
    assert index.match("b") == {"c1"}


# ---------------------------------------------------------------- index against reference

ALPHABET = "ab/"
KEYS = [0, 1, 2]

fragments = st.text(alphabet=ALPHABET, max_size=4)
globs = st.text(alphabet=ALPHABET + "*?[]!", max_size=5)
patterns = st.one_of(
    st.just(Pattern.all()),
    fragments.map(Pattern.exact),
    fragments.map(Pattern.prefix),
    st.text(alphabet="ab", max_size=2).map(Pattern.namespace),
    globs.map(Pattern.glob),
)
operations = st.lists(
    st.tuples(st.sampled_from(["add", "add", "remove"]), st.sampled_from(KEYS), patterns),
    max_size=30,
)
ids = st.lists(st.text(alphabet=ALPHABET + "*?[\n", max_size=6), max_size=10)


@settings(max_examples=300, deadline=None)
@given(operations=operations, probes=ids)
def test_index_match_equals_reference_after_adds_and_removes(
    operations: list[tuple[str, int, Pattern]], probes: list[str]
) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    registered: set[tuple[int, Pattern]] = set()
    for op, key, pattern in operations:
        if op == "add":
            index.add(key, pattern)
            registered.add((key, pattern))
        else:
            index.remove(key, pattern)
            registered.discard((key, pattern))
    assert len(index) == len(registered)
    # Probe the ids the patterns were built from too, so that matches are common.
    candidates = probes + [pattern.value for _, _, pattern in operations]
    for entity_id in candidates:
        expected = {key for key, pattern in registered if pattern.matches(entity_id)}
        assert index.match(entity_id) == expected, entity_id
