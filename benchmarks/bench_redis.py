"""Redis store get, create and touch with 50 concurrent tasks, beside ``redis-benchmark`` in one run.

    uv run python benchmarks/bench_redis.py            # 100k gets, 20k creates
    uv run python benchmarks/bench_redis.py --quick    # a smoke run
    uv run python benchmarks/bench_redis.py --url redis://host:6379/0   # an existing Redis

Without ``--url`` it starts a private ``redis-server`` on a free port (never the machine's own on
6379) and runs ``redis-benchmark -t get -c 50`` against that same server, so the ratio compares like
with like. PRODUCT.md §10: Redis store ``get`` >= 0.25 x redis-benchmark, one round trip per
operation (counted as the commands the store sent; the event tailer's reads are not store
operations). Absolute rates on a shared 2-core machine are noise; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_server

from tests.redis_server import RedisServer

from sessionhub import Session, SessionHub
from sessionhub.stores import Change, CreateRules
from sessionhub.stores.redis import RedisStore

CONCURRENCY = 50


def redis_benchmark(url: str, n: int) -> float:
    """``redis-benchmark -t get -c 50 -n n -q`` against the same server: GETs per second."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not installed (it comes with redis-server)")
    parts = urllib.parse.urlsplit(url)
    command = [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        command += ["-a", urllib.parse.unquote(parts.password), "--no-auth-warning"]
    command += ["-t", "get", "-c", str(CONCURRENCY), "-n", str(n), "-q"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"GET: ([\d.]+) requests per second", output.replace("\r", "\n"))
    if match is None:
        raise SystemExit(f"cannot read redis-benchmark's output: {output[-300:]!r}")
    return float(match.group(1))


async def concurrently(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Run ``op(0..n-1)`` from 50 tasks; seconds taken."""
    per_task = n // CONCURRENCY

    async def worker(first: int) -> None:
        for i in range(first, first + per_task):
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k * per_task) for k in range(CONCURRENCY)))
    return time.perf_counter() - start


async def round_trips(store: RedisStore, n: int) -> dict[str, float]:
    """Commands sent per store operation, one operation at a time (the hub's expiry task, which
    wakes on new deadlines, is not running here, so nothing else shares the count)."""
    rules = CreateRules()
    now = time.time()
    ids = [f"trip-{uuid.uuid4().hex}" for _ in range(n)]
    measured: dict[str, float] = {}

    async def count(name: str, op: Callable[[int], Awaitable[object]]) -> None:
        sent = store.round_trips
        for i in range(n):
            await op(i)
        measured[name] = (store.round_trips - sent) / n

    def session(i: int) -> Session:
        return Session(
            id=ids[i],
            state="ACTIVE",
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            idle_timeout=600.0,
            expires_at=now + 600.0,
        )

    await count("create", lambda i: store.create(session(i), rules))
    await count("get", lambda i: store.get(ids[i]))
    await count("touch", lambda i: store.modify(ids[i], Change(now=now, touch=True)))
    moves = {"ACTIVE": "TERMINATING"}
    await count("claim_end", lambda i: store.claim_end(ids[i], "ended", now, moves))
    await count("finish_end", lambda i: store.finish_end(ids[i], now, "CLEANED", now))
    return measured


async def measure(url: str, n_get: int, n_create: int, rounds: int) -> None:
    store = RedisStore(url, prefix=f"bench{uuid.uuid4().hex[:8]}:")
    await store.open()
    trips = await round_trips(store, 200)
    async with SessionHub(store, idle_timeout=600.0) as hub:
        n_create -= n_create % CONCURRENCY
        n_get -= n_get % CONCURRENCY
        ids = [f"bench-{i}" for i in range(n_create)]
        create_s = await concurrently(n_create, lambda i: hub.create(ids[i]))
        results: list[tuple[str, float, float]] = []
        for _ in range(rounds):
            baseline = await asyncio.to_thread(redis_benchmark, url, max(n_get * 2, 100_000))
            store_get = await concurrently(n_get, lambda i: store.get(ids[i % n_create]))
            hub_get = await concurrently(n_get, lambda i: hub.get(ids[i % n_create]))
            results += [("get", baseline, store_get), ("hub.get", baseline, hub_get)]
        touch_s = await concurrently(n_get, lambda i: hub.touch(ids[i % n_create]))

        print(f"Redis store, {CONCURRENCY} concurrent tasks, {store.address.where}")
        header = f"{'operation':<11}{'rate':>12}{'redis-benchmark':>18}{'ratio':>8}"
        print(f"{header}{'round trips/op':>16}")
        for name, baseline, seconds in results:
            ours = n_get / seconds
            verdict = "met" if ours / baseline >= 0.25 else "NOT met"
            print(
                f"{name:<11}{ours:>10,.0f}/s{baseline:>16,.0f}/s{ours / baseline:>8.3f}"
                f"{trips['get']:>16.2f}   target >= 0.25: {verdict}"
            )
        blank = ""
        for name, n, seconds in (("create", n_create, create_s), ("touch", n_get, touch_s)):
            print(f"{name:<11}{n / seconds:>10,.0f}/s{blank:>26}{trips[name]:>16.2f}")
        for name in ("claim_end", "finish_end"):
            print(f"{name:<11}{blank:>38}{trips[name]:>16.2f}")
        await hub.end_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--url", help="an existing Redis instead of a private redis-server")
    options = parser.parse_args()
    n_get, n_create, rounds = (10_000, 2_000, 1) if options.quick else (100_000, 20_000, 3)
    server = None if options.url else RedisServer()
    try:
        url = options.url or (server.url if server else "")
        asyncio.run(measure(url, n_get, n_create, rounds))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
