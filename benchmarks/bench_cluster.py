"""The Redis Cluster store beside the single-node Redis store, on private servers started here.

    uv run python benchmarks/bench_cluster.py            # 20k GETs, 4k create+touch, 3k expiring
    uv run python benchmarks/bench_cluster.py --quick    # a smoke run

Starts one ``redis-server`` and one local Cluster (3 primaries, 3 replicas) and prints:

- clients: 50 asyncio tasks doing ``GET``: today's ``_resp`` client on the single node (the
  baseline), redis-py's asyncio ``Redis`` on the single node, redis-py's ``RedisCluster`` (the
  cluster store's client, FCALL/XREAD routed locally) on the Cluster; ratios to the baseline;
- create+touch: pairs per second of both stores from 50 tasks, and the Redis CPU per call
  (``INFO commandstats``, µs, per primary) of create, touch, get and end — capacity per primary
  follows;
- expiry: sessions due within one second on 3 hubs sharing the store: ended per second and lateness
  p50/p99/max.

Absolute rates on a shared 2-core machine are noise; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*

import redis
import redis.asyncio
from tests.cluster.cluster_server import RedisClusterServer
from tests.redis_server import RedisServer

from sessionhub import Session, SessionHub
from sessionhub.stores import Store
from sessionhub.stores._resp import RedisAddress, RedisClient
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.redis_cluster import RedisClusterStore, _FcallRouted

CONCURRENCY = 50


async def concurrently(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """``op(0..n-1)`` from 50 tasks; operations per second."""
    per_task = n // CONCURRENCY

    async def worker(first: int) -> None:
        for i in range(first, first + per_task):
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t * per_task) for t in range(CONCURRENCY)))
    return per_task * CONCURRENCY / (time.perf_counter() - started)


async def clients(single: RedisServer, cluster: RedisClusterServer, n: int) -> None:
    baseline = RedisClient(RedisAddress(port=single.port), timeout=10)
    await baseline.connect()
    await baseline.call("SET", "k", "v")
    base = await concurrently(n, lambda _: baseline.call("GET", "k"))
    await baseline.close()
    plain = redis.asyncio.Redis(port=single.port)
    redis_py = await concurrently(n, lambda _: plain.get("k"))
    await plain.aclose()
    routed = _FcallRouted(host="127.0.0.1", port=cluster.ports[0])
    await routed.initialize()
    await routed.set("k", "v")
    on_cluster = await concurrently(n, lambda _: routed.get("k"))
    await routed.aclose()
    print(f"GET, 50 tasks: _resp {base:,.0f}/s (1.00x), redis-py Redis {redis_py:,.0f}/s "
          f"({redis_py / base:.2f}x), redis-py RedisCluster {on_cluster:,.0f}/s "
          f"({on_cluster / base:.2f}x)")  # fmt: skip


def usec_per_call(ports: list[int], command: str) -> str:
    """Calls and µs per call of ``command`` on each node since the last reset; then resets."""
    out = []
    for port in ports:
        node = redis.Redis(port=port)
        stats = node.info("commandstats").get(f"cmdstat_{command}", {})
        node.config_resetstat()
        node.close()
        out.append(f"{stats.get('usec_per_call', 0.0):.1f}")
    return "/".join(out) + " µs"


async def per_operation(store: Store, ports: list[int], n: int, label: str) -> None:
    """Throughput of create+touch, and the Redis CPU per call of each operation, per primary."""
    hub = SessionHub(store, auto_expire=False)
    await hub.start()
    run = uuid.uuid4().hex[:6]
    usec_per_call(ports, "fcall")
    started = time.perf_counter()
    await concurrently(n, lambda i: hub.create(f"{run}-{i}", idle_timeout=600))
    create = usec_per_call(ports, "fcall")
    await concurrently(n, lambda i: hub.touch(f"{run}-{i}"))
    touch = usec_per_call(ports, "fcall")
    rate = n / (time.perf_counter() - started)
    await concurrently(n, lambda i: hub.get(f"{run}-{i}"))
    get = usec_per_call(ports, "hgetall")
    await concurrently(n, lambda i: hub.end(f"{run}-{i}"))
    end = usec_per_call(ports, "fcall")
    await hub.close()
    print(f"{label}: create+touch {rate:,.0f} pairs/s; Redis CPU per call (each primary): "
          f"create {create}, touch {touch}, get {get}, end (claim+finish) {end}")  # fmt: skip


async def expiry(stores: list[Store], n: int, label: str) -> None:
    hubs = [SessionHub(store, expiry_batch=200) for store in stores]
    lateness: list[float] = []
    for hub in hubs:
        hub.on_end(lambda session, reason: lateness.append(time.time() - (session.expires_at or 0)))
        await hub.start()
    due = time.time() + 2.0
    run = uuid.uuid4().hex[:6]

    async def create(i: int) -> Session:
        return await hubs[i % 3].create(f"{run}-{i}", ttl=due + i / n - time.time())

    await concurrently(n, create)
    for _ in range(1200):  # at most a minute
        if len(lateness) >= n:
            break
        await asyncio.sleep(0.05)
    took = time.time() - due
    for hub in hubs:
        await hub.close()
    lateness.sort()

    def p(q: float) -> float:
        return lateness[min(int(q * len(lateness)), len(lateness) - 1)] * 1000

    print(f"expiry on {label}: {len(lateness)}/{n} ended, {len(lateness) / took:,.0f}/s, lateness "
          f"p50 {p(0.5):.0f} ms p99 {p(0.99):.0f} ms max {lateness[-1] * 1000:.0f} ms, "
          f"median {statistics.median(lateness) * 1000:.0f} ms")  # fmt: skip


async def measure(n_get: int, n_pairs: int, n_expire: int) -> None:
    single = RedisServer()
    cluster = RedisClusterServer()
    try:
        await clients(single, cluster, n_get)
        primaries = cluster.primaries()
        await per_operation(RedisStore(single.url), [single.port], n_pairs, "one Redis")
        await per_operation(RedisClusterStore(cluster.url), primaries, n_pairs, "Cluster (3)")
        await expiry([RedisStore(single.url) for _ in range(3)], n_expire, "one Redis")
        await expiry([RedisClusterStore(cluster.url) for _ in range(3)], n_expire, "Cluster")
    finally:
        single.stop()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    quick = parser.parse_args().quick
    asyncio.run(measure(2_000 if quick else 20_000, 500 if quick else 4_000,
                        600 if quick else 3_000))  # fmt: skip


if __name__ == "__main__":
    main()
