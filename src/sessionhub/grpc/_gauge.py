"""The Stream API's Prometheus gauge ``stream_api_sessions_total{DataSource=...}``.

Kept apart from the servicer because prometheus-client comes with the ``server`` extra: it is
imported only when a metrics registry is given (``sessionhub serve`` gives the HTTP app's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._metrics import MetricsSnapshot

__all__ = ["StreamApiGauge"]


class StreamApiGauge(Collector):
    """Live sessions per data source (namespace), from the hub snapshot taken for each scrape.

    ``snapshot`` gives that snapshot; the HTTP face's ``/metrics`` takes one just before it renders
    its registry, so this collector, registered there, reads the same figures as
    ``sessionhub_sessions``.
    """

    def __init__(self, snapshot: Callable[[], MetricsSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "stream_api_sessions_total",
            "Number of sessions available, per data source (Stream API).",
            labels=["DataSource"],
        )
        snap = self._snapshot()
        if snap is not None:
            per_source: Counter[str] = Counter()
            for (namespace, _state), count in snap.sessions.items():
                per_source[namespace] += count
            for namespace, count in sorted(per_source.items()):
                gauge.add_metric([namespace], count)
        yield gauge
