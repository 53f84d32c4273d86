"""Which subscribers want a given entity id: an index over subscription filters.

Cost of :meth:`SubscriptionIndex.match`, per entity id:

- exact and ``*`` filters: one dict lookup, whatever their number;
- prefix filters (namespaces are prefixes ``ns/``): one dict lookup per distinct prefix
  *length* in use, bounded by the id's length — not by the number of subscriptions;
- glob filters: one regex test per distinct glob pattern. Globs are the one filter
  that cannot be indexed; their number per connection is bounded by the gateway.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

__all__ = [
    "Pattern",
    "PatternKind",
    "SubscriptionIndex",
    "confine",
    "namespace_prefix",
    "narrow_prefix",
]

K = TypeVar("K", bound=Hashable)


class PatternKind(Enum):
    ALL = "all"
    EXACT = "exact"
    PREFIX = "prefix"
    GLOB = "glob"


@dataclass(frozen=True, slots=True)
class Pattern:
    """One entity-id filter."""

    kind: PatternKind
    value: str = ""

    @classmethod
    def all(cls) -> Pattern:
        return cls(PatternKind.ALL)

    @classmethod
    def exact(cls, entity_id: str) -> Pattern:
        return cls(PatternKind.EXACT, entity_id)

    @classmethod
    def prefix(cls, prefix: str) -> Pattern:
        # The empty prefix matches everything: store it as ALL so it costs nothing.
        return cls(PatternKind.PREFIX, prefix) if prefix else cls.all()

    @classmethod
    def namespace(cls, namespace: str) -> Pattern:
        return cls(PatternKind.PREFIX, namespace + "/")

    @classmethod
    def glob(cls, pattern: str) -> Pattern:
        """A shell-style pattern (``*``, ``?``, ``[seq]``); ``*`` also matches ``/``.

        A glob without wildcards is an exact id, and ``abc*`` is a prefix: both are
        stored as such so that they are indexed.
        """
        if not any(c in pattern for c in "*?["):
            return cls.exact(pattern)
        stem = pattern[:-1]
        if pattern.endswith("*") and not any(c in stem for c in "*?["):
            return cls.prefix(stem)
        return cls(PatternKind.GLOB, pattern)

    def matches(self, entity_id: str) -> bool:
        """Test one id against this pattern (the unindexed, reference definition)."""
        if self.kind is PatternKind.ALL:
            return True
        if self.kind is PatternKind.EXACT:
            return entity_id == self.value
        if self.kind is PatternKind.PREFIX:
            return entity_id.startswith(self.value)
        return fnmatch.fnmatchcase(entity_id, self.value)


def namespace_prefix(prefix: str | None, namespace: str | None) -> str | None:
    """The id prefix of a listing by ``prefix`` within ``namespace`` (REST's
    ``?prefix=&namespace=``, the native ``list`` frame); None when nothing can match."""
    if namespace is None:
        return prefix or ""
    if "/" in namespace:
        return None  # The text before the first "/" can never contain a "/".
    ns_prefix = namespace + "/"
    if not prefix or ns_prefix.startswith(prefix):
        return ns_prefix
    if prefix.startswith(ns_prefix):
        return prefix
    return None


def narrow_prefix(prefix: str | None, scope: str) -> str | None:
    """The ids starting with both ``prefix`` and ``scope`` (what a reader may see), as
    one prefix; None when there are none."""
    if prefix is None:
        return None
    if prefix.startswith(scope):
        return prefix
    if scope.startswith(prefix):
        return scope
    return None


def confine(patterns: list[Pattern], scope: str) -> list[Pattern]:
    """Narrow patterns to ids starting with ``scope`` (a reader's namespace ``ns/``).

    Exact ids and prefixes outside the scope are dropped; ``*`` and prefixes that
    contain the scope become the scope itself. Globs are kept as they are: whoever
    matches them must also check the scope (they cannot be narrowed in general).
    An empty ``scope`` confines nothing.
    """
    if not scope:
        return list(patterns)
    narrowed: list[Pattern] = []
    for pattern in patterns:
        if pattern.kind is PatternKind.ALL:
            narrowed.append(Pattern.prefix(scope))
        elif pattern.kind is PatternKind.EXACT:
            if pattern.value.startswith(scope):
                narrowed.append(pattern)
        elif pattern.kind is PatternKind.PREFIX:
            if pattern.value.startswith(scope):
                narrowed.append(pattern)
            elif scope.startswith(pattern.value):
                narrowed.append(Pattern.prefix(scope))
        else:
            narrowed.append(pattern)
    return list(dict.fromkeys(narrowed))


class SubscriptionIndex(Generic[K]):
    """Maps entity ids to the subscriber keys whose filters match them.

    A key may be added under several patterns; it is returned once per match call.
    Adding the same (key, pattern) twice and removing it once removes it: the index
    holds sets, and the caller tracks its own subscriptions.
    """

    def __init__(self) -> None:
        self._all: set[K] = set()
        self._exact: dict[str, set[K]] = {}
        self._prefix: dict[str, set[K]] = {}
        # How many distinct prefixes of each length exist: lookups probe only these.
        self._prefix_lengths: Counter[int] = Counter()
        self._glob: dict[str, tuple[re.Pattern[str], set[K]]] = {}

    def __len__(self) -> int:
        """Number of (pattern, key) registrations."""
        return (
            len(self._all)
            + sum(map(len, self._exact.values()))
            + sum(map(len, self._prefix.values()))
            + sum(len(keys) for _, keys in self._glob.values())
        )

    def is_empty(self) -> bool:
        """Whether no key is registered at all (O(1))."""
        return not (self._all or self._exact or self._prefix or self._glob)

    def add(self, key: K, pattern: Pattern) -> None:
        """Register ``key`` under ``pattern``."""
        if pattern.kind is PatternKind.ALL:
            self._all.add(key)
        elif pattern.kind is PatternKind.EXACT:
            self._exact.setdefault(pattern.value, set()).add(key)
        elif pattern.kind is PatternKind.PREFIX:
            keys = self._prefix.get(pattern.value)
            if keys is None:
                keys = self._prefix[pattern.value] = set()
                self._prefix_lengths[len(pattern.value)] += 1
            keys.add(key)
        else:
            entry = self._glob.get(pattern.value)
            if entry is None:
                regex = re.compile(fnmatch.translate(pattern.value), re.DOTALL)
                entry = self._glob[pattern.value] = (regex, set())
            entry[1].add(key)

    def remove(self, key: K, pattern: Pattern) -> None:
        """Unregister ``key`` from ``pattern``; a no-op if it was not there."""
        if pattern.kind is PatternKind.ALL:
            self._all.discard(key)
        elif pattern.kind is PatternKind.EXACT:
            _discard(self._exact, pattern.value, key)
        elif pattern.kind is PatternKind.PREFIX:
            if _discard(self._prefix, pattern.value, key):
                self._prefix_lengths[len(pattern.value)] -= 1
                if not self._prefix_lengths[len(pattern.value)]:
                    del self._prefix_lengths[len(pattern.value)]
        else:
            entry = self._glob.get(pattern.value)
            if entry is not None:
                entry[1].discard(key)
                if not entry[1]:
                    del self._glob[pattern.value]

    def match(self, entity_id: str) -> set[K]:
        """Return every key with a pattern that matches ``entity_id``."""
        result = set(self._all)
        keys = self._exact.get(entity_id)
        if keys:
            result |= keys
        if self._prefix_lengths:
            n = len(entity_id)
            for length in self._prefix_lengths:
                if length <= n:
                    keys = self._prefix.get(entity_id[:length])
                    if keys:
                        result |= keys
        for regex, keys in self._glob.values():
            if regex.match(entity_id):
                result |= keys
        return result


def _discard(table: dict[str, set[K]], value: str, key: K) -> bool:
    """Remove ``key`` from ``table[value]``; return True if that emptied the entry."""
    keys = table.get(value)
    if keys is None:
        return False
    keys.discard(key)
    if keys:
        return False
    del table[value]
    return True
