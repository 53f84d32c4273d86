"""The pure core: reducer, models, subscription index, time formatting.

Nothing here does I/O or reads a clock (time is passed in), so all of it is tested
without an event loop. ``tests/test_layering.py`` enforces that.
"""

from __future__ import annotations

from .index import Pattern, PatternKind, SubscriptionIndex
from .model import (
    DELETED_PROPERTY,
    Change,
    ChangeKind,
    Delta,
    Entity,
    Outcome,
    OutcomeStatus,
)
from .reducer import World
from .timefmt import format_ms, parse_rfc3339_ms

__all__ = [
    "DELETED_PROPERTY",
    "Change",
    "ChangeKind",
    "Delta",
    "Entity",
    "Outcome",
    "OutcomeStatus",
    "Pattern",
    "PatternKind",
    "SubscriptionIndex",
    "World",
    "format_ms",
    "parse_rfc3339_ms",
]
