"""examples/header_sessions.py: a shared GripMock-style mock server; parallel tests stay apart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.header_sessions import HEADER, create_app

from sessionhub import SessionHub

from .conftest import free_port, serving

EXAMPLE = Path(__file__).parents[2] / "examples" / "header_sessions.py"


async def one_test_run(http: httpx.AsyncClient, session_id: str, calls: int) -> None:
    """What one parallel test does: stub, call ``calls`` times, verify, close."""
    headers = {HEADER: session_id}
    stub = {"reply": {"message": f"hello from {session_id}"}}
    assert (await http.post("/stubs/Greeter.SayHello", json=stub, headers=headers)).is_success
    for n in range(calls):
        answer = await http.post("/call/Greeter.SayHello", json={"n": n}, headers=headers)
        assert answer.json() == {"message": f"hello from {session_id}"}
    verified = await http.get("/verify/Greeter.SayHello", headers=headers)
    assert verified.json()["calls"] == calls


async def parallel_runs(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        ids = [f"test-{n}/case" for n in range(8)]
        await asyncio.gather(*(one_test_run(http, sid, n + 1) for n, sid in enumerate(ids)))
        # a session that stubbed nothing sees no stub, whoever else stubbed the method
        lonely = await http.post("/call/Greeter.SayHello", json={}, headers={HEADER: "lonely"})
        assert lonely.status_code == 404
        # closing one session leaves the others' stubs and history alone
        assert (await http.delete("/session", headers={HEADER: ids[0]})).json() == {"ended": True}
        fresh = await http.get("/verify/Greeter.SayHello", headers={HEADER: ids[0]})
        assert fresh.json()["calls"] == 0
        kept = await http.get("/verify/Greeter.SayHello", headers={HEADER: ids[1]})
        assert kept.json()["calls"] == 2


async def test_parallel_clients_never_see_each_others_stubs_or_calls() -> None:
    hub = SessionHub(idle_timeout=60)
    async with serving(create_app(hub)) as url:
        await parallel_runs(url)
        assert (await hub.history("test-3/case").counts()) == {"call:Greeter.SayHello": 4}
        assert await hub.data("test-3/case").items() == {
            "stub:Greeter.SayHello": {"message": "hello from test-3/case"}
        }


@pytest.fixture
def example_server() -> Iterator[str]:
    """The example run as its README says, as a real process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SESSIONHUB_URL"}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/verify/x", headers={HEADER: "probe"})
            break
        except httpx.TransportError:
            assert process.poll() is None, "the example exited"
            assert time.monotonic() < deadline, "the example did not start"
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(15)


async def test_the_example_runs_as_a_script(example_server: str) -> None:
    await parallel_runs(example_server)


async def test_two_app_processes_share_sessions_through_a_hub_server() -> None:
    """The middleware over an AsyncClient: two mock-server instances (as two processes would be)
    bound to one sessionhub server see the same sessions, and still only their own."""
    from sessionhub import AsyncClient
    from tests.client.serving import ThreadedServer

    hub_server = await asyncio.to_thread(ThreadedServer)
    try:
        one = AsyncClient(hub_server.url, token=hub_server.token)
        two = AsyncClient(hub_server.url, token=hub_server.token)
        async with serving(create_app(one)) as url_one, serving(create_app(two)) as url_two:
            async with httpx.AsyncClient(timeout=30) as http:
                stub = {"reply": {"message": "shared"}}
                made = await http.post(
                    f"{url_one}/stubs/Svc.M", json=stub, headers={HEADER: "across"}
                )
                assert made.status_code == 201
                called = await http.post(
                    f"{url_two}/call/Svc.M", json={}, headers={HEADER: "across"}
                )
                assert called.json() == {"message": "shared"}
                other = await http.post(f"{url_two}/call/Svc.M", json={}, headers={HEADER: "else"})
                assert other.status_code == 404
                verified = await http.get(f"{url_one}/verify/Svc.M", headers={HEADER: "across"})
                assert verified.json()["calls"] == 1
            async with AsyncClient(hub_server.url, token=hub_server.token) as observer:
                assert await observer.history("across").counts() == {"call:Svc.M": 1}
                assert (await observer.get("across")).state == "ACTIVE"
    finally:
        await asyncio.to_thread(hub_server.stop)
