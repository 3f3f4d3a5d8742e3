"""The Redis Cluster store beside the single-node Redis store, on private servers started here.

    uv run python benchmarks/bench_cluster.py            # 20k FCALLs, 4k create+touch, 3k expiring
    uv run python benchmarks/bench_cluster.py --quick    # a smoke run

Starts one ``redis-server``, a local Cluster of 3 primaries + 3 replicas and one of 1 primary, and
prints:

- clients: ``FCALL`` of a trivial function and of the store's real create and touch functions,
  sequential and from 64 tasks: today's ``_resp`` client on the single node (the baseline),
  redis-py's asyncio ``RedisCluster`` (stock, and with FCALL routed locally as the store does),
  the same behind the store's per-primary auto-pipeline, coredis' ``RedisCluster`` and
  valkey-glide's ``GlideClusterClient`` (the last two only when installed: they are candidates,
  not dependencies: ``uv pip install coredis valkey-glide``); ratios to the baseline;
- create+touch: pairs per second from 64 tasks of the single-node store, of the cluster store on
  1 and on 3 primaries (and on 3 without the auto-pipeline), and the Redis CPU per call
  (``INFO commandstats``, µs, per primary) of create, touch, get and end: capacity per primary
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*

import redis
from redis.asyncio.cluster import RedisCluster
from tests.cluster.cluster_server import RedisClusterServer
from tests.redis_server import RedisServer

from sessionhub import Session, SessionHub
from sessionhub.stores import Store
from sessionhub.stores._cluster_lua import CLUSTER_LIBRARY
from sessionhub.stores._resp import Arg, RedisAddress, RedisClient
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.redis_cluster import RedisClusterStore, _AutoPipeline, _FcallRouted

CONCURRENCY = 64
NOOP = (
    "#!lua name=shbench\nredis.register_function('shbench_noop', function(keys, args) return 1 end)"
)
Call = Callable[[tuple[Arg, ...]], Awaitable[object]]


async def concurrently(
    n: int, op: Callable[[int], Awaitable[object]], tasks: int = CONCURRENCY
) -> float:
    """``op(0..n-1)`` from ``tasks`` tasks; operations per second."""
    per_task = n // tasks

    async def worker(first: int) -> None:
        for i in range(first, first + per_task):
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t * per_task) for t in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)


class _Recorder(RedisClusterStore):
    """Records the commands the store would send (and sends them), for replay by other clients."""

    commands: list[tuple[Arg, ...]]

    async def _call(self, *command: Arg, tail: bool = False) -> Any:
        if not tail and command[0] == "FCALL":
            self.commands.append(command)
        return await super()._call(*command, tail=tail)


async def record(url: str, n: int, run: str) -> tuple[list[tuple[Arg, ...]], list[tuple[Arg, ...]]]:
    """The FCALLs of ``n`` creates and ``n`` touches of sessions ``<run>-<i>``."""
    store = _Recorder(url, prefix="bench:")
    store.commands = []
    hub = SessionHub(store, auto_expire=False)
    await hub.start()
    for i in range(n):
        await hub.create(f"{run}-{i}", idle_timeout=600)
    creates, store.commands = store.commands, []
    for i in range(n):
        await hub.touch(f"{run}-{i}")
    touches = store.commands
    await hub.close()
    return creates, touches


def renamed(commands: list[tuple[Arg, ...]], old: str, new: str) -> list[tuple[Arg, ...]]:
    """The same commands for other session ids (same length, so msgpack sizes hold). Keys keep
    their bucket's hash tag, so every command still touches one slot."""
    ob, nb = old.encode(), new.encode()
    return [
        tuple(a.replace(old, new) if isinstance(a, str) else a.replace(ob, nb)
              if isinstance(a, bytes) else a for a in c)
        for c in commands
    ]  # fmt: skip


async def compare(label: str, call: Call, workloads: dict[str, list[tuple[Arg, ...]]],
                  base: dict[str, float] | None, out: dict[str, float]) -> None:  # fmt: skip
    cells = []
    for name, commands in workloads.items():
        tasks = 1 if name.endswith("seq") else CONCURRENCY

        def op(i: int, c: list[tuple[Arg, ...]] = commands) -> Awaitable[object]:
            return call(c[i])

        rate = await concurrently(len(commands), op, tasks)
        out[name] = rate
        ratio = f" {rate / base[name]:.2f}x" if base else ""
        cells.append(f"{name} {rate:,.0f}/s{ratio}")
    print(f"  {label}: " + "; ".join(cells), flush=True)


