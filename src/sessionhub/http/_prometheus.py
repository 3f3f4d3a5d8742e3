"""``/metrics``: the hub's metrics and the server's request durations, in Prometheus text format.

Request durations are counted in plain lists on the request path and turned into Prometheus
samples only when scraped: ``prometheus_client``'s own histogram takes a lock per observation,
which cost the hot path more than routing did.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
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


#: ``prometheus_client``'s default histogram buckets (seconds), what ``/metrics`` has always shown.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_LE = [str(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
_REQUESTS = "sessionhub_http_request_duration_seconds"


class _Durations:
    """One (method, route, status)'s requests: a count per bucket (the last one +Inf), their sum
    and when the first was seen (the ``_created`` sample)."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0
        self.created = time.time()


class _RequestCollector(Collector):
    """Bumped by the app for each request (on its event loop, as scrapes are: no lock), read at
    scrape time into the same samples a ``prometheus_client`` histogram gives."""

    def __init__(self) -> None:
        self.durations: dict[tuple[str, str, int], _Durations] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        durations = self.durations.get(key)
        if durations is None:
            durations = self.durations[key] = _Durations()
        durations.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        durations.total += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            _REQUESTS,
            "HTTP requests by method, route and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), durations in list(self.durations.items()):
            labels = {"method": method, "route": route, "status": str(status)}
            cumulative, seen = [], 0
            for le, count in zip(_LE, durations.counts, strict=True):
                seen += count
                cumulative.append((le, seen))
            family.add_metric(list(labels.values()), cumulative, durations.total)
            family.add_sample(_REQUESTS + "_created", labels, durations.created)
        yield family


class ServerMetrics:
    """A registry of the server's own: the hub's figures plus HTTP request durations.

    Other faces served beside HTTP (the gRPC Stream API gauge) register their collectors in
    ``registry`` so that one scrape shows everything.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._hub = _HubCollector()
        self.registry.register(self._hub)
        self.requests = _RequestCollector()
        self.registry.register(self.requests)
        self.unencodable = Counter(
            "sessionhub_http_unencodable",
            "Sessions and events that could not be encoded as JSON, left out of an answer.",
            ["what"],
            registry=self.registry,
        )

    async def render(self, hub: SessionHub) -> bytes:
        self._hub.snapshot = await hub.metrics()
        return generate_latest(self.registry)
