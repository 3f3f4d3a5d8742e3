"""``/metrics``: the hub's metrics and the server's request durations, in Prometheus text format."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._hub import SessionHub
from .._metrics import LATENESS_BUCKETS, MetricsSnapshot

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _HubCollector(Collector):
    """Reads the snapshot taken just before each scrape (the hub's census is async; collect is not)."""

    def __init__(self) -> None:
        self.snapshot: MetricsSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        sessions = GaugeMetricFamily(
            "sessionhub_sessions", "Live sessions.", labels=["namespace", "state"]
        )
        for (namespace, state), count in sorted(snap.sessions.items()):
            sessions.add_metric([namespace, state], count)
        yield sessions
        yield CounterMetricFamily(
            "sessionhub_sessions_created", "Sessions created.", value=snap.created_total
        )
        ended = CounterMetricFamily(
            "sessionhub_sessions_ended", "Sessions ended.", labels=["reason"]
        )
        for reason, count in sorted(snap.ended_total.items()):
            ended.add_metric([reason], count)
        yield ended
        buckets = [
            (str(bound), count)
            for bound, count in zip(LATENESS_BUCKETS, snap.expiry_lateness_buckets, strict=False)
        ]
        buckets.append(("+Inf", snap.expiry_lateness_buckets[-1]))
        yield HistogramMetricFamily(
            "sessionhub_expiry_lateness_seconds",
            "How long after its deadline each expired session was claimed.",
            buckets=buckets,
            sum_value=snap.expiry_lateness_sum,
        )
        yield CounterMetricFamily(
            "sessionhub_hook_calls", "Cleanup hook calls.", value=snap.hook_calls_total
        )
        yield CounterMetricFamily(
            "sessionhub_hook_failures",
            "Cleanup hook calls that raised or timed out.",
            value=snap.hook_failures_total,
        )
        yield GaugeMetricFamily(
            "sessionhub_subscribers", "Open event subscriptions.", value=snap.subscribers
        )


class ServerMetrics:
    """A registry of the server's own: the hub's figures plus HTTP request durations.

    Other faces served beside HTTP (the gRPC Stream API gauge) register their collectors in
    ``registry`` so that one scrape shows everything.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._hub = _HubCollector()
        self.registry.register(self._hub)
        self.requests = Histogram(
            "sessionhub_http_request_duration_seconds",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.unencodable = Counter(
            "sessionhub_http_unencodable",
            "Sessions and events that could not be encoded as JSON, left out of an answer.",
            ["what"],
            registry=self.registry,
        )

    async def render(self, hub: SessionHub) -> bytes:
        self._hub.snapshot = await hub.metrics()
        return generate_latest(self.registry)
