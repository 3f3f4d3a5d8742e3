"""The HTTP face under load, beside a bare Starlette route serving the same JSON on the same server.

    uv run python benchmarks/bench_http.py            # 10 s per server, 1,000 SSE subscribers
    uv run python benchmarks/bench_http.py --quick    # 3 s per server, 200 subscribers

Both servers run as subprocesses on granian (one worker, embedded, as ``sessionhub serve`` runs),
loaded in turns of one second by ``wrk`` (Debian package ``wrk``) with the same connections and
threads; the ratio of the two request rates is what to compare, absolute rates on a shared 2-core
machine are noise. The SSE run measures delivery latency to many open subscribers: each create is
timed from just before the request to each subscriber's receipt of its ``created`` event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

SESSION_ID = "bench-session"
POST_LUA = (
    'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# the servers (run in subprocesses: `bench_http.py --serve sessionhub|starlette --port N`)


async def _granian(app: Any, port: int) -> None:
    from sessionhub.cli import run_server  # exactly as `sessionhub serve` runs

    await run_server(app, "127.0.0.1", port)


async def serve_sessionhub(port: int) -> None:
    from sessionhub import SessionHub
    from sessionhub.http import create_app

    hub = SessionHub(idle_timeout=None)
    await hub.start()
    await hub.create(SESSION_ID, user_id="ada", labels={"role": "bench"}, details={"n": 1})
    await _granian(create_app(hub, manage_hub=False), port)


async def serve_starlette(port: int) -> None:
    import msgspec
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from sessionhub import SessionHub
    from sessionhub._models import json_encoder

    hub = SessionHub(idle_timeout=None)  # only to make the very same JSON as sessionhub serves
    created = await hub.create(
        SESSION_ID, user_id="ada", labels={"role": "bench"}, details={"n": 1}
    )
    session = json_encoder.encode(created)

    async def get(request: Request) -> Response:
        return Response(session, media_type="application/json")

    async def create(request: Request) -> Response:
        # The same JSON work as sessionhub's route, minus the hub: parse the body, encode a reply.
        msgspec.json.decode(await request.body())
        return Response(
            json_encoder.encode(created), status_code=201, media_type="application/json"
        )

    app = Starlette(
        routes=[
            Route("/v1/sessions/{id}", get, methods=["GET"]),
            Route("/v1/sessions", create, methods=["POST"]),
            Route("/healthz", get, methods=["GET"]),
        ]
    )
    await _granian(app, port)


class Subprocess:
    def __init__(self, kind: str) -> None:
        self.port = free_port()
        command = [sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the {kind} server did not start")

    def __enter__(self) -> Subprocess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)


# load


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, path: str, seconds: int, script: str | None = None) -> tuple[float, int]:
    """Requests per second, and how many requests were answered."""
    command = ["wrk", "-t1", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            command[1:1] = ["-s", lua.name]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} error answers during the run:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    answered = re.search(r"(\d+) requests in", out)
    assert found, out
    assert answered, out
    return float(found.group(1)), int(answered.group(1))


def throughput(rounds: int) -> None:
    """Both servers up at once, loaded in turns of one second (the order swapped each round): on
    a shared machine the load drifts, and runs side by side in time see the same drift. Each
    figure is the median over the rounds; the ratio is the median of each round's ratio.

    The rates swing with whatever else the machine runs; the CPU time each server process spent
    per answered request (summed over the rounds) hardly does, so it is printed too, and its
    ratio (Starlette's CPU per request over sessionhub's: above 1 means sessionhub is cheaper)."""
    rows = []
    with Subprocess("starlette") as starlette, Subprocess("sessionhub") as sessionhub:
        servers = {"starlette": starlette, "sessionhub": sessionhub}
        for label, path, script in (
            ("GET /v1/sessions/{id}", f"/v1/sessions/{SESSION_ID}", None),
            ("POST /v1/sessions", "/v1/sessions", POST_LUA),
        ):
            rates: dict[str, list[float]] = {kind: [] for kind in servers}
            cpu = dict.fromkeys(servers, 0.0)
            answered = dict.fromkeys(servers, 0)
            for server in servers.values():
                wrk(server.port, path, 1, script)  # warm up
            for n in range(rounds):
                for kind in sorted(servers, reverse=n % 2 == 1):
                    pid = servers[kind].process.pid
                    before = cpu_seconds(pid)
                    rate, count = wrk(servers[kind].port, path, 1, script)
                    cpu[kind] += cpu_seconds(pid) - before
                    answered[kind] += count
                    rates[kind].append(rate)
            ratios = [
                ours / base
                for ours, base in zip(rates["sessionhub"], rates["starlette"], strict=True)
            ]
            per_request = {kind: cpu[kind] / answered[kind] * 1e6 for kind in servers}
            rows.append((label, rates["sessionhub"], rates["starlette"], ratios, per_request))
    print(
        f"{'request':<24}{'sessionhub':>14}{'bare Starlette':>16}{'ratio':>8}"
        f"{'CPU us/request (ours, Starlette)':>36}{'CPU ratio':>11}"
    )
    for label, ours, base, ratios, per_request in rows:
        mine, theirs = per_request["sessionhub"], per_request["starlette"]
        print(
            f"{label:<24}{median(ours):>12,.0f}/s{median(base):>14,.0f}/s{median(ratios):>8.2f}"
            f"{mine:>24.0f}{theirs:>12.0f}{theirs / mine:>11.2f}"
        )
    print("target: GET ratio >= 0.8, POST ratio >= 1.0")


# server-sent events


class Arrivals:
    """Receipt times per session id, and an event set once ``expected`` have arrived."""

    def __init__(self, expected: int) -> None:
        self.times: dict[str, list[float]] = {}
        self.count = 0
        self.expected = expected
        self.complete = asyncio.Event()

    def add(self, session_id: str) -> None:
        self.times.setdefault(session_id, []).append(time.perf_counter())
        self.count += 1
        if self.count == self.expected:
            self.complete.set()


async def subscriber(port: int, ready: asyncio.Event, arrivals: Arrivals) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/events?kinds=created HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    ready.set()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                arrivals.add(json.loads(line[6:])["session"]["id"])
    finally:
        writer.close()


async def sse_latency(subscribers: int, events: int) -> None:
    import httpx

    with Subprocess("sessionhub") as server:
        arrivals = Arrivals(events * subscribers)
        readies = [asyncio.Event() for _ in range(subscribers)]
        tasks = [asyncio.create_task(subscriber(server.port, r, arrivals)) for r in readies]
        await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(1.0)  # every subscription registered on the server
        sent: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            for i in range(events):
                sid = f"sse-{i}"
                sent[sid] = time.perf_counter()
                await client.post("/v1/sessions", json={"id": sid})
                await asyncio.sleep(0.05)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await arrivals.complete.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(t - sent[sid] for sid, times in arrivals.times.items() for t in times)
    delivered = len(latencies)
    p50 = latencies[delivered // 2] * 1000
    p99 = latencies[int(delivered * 0.99) - 1] * 1000
    print(
        f"SSE: {events} creates to {subscribers:,} subscribers: {delivered:,} of "
        f"{events * subscribers:,} delivered, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke run")
    parser.add_argument("--serve", choices=["sessionhub", "starlette"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serving = serve_sessionhub if args.serve == "sessionhub" else serve_starlette
        asyncio.run(serving(args.port))
        return
    if shutil.which("wrk") is None:
        sys.exit("bench_http needs wrk (Debian: apt-get install wrk)")
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    throughput(3 if args.quick else 10)  # rounds of one second each
    asyncio.run(sse_latency(200 if args.quick else 1000, 10 if args.quick else 20))


if __name__ == "__main__":
    main()
