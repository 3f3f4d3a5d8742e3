"""Expiry bursts: sessions due within one second, ended by 3 hub processes sharing one store.

    uv run python benchmarks/bench_expiry.py              # 20,000 sessions per store
    uv run python benchmarks/bench_expiry.py --quick      # 2,000: a smoke run
    uv run python benchmarks/bench_expiry.py --cluster    # also on a local Redis Cluster (3+3)
    SESSIONHUB_BENCH_PROFILE=/tmp/prof uv run python benchmarks/bench_expiry.py --only redis
                                                          # cProfile of each hub: /tmp/prof/hub<i>.prof

For each shared store (a private ``redis-server``; a SQLite file) it starts 3 hub processes (real
subprocesses of this script), which create their share of ``n`` sessions whose deadlines are spread
evenly over one second, a moment after every process has finished creating. Each process runs the
hub's own expiry task and counts the calls of its no-op hook; the parent prints:

- ended per second: ``n`` divided by the time from the first deadline to the last hook call;
- lateness (hook call minus deadline) p50, p99 and max;
- hook calls per process and their sum, which must be ``n``, with no session hooked twice
  (exactly once across processes);
- the CPU time the hub processes (and ``redis-server``: on a Cluster, every node's) spent from the
  first deadline on, per 1,000 sessions ended: on a shared machine this moves far less with the
  load than the rates do.

The baseline, measured in the same run: the memory store, one hub in this process (it cannot be
shared), with the same ``n`` and deadlines. Absolute rates on a shared 2-core machine are noise;
compare the ratios to the baseline within one run, and run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* (the private servers)

from sessionhub import Session, SessionHub  # noqa: E402

PROCESSES = 3
CONCURRENCY = 50  # creating tasks per process


class _Counter:
    """The no-op hook: counts its calls and when each came, against the session's deadline."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lateness: list[float] = []
        self.last = 0.0

    async def __call__(self, session: Session, reason: str) -> None:
        now = time.time()
        self.ids.append(session.id)
        self.lateness.append(now - (session.expires_at or now))
        self.last = now


async def _create_share(
    hub: SessionHub, index: int, n: int, due: float, run: str, step: int = PROCESSES
) -> None:
    """This process's share of the n sessions: session k is due at ``due + k / n`` (or at once,
    if creating it came later than that: the parent then says to raise the margin)."""
    mine = list(range(index, n, step))

    async def worker(ks: list[int]) -> None:
        for k in ks:
            ttl = max(due + k / n - time.time(), 0.001)
            await hub.create(f"{run}-{k:06d}", namespace="burst", idle_timeout=None, ttl=ttl)

    await asyncio.gather(*(worker(mine[t::CONCURRENCY]) for t in range(CONCURRENCY)))


async def _worker(url: str, index: int, n: int, run: str, options: dict[str, Any]) -> None:
    hook = _Counter()
    hub = SessionHub(url, idle_timeout=None, **options)
    hub.on_end(hook)
    await hub.start()
    # Warm-up, never due: the parent sizes the margin before the first deadline from this rate.
    warm = max(n // 20, 100)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            hub.create(f"{run}-w{index}-{i}", namespace="warm", idle_timeout=None)
            for i in range(warm)
        )
    )
    print(f"up {warm / (time.perf_counter() - started)!r}", flush=True)
    due = float(await asyncio.to_thread(sys.stdin.readline))
    await _create_share(hub, index, n, due, run)
    print(f"created {time.time() - due:+.3f}", flush=True)
    cpu = time.process_time()
    # Done when the shared store holds no live session any more (every process's hub ended them).
    while await hub.count(namespace="burst") > 0:  # noqa: ASYNC110 - other processes end them
        await asyncio.sleep(0.05)
    await hub.close()
    cpu = time.process_time() - cpu
    result = {"ids": hook.ids, "lateness": hook.lateness, "last": hook.last, "cpu": cpu}
    print(json.dumps(result), flush=True)


def _percentile(values: list[float], q: float) -> float:
    return values[min(int(q * len(values)), len(values) - 1)]


def _process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _servers_cpu(pids: tuple[int, ...]) -> float:
    return sum(_process_cpu(pid) for pid in pids)


def _report(
    label: str, n: int, due: float, results: list[dict[str, Any]], server_cpu: float = 0.0
) -> float:
    ids: list[str] = []
    lateness: list[float] = []
    last = 0.0
    for result in results:
        ids += result["ids"]
        lateness += result["lateness"]
        last = max(last, float(result["last"]))
    lateness.sort()
    rate = len(ids) / max(last - due, 1e-9)
    calls = "+".join(str(len(result["ids"])) for result in results)
    once = len(ids) == n and len(set(ids)) == n
    cpu = sum(float(result.get("cpu", 0.0)) for result in results) * 1000 / n
    server = f", server {server_cpu * 1000 / n:.3f}" if server_cpu else ""
    print(
        f"{label:>28}: {rate:>8,.0f} ended/s, lateness p50 {_percentile(lateness, 0.5) * 1000:,.0f} "
        f"ms p99 {_percentile(lateness, 0.99) * 1000:,.0f} ms max {lateness[-1] * 1000:,.0f} ms; "
        f"hook calls {calls} = {len(ids)} of {n} ({'exactly once' if once else 'NOT EXACTLY ONCE'}); "
        f"CPU s per 1,000: hubs {cpu:.3f}{server}",
        flush=True,
    )
    return rate


