"""The bearer token in gRPC metadata: required on both services when set, never on health checks or
reflection; no token, no check."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

from .conftest import TOKEN, MakeServed, error_code, failure


async def test_calls_without_the_right_token_are_unauthenticated(
    make_served: MakeServed,
) -> None:
    served = await make_served(token=TOKEN)
    async with grpc.aio.insecure_channel(served.target) as bare:
        native = pb_grpc.SessionHubServiceStub(bare)
        stream_api = api_grpc.SessionManagementServiceStub(bare)
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            for call in (
                native.Create(pb.CreateRequest(), metadata=metadata),
                native.Watch(pb.WatchRequest(), metadata=metadata).read(),
                stream_api.CreateSession(
                    api.CreateSessionRequest(data_source="D"), metadata=metadata
                ),
                stream_api.GetSessionStartNotification(
                    api.GetSessionStartNotificationRequest(data_source="D"), metadata=metadata
                ).read(),
            ):
                refused = await failure(call)
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
                assert error_code(refused) == "unauthorized"
            track = native.Track(metadata=metadata)
            assert (await failure(track.read())).code() == grpc.StatusCode.UNAUTHENTICATED
        assert await served.hub.count() == 0  # nothing was done
        health = health_pb2_grpc.HealthStub(bare)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        good = (("authorization", f"Bearer {TOKEN}"),)
        created = await native.Create(pb.CreateRequest(id="ok"), metadata=good)
        assert created.id == "ok"
    # the fixture's channel sends the token on every kind of call
    assert (await served.native.Get(pb.GetRequest(id="ok"))).id == "ok"
    answer = await served.api.CreateSession(api.CreateSessionRequest(data_source="D"))
    assert answer.success


async def test_without_a_token_nothing_is_checked(make_served: MakeServed) -> None:
    served = await make_served()
    async with grpc.aio.insecure_channel(served.target) as bare:
        native = pb_grpc.SessionHubServiceStub(bare)
        assert (await native.Create(pb.CreateRequest(id="open"))).id == "open"
        any_token = (("authorization", "Bearer whatever"),)
        assert (await native.Get(pb.GetRequest(id="open"), metadata=any_token)).id == "open"
