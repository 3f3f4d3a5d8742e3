"""Redis store get, create and touch with 50 concurrent tasks, beside ``redis-benchmark`` in one run;
and Redis CPU per operation, beside the store as it was before its Lua was reworked.

    uv run python benchmarks/bench_redis.py            # 100k gets, 20k creates
    uv run python benchmarks/bench_redis.py --quick    # a smoke run
    uv run python benchmarks/bench_redis.py --cpu      # only the Redis CPU per operation
    uv run python benchmarks/bench_redis.py --cpu --baseline main   # beside another commit
    uv run python benchmarks/bench_redis.py --cpu --rounds 20       # a busy machine: more rounds
    uv run python benchmarks/bench_redis.py --cpu --instructions    # exact: instructions (valgrind)
    uv run python benchmarks/bench_redis.py --url redis://host:6379/0   # an existing Redis

Without ``--url`` it starts a private ``redis-server`` on a free port (never the machine's own on
6379) and runs ``redis-benchmark -t get -c 50`` against that same server, so the ratio compares like
with like. PRODUCT.md §10: Redis store ``get`` >= 0.25 x redis-benchmark, one round trip per
operation (counted as the commands the store sent; the event tailer's reads are not store
operations). Absolute rates on a shared 2-core machine are noise; the ratios are what to compare.

Redis CPU per operation (issue 12: half of what it was) is the time Redis spent inside the
operation's commands, from ``INFO commandstats`` (``usec`` of ``FCALL``, or of ``HGETALL`` for
``get``), per session. The "before" figures come from the store and Lua of commit ``BASELINE``,
read from git and loaded beside today's on the same server (the library names carry a hash of the
code, so both coexist); the two run in alternating rounds of ``CPU_CHUNK`` operations and each
figure is the best round (load on a shared machine only ever adds time, and most to the
longest calls), taken for both alike. Without git (or that
commit) only today's figures are printed. On its private server it also prints each operation's
median call (``INFO latencystats`` p50 after a ``CONFIG RESETSTAT`` per step; an end's is its
claim's plus its finish's, measured as two steps), which a busy machine's preemption hardly moves.

``--instructions`` counts instead the instructions the server ran for each step (its private server
runs under ``valgrind --tool=callgrind``, instrumented only during the measured steps): exact and
the same from run to run where timings on a shared machine vary by half, so a change of a few
percent shows. It prints those inside the operation's command (what ``INFO commandstats`` times,
the issue's measure) and those of the whole server meanwhile (reading requests, writing replies,
the event tailers' reads), like the 'process' column.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_server

from tests.earlier_store import redis_store_at
from tests.redis_server import RedisServer

from sessionhub import Session, SessionHub
from sessionhub.stores import Change, CreateRules, Store
from sessionhub.stores.redis import RedisStore

CONCURRENCY = 50
# The last commit before the Lua was reworked for CPU (issue 12), and its measured figure.
BASELINE = "8ad59c7"
CPU_CHUNK = 200
# Issue 12's operations; the others are measured beside them (history reads; gets and ends of
# sessions another process changed last, which the store reads whole).
TARGETS = ("create", "touch", "get", "end", "expiry", "expiry/t")
FCALL = ("fcall",)
GET = ("hmget", "hgetall")  # today's get reads a held copy's version first (see RedisStore.get)
CPU_ROUNDS = 7
HISTORY_RECORDS = 50
EXPIRY_BATCH = inspect.signature(SessionHub).parameters["expiry_batch"].default


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


async def server_stats(store: RedisStore) -> dict[str, float]:
    """Microseconds per command (``INFO commandstats``) and the server's main-thread CPU seconds
    (``INFO cpu``) so far."""
    text = await store._ops.call("INFO", "everything")
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.startswith("cmdstat_"):
            values = dict(item.split("=", 1) for item in rest.split(","))
            out[name[8:]] = float(values["usec"])
        elif name in ("used_cpu_sys_main_thread", "used_cpu_user_main_thread"):
            out["cpu"] = out.get("cpu", 0.0) + float(rest)
    return out


async def median_call(store: RedisStore, command: str) -> float:
    """The median µs of ``command`` calls since the last ``CONFIG RESETSTAT`` (latencystats)."""
    text = await store._ops.call("INFO", "latencystats")
    for line in text.splitlines():
        if line.startswith(f"latency_percentiles_usec_{command}:"):
            return float(line.split("p50=", 1)[1].split(",", 1)[0])
    return float("nan")


class Instructions:
    """Instructions a server under ``valgrind --tool=callgrind --instr-atstart=no`` runs between
    ``start`` and ``stop`` (``callgrind_control`` switches its instrumentation)."""

    def __init__(self) -> None:
        for tool in ("valgrind", "callgrind_control"):
            if shutil.which(tool) is None:
                raise SystemExit(f"--instructions needs {tool} (apt-get install valgrind)")
        self.dumps = Path(tempfile.mkdtemp(prefix="bench-redis-callgrind-"))
        self.wrapper = [
            "valgrind",
            "--tool=callgrind",
            "--quiet",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.dumps}/out.%p",
        ]
        self.pid = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], capture_output=True, check=True)

    def start(self) -> None:
        self._control("--zero")
        self._control("--instr=on")

    def stop(self, commands: tuple[str, ...]) -> tuple[int, int]:
        """The instructions since ``start``: the whole server's, and those inside ``commands``'
        own procedures (``fcall``: ``fcallCommand`` and all it called), what ``INFO commandstats``
        times."""
        self._control("--instr=off")
        self._control("--dump")
        total = inside = 0
        for dump in self.dumps.glob("out.*.*"):  # the numbered dumps: this step's only
            match = re.search(r"^totals: (\d+)", dump.read_text(), re.M)  # (summary: is 0)
            if match is None:
                raise SystemExit(f"no totals in callgrind's dump {dump}")
            total += int(match.group(1))
            inside += sum(self._inclusive(dump, f"{command}Command") for command in commands)
            dump.unlink()
        return total, inside

    @staticmethod
    def _inclusive(dump: Path, function: str) -> int:
        shown = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = re.search(rf"^\s*([\d,]+) .*:{function} ", shown, re.M)
        return 0 if match is None else int(match.group(1).replace(",", ""))


def hub_path(store: RedisStore) -> bool:
    """Whether ``store`` has the batched expiry calls the hub uses (``finish_ends`` of its own)."""
    return type(store).finish_ends is not Store.finish_ends


class CpuRun:
    """One store's sessions for the CPU measure: each round works on sessions of its own."""

    def __init__(self, store: RedisStore, tag: str) -> None:
        self.store = store
        self.tag = tag
        self.rules = CreateRules()
        self.made = 0

    def session(self, now: float, idle: float) -> Session:
        self.made += 1
        return Session(
            id=f"cpu-{self.tag}-{self.made:07d}",
            state="ACTIVE",
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            idle_timeout=idle,
            expires_at=now + idle,
            user_id=f"user-{self.made % 97}",
        )

    def create(self, sessions: list[Session]) -> Awaitable[list[Session]]:
        return asyncio.gather(*(self.store.create(s, self.rules) for s in sessions))


