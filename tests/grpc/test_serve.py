"""``sessionhub serve`` as a subprocess: HTTP and gRPC on their ports, over one hub, one token."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

import sessionhub
from sessionhub import StoreUnavailable
from sessionhub.grpc import GrpcClient
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

from .conftest import TOKEN, free_port

AUTH = (("authorization", f"Bearer {TOKEN}"),)


class Serve:
    def __init__(self, process: asyncio.subprocess.Process, port: int, grpc_port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"

    async def output(self) -> str:
        assert self.process.stdout is not None
        return (await self.process.stdout.read()).decode(errors="replace")


async def start(*args: str) -> AsyncIterator[Serve]:
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "sessionhub", "serve", "--port", str(port)]
    command += ["--grpc-port", str(grpc_port), *args]
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "SESSIONHUB_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    serve = Serve(process, port, grpc_port)
    try:
        async with asyncio.timeout(60), httpx.AsyncClient() as probe:
            while True:
                if process.returncode is not None:
                    raise AssertionError(f"serve exited: {await serve.output()}")
                try:
                    await probe.get(serve.url + "/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        yield serve
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async for served in start():
        yield served


async def test_both_ports_answer_over_one_hub_and_stop_gracefully(serve: Serve) -> None:
    async with sessionhub.connect(f"grpc://{serve.grpc_target}", token=TOKEN) as client:
        assert isinstance(client, GrpcClient)
        await client.create("from-grpc", namespace="both")
    channel = grpc.aio.insecure_channel(serve.grpc_target)
    stream_api = api_grpc.SessionManagementServiceStub(channel)
    created = await stream_api.CreateSession(
        api.CreateSessionRequest(data_source="DS", identifier="telemetry"), metadata=AUTH
    )
    assert created.success
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=serve.url, headers=headers) as http:
        assert (await http.get("/v1/sessions/from-grpc")).json()["namespace"] == "both"
        made = (await http.get(f"/v1/sessions/{created.session_key}")).json()
        assert made["namespace"] == "DS"
        assert made["labels"]["identifier"] == "telemetry"
        metrics = (await http.get("/metrics")).text
        assert 'stream_api_sessions_total{DataSource="DS"} 1.0' in metrics
        assert (
            await http.get("/v1/sessions/x", headers={"Authorization": "Bearer no"})
        ).status_code == 401
    native = pb_grpc.SessionHubServiceStub(channel)
    unauthorized = native.Get(pb.GetRequest(id="from-grpc"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await unauthorized
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    watch = native.Watch(pb.WatchRequest(), metadata=AUTH)
    await watch.initial_metadata()
    serve.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):  # the watcher reads the ends of shutdown, then status OK
        ended = {(e.session.id, e.session.end_reason) async for e in watch if e.kind == "ended"}
        assert await watch.code() == grpc.StatusCode.OK
        assert await serve.process.wait() == 0
    assert ended == {("from-grpc", "shutdown"), (created.session_key, "shutdown")}
    assert "serving gRPC on" in await serve.output()
    await channel.close()


async def test_no_grpc_leaves_the_port_closed() -> None:
    async for served in start("--no-grpc"):
        client = GrpcClient(f"grpc://{served.grpc_target}", token=TOKEN, timeout=5)
        with pytest.raises(StoreUnavailable):
            await client.start()
        await client.close()


async def test_a_grpc_port_asked_for_but_taken_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "sessionhub", "serve"],
            *["--port", str(free_port()), "--grpc-port", str(port)],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
        assert process.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in output.decode()
