"""Embedded hub on the memory store, beside a Morgan-like session manager measured in the same run.

    uv run python benchmarks/bench_embedded.py            # the PRODUCT.md §10 sizes (1M sessions)
    uv run python benchmarks/bench_embedded.py --quick    # small sizes, a smoke run
    uv run python benchmarks/bench_embedded.py --quick --cpu  # rates in CPU time (busy machine)

The baseline does what Morgan's ``SessionManager`` does (seed 003): ``str(uuid4())`` ids, a small
dataclass per session, a dict insert and a user → session dict under an ``asyncio.Lock``, and
``get_session`` refreshing activity under the same lock. Each ratio is sessionhub's rate over the
baseline's, both measured in this run: absolute rates on a shared 2-core machine are noise, the
ratios are what to compare. Memory is the RSS growth of a fresh process holding the sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sessionhub
from sessionhub import ManualClock, SessionHub


@dataclass
class MorganSession:
    """Morgan's session record: a mutable dataclass."""

    session_id: str
    user_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime = field(default_factory=datetime.now)
    last_activity: datetime = field(default_factory=datetime.now)
    metadata: dict[str, Any] = field(default_factory=dict)
    connection_count: int = 0
    active_requests: set[str] = field(default_factory=set)

    def update_activity(self) -> None:
        self.last_activity = datetime.now()


class MorganLike:
    """What Morgan's ``SessionManager`` does on its hot paths, and nothing more."""

    def __init__(self) -> None:
        self._sessions: dict[str, MorganSession] = {}
        self._user_sessions: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._total_sessions_created = 0

    async def create_session(self, user_id: str | None = None) -> MorganSession:
        async with self._lock:
            session_id = str(uuid.uuid4())
            session = MorganSession(session_id=session_id, user_id=user_id)
            self._sessions[session_id] = session
            if user_id:
                self._user_sessions[user_id] = session_id
            self._total_sessions_created += 1
            return session

    async def get_session(self, session_id: str) -> MorganSession | None:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.update_activity()
            return session


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


#: What ``timed`` reads: wall time, or with ``--cpu`` this thread's CPU time (on a shared machine
#: wall time also counts other processes' turns on the core; the hot paths never wait for I/O, so
#: on a quiet machine the two agree).
clock = time.perf_counter


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    start = clock()
    for i in range(n):
        await op(i)
    return clock() - start


def latency_ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1000
    p99 = samples[int(len(samples) * 0.99) - 1] * 1000
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"


async def all_ids(hub: SessionHub) -> list[str]:
    """Every live session id, in a shuffled order (as the baseline's are)."""
    ids: list[str] = []
    cursor = None
    while True:
        page = await hub.find(limit=1000, cursor=cursor)
        ids += (session.id for session in page.items)
        if page.cursor is None:
            random.Random(0).shuffle(ids)
            return ids
        cursor = page.cursor


async def baseline_round(n: int, users: list[str]) -> dict[str, float]:
    morgan = MorganLike()
    create = await timed(n, lambda i: morgan.create_session(users[i]))
    ids = list(morgan._sessions)
    random.Random(0).shuffle(ids)
    get = await timed(n, lambda i: morgan.get_session(ids[i]))
    return {"morgan create": create, "morgan get": get}


async def hub_round(n: int, users: list[str]) -> dict[str, float]:
    async with SessionHub(idle_timeout=60.0) as hub:
        seconds = {"create": await timed(n, lambda i: hub.create(user_id=users[i]))}
        ids = await all_ids(hub)
        seconds["get"] = await timed(n, lambda i: hub.get(ids[i]))
        seconds["touch"] = await timed(n, lambda i: hub.touch(ids[i]))
        seconds["incr"] = await timed(n, lambda i: hub.incr(ids[i], "calls"))

        async def tracked(i: int) -> None:
            async with hub.track_request(ids[i]):
                pass

        seconds["track_request"] = await timed(n, tracked)
        seconds["end"] = await timed(n, lambda i: hub.end(ids[i]))
    return seconds