async def cpu_per_op(
    url: str, rounds: int, baseline: str, private: bool, counter: Instructions | None = None
) -> None:
    """Redis CPU per operation, today's store beside commit ``baseline``'s on one server. On a
    ``private`` server the statistics are reset before each measured step, for the median call.
    With a ``counter`` (the server runs under callgrind), instructions per operation instead."""
    old_class = redis_store_at(baseline)
    stores: dict[str, RedisStore] = {"today": RedisStore(url, prefix="cpu-new:")}
    # Another hub process on each store's data: it touches the sessions of 'end/o'.
    others: dict[str, RedisStore] = {"today": RedisStore(url, prefix="cpu-new:")}
    if old_class is not None:
        stores["before"] = old_class(url, prefix="cpu-old:")
        others["before"] = old_class(url, prefix="cpu-old:")
    for store in (*stores.values(), *others.values()):
        await store.open()
    runs = {name: CpuRun(store, name) for name, store in stores.items()}
    now = time.time()
    moves = {"ACTIVE": "TERMINATING"}
    samples: dict[tuple[str, str], list[float]] = {}

    async def measured(
        name: str,
        op: str,
        commands: tuple[str, ...],
        work: Callable[[], Awaitable[Any]],
        more: bool = False,
    ) -> None:
        # ``work`` is started only once the statistics are read (a gather runs at once).
        # ``more``: a further step of the same operation (an end's finishes after its claims),
        # added to the round's figures, its median call too.
        if counter is not None:
            counter.start()
            await work()
            total, inside = counter.stop(commands)
            figures = {op + " instr": total / CPU_CHUNK, op + " instr in": inside / CPU_CHUNK}
        else:
            if private:
                await stores[name]._ops.call("CONFIG", "RESETSTAT")
            before = await server_stats(stores[name])
            await work()
            after = await server_stats(stores[name])
            usec = sum(after.get(c, 0.0) - before.get(c, 0.0) for c in commands)
            cpu = (after["cpu"] - before["cpu"]) * 1e6
            figures = {op: usec / CPU_CHUNK, op + " cpu": cpu / CPU_CHUNK}
            if private:
                medians = [await median_call(stores[name], c) for c in commands]
                figures[op + " p50"] = sum(m for m in medians if m == m)  # (nan: not called)
        for kind, value in figures.items():
            got = samples.setdefault((kind, name), [])
            if more:
                got[-1] += value
            else:
                got.append(value)

    def touched(store: RedisStore, sessions: list[Session], change: Change) -> Awaitable[Any]:
        return asyncio.gather(*(store.modify(s.id, change) for s in sessions))

    def got(store: RedisStore, sessions: list[Session]) -> Awaitable[Any]:
        return asyncio.gather(*(store.get(s.id) for s in sessions))

    def claimed(run: CpuRun, ids: list[str]) -> Awaitable[Any]:
        return asyncio.gather(*(run.store.claim_end(sid, "ended", now, moves) for sid in ids))

    def finished(run: CpuRun, ids: list[str]) -> Awaitable[Any]:
        until = now + 3600
        return asyncio.gather(*(run.store.finish_end(sid, now, "CLEANED", until) for sid in ids))

    async def expired(run: CpuRun, at: float) -> None:
        # What the hub's expiry does with a batch: one claim of up to ``expiry_batch``, one
        # having_children and one finish_ends for the batch (slices of 250 inside). A store
        # without finish_ends of its own (commit 8ad59c7's) ends each claim with finish_end.
        batched = hub_path(run.store)
        done = 0
        while done < CPU_CHUNK:
            claimed = await run.store.claim_expired(at, moves, EXPIRY_BATCH)
            assert claimed, "every session of the round is due"
            done += len(claimed)
            if batched:
                await run.store.having_children([s.id for s in claimed])
                ends = [(s.id, at + 3600) for s in claimed]
                await run.store.finish_ends(ends, at, "CLEANED")
            else:
                await asyncio.gather(
                    *(run.store.finish_end(s.id, at, "CLEANED", at + 3600) for s in claimed)
                )

    # History reads: the newest 50 of 50 records (the OpenAI Agents adapter's get_items(50)), on
    # sessions set up once (their appends are not measured).
    histories: dict[str, list[str]] = {}
    for name, run in runs.items():
        kept = [run.session(now, 3600.0) for _ in range(CPU_CHUNK)]
        await run.create(kept)
        payload = b'{"role":"user","content":"a message of about this length"}'
        for _ in range(HISTORY_RECORDS):
            await asyncio.gather(
                *(run.store.history_append(s.id, "message", payload, now) for s in kept)
            )
        histories[name] = [s.id for s in kept]

    def read_histories(store: RedisStore, ids: list[str]) -> Awaitable[Any]:
        return asyncio.gather(
            *(
                store.history_read(
                    sid, after=None, limit=HISTORY_RECORDS, newest_first=True, kind=None, now=now
                )
                for sid in ids
            )
        )

    for _ in range(rounds):
        for name, run in runs.items():
            store = run.store
            ids = [run.session(now, 600.0) for _ in range(CPU_CHUNK)]
            await measured(name, "create", FCALL, partial(run.create, ids))
            touch = Change(now=now + 1, touch=True)
            await measured(name, "touch", FCALL, partial(touched, store, ids, touch))
            # A get step's 200 reads are all sent at once, so they would all follow the store's
            # choice to read a held copy's version first as the last step left it: start each
            # from its initial choice (read the version: see RedisStore.get).
            vars(store).update(_copies_current=0)
            await measured(name, "get", GET, partial(got, store, ids))
            history = partial(read_histories, store, histories[name])
            await measured(name, "history", FCALL, history)
            ending = [s.id for s in ids]
            await measured(name, "end", FCALL, partial(claimed, run, ending))
            await measured(name, "end", FCALL, partial(finished, run, ending), more=True)
            # Sessions another process touched last: this one knows an older version of each.
            elsewhere = [run.session(now, 600.0) for _ in range(CPU_CHUNK)]
            await run.create(elsewhere)
            await touched(others[name], elsewhere, touch)
            ending = [s.id for s in elsewhere]
            await measured(name, "end/o", FCALL, partial(claimed, run, ending))
            await measured(name, "end/o", FCALL, partial(finished, run, ending), more=True)
            # Gets of sessions another process touched last (today: a version read that finds
            # the copy held here stale, then the record). Sessions of their own: a get leaves
            # this process knowing them as they are, which would make the ends above 'end'.
            stale = [run.session(now, 600.0) for _ in range(CPU_CHUNK)]
            await run.create(stale)
            await touched(others[name], stale, touch)
            vars(store).update(_copies_current=0)
            await measured(name, "get/o", GET, partial(got, store, stale))
            await run.create([run.session(now, 1.0) for _ in range(CPU_CHUNK)])  # due at now + 10
            await measured(name, "expiry", FCALL, partial(expired, run, now + 10))
            # Touched after they were queued: each deadline entry is early, the claim reads the
            # real deadlines from the records (the touches are not measured here).
            due = [run.session(now, 1.0) for _ in range(CPU_CHUNK)]
            await run.create(due)
            # At times out of creation order, so that the real deadlines are too.
            await asyncio.gather(
                *(
                    store.modify(s.id, Change(now=now + 0.05 * (k * 7 % 10 + 1), touch=True))
                    for k, s in enumerate(due)
                )
            )
            await measured(name, "expiry/t", FCALL, partial(expired, run, now + 10))
    for store in (*stores.values(), *others.values()):
        await store.close()
    if counter is not None:
        print_instructions(samples, baseline, rounds)
        return

    print(
        f"Redis CPU per operation, µs per session, best of {rounds} rounds of {CPU_CHUNK}; 'before'"
    )
    print(
        f"is commit {baseline}, loaded beside today's on one server. 'in FCALL' is INFO commandstats"
    )
    print("(HGETALL for get), the issue's measure; 'process' is the server's main-thread CPU over")
    print("the same rounds (requests, replies and the event tailers' reads included). 'history' is")
    print(
        f"a read of the newest {HISTORY_RECORDS} of {HISTORY_RECORDS} records (not in issue 12's targets)."
    )
    print(
        "'end' is one end (claim_end + finish_end) of sessions this process touched last (today's"
    )
    print("claim_end then sends the claimed record: see _redis_lua); 'end/o' of sessions another")
    print(
        "process touched last (today's claim reads the record). 'expiry' is the hub's expiry path:"
    )
    for name, store in stores.items():
        path = "claim + having_children + finish_ends per batch"
        if not hub_path(store):
            path = "claim + finish_end each (no finish_ends in that library)"
        print(f"  {name}: {path}; claims of up to {EXPIRY_BATCH} (the hub's expiry_batch)")
    print(
        "'expiry/t' is the same for sessions touched after they were queued, in another order than"
    )
    print(
        "they were created (their deadline entries early, the claim sorts them by real deadline)."
    )
    if private:
        print(
            "'median call' is the median of the rounds' median FCALL (INFO latencystats p50, after a"
        )
        print(
            "reset; an end's is its claim's plus its finish's): preemption on a busy machine, which"
        )
        print(
            "inflates the sums of the best rounds, hardly moves it. Its resolution is about 1 µs."
        )
    print("'paired' is the median over rounds of each round's own ratio in FCALL (the two run in")
    print("alternating rounds, so load that drifts over the run cancels): the verdict's figure.")
    header = f"{'operation':<11}{'in FCALL: before':>17}{'today':>8}{'ratio':>7}"
    header += f"{'process: before':>18}{'today':>8}{'ratio':>7}"
    if private:
        header += f"{'median call: before':>22}{'today':>8}{'ratio':>7}"
    header += f"{'paired':>9}"
    print(f"{header}   target: paired <= 0.5")
    for op in OPERATIONS:
        line = f"{op:<11}"
        columns: list[tuple[str, int, Callable[[list[float]], float]]] = [
            (op, 17, min),
            (op + " cpu", 18, min),
        ]
        if private:
            columns.append((op + " p50", 22, statistics.median))
        for kind, width, pick in columns:
            if kind.endswith(" p50") and op.startswith("expiry"):
                line += f"{'-':>{width}}{'-':>8}{'':>7}"  # a call per batch: no median to speak of
                continue
            today = pick(samples[kind, "today"])
            if (kind, "before") not in samples:
                line += f"{'?':>{width}}{today:>8.1f}{'':>7}"
                continue
            before = pick(samples[kind, "before"])
            if not before > 0:  # a median under the histogram's first step
                line += f"{before:>{width}.1f}{today:>8.1f}{'-':>7}"
                continue
            line += f"{before:>{width}.1f}{today:>8.1f}{today / before:>7.2f}"
        if (op, "before") in samples:
            # The two libraries run in alternating rounds: a round's ratio compares neighbours in
            # time, so load that drifts over the run (which the best rounds of each side may
            # pick apart) cancels. The verdict takes it: in FCALL is the measure.
            paired = statistics.median(
                new / old
                for new, old in zip(samples[op, "today"], samples[op, "before"], strict=True)
            )
            line += f"{paired:>9.2f}{_verdict(op, paired)}"
        print(line)


