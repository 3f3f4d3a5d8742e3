"""What a hub counts. One ``HubMetrics`` per hub process; the census comes from the store."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["LATENESS_BUCKETS", "HubMetrics", "MetricsSnapshot"]

#: Upper bounds (seconds) of the expiry-lateness histogram, as Prometheus buckets.
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """``hub.metrics()``: live sessions now, and what this hub process has done since start."""

    live_sessions: int
    sessions: dict[tuple[str, str], int]  # (namespace, state) → live sessions
    created_total: int
    ended_total: dict[str, int]  # reason → sessions this process ended
    hook_calls_total: int
    hook_failures_total: int
    expiry_lateness_buckets: tuple[int, ...]  # cumulative counts per LATENESS_BUCKETS, then +Inf
    expiry_lateness_sum: float
    expiry_lateness_max: float
    subscribers: int


@dataclass(slots=True)
class HubMetrics:
    created: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    hook_calls: int = 0
    hook_failures: int = 0
    lateness: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    lateness_sum: float = 0.0
    lateness_max: float = 0.0
    subscribers: int = 0

    def observe_lateness(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.lateness[bisect.bisect_left(LATENESS_BUCKETS, seconds)] += 1
        self.lateness_sum += seconds
        self.lateness_max = max(self.lateness_max, seconds)

    def snapshot(self, census: dict[tuple[str, str], int]) -> MetricsSnapshot:
        cumulative, total = [], 0
        for n in self.lateness:
            total += n
            cumulative.append(total)
        return MetricsSnapshot(
            live_sessions=sum(census.values()),
            sessions=census,
            created_total=self.created,
            ended_total=dict(self.ended),
            hook_calls_total=self.hook_calls,
            hook_failures_total=self.hook_failures,
            expiry_lateness_buckets=tuple(cumulative),
            expiry_lateness_sum=self.lateness_sum,
            expiry_lateness_max=self.lateness_max,
            subscribers=self.subscribers,
        )
