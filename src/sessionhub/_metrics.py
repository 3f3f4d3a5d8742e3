"""What a hub counts. One ``HubMetrics`` per hub process; the census comes from the store."""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "CALLER_REASONS_KEPT",
    "HUB_REASONS",
    "LATENESS_BUCKETS",
    "MINUTES_KEPT",
    "OTHER_REASON",
    "HubMetrics",
    "MetricsSnapshot",
    "MinuteCount",
]

#: Upper bounds (seconds) of the expiry-lateness histogram, as Prometheus buckets.
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: How many wall-clock minutes of created/ended counts a hub keeps (the current one included).
MINUTES_KEPT = 60

#: The end reasons the hub gives itself: each always counted under its own name.
HUB_REASONS = frozenset({"ended", "expired", "parent_ended", "shutdown", "evicted"})
#: How many distinct end reasons given by callers are counted under their own names; sessions
#: ended with any later one are counted under ``OTHER_REASON`` (free text must not grow metrics).
CALLER_REASONS_KEPT = 32
OTHER_REASON = "other"
_OWN_LABELS = HUB_REASONS | {OTHER_REASON}


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Sessions created and ended during the wall-clock minute starting at ``minute``."""

    minute: float  # Unix seconds, a multiple of 60
    created: int
    ended: int


class _Minutes:
    """Created/ended counts per wall-clock minute, the last ``MINUTES_KEPT`` of them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: deque[list[int]] = deque(maxlen=MINUTES_KEPT)  # [minute, created, ended]
        # The newest minute's counts and its bounds: every create counts here, so the common
        # case (still that minute) costs a clock read and a comparison.
        self._current: list[int] = [0, 0, 0]
        self._from, self._until = 0.0, 0.0

    def add(self, created: int = 0, ended: int = 0) -> None:
        now = self._clock()
        counts = self._current
        if not self._from <= now < self._until:
            minute = int(now // 60) * 60
            if not self._counts or self._counts[-1][0] != minute:
                self._counts.append([minute, 0, 0])
            counts = self._current = self._counts[-1]
            self._from, self._until = float(minute), float(minute + 60)
        counts[1] += created
        counts[2] += ended

    def snapshot(self) -> tuple[MinuteCount, ...]:
        """Every kept minute up to now, oldest first; minutes with nothing in them give zeros."""
        now = int(self._clock() // 60) * 60
        known = {minute: (created, ended) for minute, created, ended in self._counts}
        minutes = range(now - 60 * (MINUTES_KEPT - 1), now + 1, 60)
        return tuple(MinuteCount(float(m), *known.get(m, (0, 0))) for m in minutes)


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
    # The last MINUTES_KEPT minutes, oldest first (``/v1/stats``; the gRPC face does not carry
    # them, and a snapshot read through it still equals the hub's).
    per_minute: tuple[MinuteCount, ...] = field(default=(), compare=False)


class _Ended(Counter[str]):
    """Sessions ended, by reason; each one also counts in its minute. End reasons are free text,
    so the reasons counted are bounded (``ended_total`` and ``/metrics`` labels): the hub's own,
    the first ``CALLER_REASONS_KEPT`` distinct reasons callers give, and ``other`` for the rest."""

    def __init__(self, minutes: _Minutes) -> None:
        super().__init__()
        self._minutes = minutes
        self._caller_reasons = 0

    def _label(self, reason: str) -> str:
        if reason in self or reason in _OWN_LABELS or self._caller_reasons < CALLER_REASONS_KEPT:
            return reason
        return OTHER_REASON

    def __getitem__(self, reason: str) -> int:
        return super().__getitem__(self._label(reason))

    def __setitem__(self, reason: str, count: int) -> None:
        label = self._label(reason)
        if label not in self and label not in _OWN_LABELS:
            self._caller_reasons += 1
        self._minutes.add(ended=count - super().__getitem__(label))
        super().__setitem__(label, count)


@dataclass(slots=True)
class HubMetrics:
    """What the hub bumps: ``created += 1``, ``ended[reason] += 1`` and the rest. Created and ended
    sessions are also counted per wall-clock minute (the rate a dashboard charts)."""

    clock: Callable[[], float] = time.time
    _created: int = 0
    minutes: _Minutes = field(init=False)
    ended: Counter[str] = field(init=False)
    hook_calls: int = 0
    hook_failures: int = 0
    lateness: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    lateness_sum: float = 0.0
    lateness_max: float = 0.0
    subscribers: int = 0

    def __post_init__(self) -> None:
        self.minutes = _Minutes(self.clock)
        self.ended = _Ended(self.minutes)

    @property
    def created(self) -> int:
        return self._created

    @created.setter
    def created(self, total: int) -> None:
        self.minutes.add(created=total - self._created)
        self._created = total

    def count_created(self) -> None:
        """``created += 1`` without the property's two calls (the hub's create path)."""
        self._created += 1
        self.minutes.add(1)

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
            per_minute=self.minutes.snapshot(),
        )
