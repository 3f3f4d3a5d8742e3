"""The Stream API's wire contract, field by field, read from the compiled descriptors; and the
standard services (health checking, reflection) that let gRPC tools call the server."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sessionhub.grpc import NATIVE_SERVICE, STREAM_API_SERVICE
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.open_data.v1 import open_data_pb2 as open_data

from .conftest import MakeServed, Served

F = FieldDescriptor
STRING, BOOL, UINT32, INT64, MESSAGE = (
    F.TYPE_STRING,
    F.TYPE_BOOL,
    F.TYPE_UINT32,
    F.TYPE_INT64,
    F.TYPE_MESSAGE,
)
DURATION, TIMESTAMP = "google.protobuf.Duration", "google.protobuf.Timestamp"
NEW_SESSION = "ma.streaming.open_data.v1.NewSessionPacket"
END_OF_SESSION = "ma.streaming.open_data.v1.EndOfSessionPacket"
SESSION_INFO = "ma.streaming.open_data.v1.SessionInfoPacket"
# kinds beyond a scalar type: "repeated", "map<string,string>", "map<string,int64>", a message name
REPEATED, MAP_SS, MAP_SI = "repeated", "map<string,string>", "map<string,int64>"

# (name, number, type, kind) exactly as streamapi-wire.md lists them
CONTRACT: dict[str, list[tuple[str, int, Any, str | None]]] = {
    "ma.streaming.api.v1.CreateSessionRequest": [
        ("data_source", 1, STRING, None),
        ("type", 2, STRING, None),
        ("version", 3, UINT32, None),
        ("utc_offset", 4, MESSAGE, DURATION),
        ("identifier", 5, STRING, None),
        ("associate_session_key", 6, STRING, REPEATED),
        ("details", 7, MESSAGE, MAP_SS),
        ("creation_time", 8, MESSAGE, TIMESTAMP),
    ],
    "ma.streaming.api.v1.CreateSessionResponse": [
        ("session_key", 1, STRING, None),
        ("new_session", 2, MESSAGE, NEW_SESSION),
        ("success", 3, BOOL, None),
    ],
    "ma.streaming.api.v1.EndSessionRequest": [
        ("data_source", 1, STRING, None),
        ("session_key", 2, STRING, None),
        ("termination_time", 3, MESSAGE, TIMESTAMP),
    ],
    "ma.streaming.api.v1.EndSessionResponse": [
        ("end_session", 2, MESSAGE, END_OF_SESSION),
        ("success", 3, BOOL, None),
    ],
    "ma.streaming.api.v1.GetCurrentSessionsRequest": [("data_source", 1, STRING, None)],
    "ma.streaming.api.v1.GetCurrentSessionsResponse": [
        ("session_keys", 1, STRING, REPEATED),
        ("success", 2, BOOL, None),
    ],
    "ma.streaming.api.v1.GetSessionInfoRequest": [("session_key", 1, STRING, None)],
    "ma.streaming.api.v1.GetSessionInfoResponse": [
        ("data_source", 1, STRING, None),
        ("identifier", 2, STRING, None),
        ("type", 3, STRING, None),
        ("version", 4, UINT32, None),
        ("associate_session_keys", 5, STRING, REPEATED),
        ("is_complete", 6, BOOL, None),
        ("streams", 7, STRING, REPEATED),
        ("topic_partition_offsets", 8, MESSAGE, MAP_SI),
        ("main_offset", 9, INT64, None),
        ("essentials_offset", 10, INT64, None),
        ("details", 11, MESSAGE, MAP_SS),
        ("utc_offset", 12, MESSAGE, DURATION),
        ("success", 13, BOOL, None),
        ("creation_time", 14, MESSAGE, TIMESTAMP),
        ("termination_time", 15, MESSAGE, TIMESTAMP),
    ],
    "ma.streaming.api.v1.GetSessionStartNotificationRequest": [("data_source", 1, STRING, None)],
    "ma.streaming.api.v1.GetSessionStartNotificationResponse": [
        ("session_key", 1, STRING, None),
        ("data_source", 2, STRING, None),
    ],
    "ma.streaming.api.v1.GetSessionStopNotificationRequest": [("data_source", 1, STRING, None)],
    "ma.streaming.api.v1.GetSessionStopNotificationResponse": [
        ("session_key", 1, STRING, None),
        ("data_source", 2, STRING, None),
    ],
    "ma.streaming.api.v1.UpdateSessionIdentifierRequest": [
        ("session_key", 1, STRING, None),
        ("identifier", 2, STRING, None),
    ],
    "ma.streaming.api.v1.UpdateSessionIdentifierResponse": [("success", 1, BOOL, None)],
    "ma.streaming.api.v1.AddAssociateSessionRequest": [
        ("session_key", 1, STRING, None),
        ("associate_session_key", 2, STRING, None),
    ],
    "ma.streaming.api.v1.AddAssociateSessionResponse": [("success", 1, BOOL, None)],
    "ma.streaming.api.v1.UpdateSessionDetailsRequest": [
        ("session_key", 1, STRING, None),
        ("details", 2, MESSAGE, MAP_SS),
    ],
    "ma.streaming.api.v1.UpdateSessionDetailsResponse": [("success", 1, BOOL, None)],
    "ma.streaming.open_data.v1.NewSessionPacket": [
        ("data_source", 1, STRING, None),
        ("topic_partition_offsets", 2, MESSAGE, MAP_SI),
        ("utc_offset", 3, MESSAGE, DURATION),
        ("session_info", 4, MESSAGE, SESSION_INFO),
        ("creation_time", 5, MESSAGE, TIMESTAMP),
    ],
    "ma.streaming.open_data.v1.EndOfSessionPacket": [
        ("data_source", 1, STRING, None),
        ("topic_partition_offsets", 2, MESSAGE, MAP_SI),
        ("termination_time", 3, MESSAGE, TIMESTAMP),
    ],
    "ma.streaming.open_data.v1.SessionInfoPacket": [
        ("data_source", 1, STRING, None),
        ("identifier", 2, STRING, None),
        ("type", 3, STRING, None),
        ("version", 4, UINT32, None),
        ("associate_session_keys", 5, STRING, REPEATED),
        ("details", 6, MESSAGE, MAP_SS),
        ("utc_offset", 7, MESSAGE, DURATION),
        ("creation_time", 8, MESSAGE, TIMESTAMP),
        ("termination_time", 9, MESSAGE, TIMESTAMP),
    ],
}

RPCS = {
    "CreateSession": ("CreateSessionRequest", "CreateSessionResponse", False),
    "EndSession": ("EndSessionRequest", "EndSessionResponse", False),
    "GetCurrentSessions": ("GetCurrentSessionsRequest", "GetCurrentSessionsResponse", False),
    "GetSessionInfo": ("GetSessionInfoRequest", "GetSessionInfoResponse", False),
    "GetSessionStartNotification": (
        "GetSessionStartNotificationRequest",
        "GetSessionStartNotificationResponse",
        True,
    ),
    "GetSessionStopNotification": (
        "GetSessionStopNotificationRequest",
        "GetSessionStopNotificationResponse",
        True,
    ),
    "UpdateSessionIdentifier": (
        "UpdateSessionIdentifierRequest",
        "UpdateSessionIdentifierResponse",
        False,
    ),
    "AddAssociateSession": ("AddAssociateSessionRequest", "AddAssociateSessionResponse", False),
    "UpdateSessionDetails": ("UpdateSessionDetailsRequest", "UpdateSessionDetailsResponse", False),
}


def _message(full_name: str) -> Any:
    package, _, name = full_name.rpartition(".")
    module = api if package == "ma.streaming.api.v1" else open_data
    return module.DESCRIPTOR.message_types_by_name[name]


def _kind(field: Any) -> str | None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return MAP_SS if value.type == STRING else MAP_SI if value.type == INT64 else "map?"
    if field.is_repeated:
        return REPEATED
    if field.message_type is not None:
        return str(field.message_type.full_name)
    return None


@pytest.mark.parametrize("full_name", sorted(CONTRACT))
def test_every_message_has_exactly_the_contract_fields(full_name: str) -> None:
    descriptor = _message(full_name)
    assert descriptor.full_name == full_name
    actual = [(f.name, f.number, f.type, _kind(f)) for f in descriptor.fields]
    assert sorted(actual, key=lambda f: f[1]) == CONTRACT[full_name]


def test_the_service_has_exactly_the_contract_rpcs() -> None:
    service = api.DESCRIPTOR.services_by_name["SessionManagementService"]
    assert service.full_name == "ma.streaming.api.v1.SessionManagementService" == STREAM_API_SERVICE
    assert {m.name for m in service.methods} == set(RPCS)
    for method in service.methods:
        request, response, streaming = RPCS[method.name]
        assert method.input_type.full_name == f"ma.streaming.api.v1.{request}"
        assert method.output_type.full_name == f"ma.streaming.api.v1.{response}"
        assert method.server_streaming is streaming
        assert method.client_streaming is False


def test_end_session_response_has_no_field_one_and_session_info_has_presence() -> None:
    assert api.EndSessionResponse.DESCRIPTOR.fields_by_number.get(1) is None
    assert open_data.NewSessionPacket.DESCRIPTOR.fields_by_name["session_info"].has_presence
    # bytes written by a client of the public protocol decode to the same fields here
    # (field 1 "DS", field 2 "Session", field 3 varint 1, field 5 "x")
    wire = bytes.fromhex("0a024453120753657373696f6e18012a0178")
    decoded = api.CreateSessionRequest.FromString(wire)
    assert (decoded.data_source, decoded.type, decoded.version) == ("DS", "Session", 1)
    assert decoded.identifier == "x"


async def test_health_checking_answers_for_the_server_and_each_service(
    make_served: MakeServed,
) -> None:
    served: Served = await make_served(token="secret", stream_api=False)
    health = health_pb2_grpc.HealthStub(served.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service, expected in (
        ("", serving),
        (NATIVE_SERVICE, serving),
        (STREAM_API_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING),  # turned off
    ):
        # health checks need no token, as /healthz over HTTP
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == expected, service


async def test_reflection_lists_both_services_and_describes_them(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)

    async def ask(**request: Any) -> Any:
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))
        answers = [answer async for answer in call]
        assert len(answers) == 1
        return answers[0]

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {NATIVE_SERVICE, STREAM_API_SERVICE, "grpc.health.v1.Health"} <= names
    described = await ask(file_containing_symbol=STREAM_API_SERVICE)
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can build requests
