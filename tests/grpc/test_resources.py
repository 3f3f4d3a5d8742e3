"""Clients that open many streams and go away: the server releases every subscription and request."""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

from .conftest import MakeServed, Served, eventually

# A client process: many open streams and tracked requests, then it waits to be killed.
CLIENT = """
import asyncio, sys
import grpc
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

async def main(target, streams):
    channel = grpc.aio.insecure_channel(target)
    native = pb_grpc.SessionHubServiceStub(channel)
    stream_api = api_grpc.SessionManagementServiceStub(channel)
    calls = [native.Watch(pb.WatchRequest()) for _ in range(streams)]
    calls += [
        stream_api.GetSessionStopNotification(
            api.GetSessionStopNotificationRequest(data_source=f"ds{n}")
        )
        for n in range(streams)
    ]
    for call in calls:
        await call.initial_metadata()
    tracks = []
    for _ in range(3):
        track = native.Track()
        await track.write(pb.TrackRequest(id="held"))
        await track.read()
        tracks.append(track)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def released(served: Served) -> bool:
    metrics = await served.hub.metrics()
    held = await served.hub.get("held")
    return (
        len(served.server.streams) == 0 and metrics.subscribers == 0 and held.active_requests == 0
    )


async def test_a_client_that_vanishes_releases_everything(make_served: MakeServed) -> None:
    served = await make_served()
    await served.native.Create(pb.CreateRequest(id="held", activate=True))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, served.target, "40", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            assert (await process.stdout.readline()).strip() == b"ready"
        assert len(served.server.streams) == 80
        assert (await served.hub.metrics()).subscribers == 80
        assert (await served.hub.get("held")).active_requests == 3
        process.send_signal(signal.SIGKILL)  # no goodbye: the connection just drops
        await process.wait()
        await eventually(lambda: released(served))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # the server goes on serving
    stops = served.api.GetSessionStopNotification(
        api.GetSessionStopNotificationRequest(data_source="default")
    )
    await stops.initial_metadata()
    await served.native.End(pb.EndRequest(id="held"))
    assert (await stops.read()).session_key == "held"
    stops.cancel()


async def test_a_closed_channel_releases_its_streams(make_served: MakeServed) -> None:
    served = await make_served()
    await served.native.Create(pb.CreateRequest(id="held"))
    channel = grpc.aio.insecure_channel(served.target)
    native = pb_grpc.SessionHubServiceStub(channel)
    stream_api = api_grpc.SessionManagementServiceStub(channel)
    calls = [native.Watch(pb.WatchRequest(namespace=f"n{n}")) for n in range(30)]
    calls += [
        stream_api.GetSessionStartNotification(api.GetSessionStartNotificationRequest())
        for _ in range(30)
    ]
    for call in calls:
        await call.initial_metadata()
    track = native.Track()
    await track.write(pb.TrackRequest(id="held"))
    await track.read()
    assert len(served.server.streams) == 60
    await channel.close()  # cancels every call on it
    await eventually(lambda: released(served))
