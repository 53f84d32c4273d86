"""Prometheus metrics: ``GET /metrics`` (text exposition format 0.0.4).

Hot paths only bump plain counters on :class:`HubMetrics`; everything else (gauges,
sums over live connections) is read when Prometheus scrapes, by one collector. The
figures are this hub process's, except where the name says ``cluster``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..transport.http import Response

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..app import Hub

__all__ = ["CONTENT_TYPE", "HubMetrics", "render"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

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


class _Collector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        m = hub.metrics

        accepted = CounterMetricFamily(
            "flux_events_accepted", "Events acknowledged, by outcome.", labels=["outcome"]
        )
        for outcome in ("ok", "duplicate"):
            accepted.add_metric([outcome], m.accepted[outcome])
        yield accepted

        rejected = CounterMetricFamily(
            "flux_events_rejected", "Events refused, by reason.", labels=["reason"]
        )
        for reason in (
            "invalid",
            "too_large",
            "unauthorized",
            "forbidden",
            "rate_limited",
            "conflict",
            "unavailable",
        ):
            rejected.add_metric([reason], m.rejected[reason])
        yield rejected

        yield CounterMetricFamily(
            "flux_rate_limited",
            "Events refused by a namespace's rate limit.",
            value=hub.tenancy.rate_limited,
        )

        frames = CounterMetricFamily(
            "flux_ws_frames_sent", "WebSocket frames sent, by protocol.", labels=["protocol"]
        )
        live: Counter[str] = Counter(m.frames_sent_closed)
        for ws in hub.websockets:
            live["native" if ws.subprotocol else "compat"] += ws.frames_sent
        for protocol in ("compat", "native"):
            frames.add_metric([protocol], live[protocol])
        yield frames

        yield CounterMetricFamily(
            "flux_deltas_read",
            "Delta-log entries this hub read and dispatched.",
            value=hub.fanout.deltas_read,
        )
        yield CounterMetricFamily(
            "flux_delta_log_gaps",
            "Times this hub fell behind the delta log and reset its subscribers.",
            value=hub.fanout.gaps,
        )
        yield CounterMetricFamily(
            "flux_conflations",
            "Deltas merged into pending ones for slow consumers.",
            value=m.conflations_closed + sum(s.conflated for s in hub.native_sessions),
        )

        closes = CounterMetricFamily(
            "flux_ws_closes", "WebSocket closes, by code.", labels=["code"]
        )
        for code, count in sorted(m.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes

        connections = GaugeMetricFamily(
            "flux_connections", "Open connections, by kind.", labels=["kind"]
        )
        native = len(hub.native_sessions)
        websockets = len(hub.websockets)
        connections.add_metric(["http"], len(hub.connections) - websockets)
        connections.add_metric(["compat"], websockets - native)
        connections.add_metric(["native"], native)
        yield connections

        subscriptions = GaugeMetricFamily(
            "flux_subscriptions", "Open subscriptions, by protocol.", labels=["protocol"]
        )
        subscriptions.add_metric(["native"], sum(len(s.subscriptions) for s in hub.native_sessions))
        subscriptions.add_metric(["compat"], len(hub.fanout.compat_sessions))
        yield subscriptions

        queue, capacity = hub.ingest.statistics()
        depth = GaugeMetricFamily("flux_queue_depth", "Items waiting, by queue.", labels=["queue"])
        depth.add_metric(["ingest"], queue)
        depth.add_metric(["native_requests"], sum(len(s._requests) for s in hub.native_sessions))
        depth.add_metric(
            ["held_deltas"],
            sum(
                len(sub.holding or ())
                for s in hub.native_sessions
                for sub in s.subscriptions.values()
            ),
        )
        depth.add_metric(["conflated_pending"], sum(len(s._pending) for s in hub.native_sessions))
        yield depth
        yield GaugeMetricFamily(
            "flux_ingest_queue_capacity", "Bound of the ingest queue.", value=capacity
        )

        buffered = GaugeMetricFamily(
            "flux_ws_send_buffer_bytes",
            "Unsent bytes: largest and total over WebSockets.",
            labels=["stat"],
        )
        sizes = [ws.transport.get_write_buffer_size() for ws in hub.websockets if ws.open]
        buffered.add_metric(["max"], max(sizes, default=0))
        buffered.add_metric(["sum"], sum(sizes))
        yield buffered

        histogram = HistogramMetricFamily(
            "flux_redis_apply_seconds", "Round trip of one reduce-script call (a batch of events)."
        )
        histogram.add_metric([], m.redis_apply.buckets(), sum_value=m.redis_apply.total)
        yield histogram


def render(hub: Hub) -> Response:
    """The ``/metrics`` response."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(hub))
    return Response(200, generate_latest(registry), content_type=CONTENT_TYPE)
