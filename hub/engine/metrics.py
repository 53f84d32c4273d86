"""Counters the hot paths bump as things happen (read by ``hub.api.metrics`` at scrape).

Plain integers and ``Counter`` objects: bumping one costs a dict update, nothing is
locked or exported here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

__all__ = ["BUCKETS", "Histogram", "HubMetrics"]

#: Upper bounds (seconds) of the Redis round-trip histogram.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """A fixed-bucket histogram: cheap to observe, read at scrape time."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += count
            out.append((bound, float(cumulative)))
        return out


class HubMetrics:
    """Counters the hub bumps as things happen."""

    def __init__(self) -> None:
        #: Events acknowledged, by outcome (``ok``, ``duplicate``).
        self.accepted: Counter[str] = Counter()
        #: Events refused, by reason (``invalid``, ``too_large``, ``unauthorized``,
        #: ``forbidden``, ``rate_limited``, ``conflict``, ``unavailable``).
        self.rejected: Counter[str] = Counter()
        #: WebSocket closes, by close code (1006: the connection just went away).
        self.closes: Counter[int] = Counter()
        #: Frames and conflations of connections already closed (live ones are summed
        #: at scrape time).
        self.frames_sent_closed: Counter[str] = Counter()
        self.conflations_closed = 0
        #: Round trips of reduce-script calls.
        self.redis_apply = Histogram()
        #: Entities this hub's lease sweeps deleted (hub/engine/expiry.py).
        self.expired = 0
        #: Entities due and not yet swept, as this hub's last sweep saw them.
        self.expiry_backlog = 0
