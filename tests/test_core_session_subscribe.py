"""Accepting a ``subscribe`` and narrowing a ``list`` (hub/core/session/subscribe.py)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core import Pattern
from hub.core.cursor import Position
from hub.core.index import namespace_prefix, narrow_prefix
from hub.core.session.subscribe import (
    Start,
    SubscribePlan,
    list_prefix,
    patterns_of,
    plan_subscription,
)
from hub.wire.frames import Filter, SubscribeFrame
from hub.wire.replies import ErrorReply


def frame(**fields: Any) -> SubscribeFrame:
    value = {"type": "subscribe", "ref": 7, "sub": "s", "filter": {"all": True}, **fields}
    return SubscribeFrame.model_validate(value)


def plan(f: SubscribeFrame, taken: set[str] | None = None, scope: str = "") -> Any:
    taken = taken or set()
    return plan_subscription(f, taken, len(taken), 3, scope)


def test_patterns_of_a_filter_in_order_without_repeats() -> None:
    spec = Filter(ids=["a", "a"], prefixes=["p/"], namespaces=["n"], globs=["g*"])
    assert patterns_of(spec) == [
        Pattern.exact("a"),
        Pattern.prefix("p/"),
        Pattern.namespace("n"),
        Pattern.glob("g*"),
    ]
    assert patterns_of(Filter(all=True, ids=["a"])) == [Pattern.all()]


@pytest.mark.parametrize(
    ("fields", "start"),
    [({}, Start.LIVE), ({"snapshot": True}, Start.SNAPSHOT)],
)
def test_a_subscription_starts_live_or_with_a_snapshot(
    fields: dict[str, Any], start: Start
) -> None:
    assert plan(frame(**fields)) == SubscribePlan([Pattern.all()], start)


def test_a_subscription_with_a_cursor_resumes_after_it() -> None:
    result = plan(frame(**{"from": "1796003592903-4"}))
    assert result == SubscribePlan(
        [Pattern.all()], Start.RESUME, {0: Position(0, 1796003592903, 4)}
    )


def test_a_name_already_taken_is_refused() -> None:
    assert plan(frame(), {"s"}) == ErrorReply(
        7, "duplicate_subscription", "subscription 's' already exists on this connection"
    )


def test_past_the_limit_a_subscription_is_refused() -> None:
    assert plan(frame(), {"a", "b", "c"}) == ErrorReply(
        7, "too_many_subscriptions", "a connection may hold 3 subscriptions"
    )


def test_a_cursor_that_does_not_parse_is_refused() -> None:
    result = plan(frame(**{"from": "not-a-cursor"}))
    assert isinstance(result, ErrorReply)
    assert result.code == "bad_cursor"


def test_under_private_reads_a_filter_is_confined_to_the_readers_namespace() -> None:
    f = frame(filter={"prefixes": ["mine/a", "other/"], "ids": ["mine/x", "other/y"]})
    assert plan(f, scope="mine/") == SubscribePlan(
        [Pattern.exact("mine/x"), Pattern.prefix("mine/a")], Start.LIVE
    )


def test_under_private_reads_a_filter_matching_nothing_readable_is_forbidden() -> None:
    assert plan(frame(filter={"ids": ["other/y"]}), scope="mine/") == ErrorReply(
        7,
        "forbidden",
        "the filter matches nothing under 'mine/', which is all this token may read",
    )


@pytest.mark.parametrize(
    ("prefix", "namespace", "scope", "expected"),
    [
        ("", None, "", ""),
        ("a", None, "", "a"),
        ("", "crew", "", "crew/"),
        ("cr", "crew", "", "crew/"),
        ("crew/t", "crew", "", "crew/t"),
        ("other/", "crew", "", None),
        ("", "a/b", "", None),  # a namespace has no "/"
        ("a/b/c", "a/b", "", None),  # "a/b/c" is in namespace "a", not "a/b"
        (None, "crew", "", "crew/"),  # REST: no ?prefix= at all
        (None, None, "", ""),
        ("", None, "mine/", "mine/"),
        ("mine/x", None, "mine/", "mine/x"),
        ("other/", None, "mine/", None),
        ("", "crew", "mine/", None),
        ("", "mine", "mine/", "mine/"),
    ],
)
def test_list_prefix_narrows_to_the_namespace_and_the_readers_scope(
    prefix: str | None, namespace: str | None, scope: str, expected: str | None
) -> None:
    # REST listings (hub/api/state.py) and the native list frame share these rules.
    assert narrow_prefix(namespace_prefix(prefix, namespace), scope) == expected
    if prefix is not None:
        assert list_prefix(prefix, namespace, scope) == expected