async def clients(single: RedisServer, cluster: RedisClusterServer, n: int) -> None:
    run = uuid.uuid4().hex[:8]
    creates, touches = await record(cluster.url, n, run)
    noop: list[tuple[Arg, ...]] = [("FCALL", "shbench_noop", 1, f"k{i}") for i in range(n)]

    def workloads() -> dict[str, list[tuple[Arg, ...]]]:
        fresh = uuid.uuid4().hex[:8]  # each client creates its own sessions
        seq = n // 4
        return {
            "noop seq": noop[:seq], "noop x64": noop,
            "create seq": renamed(creates[:seq], run, fresh),
            "touch seq": renamed(touches[:seq], run, fresh),
            "create x64": renamed(creates[seq:], run, fresh),
            "touch x64": renamed(touches[seq:], run, fresh),
        }  # fmt: skip

    print(f"FCALL per client ({n:,} calls; seq = 1 task, x64 = 64 tasks; ratio to _resp):")
    baseline = RedisClient(RedisAddress(port=single.port), timeout=10)
    await baseline.connect()
    await baseline.call("FUNCTION", "LOAD", "REPLACE", NOOP)
    # the baseline runs the same cluster functions on one node (one slot per command there too)
    await baseline.call("FUNCTION", "LOAD", "REPLACE", CLUSTER_LIBRARY)
    base: dict[str, float] = {}
    await compare(
        "_resp, one node (baseline)", lambda c: baseline.call(*c), workloads(), None, base
    )
    await baseline.close()

    stock = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True,
                         max_connections=200)  # fmt: skip
    await stock.initialize()
    await stock.execute_command(
        "FUNCTION", "LOAD", "REPLACE", NOOP, target_nodes=stock.get_primaries()
    )
    await compare(
        "redis-py RedisCluster, stock", lambda c: stock.execute_command(*c), workloads(), base, {}
    )
    await stock.aclose()
    routed = _FcallRouted(host="127.0.0.1", port=cluster.ports[0], decode_responses=True,
                          max_connections=200)  # fmt: skip
    await routed.initialize()
    await compare(
        "redis-py, FCALL routed locally",
        lambda c: routed.execute_command(*c),
        workloads(),
        base,
        {},
    )
    pipeline = _AutoPipeline(routed, None)
    await compare("redis-py + auto-pipeline (the store)", pipeline.call, workloads(), base, {})
    await routed.aclose()
    await _coredis(cluster, workloads, base)
    await _glide(cluster, workloads, base)


async def _coredis(cluster: RedisClusterServer, workloads: Any, base: dict[str, float]) -> None:
    try:
        import coredis
    except ImportError:
        print("  coredis: not installed (uv pip install coredis)")
        return
    async with coredis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True,
                                    max_connections=64) as client:  # fmt: skip

        def call(c: tuple[Arg, ...]) -> Awaitable[object]:
            count = int(c[2])
            reply: Awaitable[object] = client.fcall(
                str(c[1]), list(c[3 : 3 + count]), list(c[3 + count :])
            )
            return reply

        await compare(f"coredis {coredis.__version__} RedisCluster", call, workloads(), base, {})


async def _glide(cluster: RedisClusterServer, workloads: Any, base: dict[str, float]) -> None:
    try:
        from glide import GlideClusterClient, GlideClusterClientConfiguration, NodeAddress
    except ImportError:
        print("  valkey-glide: not installed (uv pip install valkey-glide)")
        return
    config = GlideClusterClientConfiguration(
        [NodeAddress("127.0.0.1", cluster.ports[0])], request_timeout=10_000
    )  # its default of 250 ms fails requests on a busy 2-core machine
    client = await GlideClusterClient.create(config)

    def call(c: tuple[Arg, ...]) -> Awaitable[object]:
        count = int(c[2])
        keys = [a if isinstance(a, (str, bytes)) else str(a) for a in c[3 : 3 + count]]
        args = [a if isinstance(a, (str, bytes)) else str(a) for a in c[3 + count :]]
        reply: Awaitable[object] = client.fcall(str(c[1]), keys=keys, arguments=args)
        return reply

    await compare("valkey-glide GlideClusterClient", call, workloads(), base, {})
    await client.close()


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
    """Throughput of create+touch from 64 tasks, and Redis CPU per call of each operation, per
    primary."""
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


class _Unpipelined(RedisClusterStore):
    """The cluster store as before the auto-pipeline: one redis-py call per command."""

    async def open(self) -> None:
        await super().open()
        client = self._client()

        class Direct(_AutoPipeline):
            def call(self, command: tuple[Arg, ...]) -> asyncio.Future[Any]:
                return asyncio.ensure_future(client.execute_command(*command))

        self._pipeline = Direct(client, None)


async def measure(n_calls: int, n_pairs: int, n_expire: int) -> None:
    single = RedisServer()
    cluster = RedisClusterServer()
    one = RedisClusterServer(primaries=1, replicas=0)
    try:
        await clients(single, cluster, n_calls)
        primaries = cluster.primaries()
        await per_operation(RedisStore(single.url), [single.port], n_pairs, "one Redis (_resp)")
        await per_operation(RedisClusterStore(one.url), one.ports, n_pairs, "Cluster, 1 primary")
        await per_operation(
            RedisClusterStore(cluster.url), primaries, n_pairs, "Cluster, 3 primaries"
        )
        await per_operation(_Unpipelined(cluster.url), primaries, n_pairs,
                            "Cluster, 3 primaries, no auto-pipeline")  # fmt: skip
        await expiry([RedisStore(single.url) for _ in range(3)], n_expire, "one Redis")
        await expiry([RedisClusterStore(cluster.url) for _ in range(3)], n_expire, "Cluster")
    finally:
        single.stop()
        cluster.stop()
        one.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    quick = parser.parse_args().quick
    asyncio.run(measure(2_048 if quick else 8_192, 512 if quick else 4_096,
                        640 if quick else 3_072))  # fmt: skip


if __name__ == "__main__":
    main()
