"""Prometheus metrics: ``GET /metrics`` (text exposition format 0.0.4).

Hot paths only bump plain counters on :class:`HubMetrics`; everything else (gauges,
sums over live connections) is read when Prometheus scrapes, by one collector. The
figures are this hub process's, except where the name says ``cluster``.
"""

from __future__ import annotations

import os
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
from .router import Route

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..engine.fanout import Fanout
    from ..engine.ingest import Ingest
    from ..engine.metrics import HubMetrics
    from ..engine.tenancy import Tenancy
    from ..transport.http import Request
    from ..transport.server import GatewayStatistics

__all__ = ["CONTENT_TYPE", "MetricsApi"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _Collector(Collector):
    def __init__(self, sources: MetricsApi) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        m = self.sources.metrics
        gateway = self.sources.gateway()
        fanout = self.sources.fanout.statistics()
        ingest = self.sources.ingest.statistics()
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
            value=self.sources.tenancy.rate_limited,
        )

        frames = CounterMetricFamily(
            "flux_ws_frames_sent", "WebSocket frames sent, by protocol.", labels=["protocol"]
        )
        for protocol in ("compat", "native"):
            frames.add_metric([protocol], gateway.frames_sent.get(protocol, 0))
        yield frames

        yield CounterMetricFamily(
            "flux_deltas_read",
            "Delta-log entries this hub read and dispatched.",
            value=fanout.deltas_read,
        )
        yield CounterMetricFamily(
            "flux_delta_log_gaps",
            "Times this hub fell behind the delta log and reset its subscribers.",
            value=fanout.gaps,
        )
        yield CounterMetricFamily(
            "flux_conflations",
            "Deltas merged into pending ones for slow consumers.",
            value=gateway.conflations,
        )

        closes = CounterMetricFamily(
            "flux_ws_closes", "WebSocket closes, by code.", labels=["code"]
        )
        for code, count in sorted(m.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes

        ended = CounterMetricFamily(
            "flux_sse_closes",
            "Event streams ended, by the code of their close event (gone: the reader left).",
            labels=["code"],
        )
        for name, count in sorted(gateway.sse_closes.items()):
            ended.add_metric([name], count)
        yield ended

        # The bounds that refuse or close a connection (docs/limits.md), by cap.
        refused = CounterMetricFamily(
            "flux_connections_refused",
            "Connections refused at a cap: the hub's (503) or one address's (429).",
            labels=["cap"],
        )
        evicted = CounterMetricFamily(
            "flux_request_heads_evicted",
            "Unfinished request heads closed with 408 at a cap, the oldest first: "
            "the hub's or one address's (slowloris).",
            labels=["cap"],
        )
        for cap in ("hub", "client"):
            refused.add_metric([cap], gateway.connections_refused.get(cap, 0))
            evicted.add_metric([cap], gateway.heads_evicted.get(cap, 0))
        yield refused
        yield evicted

        connections = GaugeMetricFamily(
            "flux_connections", "Open connections, by kind.", labels=["kind"]
        )
        connections.add_metric(["http"], gateway.http)
        connections.add_metric(["compat"], gateway.compat)
        connections.add_metric(["native"], gateway.native)
        connections.add_metric(["sse"], gateway.sse)
        yield connections

        subscriptions = GaugeMetricFamily(
            "flux_subscriptions", "Open subscriptions, by protocol.", labels=["protocol"]
        )
        subscriptions.add_metric(["native"], gateway.native_subscriptions)
        subscriptions.add_metric(["compat"], fanout.compat_sessions)
        subscriptions.add_metric(["sse"], gateway.sse)
        yield subscriptions

        depth = GaugeMetricFamily("flux_queue_depth", "Items waiting, by queue.", labels=["queue"])
        depth.add_metric(["ingest"], ingest.queued)
        depth.add_metric(["native_requests"], gateway.native_requests_queued)
        depth.add_metric(["held_deltas"], gateway.held_deltas)
        depth.add_metric(["conflated_pending"], gateway.conflated_pending)
        yield depth
        yield GaugeMetricFamily(
            "flux_ingest_queue_capacity", "Bound of the ingest queue.", value=ingest.capacity
        )

        buffered = GaugeMetricFamily(
            "flux_ws_send_buffer_bytes",
            "Unsent bytes: largest and total over WebSockets.",
            labels=["stat"],
        )
        buffered.add_metric(["max"], gateway.send_buffer_max)
        buffered.add_metric(["sum"], gateway.send_buffer_sum)
        yield buffered

        yield CounterMetricFamily(
            "flux_entities_expired",
            "Entities this hub's lease sweeps deleted (their time-to-live ran out).",
            value=m.expired,
        )
        yield GaugeMetricFamily(
            "flux_lease_backlog",
            "Entities whose lease ran out and that wait for a sweep, at this hub's last sweep.",
            value=m.expiry_backlog,
        )

        histogram = HistogramMetricFamily(
            "flux_redis_apply_seconds", "Round trip of one reduce-script call (a batch of events)."
        )
        histogram.add_metric([], m.redis_apply.buckets(), sum_value=m.redis_apply.total)
        yield histogram

        # Under flux serve --workers, each scrape reaches one worker: this says which.
        process = GaugeMetricFamily(
            "flux_process_info",
            "The process that answered: its pid and worker number (0: a lone hub).",
            labels=["pid", "worker"],
        )
        process.add_metric([str(os.getpid()), str(self.sources.worker)], 1)
        yield process


class MetricsApi:
    """``GET /metrics``: Prometheus text format (open, like Flux's admin GET; no secrets).

    Reads each component's ``statistics()`` and the hot-path counters at scrape time.
    """

    def __init__(
        self,
        metrics: HubMetrics,
        gateway: Callable[[], GatewayStatistics],
        fanout: Fanout,
        ingest: Ingest,
        tenancy: Tenancy,
        worker: int = 0,
    ) -> None:
        self.metrics = metrics
        #: This process's number under ``flux serve --workers`` (0: a lone hub).
        self.worker = worker
        #: The gateway's connection statistics (late-bound: the gateway is built after).
        self.gateway = gateway
        self.fanout = fanout
        self.ingest = ingest
        self.tenancy = tenancy

    def routes(self) -> list[Route]:
        return [Route("/metrics", {"GET": self.get})]

    async def get(self, request: Request) -> Response:
        """The ``/metrics`` response."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return Response(200, generate_latest(registry), content_type=CONTENT_TYPE)
