"""The snapshot-to-live hand-off (hub/core/handoff.py).

:func:`plan_snapshot` decides what a snapshot reads; :class:`SnapshotCut` records the
delta-log position each page was read at, and decides which held or live delta the
snapshot already reflects. The property test at the end plays the whole hand-off: pages
read while deltas keep arriving, then a client that loads the pages and applies the
deltas the cut lets through must end with the world's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import DELETED_PROPERTY, Change, Delta, Pattern, PatternKind, World
from hub.core.cursor import Position
from hub.core.handoff import SnapshotCut, plan_snapshot
from hub.wire.jsonutil import canonical

T0 = 1_772_049_867_000

# ---------------------------------------------------------------- plan_snapshot


def plan(*patterns: Pattern) -> tuple[list[str], list[str]]:
    result = plan_snapshot(patterns)
    return result.ranges, result.ids


def test_plan_snapshot_of_nothing_reads_nothing() -> None:
    assert plan() == ([], [])


def test_plan_snapshot_of_all_reads_whole_id_space() -> None:
    assert plan(Pattern.all()) == ([""], [])


def test_plan_snapshot_of_all_absorbs_every_other_pattern() -> None:
    patterns = [Pattern.exact("x"), Pattern.prefix("a"), Pattern.glob("b?"), Pattern.all()]
    assert plan(*patterns) == ([""], [])


def test_plan_snapshot_reads_prefix_as_range() -> None:
    assert plan(Pattern.prefix("sensor-")) == (["sensor-"], [])


def test_plan_snapshot_reads_namespace_as_range() -> None:
    assert plan(Pattern.namespace("matt")) == (["matt/"], [])


@pytest.mark.parametrize(
    ("glob", "stem"),
    [
        ("a*c", "a"),
        ("ns/?x", "ns/"),
        ("s-[0-9]", "s-"),
        ("ab[c]*?", "ab"),
        ("*/temp", ""),
    ],
)
def test_plan_snapshot_reads_glob_by_stem_before_first_wildcard(glob: str, stem: str) -> None:
    pattern = Pattern.glob(glob)
    assert pattern.kind is PatternKind.GLOB
    assert plan(pattern) == ([stem], [])


def test_plan_snapshot_reads_glob_without_wildcard_as_exact_id() -> None:
    # Pattern.glob stores it as an exact id, which is read as one.
    assert plan(Pattern.glob("ns/a")) == ([], ["ns/a"])


def test_plan_snapshot_reads_whole_text_of_raw_glob_without_wildcard() -> None:
    # Built directly (not through Pattern.glob): its stem is all of it. Reading the
    # range of ids starting with it is a superset of what it matches, so still right.
    assert plan(Pattern(PatternKind.GLOB, "ns/a")) == (["ns/a"], [])


# A reader confined to a namespace (private reads) has its plan narrowed to it.


def scoped(scope: str, *patterns: Pattern) -> tuple[list[str], list[str]]:
    result = plan_snapshot(patterns, scope)
    return result.ranges, result.ids


def test_plan_snapshot_in_scope_reads_only_the_scope_for_all() -> None:
    assert scoped("lab/", Pattern.all()) == (["lab/"], [])


def test_plan_snapshot_in_scope_keeps_ranges_inside_it() -> None:
    assert scoped("lab/", Pattern.prefix("lab/sensor-")) == (["lab/sensor-"], [])


def test_plan_snapshot_in_scope_drops_ranges_and_ids_outside_it() -> None:
    patterns = [Pattern.prefix("other/"), Pattern.exact("other/x"), Pattern.exact("lab/x")]
    assert scoped("lab/", *patterns) == ([], ["lab/x"])


def test_plan_snapshot_in_scope_narrows_a_glob_stem_that_contains_it() -> None:
    assert scoped("lab/", Pattern.glob("*/temp")) == (["lab/"], [])


def test_plan_snapshot_without_scope_is_unconfined() -> None:
    assert scoped("", Pattern.prefix("other/")) == (["other/"], [])


def test_plan_snapshot_collapses_nested_prefixes_into_outermost() -> None:
    patterns = [
        Pattern.prefix("ab/cd"),
        Pattern.namespace("ab"),
        Pattern.prefix("a"),
        Pattern.glob("abc*x"),
        Pattern.prefix("b"),
        Pattern.prefix("ab"),
    ]
    assert plan(*patterns) == (["a", "b"], [])


def test_plan_snapshot_keeps_prefix_that_is_not_inside_another() -> None:
    # "ab" < "b" but "b" does not start with "ab": both are read.
    assert plan(Pattern.prefix("b"), Pattern.prefix("ab")) == (["ab", "b"], [])


def test_plan_snapshot_drops_ids_inside_a_range() -> None:
    patterns = [Pattern.exact("a/1"), Pattern.exact("b/1"), Pattern.namespace("a")]
    assert plan(*patterns) == (["a/"], ["b/1"])


def test_plan_snapshot_sorts_ranges_and_ids_and_removes_repeats() -> None:
    patterns = [
        Pattern.exact("z"),
        Pattern.prefix("q-"),
        Pattern.exact("m"),
        Pattern.exact("z"),
        Pattern.prefix("c-"),
        Pattern.prefix("q-"),
        Pattern.exact("c"),  # does not start with "c-"
    ]
    assert plan(*patterns) == (["c-", "q-"], ["c", "m", "z"])


# ---------------------------------------------------------------- SnapshotCut


def pos(ms: int, partition: int = 0) -> Position:
    return Position(partition, ms, 0)


def test_snapshot_cut_looks_up_entity_in_page_that_covers_it() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "", "c", pos(10))
    cut.add_page(0, "", "f", pos(20))
    cut.add_page(0, "", None, pos(30))
    # A page covers the ids after the previous page's last id up to its own last id.
    assert cut.position_for(0, "") == pos(10)
    assert cut.position_for(0, "a") == pos(10)
    assert cut.position_for(0, "c") == pos(10)
    assert cut.position_for(0, "c0") == pos(20)
    assert cut.position_for(0, "d") == pos(20)
    assert cut.position_for(0, "f") == pos(20)
    # The last page covers the rest of the range.
    assert cut.position_for(0, "f0") == pos(30)
    assert cut.position_for(0, "zzz") == pos(30)


def test_snapshot_cut_covers_whole_range_with_single_last_page() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", None, pos(7))
    assert cut.position_for(0, "a/") == pos(7)
    assert cut.position_for(0, "a/x") == pos(7)
    assert cut.position_for(0, "a") is None
    assert cut.position_for(0, "b/x") is None


def test_snapshot_cut_does_not_cover_ids_past_pages_read_so_far() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "", "m", pos(10))
    assert cut.position_for(0, "m") == pos(10)
    assert cut.position_for(0, "n") is None
    assert not cut.reflected("n", pos(1))


def test_snapshot_cut_keeps_ranges_apart() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", "a/m", pos(10))
    cut.add_page(0, "a/", None, pos(11))
    cut.add_page(0, "c/", "c/b", pos(20))
    cut.add_page(0, "c/", None, pos(21))
    assert cut.position_for(0, "a/c") == pos(10)
    assert cut.position_for(0, "a/z") == pos(11)
    assert cut.position_for(0, "c/a") == pos(20)
    assert cut.position_for(0, "c/z") == pos(21)
    assert cut.position_for(0, "b/a") is None
    assert cut.position_for(0, "d") is None


def test_snapshot_cut_keeps_partitions_apart() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "", "m", pos(10, 0))
    cut.add_page(0, "", None, pos(11, 0))
    cut.add_page(1, "", None, pos(5, 1))
    assert cut.position_for(0, "a") == pos(10, 0)
    assert cut.position_for(0, "x") == pos(11, 0)
    assert cut.position_for(1, "a") == pos(5, 1)
    assert cut.position_for(1, "x") == pos(5, 1)
    assert cut.position_for(2, "a") is None


def test_snapshot_cut_range_of_one_partition_does_not_cover_another() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", None, pos(10, 0))
    assert cut.position_for(1, "a/x") is None
    assert not cut.reflected("a/x", pos(1, 1))


def test_snapshot_cut_looks_up_exact_ids_at_their_read_position() -> None:
    cut = SnapshotCut()
    cut.add_ids(["k1", "k2"], pos(10))
    cut.add_ids(["k3"], pos(12))
    assert cut.position_for(0, "k1") == pos(10)
    assert cut.position_for(0, "k2") == pos(10)
    assert cut.position_for(0, "k3") == pos(12)
    assert cut.position_for(0, "k4") is None
    assert cut.position_for(0, "k") is None


def test_snapshot_cut_exact_id_read_in_one_partition_does_not_cover_another() -> None:
    # The contract of position_for: None when the snapshot does not cover the entity
    # *in that partition*, as for ranges above.
    cut = SnapshotCut()
    cut.add_ids(["k1"], pos(10, 1))
    assert cut.position_for(1, "k1") == pos(10, 1)
    assert cut.position_for(0, "k1") is None
    assert not cut.reflected("k1", pos(99, 0))


def test_snapshot_cut_looks_up_exact_ids_and_ranges_together() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", None, pos(10))
    cut.add_ids(["b"], pos(11))
    assert cut.position_for(0, "a/x") == pos(10)
    assert cut.position_for(0, "b") == pos(11)
    assert cut.position_for(0, "c") is None


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        pytest.param(Position(0, 9, 5), True, id="before"),
        pytest.param(Position(0, 10, 2), True, id="at"),
        pytest.param(Position(0, 10, 3), False, id="next-seq"),
        pytest.param(Position(0, 11, 0), False, id="after"),
    ],
)
def test_snapshot_cut_reflects_delta_at_or_before_page_position(
    position: Position, expected: bool
) -> None:
    cut = SnapshotCut()
    cut.add_page(0, "r/", "r/m", Position(0, 10, 2))
    cut.add_page(0, "r/", None, Position(0, 50, 0))
    cut.add_ids(["exact"], Position(0, 10, 2))
    assert cut.reflected("r/a", position) is expected
    assert cut.reflected("exact", position) is expected
    # Covered by the later page: reflected all the way up to its position.
    assert cut.reflected("r/x", position) is True


def test_snapshot_cut_reflects_nothing_it_does_not_cover() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", None, pos(10))
    assert not cut.reflected("b/x", pos(1))


def test_snapshot_cut_latest_is_empty_before_any_read() -> None:
    assert SnapshotCut().latest() == {}


def test_snapshot_cut_latest_gives_newest_position_read_per_partition() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", "a/m", Position(0, 10, 0))
    cut.add_page(0, "a/", None, Position(0, 12, 4))
    cut.add_page(0, "b/", "b/m", Position(0, 12, 3))  # range not finished: no end yet
    cut.add_page(1, "a/", None, Position(1, 30, 0))
    cut.add_ids(["k"], Position(1, 20, 0))
    cut.add_ids(["j"], Position(2, 5, 0))
    assert cut.latest() == {
        0: Position(0, 12, 4),
        1: Position(1, 30, 0),
        2: Position(2, 5, 0),
    }


def test_snapshot_cut_latest_counts_exact_ids_and_unfinished_ranges() -> None:
    cut = SnapshotCut()
    cut.add_page(0, "a/", "a/m", Position(0, 10, 0))
    cut.add_ids(["k"], Position(0, 40, 0))
    cut.add_page(0, "b/", "b/m", Position(0, 30, 0))
    assert cut.latest() == {0: Position(0, 40, 0)}


# ---------------------------------------------------------------- the hand-off

PARTITIONS = 2
IDS = ["a1", "a2", "ab", "ab/q", "b", "b1", "c", "n/x", "n/y", "n/z1"]
FILTERS = [
    Pattern.all(),
    Pattern.prefix("a"),
    Pattern.prefix("ab/"),
    Pattern.namespace("n"),
    Pattern.exact("c"),
    Pattern.exact("a1"),
    Pattern.exact("n/x"),
    Pattern.glob("?1"),
    Pattern.glob("n/[xz]*"),
    Pattern.glob("*b"),
]
VALUES: list[Any] = [0, 1, "x", None]


@st.composite
def changes(draw: st.DrawFn) -> Change:
    entity_id = draw(st.sampled_from(IDS))
    if draw(st.integers(0, 4)) == 0:
        values: dict[str, Any] = {DELETED_PROPERTY: True}
    else:
        values = draw(
            st.dictionaries(st.sampled_from(["p", "q"]), st.sampled_from(VALUES), min_size=1)
        )
    return Change.from_parts(entity_id, {k: canonical(v) for k, v in values.items()})


@dataclass(frozen=True)
class Page:
    """What the simulation knows of one page: which ids it covers, read when."""

    partition: int
    prefix: str | None  # None: a chunk of exact ids
    after: str | None
    last: str | None
    ids: tuple[str, ...]
    position: Position

    def covers(self, partition: int, entity_id: str) -> bool:
        if partition != self.partition:
            return False
        if self.prefix is None:
            return entity_id in self.ids
        return (
            entity_id.startswith(self.prefix)
            and (self.after is None or entity_id > self.after)
            and (self.last is None or entity_id <= self.last)
        )


class Simulation:
    """A world, its per-partition delta logs, and the deltas a subscription holds."""

    def __init__(self, partition_of: dict[str, int]) -> None:
        self.world = World()
        self.partition_of = partition_of
        self.heads = [Position(p, 0, 0) for p in range(PARTITIONS)]
        self.held: list[tuple[Delta, Position]] = []
        self.now = T0

    def publish(self, changes: list[Change], *, hold: bool = True) -> None:
        for change in changes:
            self.now += 1
            delta = self.world.apply(change, self.now).delta
            if delta is None:
                continue
            p = self.partition_of[delta.entity_id]
            head = self.heads[p]
            # Several deltas in one millisecond, now and then.
            step = (0, head.seq + 1) if self.now % 3 else (head.ms + 1, 0)
            position = self.heads[p] = Position(p, head.ms + step[0], step[1])
            if hold:
                self.held.append((delta, position))

    def state(self, entity_id: str) -> tuple[int, dict[str, bytes]]:
        entity = self.world.entities[entity_id]
        return entity.version, dict(entity.properties)


@settings(max_examples=200, deadline=None)
@given(
    partition_of=st.fixed_dictionaries({i: st.integers(0, PARTITIONS - 1) for i in IDS}),
    before=st.lists(changes(), max_size=15),
    patterns=st.lists(st.sampled_from(FILTERS), min_size=1, max_size=3, unique=True),
    page_size=st.integers(1, 3),
    data=st.data(),
)
def test_snapshot_cut_lets_through_exactly_deltas_after_page_covering_entity(
    partition_of: dict[str, int],
    before: list[Change],
    patterns: list[Pattern],
    page_size: int,
    data: st.DataObject,
) -> None:
    sim = Simulation(partition_of)
    sim.publish(before, hold=False)

    def matches(entity_id: str) -> bool:
        return any(p.matches(entity_id) for p in patterns)

    def meanwhile() -> None:
        sim.publish(data.draw(st.lists(changes(), max_size=3)))

    # Read the snapshot as NativeSession._snapshot does, with deltas in between.
    plan = plan_snapshot(patterns)
    cut = SnapshotCut()
    pages: list[Page] = []
    snapshot: dict[str, tuple[int, dict[str, bytes]]] = {}
    for p in range(PARTITIONS):
        for prefix in plan.ranges:
            after: str | None = None
            while True:
                meanwhile()
                live = sorted(
                    i
                    for i in sim.world.entities
                    if partition_of[i] == p
                    and i.startswith(prefix)
                    and (after is None or i > after)
                )
                read = live[:page_size]
                last = read[-1] if len(read) == page_size else None
                cut.add_page(p, prefix, last, sim.heads[p])
                pages.append(Page(p, prefix, after, last, (), sim.heads[p]))
                snapshot.update((i, sim.state(i)) for i in read if matches(i))
                if last is None:
                    break
                after = last
        ids = [i for i in plan.ids if partition_of[i] == p]
        for start in range(0, len(ids), page_size):
            meanwhile()
            chunk = ids[start : start + page_size]
            cut.add_ids(chunk, sim.heads[p])
            pages.append(Page(p, None, None, None, tuple(chunk), sim.heads[p]))
            snapshot.update((i, sim.state(i)) for i in chunk if i in sim.world.entities)
    # Live deltas keep coming while the fan-out catches up with the cut.
    meanwhile()

    held = [(d, position) for d, position in sim.held if matches(d.entity_id)]
    expected = []
    for delta, position in held:
        covering = [page for page in pages if page.covers(position.partition, delta.entity_id)]
        assert len(covering) == 1, (delta.entity_id, covering)
        assert cut.position_for(position.partition, delta.entity_id) == covering[0].position
        if position > covering[0].position:
            expected.append((delta, position))
    let_through = [
        (d, position) for d, position in held if not cut.reflected(d.entity_id, position)
    ]
    assert let_through == expected

    # A client that loads the snapshot and applies what the cut lets through, checking
    # every base, ends with the world's state.
    replica = dict(snapshot)
    for delta, _ in let_through:
        if delta.deleted:
            version, _ = replica.pop(delta.entity_id)
            assert delta.base == version, delta
        elif delta.entity_id not in replica:
            assert delta.created, f"gap: {delta}"
            replica[delta.entity_id] = (delta.version, dict(delta.changed))
        else:
            version, properties = replica[delta.entity_id]
            assert delta.base == version, delta
            replica[delta.entity_id] = (delta.version, {**properties, **delta.changed})
    assert replica == {i: sim.state(i) for i in sim.world.entities if matches(i)}
