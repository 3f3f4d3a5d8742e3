"""The gRPC faces, measured against a bare grpc.aio servicer in the same run.

    uv run python benchmarks/bench_grpc.py            # 20k gets per round, 500 notification streams
    uv run python benchmarks/bench_grpc.py --quick    # small sizes, a smoke run

- unary get: ``sessionhub.v1.SessionHubService/Get`` (token check, hub lookup, conversion) beside a
  bare servicer of the same service whose ``Get`` returns a prebuilt message of the same size, on the
  same kind of server; both served by one process, called from another with the same concurrency,
  in alternating rounds. The ratio is sessionhub's rate over the bare one (target >= 0.8).
- notification fan-out: 500 open ``GetSessionStartNotification`` streams of one data source; each
  ``CreateSession`` is announced on all of them; the latency is from just before the create call to
  each stream's receipt (so it includes the create itself and the client reading 500 streams).

Absolute rates on a shared 2-core machine are noise; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from typing import Any

import grpc

from sessionhub import SessionHub
from sessionhub.grpc import GrpcServer
from sessionhub.grpc._convert import session_pb
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SESSION_ID = "bench-session"
OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 2000)]


class BareServicer(pb_grpc.SessionHubServiceServicer):
    """The baseline: ``Get`` returns a message built once, of the same size as sessionhub's."""

    def __init__(self, message: pb.Session) -> None:
        self.message = message

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.Session:
        return self.message


def answer_cpu(conn: Any) -> None:
    """Tell the client this process's CPU time (every thread: gRPC's own included) on request."""
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        conn.send(time.process_time())


async def serve(ports: Any, stop: Any, cpu: Any) -> None:
    async with SessionHub(idle_timeout=None) as hub:
        session = await hub.create(
            SESSION_ID, labels={"role": "bench"}, details={"who": "benchmark", "n": 1}
        )
        native = GrpcServer(hub, port=0, token=TOKEN)
        await native.start()
        bare = grpc.aio.server(options=OPTIONS)
        baseline = BareServicer(session_pb(session))  # type: ignore[abstract]  # Get alone
        pb_grpc.add_SessionHubServiceServicer_to_server(baseline, bare)
        bare_port = bare.add_insecure_port("127.0.0.1:0")
        await bare.start()
        ports.put((native.port, bare_port))
        threading.Thread(target=answer_cpu, args=(cpu,), daemon=True).start()
        await asyncio.to_thread(stop.wait)
        await bare.stop(0)
        await native.stop(0)


def server_process(ports: Any, stop: Any, cpu: Any) -> None:
    asyncio.run(serve(ports, stop, cpu))


def server_cpu(conn: Any) -> float:
    conn.send(None)
    seconds: float = conn.recv()
    return seconds


async def rate(stub: Any, n: int, concurrency: int, cpu: Any = None) -> tuple[float, float]:
    """Gets per second with ``concurrency`` calls in flight, and the server's CPU seconds per
    call (when ``cpu`` connects to the server process)."""
    request = pb.GetRequest(id=SESSION_ID)
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await stub.Get(request, metadata=AUTH)

    calls = per_worker * concurrency
    cpu_before = server_cpu(cpu) if cpu is not None else 0.0
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu_used = server_cpu(cpu) - cpu_before if cpu is not None else 0.0
    return calls / elapsed, cpu_used / calls


async def unary(native_port: int, bare_port: int, n: int, rounds: int, cpu: Any) -> None:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{native_port}") as native_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as bare_channel,
    ):
        native = pb_grpc.SessionHubServiceStub(native_channel)
        bare = pb_grpc.SessionHubServiceStub(bare_channel)
        ours = await native.Get(pb.GetRequest(id=SESSION_ID), metadata=AUTH)
        theirs = await bare.Get(pb.GetRequest(id=SESSION_ID))
        assert ours.ByteSize() == theirs.ByteSize(), "the baseline must answer the same size"
        await rate(native, n // 10, 16)  # warm up both
        await rate(bare, n // 10, 16)
        native_rounds, bare_rounds = [], []
        for _ in range(rounds):  # alternating, so that both see the same machine
            bare_rounds.append(await rate(bare, n, 16, cpu))
            native_rounds.append(await rate(native, n, 16, cpu))
        native_rate = max(r for r, _ in native_rounds)
        bare_rate = max(r for r, _ in bare_rounds)
        native_cpu = min(c for _, c in native_rounds)
        bare_cpu = min(c for _, c in bare_rounds)
        print(f"unary Get ({ours.ByteSize()} bytes), {n:,} calls x {rounds} rounds, 16 in flight")
        print(f"{'':<22}{'calls/s':>10}{'server CPU/call':>18}   (best round each)")
        print(f"{'  sessionhub.v1 Get':<22}{native_rate:>10,.0f}{native_cpu * 1e6:>15.0f} us")
        print(f"{'  bare grpc.aio Get':<22}{bare_rate:>10,.0f}{bare_cpu * 1e6:>15.0f} us")
        for what, ratio in (
            ("throughput ratio", native_rate / bare_rate),
            ("server CPU ratio (bare/ours)", bare_cpu / native_cpu),
        ):
            verdict = "met" if ratio >= 0.8 else "NOT met"
            print(f"  {what:<30}{ratio:>7.3f}   target >= 0.8: {verdict}")
        print("  (the Python client often bounds throughput; the server CPU ratio shows the cost)")


async def fan_out(native_port: int, streams: int, events: int) -> None:
    target = f"127.0.0.1:{native_port}"
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, streams // 250))]
    stubs = [api_grpc.SessionManagementServiceStub(c) for c in channels]
    calls = [
        stubs[n % len(stubs)].GetSessionStartNotification(
            api.GetSessionStartNotificationRequest(data_source="fan"), metadata=AUTH
        )
        for n in range(streams)
    ]
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    received: dict[str, list[float]] = {}

    async def read(call: Any) -> None:
        async for note in call:
            received.setdefault(note.session_key, []).append(time.time())

    readers = [asyncio.create_task(read(call)) for call in calls]
    sent: dict[str, float] = {}
    creator = stubs[0]
    for _ in range(events):
        before = time.time()
        answer = await creator.CreateSession(
            api.CreateSessionRequest(data_source="fan"), metadata=AUTH
        )
        sent[answer.session_key] = before
        deadline = time.monotonic() + 30
        while len(received.get(answer.session_key, ())) < streams:
            if time.monotonic() > deadline:
                raise RuntimeError("notifications did not all arrive")
            await asyncio.sleep(0.001)
    latencies = sorted(t - sent[key] for key, times in received.items() for t in times)
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"notification fan-out: {events} sessions x {streams} open streams")
    print(
        f"  delivery latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = parser.parse_args()
    n, rounds, streams, events = (2_000, 2, 50, 10) if args.quick else (20_000, 3, 500, 50)
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    cpu, server_end = context.Pipe()
    process = context.Process(target=server_process, args=(ports, stop, server_end), daemon=True)
    process.start()
    try:
        native_port, bare_port = ports.get(timeout=60)
        asyncio.run(unary(native_port, bare_port, n, rounds, cpu))
        asyncio.run(fan_out(native_port, streams, events))
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()


if __name__ == "__main__":
    main()
