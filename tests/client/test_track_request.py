"""``track_request`` over HTTP is a request lease (``POST /v1/sessions/{id}/requests``, released by
``DELETE .../requests/{lease_id}``): the block counts in ``active_requests`` and holds expiry off,
as it does embedded and over gRPC, and a lease its client abandoned runs out."""

from __future__ import annotations

import asyncio
import time

import pytest

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


def test_an_abandoned_lease_runs_out(server: ThreadedServer) -> None:
    with Client(server.url, token=server.token, request_lease=0.3) as client:
        client.create("abandoned", idle_timeout=None)
        held = client.track_request("abandoned")  # entered, never exited: as if the process died
        assert held.__enter__().active_requests == 1
        deadline = time.monotonic() + 10
        while client.get("abandoned").active_requests:
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.05)
        held.__exit__(None, None, None)  # a late exit of a lease that ran out is no error
        assert client.get("abandoned").active_requests == 0


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
