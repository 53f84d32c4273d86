"""Whether a ``subscribe`` is accepted, and what a ``list`` may read.

A subscription is refused (an ``error`` reply, nothing registered) when its name is
taken on the connection, when the connection holds ``max_subscriptions`` already,
when its ``from`` cursor does not parse, or when, under private reads, its filter can
match nothing the reader may see. Otherwise it starts one of three ways:

- **live** (no snapshot, no cursor): every delta dispatched from now on;
- **snapshot**: the matching entities, then live deltas with no gap;
- **resume** from a cursor: exactly the deltas after it (or a ``reset`` and a snapshot
  when the log no longer reaches back that far).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ...wire.replies import ErrorReply
from ..cursor import Position, parse_cursor
from ..index import Pattern, confine, namespace_prefix, narrow_prefix

if TYPE_CHECKING:
    from collections.abc import Container

    from ...wire.frames import Filter, SubscribeFrame

__all__ = ["Start", "SubscribePlan", "list_prefix", "patterns_of", "plan_subscription"]


class Start(Enum):
    LIVE = "live"
    SNAPSHOT = "snapshot"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class SubscribePlan:
    """An accepted subscription: what it matches and how it starts."""

    patterns: list[Pattern]
    start: Start
    #: The position to resume after (``RESUME`` only).
    cursor: dict[int, Position] | None = None


def patterns_of(spec: Filter) -> list[Pattern]:
    """The index patterns of a subscription filter, without repeats."""
    if spec.all:
        return [Pattern.all()]
    patterns = [Pattern.exact(i) for i in spec.ids]
    patterns += [Pattern.prefix(p) for p in spec.prefixes]
    patterns += [Pattern.namespace(n) for n in spec.namespaces]
    patterns += [Pattern.glob(g) for g in spec.globs]
    return list(dict.fromkeys(patterns))


def plan_subscription(
    frame: SubscribeFrame, taken: Container[str], count: int, limit: int, scope: str
) -> SubscribePlan | ErrorReply:
    """Accept or refuse a ``subscribe``.

    Args:
        frame: the request.
        taken: the subscription names the connection holds.
        count: how many it holds.
        limit: how many it may hold.
        scope: under private reads, the prefix the reader may see ("" for all).
    """
    ref = frame.ref
    if frame.sub in taken:
        return ErrorReply(
            ref,
            "duplicate_subscription",
            f"subscription {frame.sub!r} already exists on this connection",
        )
    if count >= limit:
        return ErrorReply(
            ref, "too_many_subscriptions", f"a connection may hold {limit} subscriptions"
        )
    cursor = None
    if frame.from_ is not None:
        try:
            cursor = parse_cursor(frame.from_)
        except ValueError as exc:
            return ErrorReply(ref, "bad_cursor", str(exc))
    patterns = confine(patterns_of(frame.filter), scope)
    if not patterns:
        return ErrorReply(
            ref,
            "forbidden",
            f"the filter matches nothing under {scope!r}, which is all this token may read",
        )
    if cursor is not None:
        return SubscribePlan(patterns, Start.RESUME, cursor)
    return SubscribePlan(patterns, Start.SNAPSHOT if frame.snapshot else Start.LIVE)


def list_prefix(prefix: str, namespace: str | None, scope: str) -> str | None:
    """The id prefix a ``list`` reads: its ``prefix``, narrowed to its ``namespace``
    and to what the reader may see (the rules REST listings use); None when they
    exclude each other (no entities).
    """
    return narrow_prefix(namespace_prefix(prefix, namespace), scope)