OPERATIONS = (
    "create", "touch", "get", "get/o", "history", "end", "end/o", "expiry", "expiry/t"
)  # fmt: skip


def _verdict(op: str, ratio: float) -> str:
    if op not in TARGETS:
        return "   (not one of issue 12's targets)"
    return "   met" if ratio <= 0.5 else "   NOT met"


def print_instructions(
    samples: dict[tuple[str, str], list[float]], baseline: str, rounds: int
) -> None:
    print(
        f"Redis instructions per operation (callgrind), fewest of {rounds} rounds of {CPU_CHUNK};"
    )
    print(f"'before' is commit {baseline}, loaded beside today's. 'in FCALL' counts those inside")
    print(
        "the command (FCALL, HGETALL for get), what INFO commandstats times: the issue's measure;"
    )
    print("'whole server' adds reading requests, writing replies and the event tailers' reads.")
    print("The operations are those of the CPU figures (see --cpu without --instructions).")
    print(
        f"{'operation':<11}{'in FCALL: before':>18}{'today':>10}{'ratio':>8}"
        f"{'whole server: before':>23}{'today':>10}{'ratio':>8}   target: ratio <= 0.5"
    )
    for op in OPERATIONS:
        line = f"{op:<11}"
        ratio = None
        for kind, width in ((" instr in", 18), (" instr", 23)):
            today = min(samples[op + kind, "today"])
            if (op + kind, "before") not in samples:
                line += f"{'?':>{width}}{today:>10,.0f}{'':>8}"
                continue
            before = min(samples[op + kind, "before"])
            line += f"{before:>{width},.0f}{today:>10,.0f}{today / before:>8.3f}"
            ratio = today / before if ratio is None else ratio
        if ratio is not None:  # judged by the measure
            line += _verdict(op, ratio)
        print(line)


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
    parser.add_argument("--cpu", action="store_true", help="only the Redis CPU per operation")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"the commit whose store is the 'before' of the CPU figures (default {BASELINE}: the "
        "issue's target is against it)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds of the CPU measure (default {CPU_ROUNDS}; more on a busy machine, where "
        "fewer rounds run undisturbed)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="with --cpu: count the server's instructions per operation (valgrind; exact)",
    )
    options = parser.parse_args()
    if options.instructions and (options.url or not options.cpu):
        parser.error("--instructions goes with --cpu, on the private server (no --url)")
    n_get, n_create, rounds = (10_000, 2_000, 1) if options.quick else (100_000, 20_000, 3)
    counter = Instructions() if options.instructions else None
    if options.url:
        server = None
    else:
        server = RedisServer(wrapper=counter.wrapper) if counter else RedisServer()
    try:
        url = options.url or (server.url if server else "")
        if counter is not None and server is not None:
            counter.pid = server.pid
        rounds = options.rounds or (3 if options.quick or counter else CPU_ROUNDS)
        private = server is not None
        asyncio.run(cpu_per_op(url, rounds, options.baseline, private, counter))
        if not options.cpu:
            asyncio.run(measure(url, n_get, n_create, rounds))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