async def rates(n: int, rounds: int) -> None:
    """Each hot path against the baseline, alternating rounds; the best round of each counts."""
    users = [f"user{i}" for i in range(n)]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for one_round in (baseline_round, hub_round):
            for name, seconds in (await one_round(n, users)).items():
                best[name] = min(best.get(name, seconds), seconds)
            gc.collect()

    timing = "thread CPU time" if clock is time.thread_time else "wall time"
    print(f"best of {rounds} rounds of {n:,} calls each ({timing})")
    print(f"{'operation':<30}{'rate':>14}{'ratio':>9}   target")
    rows = (
        ("create(user_id=...)", "create", "morgan create", 1.5, None),
        ("get", "get", "morgan get", 2.0, None),
        ("touch", "touch", "morgan get", 2.0, 400_000),
        ("incr", "incr", None, None, None),
        ("track_request (enter + exit)", "track_request", None, None, None),
        ("end", "end", None, None, None),
        ("baseline create_session", "morgan create", None, None, None),
        ("baseline get_session", "morgan get", None, None, None),
    )
    for label, ours, base, ratio_target, rate_target in rows:
        ratio = best[base] / best[ours] if base else None
        targets = []
        if ratio is not None:
            met = ratio >= (ratio_target or 0)
            targets.append(f">= {ratio_target}x {base}: {'met' if met else 'NOT met'}")
        if rate_target is not None:
            met = n / best[ours] >= rate_target
            targets.append(f">= {rate_target:,}/s: {'met' if met else 'NOT met'}")
        shown = f"{ratio:>8.2f}x" if ratio is not None else " " * 9
        print(f"{label:<30}{rate(n, best[ours])}{shown}   {'; '.join(targets)}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def fill(n: int, kind: str) -> None:
    """The child process of ``memory``: RSS growth per session for ``n`` sessions of ``kind``."""
    hub = SessionHub(idle_timeout=60.0)  # a real clock: every session has its own timestamps
    gc.collect()
    before = rss_bytes()
    if kind == "bare":
        for _ in range(n):
            await hub.create()
    elif kind == "user+label":
        for i in range(n):
            await hub.create(user_id=f"user{i}", labels={"tier": "free"})
    else:  # a label value of its own too, as Morgan's conversation ids
        for i in range(n):
            await hub.create(user_id=f"user{i}", labels={"conversation_id": f"c{i}"})
    gc.collect()
    print((rss_bytes() - before) / n)


def memory(n: int) -> None:
    """RSS per live session, each measured in a fresh process."""
    for kind, target in (("user+label", 600), ("bare", 300), ("user+own label", None)):
        child = subprocess.run(
            [sys.executable, __file__, "--fill", kind, "--sessions", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        per = float(child.stdout.strip().splitlines()[-1])
        goal = f"(target <= {target}: {'met' if per <= target else 'NOT met'})" if target else ""
        print(f"memory per live session at {n:,}, {kind}: {per:,.0f} bytes RSS {goal}")


async def at_scale(n: int, due: int) -> None:
    """Finding, memory and expiry with ``n`` live sessions."""
    hub = SessionHub(idle_timeout=None, clock=ManualClock())
    namespaces = [f"ns{i}" for i in range(10)]
    users = [f"user{i}" for i in range(n // 10)]
    for i in range(n):
        await hub.create(namespace=namespaces[i % 10], user_id=users[i % len(users)])

    samples = []
    for i in range(1000):
        start = time.perf_counter()
        await hub.find(user_id=f"user{i * 7 % (n // 10)}")
        samples.append(time.perf_counter() - start)
    print(f"find by user among {n:,}: {latency_ms(samples)} (target <= 1 ms)")
    samples = []
    for i in range(200):
        start = time.perf_counter()
        await hub.find(namespace=f"ns{i % 10}", limit=100)
        samples.append(time.perf_counter() - start)
    print(f"first page (100) of a namespace among {n:,}: {latency_ms(samples)} (target <= 5 ms)")

    # expiry lateness: `due` sessions all due at one deadline, among n live, with the real
    # expiry task; lateness is measured by the hub itself
    real = SessionHub(idle_timeout=None)
    async with real:
        for _ in range(n - due):
            await real.create()
        deadline_in = 1.0
        for _ in range(due):
            await real.create(ttl=deadline_in)
        ended = 0
        done = asyncio.Event()

        async def count_end(_: sessionhub.Session, __: str) -> None:
            nonlocal ended
            ended += 1
            if ended == due:
                done.set()

        real.on_end(count_end)
        await asyncio.wait_for(done.wait(), 60)
        metrics = await real.metrics()
        print(
            f"expiry of {due:,} due among {n:,} live: max lateness "
            f"{metrics.expiry_lateness_max * 1000:.1f} ms (target: all within 200 ms)"
        )
        start = time.perf_counter()
    print(
        f"shutdown ending {n - due:,} sessions (reason shutdown): {time.perf_counter() - start:.1f} s"
    )


async def history(records: int) -> None:
    hub = SessionHub()
    session = await hub.create()
    log = hub.history(session.id)
    for i in range(records):
        await log.append("call", {"i": i, "method": "Greeter/SayHello"})
    baseline = list(range(records))
    samples, base = [], []
    for _ in range(500):
        start = time.perf_counter()
        await log.read(limit=50, newest_first=True)
        samples.append(time.perf_counter() - start)
        start = time.perf_counter()
        baseline[-50:]
        base.append(time.perf_counter() - start)
    print(f"last 50 of a {records:,}-record history: {latency_ms(samples)} (target <= 1 ms)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--cpu", action="store_true", help="time the rates in thread CPU time, not wall time"
    )
    parser.add_argument("--fill", help=argparse.SUPPRESS)  # the child process of memory()
    parser.add_argument("--sessions", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        await fill(args.sessions, args.fill)
        return
    if args.cpu:
        global clock
        clock = time.thread_time
    n, rounds, scale, due, records = (
        (20_000, 3, 50_000, 1_000, 10_000)
        if args.quick
        else (200_000, 3, 1_000_000, 10_000, 100_000)
    )
    await rates(n, rounds)
    memory(scale)
    await history(records)
    await at_scale(scale, due)


if __name__ == "__main__":
    asyncio.run(main())
