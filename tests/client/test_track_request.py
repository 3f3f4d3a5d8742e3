"""``track_request`` over HTTP is a request lease (``POST /v1/sessions/{id}/requests``, renewed by
``PUT .../requests/{lease_id}`` while the block runs, released by ``DELETE``): the block counts in
``active_requests`` and holds expiry off however long it runs, as it does embedded and over gRPC,
and a lease its client abandoned runs out."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionhub import AsyncClient, Client, SessionNotFound

from .serving import ThreadedServer


async def test_the_block_counts_as_a_request_in_flight(client: AsyncClient) -> None:
    await client.create("leased")
    async with client.track_request("leased") as inside:
        assert inside.active_requests == 1
        assert (await client.get("leased")).active_requests == 1
        async with client.track_request("leased") as nested:
            assert nested.active_requests == 2
        assert (await client.get("leased")).active_requests == 1
    assert (await client.get("leased")).active_requests == 0


async def test_the_lease_is_released_whatever_happens_in_the_block(client: AsyncClient) -> None:
    await client.create("failing")
    with pytest.raises(RuntimeError, match="the block failed"):
        async with client.track_request("failing"):
            raise RuntimeError("the block failed")
    assert (await client.get("failing")).active_requests == 0
    blocked = asyncio.Event()

    async def held() -> None:
        async with client.track_request("failing"):
            blocked.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(held())
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await client.get("failing")).active_requests == 0


async def test_unknown_and_ended_sessions(client: AsyncClient) -> None:
    with pytest.raises(SessionNotFound):
        async with client.track_request("nobody"):
            pytest.fail("the block must not run")
    await client.create("ends-inside")
    async with client.track_request("ends-inside"):
        assert await client.end("ends-inside")  # nothing left to release: no error


async def test_a_block_holds_expiry_off() -> None:
    server = await asyncio.to_thread(ThreadedServer, poll_interval=0.05)
    try:
        async with AsyncClient(server.url, token=server.token) as client:
            await client.create("busy", idle_timeout=0.2)
            async with client.track_request("busy"):
                await asyncio.sleep(0.6)  # three idle timeouts
                assert await client.exists("busy")
            for _ in range(200):  # released: idle again, so it expires (within 10 s)
                if not await client.exists("busy"):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the session never expired after the block")
    finally:
        await asyncio.to_thread(server.stop)


ABANDON = """
import os
from sessionhub import Client

