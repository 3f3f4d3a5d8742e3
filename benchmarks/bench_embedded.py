"""Embedded hub on the memory store, beside bare dict operations measured in the same run.

    uv run python benchmarks/bench_embedded.py            # the PRODUCT.md §10 sizes (1M sessions)
    uv run python benchmarks/bench_embedded.py --quick    # small sizes, a smoke run

Absolute rates on a shared 2-core machine are noise; the ratios to the baseline are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import sessionhub
from sessionhub import ManualClock, SessionHub


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return time.perf_counter() - start


def timed_sync(n: int, op: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(n):
        op(i)
    return time.perf_counter() - start


def latency_ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1000
    p99 = samples[int(len(samples) * 0.99) - 1] * 1000
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"


async def rates(n: int) -> None:
    """create / get / touch against dict insert / lookup / replace."""
    hub = SessionHub(idle_timeout=60.0)
    ids = [sessionhub.new_session_id() for _ in range(n)]
    baseline: dict[str, object] = {}
    base_create = timed_sync(n, lambda i: baseline.__setitem__(ids[i], (ids[i], i)))
    base_get = timed_sync(n, lambda i: baseline[ids[i]])
    base_touch = timed_sync(n, lambda i: baseline.__setitem__(ids[i], (ids[i], i + 1)))

    create = await timed(n, lambda i: hub.create(ids[i]))
    get = await timed(n, lambda i: hub.get(ids[i]))
    touch = await timed(n, lambda i: hub.touch(ids[i]))
    print(f"{'operation':<10}{'sessionhub':>14}{'dict baseline':>16}{'ratio':>8}")
    for name, ours, base, target in (
        ("create", create, base_create, 100_000),
        ("get", get, base_get, 1_000_000),
        ("touch", touch, base_touch, 400_000),
    ):
        print(
            f"{name:<10}{rate(n, ours)}{rate(n, base):>16}{base / ours:>8.3f}"
            f"   target {target:,}/s: {'met' if n / ours >= target else 'NOT met'}"
        )


async def at_scale(n: int, due: int) -> None:
    """Finding, memory and expiry with ``n`` live sessions."""
    plain = SessionHub(idle_timeout=60.0, clock=ManualClock())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        await plain.create()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"memory per idle session at {n:,} sessions: {used / n:,.0f} bytes (target <= 600)")
    del plain
    gc.collect()

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
    args = parser.parse_args()
    n, scale, due, records = (
        (20_000, 50_000, 1_000, 10_000) if args.quick else (200_000, 1_000_000, 10_000, 100_000)
    )
    await rates(n)
    await history(records)
    await at_scale(scale, due)


if __name__ == "__main__":
    asyncio.run(main())
