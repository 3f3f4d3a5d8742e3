"""Bad input on the gRPC faces is INVALID_ARGUMENT with a short message, never UNKNOWN; a record
the face cannot encode is a clear error for its reader and never ends a ``Watch`` of others."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import msgspec
import pytest

from sessionhub import SessionHub
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.stores._base import CreateRules

from .conftest import AUTH, TOKEN, MakeServed, Served, error_code, failure

NATIVE = "/sessionhub.v1.SessionHubService/"
STREAM_API = "/ma.streaming.api.v1.SessionManagementService/"
CORRUPT = b"\xff\xff\xff\xff"  # a field number of 0 and a truncated varint: not protobuf
DEEP = "[" * 5000 + "]" * 5000
#: The longest a status message may be: a short prefix of bad input is quoted, never all of it.
SHORT = 1024


def raw_unary(served: Served, method: str) -> Any:
    return served.channel.unary_unary(method)  # bytes in, bytes out


def raw_unary_stream(served: Served, method: str) -> Any:
    return served.channel.unary_stream(method)


@pytest.mark.parametrize(
    "method", [NATIVE + "Get", NATIVE + "Create", STREAM_API + "CreateSession"]
)
async def test_malformed_protobuf_is_invalid_argument(served: Served, method: str) -> None:
    error = await failure(raw_unary(served, method)(CORRUPT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.details()) < 200
    assert "Error" not in error.details()  # no Python exception class


@pytest.mark.parametrize("method", [NATIVE + "Watch", STREAM_API + "GetSessionStopNotification"])
async def test_malformed_protobuf_on_a_stream_is_invalid_argument(
    served: Served, method: str
) -> None:
    call = raw_unary_stream(served, method)(CORRUPT)
    error = await failure(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_malformed_protobuf_on_track_is_invalid_argument(served: Served) -> None:
    call = served.channel.stream_stream(NATIVE + "Track")()
    await call.write(CORRUPT)
    error = await failure(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_malformed_protobuf_behind_a_token_is_still_unauthenticated_first(
    make_served: MakeServed,
) -> None:
    served = await make_served(token=TOKEN)
    anonymous = grpc.aio.insecure_channel(served.target)
    try:
        error = await failure(anonymous.unary_unary(NATIVE + "Get")(CORRUPT))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        authorized = anonymous.unary_unary(NATIVE + "Get")(CORRUPT, metadata=AUTH)
        assert (await failure(authorized)).code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await anonymous.close()


async def test_an_event_id_of_thousands_of_digits_is_invalid_argument(served: Served) -> None:
    call = served.native.Watch(pb.WatchRequest(after="9" * 4301))
    error = await failure(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.details()) < SHORT


@pytest.mark.parametrize(
    "request_of",
    [
        lambda: pb.CreateRequest(details_json='{"a": ' + DEEP + "}"),
        lambda: pb.UpdateRequest(id="s", details_json='{"a": ' + DEEP + "}"),
        lambda: pb.DataSetRequest(id="s", key="k", value_json=DEEP),
        lambda: pb.HistoryAppendRequest(id="s", kind="k", payload_json=DEEP),
    ],
    ids=["create", "update", "data-set", "history-append"],
)
async def test_deep_nesting_is_invalid_argument(served: Served, request_of: Any) -> None:
    await served.hub.create("s")
    request = request_of()
    method = {
        "CreateRequest": served.native.Create,
        "UpdateRequest": served.native.Update,
        "DataSetRequest": served.native.DataSet,
        "HistoryAppendRequest": served.native.HistoryAppend,
    }[type(request).__name__]
    error = await failure(method(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(error) == "invalid"
    assert len(error.details()) < SHORT
    assert await served.hub.count() == 1  # nothing was created
    assert await served.hub.data("s").items() == {}
    assert await served.hub.history("s").counts() == {}


async def test_a_huge_bad_id_is_quoted_short(served: Served) -> None:
    huge = "x" * 100_000
    for call in (
        served.native.Get(pb.GetRequest(id=huge)),
        served.native.Create(pb.CreateRequest(id=huge)),
        served.native.DataGet(pb.DataGetRequest(id="s", key=huge)),
    ):
        error = await failure(call)
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert len(error.details()) < SHORT
    error = await failure(served.native.Watch(pb.WatchRequest(session_id=huge)).read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.details()) < SHORT


async def plant(hub: SessionHub, session_id: str, **poison: Any) -> None:
    """A record the hub would refuse today, written as an older version (or another writer of the
    store) could have left it: straight into the store, which publishes its ``created`` event."""
    template = await hub.create(f"{session_id}-template", namespace="planted")
    await hub.end(template.id)
    session = msgspec.structs.replace(template, id=session_id, **poison)
    await hub.store.create(session, CreateRules())


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


POISONS = {
    "counter-past-int64": {"counters": {"c": 2**63}},
    "deep-details": {"details": nested(3000)},
}


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
async def test_an_unencodable_session_is_a_clear_error_and_ends_no_watch(
    served: Served, poison: dict[str, Any]
) -> None:
    watch = served.native.Watch(pb.WatchRequest(namespace="planted"))
    await watch.initial_metadata()
    await plant(served.hub, "poison", **poison)
    error = await failure(served.native.Get(pb.GetRequest(id="poison")))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "session poison cannot be sent" in error.details()
    assert len(error.details()) < SHORT
    await served.hub.create("after", namespace="planted")
    async with asyncio.timeout(10):
        seen: list[str] = []
        while not seen or seen[-1] != "after":  # the template's events, then `after`
            seen.append((await watch.read()).session.id)
    assert "poison" not in seen
    assert served.server.native.unencodable == 1
    page = await served.native.Find(pb.FindRequest(filters=pb.Filters(namespace="planted")))
    assert [s.id for s in page.items] == ["after"]  # the listing goes on without it
    assert served.server.native.unencodable == 2
    watch.cancel()


async def test_stream_api_streams_survive_an_unencodable_session(served: Served) -> None:
    stream = served.api.GetSessionStartNotification(
        api.GetSessionStartNotificationRequest(data_source="planted")
    )
    await stream.initial_metadata()
    for name, poison in POISONS.items():
        await plant(served.hub, name, **poison)
    await served.hub.create("after", namespace="planted")
    async with asyncio.timeout(10):
        seen: list[str] = []
        while not seen or seen[-1] != "after":
            seen.append((await stream.read()).session_key)
    assert set(POISONS) <= set(seen)  # only keys are sent: the poison is no harm here
    stream.cancel()


async def test_stream_api_answers_in_band_about_an_unencodable_session(served: Served) -> None:
    await plant(served.hub, "deep-details", details={"d": nested(3000)})
    info = await served.api.GetSessionInfo(api.GetSessionInfoRequest(session_key="deep-details"))
    assert not info.success  # its failures are in-band, never a status
    sessions = await served.api.GetCurrentSessions(
        api.GetCurrentSessionsRequest(data_source="planted")
    )
    assert sessions.success
    assert "deep-details" in sessions.session_keys