client = Client(request_lease=0.5)
print(client.track_request("abandoned").__enter__().active_requests, flush=True)
os._exit(0)  # the process dies inside the block: no release, no renewal either
"""


def test_an_abandoned_lease_runs_out(server: ThreadedServer) -> None:
    with Client(server.url, token=server.token) as client:
        client.create("abandoned", idle_timeout=None)
        env = {**os.environ, "SESSIONHUB_URL": server.url, "SESSIONHUB_TOKEN": server.token}
        died = subprocess.run(
            [sys.executable, "-c", ABANDON], env=env, capture_output=True, text=True, timeout=120
        )
        assert (died.returncode, died.stdout) == (0, "1\n"), died.stderr
        deadline = time.monotonic() + 10
        while client.get("abandoned").active_requests:
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.05)


@pytest.mark.parametrize("session_id", [".", "..", "a/b", "%", "?#"])
def test_the_blocking_client_leases_too(sync_client: Client, session_id: str) -> None:
    sync_client.create(session_id)
    with sync_client.track_request(session_id) as inside:
        assert inside.active_requests == 1
        assert sync_client.get(session_id).active_requests == 1
    assert sync_client.get(session_id).active_requests == 0
    with pytest.raises(KeyError), sync_client.track_request(session_id):
        raise KeyError("the block failed")
    assert sync_client.get(session_id).active_requests == 0


# renewals: a block longer than its lease keeps counting

# Seconds: short, so that blocks of a few leases are quick (renewed every half lease), and long
# enough that a renewal late by most of a second on a loaded machine still comes in time.
LEASE = 2.0
RENEWAL = ("PUT", "/v1/sessions/{id}/requests/{lease_id}")


def requests_seen(server: ThreadedServer, method: str, route: str) -> int:
    """How many ``method route`` requests the server has answered, from its own ``/metrics``."""
    headers = {"Authorization": f"Bearer {server.token}"}
    text = httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "sessionhub_http_request_duration_seconds_count"
            and (sample.labels["method"], sample.labels["route"]) == (method, route)
        )
    )


def renewal_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sessionhub.client" and r.levelno == logging.WARNING
    ]


@pytest.fixture
def fast_server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    """Expiry checked every 50 ms, so that a session left idle ends within the test."""
    return make_server(poll_interval=0.05)


async def test_a_block_longer_than_its_lease_keeps_counting(fast_server: ThreadedServer) -> None:
    async with AsyncClient(fast_server.url, token=fast_server.token, request_lease=LEASE) as client:
        await client.create("long", idle_timeout=0.3)
        async with client.track_request("long"):
            for _ in range(6):  # three leases: each would have run out unrenewed
                await asyncio.sleep(LEASE / 2)
                session = await client.get("long")
                assert (session.live, session.active_requests) == (True, 1)
        renewed = requests_seen(fast_server, *RENEWAL)
        assert renewed >= 2
        assert (await client.get("long")).active_requests == 0  # released on exit
        await asyncio.sleep(2 * LEASE)
        assert requests_seen(fast_server, *RENEWAL) == renewed  # no renewal after the exit
        assert not await client.exists("long")  # released: idle, so it expired


def test_the_blocking_client_renews_too(fast_server: ThreadedServer) -> None:
    with Client(fast_server.url, token=fast_server.token, request_lease=LEASE) as client:
        client.create("long", idle_timeout=0.3)
        with client.track_request("long"):
            for _ in range(6):
                time.sleep(LEASE / 2)
                assert client.get("long").active_requests == 1
        renewed = requests_seen(fast_server, *RENEWAL)
        assert renewed >= 2
        assert client.get("long").active_requests == 0
        with pytest.raises(KeyError), client.track_request("long"):
            raise KeyError("the block failed")  # the renewal thread stops on an error too
        time.sleep(2 * LEASE)
        assert requests_seen(fast_server, *RENEWAL) == renewed
        assert not [t for t in threading.enumerate() if t.name == "sessionhub-lease-renewal"]


async def test_a_failing_renewal_is_one_warning_and_the_block_goes_on(
    fast_server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionhub.client")
    async with AsyncClient(fast_server.url, token=fast_server.token, request_lease=LEASE) as client:
        await client.create("ends", idle_timeout=None)
        steps = 0
        async with client.track_request("ends"):
            assert await client.end("ends")  # its lease can be renewed no more: 404
            for _ in range(8):  # four leases: one warning, not one per renewal
                await asyncio.sleep(LEASE / 2)
                steps += 1
        assert steps == 8
        warnings = renewal_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "renewing the request lease of session ends failed" in warnings[0]
        assert "SessionNotFound" in warnings[0]


async def test_a_server_gone_mid_block_neither_stops_it_nor_hides_its_error(
    make_server: Callable[..., ThreadedServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionhub.client")
    server = await asyncio.to_thread(make_server)
    async with AsyncClient(server.url, token=server.token, request_lease=LEASE) as client:
        await client.create("s")

        async def block() -> None:
            async with client.track_request("s"):
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(2 * LEASE)
                raise KeyError("the block's own error")

        with pytest.raises(KeyError, match="the block's own error"):
            await block()
    warnings = renewal_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "StoreUnavailable" in warnings[0]


async def test_closing_the_client_stops_the_renewals(
    fast_server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionhub.client")
    async with AsyncClient(fast_server.url, token=fast_server.token) as observer:
        await observer.create("s", idle_timeout=None)
        client = AsyncClient(fast_server.url, token=fast_server.token, request_lease=LEASE)

        async def block() -> None:
            async with client.track_request("s"):
                await client.close()
                for _ in range(200):  # renewed no more: the lease runs out (within 10 s)
                    if not (await observer.get("s")).active_requests:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the lease was still renewed after close()")
                raise KeyError("the block's error, not the closed client's")

        with pytest.raises(KeyError, match="the block's error"):
            await block()
        assert requests_seen(fast_server, *RENEWAL) == 0
        assert renewal_warnings(caplog) == []  # stopped, not failing on a closed client


def test_the_blocking_client_stops_renewing_on_close(
    fast_server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionhub.client")
    with Client(fast_server.url, token=fast_server.token) as observer:
        observer.create("s", idle_timeout=None)
        client = Client(fast_server.url, token=fast_server.token, request_lease=LEASE)

        def block() -> None:
            with client.track_request("s"):
                client.close()
                deadline = time.monotonic() + 10
                while observer.get("s").active_requests:
                    assert time.monotonic() < deadline, "the lease was still renewed after close()"
                    time.sleep(0.05)
                raise KeyError("the block's error, not the closed client's")

        with pytest.raises(KeyError, match="the block's error"):
            block()
        assert requests_seen(fast_server, *RENEWAL) == 0
        assert renewal_warnings(caplog) == []  # stopped, not failing on a closed client