def _shared(
    label: str,
    url: str,
    n: int,
    options: dict[str, Any],
    server_pids: tuple[int, ...] = (),
    margin: float = 2.0,
) -> float:
    """3 hub processes on ``url``; the parent only starts them, picks the first deadline and
    gathers their counts."""
    run = os.urandom(4).hex()
    command = [sys.executable, "-m", "benchmarks.bench_expiry", "--worker", url, "", str(n), run]
    command.append(json.dumps(options))
    workers = []
    for index in range(PROCESSES):
        command[5] = str(index)
        workers.append(
            subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
    try:
        rate = 0.0
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline().split()
            if not line or line[0] != "up":
                raise RuntimeError(f"a hub process on {label} did not start")
            rate += float(line[1])
        # Far enough ahead for every process to create its share before the first deadline
        # (``margin`` times what the warm-up's rate says, since the machine is shared).
        due = time.time() + 1.0 + margin * n / rate
        server_cpu = 0.0
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{due!r}\n")
            worker.stdin.flush()
        late = []
        for worker in workers:
            assert worker.stdout is not None
            late.append(float(worker.stdout.readline().split()[1]))
        server_cpu = _servers_cpu(server_pids)  # the creating is done: expiry's CPU from here
        if max(late) > 0:
            print(
                f"  (creating ended {max(late):.2f} s after the first deadline: raise the margin)"
            )
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        if server_pids:
            server_cpu = _servers_cpu(server_pids) - server_cpu
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return _report(label, n, due, results, server_cpu)


async def _in_process(n: int, options: dict[str, Any]) -> float:
    hook = _Counter()
    hub = SessionHub("memory://", idle_timeout=None, **options)
    hub.on_end(hook)
    await hub.start()
    due = time.time() + 1.0 + n / 5_000
    await _create_share(hub, 0, n, due, "m", step=1)
    cpu = time.process_time()
    while await hub.count() > 0:  # noqa: ASYNC110 - the store is the judge
        await asyncio.sleep(0.05)
    await hub.close()
    # One process: it counts as the three shares.
    cpu = time.process_time() - cpu
    result = {"ids": hook.ids, "lateness": hook.lateness, "last": hook.last, "cpu": cpu}
    return _report("memory, 1 hub (baseline)", n, due, [result])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sessions: a smoke run")
    parser.add_argument("-n", type=int, default=None, help="sessions per store (20,000)")
    parser.add_argument("--cluster", action="store_true", help="also on a local Redis Cluster")
    parser.add_argument("--only", default="", help="comma-separated: memory,redis,sqlite,cluster")
    parser.add_argument("--expiry-batch", type=int, default=None)
    parser.add_argument("--hook-concurrency", type=int, default=None)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, index, count, run, raw = args.worker
        work = _worker(url, int(index), int(count), run, json.loads(raw))
        profile = os.environ.get("SESSIONHUB_BENCH_PROFILE")
        if profile:  # a folder: each hub process writes its cProfile stats there
            import cProfile

            with cProfile.Profile() as profiler:
                asyncio.run(work)
            profiler.dump_stats(f"{profile}/hub{index}.prof")
            return
        asyncio.run(work)
        return
    n = args.n or (2_000 if args.quick else 20_000)
    options: dict[str, Any] = {}
    if args.expiry_batch:
        options["expiry_batch"] = args.expiry_batch
    if args.hook_concurrency:
        options["hook_concurrency"] = args.hook_concurrency
    only = set(filter(None, args.only.split(","))) or {"memory", "redis", "sqlite"}
    if args.cluster:
        only.add("cluster")
    print(f"{n:,} sessions due within one second; {PROCESSES} hub processes per shared store")
    baseline = asyncio.run(_in_process(n, options)) if "memory" in only else None
    rates: dict[str, float] = {}
    if "redis" in only:
        from tests.redis_server import RedisServer

        server = RedisServer()
        try:
            pid = server._process.pid
            rates["Redis"] = _shared("Redis, 3 processes", server.url, n, options, (pid,))
        finally:
            server.stop()
    if "sqlite" in only:
        with tempfile.TemporaryDirectory(prefix="sessionhub-bench-") as folder:
            url = f"sqlite:///{folder}/expiry.db"
            rates["SQLite"] = _shared("SQLite, 3 processes", url, n, options)
    if "cluster" in only:
        from tests.cluster.cluster_server import RedisClusterServer

        cluster = RedisClusterServer()
        try:
            # Every node's CPU, replicas' too (they apply each write the primaries make).
            pids = tuple(process.pid for process in cluster._processes.values())
            # 4x: a Cluster's creates slow down more than the warm-up shows as sessions pile up.
            label = "Redis Cluster, 3 processes"
            rates["Cluster"] = _shared(label, cluster.url, n, options, pids, margin=4.0)
        finally:
            cluster.stop()
    if baseline:
        print(
            "ratio to the baseline: "
            + ", ".join(f"{k} {v / baseline:.2f}x" for k, v in rates.items())
        )


if __name__ == "__main__":
    main()
