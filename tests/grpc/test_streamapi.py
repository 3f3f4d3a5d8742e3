"""The Stream API's SessionManagementService: every rpc, as its reference server behaves, through
stubs generated from the same protocol a C# or Python client of the Stream API uses."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from sessionhub import AsyncClient, Limits, ManualClock, SessionHub
from sessionhub.grpc import ASSOCIATES_KEY
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb
from sessionhub.http import create_app
from sessionhub.http._prometheus import ServerMetrics

from .conftest import MakeServed, Served, eventually, failure, serving_http

DETAILS = {"track": "Silverstone Circuit", "weather": "dry", "temperature": "22°C"}


async def create(served: Served, data_source: str = "DataSource", **fields: Any) -> str:
    answer = await served.api.CreateSession(
        api.CreateSessionRequest(data_source=data_source, **fields)
    )
    assert answer.success, fields
    key: str = answer.session_key
    return key


async def info(served: Served, key: str) -> api.GetSessionInfoResponse:
    answer: api.GetSessionInfoResponse = await served.api.GetSessionInfo(
        api.GetSessionInfoRequest(session_key=key)
    )
    return answer


async def test_create_session_as_the_seed_does(served: Served) -> None:
    answer = await served.api.CreateSession(
        api.CreateSessionRequest(
            data_source="DataSource",
            type="Session",
            version=1,
            utc_offset=Duration(seconds=3600),
            identifier="silverstone-gp-2024",
            details=DETAILS,
        )
    )
    assert answer.success
    assert len(answer.session_key) >= 22
    packet = answer.new_session
    assert packet.data_source == "DataSource"
    assert packet.utc_offset == Duration(seconds=3600)
    assert packet.HasField("session_info")
    assert packet.HasField("creation_time")
    assert packet.session_info.identifier == "silverstone-gp-2024"
    assert dict(packet.session_info.details) == DETAILS
    assert not packet.topic_partition_offsets  # Kafka fields mean nothing here
    got = await info(served, answer.session_key)
    assert got.success
    assert not got.is_complete
    assert (got.data_source, got.identifier, got.type, got.version) == (
        "DataSource",
        "silverstone-gp-2024",
        "Session",
        1,
    )
    assert dict(got.details) == DETAILS
    assert got.utc_offset == Duration(seconds=3600)
    assert got.creation_time == packet.creation_time
    assert not got.HasField("termination_time")
    assert (not got.streams, got.main_offset, got.essentials_offset) == (True, 0, 0)
    # on the hub: the data source is the namespace, the rest are labels and details
    session = await served.hub.get(answer.session_key)
    assert session.namespace == "DataSource"
    assert session.state == "ACTIVE"
    assert session.labels["identifier"] == "silverstone-gp-2024"
    assert session.labels["utc_offset"] == "3600s"
    assert session.details == DETAILS
    assert session.idle_timeout is None  # lives until EndSession


async def test_type_and_version_default_and_creation_time_is_kept(served: Served) -> None:
    when = Timestamp(seconds=1_720_000_000, nanos=500_000_000)
    key = await create(served, creation_time=when)
    got = await info(served, key)
    assert (got.type, got.version, got.identifier) == ("Session", 1, "")
    assert got.creation_time == when
    assert not got.HasField("utc_offset")
    custom = await create(served, type="Lap", version=7)
    assert ((await info(served, custom)).type, (await info(served, custom)).version) == ("Lap", 7)


async def test_associates_are_children_and_stay_listed(served: Served) -> None:
    associate = await create(served, identifier="associate_session", details=DETAILS)
    parent = await create(
        served, identifier="main_session", associate_session_key=[associate], details=DETAILS
    )
    assert list((await info(served, parent)).associate_session_keys) == [associate]
    assert (await served.hub.get(associate)).parent_id == parent
    later = await create(served)
    added = await served.api.AddAssociateSession(
        api.AddAssociateSessionRequest(session_key=parent, associate_session_key=later)
    )
    assert added.success
    assert list((await info(served, parent)).associate_session_keys) == [associate, later]
    await served.api.EndSession(api.EndSessionRequest(session_key=parent))
    complete = await info(served, parent)
    assert complete.is_complete
    assert list(complete.associate_session_keys) == [associate, later]
    assert (await info(served, associate)).is_complete  # children end with their parent
    kept = await served.hub.data(parent).get(ASSOCIATES_KEY)
    assert kept == [associate, later]


async def test_details_upsert_and_identifier_replaces(served: Served) -> None:
    key = await create(served, identifier="first", details={"a": "1", "b": "2"})
    update = api.UpdateSessionDetailsRequest(session_key=key, details={"b": "20", "c": "3"})
    assert (await served.api.UpdateSessionDetails(update)).success
    assert dict((await info(served, key)).details) == {"a": "1", "b": "20", "c": "3"}
    rename = api.UpdateSessionIdentifierRequest(session_key=key, identifier="second")
    assert (await served.api.UpdateSessionIdentifier(rename)).success
    assert (await info(served, key)).identifier == "second"
    # details set through another face as JSON show as JSON text
    await served.hub.update(key, details={"n": 3})
    assert (await info(served, key)).details["n"] == "3"


async def test_end_session_marks_it_complete_and_a_second_end_is_quiet(served: Served) -> None:
    key = await create(served)
    when = Timestamp(seconds=1_730_000_000)
    ended = await served.api.EndSession(
        api.EndSessionRequest(data_source="DataSource", session_key=key, termination_time=when)
    )
    assert ended.success
    assert ended.end_session.data_source == "DataSource"
    assert ended.end_session.termination_time == when
    got = await info(served, key)
    assert got.success
    assert got.is_complete
    assert got.termination_time == when
    again = await served.api.EndSession(api.EndSessionRequest(session_key=key))
    assert again.success
    server_time = await create(served)
    answer = await served.api.EndSession(api.EndSessionRequest(session_key=server_time))
    session = await served.hub.get(server_time)
    assert session.ended_at is not None
    assert answer.end_session.termination_time.ToNanoseconds() == round(session.ended_at * 1e9)


async def test_current_sessions_of_one_data_source_include_completed_ones(
    served: Served,
) -> None:
    a1 = await create(served, "A")
    a2 = await create(served, "A")
    b1 = await create(served, "B")
    await served.api.EndSession(api.EndSessionRequest(session_key=a2))
    listed = await served.api.GetCurrentSessions(api.GetCurrentSessionsRequest(data_source="A"))
    assert listed.success
    assert sorted(listed.session_keys) == sorted([a1, a2])
    everything = await served.api.GetCurrentSessions(api.GetCurrentSessionsRequest())
    assert sorted(everything.session_keys) == sorted([a1, a2, b1])  # the seed's "list all"
    none = await served.api.GetCurrentSessions(api.GetCurrentSessionsRequest(data_source="C"))
    assert none.success
    assert not none.session_keys


async def test_failures_are_in_band_and_change_nothing(make_served: MakeServed) -> None:
    hub = SessionHub(limits=Limits(max_details_bytes=1024))
    async with hub:
        served = await make_served(hub)
        key = await create(served)
        before = await hub.get(key)
        unknown, malformed = "no-such-session", "not a key"
        for bad in (unknown, malformed, ""):
            answers = [
                await info(served, bad),
                await served.api.EndSession(api.EndSessionRequest(session_key=bad)),
                await served.api.UpdateSessionDetails(
                    api.UpdateSessionDetailsRequest(session_key=bad, details={"a": "b"})
                ),
                await served.api.UpdateSessionIdentifier(
                    api.UpdateSessionIdentifierRequest(session_key=bad, identifier="x")
                ),
                await served.api.AddAssociateSession(
                    api.AddAssociateSessionRequest(session_key=key, associate_session_key=bad)
                ),
                await served.api.AddAssociateSession(
                    api.AddAssociateSessionRequest(session_key=bad, associate_session_key=key)
                ),
                await served.api.CreateSession(
                    api.CreateSessionRequest(data_source="D", associate_session_key=[bad])
                ),
            ]
            assert [a.success for a in answers] == [False] * len(answers), bad
        oversized = {f"key{n}": "v" * 100 for n in range(100)}
        refused = [
            await served.api.CreateSession(
                api.CreateSessionRequest(data_source="D", details=oversized)
            ),
            await served.api.UpdateSessionDetails(
                api.UpdateSessionDetailsRequest(session_key=key, details=oversized)
            ),
            await served.api.CreateSession(api.CreateSessionRequest(data_source="")),
            await served.api.CreateSession(api.CreateSessionRequest(data_source="two words")),
            await served.api.CreateSession(
                api.CreateSessionRequest(data_source="D", identifier="i" * 1000)
            ),
            await served.api.CreateSession(
                api.CreateSessionRequest(
                    data_source="D", creation_time=Timestamp(seconds=-(10**12))
                )
            ),
        ]
        assert [a.success for a in refused] == [False] * len(refused)
        listed = await served.api.GetCurrentSessions(
            api.GetCurrentSessionsRequest(data_source="two words")
        )
        assert not listed.success
        assert await hub.count() == 1
        assert await hub.get(key) == before


async def test_the_switch_turns_the_face_off(make_served: MakeServed) -> None:
    served = await make_served(stream_api=False)
    answer = await served.api.CreateSession(api.CreateSessionRequest(data_source="D"))
    assert not answer.success
    assert not answer.session_key
    listed = await served.api.GetCurrentSessions(api.GetCurrentSessionsRequest(data_source="D"))
    assert not listed.success
    assert await served.hub.count() == 0
    stream = served.api.GetSessionStartNotification(
        api.GetSessionStartNotificationRequest(data_source="D")
    )
    off = await failure(stream.read())
    assert off.code() == grpc.StatusCode.FAILED_PRECONDITION
    await served.native.Create(pb.CreateRequest())  # the native face is unaffected
    served.server.stream_api.enabled = True  # and the switch works at run time
    assert (await served.api.CreateSession(api.CreateSessionRequest(data_source="D"))).success


async def test_completed_sessions_are_kept_for_the_retention(
    make_served: MakeServed, clock: ManualClock
) -> None:
    async with SessionHub(clock=clock, poll_interval=3600) as hub:
        served = await make_served(hub, stream_api_retention=60)
        key = await create(served)
        await served.api.EndSession(api.EndSessionRequest(session_key=key))
        clock.advance(59)
        assert (await info(served, key)).is_complete
        clock.advance(2)
        assert not (await info(served, key)).success
        listed = await served.api.GetCurrentSessions(
            api.GetCurrentSessionsRequest(data_source="DataSource")
        )
        assert list(listed.session_keys) == []


async def read(call: Any, n: int) -> list[Any]:
    async with asyncio.timeout(10):
        return [await call.read() for _ in range(n)]


async def test_start_notifications_per_data_source_without_replay(served: Served) -> None:
    before = await create(served, "A")
    stream_a = served.api.GetSessionStartNotification(
        api.GetSessionStartNotificationRequest(data_source="A")
    )
    stream_b = served.api.GetSessionStartNotification(
        api.GetSessionStartNotificationRequest(data_source="B")
    )
    await stream_a.initial_metadata()  # both streams are live from here on
    await stream_b.initial_metadata()
    a1 = await create(served, "A")
    b1 = await create(served, "B")
    a2 = await create(served, "A")
    got_a = await read(stream_a, 2)
    got_b = await read(stream_b, 1)
    assert [(n.session_key, n.data_source) for n in got_a] == [(a1, "A"), (a2, "A")]
    assert [(n.session_key, n.data_source) for n in got_b] == [(b1, "B")]
    assert before not in {n.session_key for n in got_a}  # no replay
    stream_a.cancel()
    stream_b.cancel()


async def test_exactly_one_stop_notification_per_session(served: Served) -> None:
    s1 = await create(served, "A")
    s2 = await create(served, "A")
    other = await create(served, "B")
    stops = served.api.GetSessionStopNotification(
        api.GetSessionStopNotificationRequest(data_source="A")
    )
    await stops.initial_metadata()
    for _ in range(3):
        assert (await served.api.EndSession(api.EndSessionRequest(session_key=s1))).success
    await served.api.EndSession(api.EndSessionRequest(session_key=other))
    await served.hub.end(s2)  # ended through another face: notified all the same
    got = await read(stops, 2)
    assert [(n.session_key, n.data_source) for n in got] == [(s1, "A"), (s2, "A")]
    stops.cancel()


async def test_streams_end_cleanly_when_the_client_cancels(served: Served) -> None:
    streams = [
        served.api.GetSessionStartNotification(
            api.GetSessionStartNotificationRequest(data_source=f"S{n}")
        )
        for n in range(5)
    ] + [
        served.api.GetSessionStopNotification(
            api.GetSessionStopNotificationRequest(data_source="S")
        )
    ]
    for call in streams:
        await call.initial_metadata()
    assert len(served.server.streams) == 6
    assert (await served.hub.metrics()).subscribers == 6
    for call in streams:
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    async def released() -> bool:
        subscribers = (await served.hub.metrics()).subscribers
        return len(served.server.streams) == 0 and subscribers == 0

    await eventually(released)
    await create(served, "S0")  # nothing left to deliver to, and nothing breaks


async def test_sessions_are_visible_through_every_face(make_served: MakeServed) -> None:
    async with SessionHub() as hub:
        served = await make_served(hub)
        app = create_app(hub, manage_hub=False)
        async with serving_http(app) as url, AsyncClient(url) as http:
            starts = served.api.GetSessionStartNotification(
                api.GetSessionStartNotificationRequest(data_source="X")
            )
            await starts.initial_metadata()
            key = await create(served, "X", identifier="from-stream-api")
            native = await served.native.Get(pb.GetRequest(id=key))
            assert native.namespace == "X"
            assert native.labels["identifier"] == "from-stream-api"
            assert (await hub.get(key)).labels["type"] == "Session"
            over_http = await http.get(key)
            assert over_http.namespace == "X"
            assert over_http.labels["identifier"] == "from-stream-api"
            found = await http.find(namespace="X", labels={"identifier": "from-stream-api"})
            assert [s.id for s in found.items] == [key]
            # and the other way round: a session made over HTTP is a Stream API session
            made = await http.create(namespace="X", details={"lap": "1"})
            notified = await read(starts, 2)
            assert [n.session_key for n in notified] == [key, made.id]
            got = await info(served, made.id)
            assert got.success
            assert got.data_source == "X"
            assert dict(got.details) == {"lap": "1"}
            assert (got.type, got.version) == ("Session", 1)
            starts.cancel()


async def test_the_gauge_counts_sessions_per_data_source(make_served: MakeServed) -> None:
    metrics = ServerMetrics()
    async with SessionHub() as hub:
        served = await make_served(hub, metrics=metrics)
        for source in ("A", "A", "B"):
            await create(served, source)
        text = (await metrics.render(hub)).decode()
        assert 'stream_api_sessions_total{DataSource="A"} 2.0' in text
        assert 'stream_api_sessions_total{DataSource="B"} 1.0' in text
        # the HTTP app's /metrics shows it when the face joins its registry
        app = create_app(hub, manage_hub=False)
        gauge_server = await make_served(hub, metrics=app.metrics)
        assert gauge_server.server.stream_api.enabled
        async with serving_http(app) as url, httpx.AsyncClient(base_url=url) as client:
            page = (await client.get("/metrics")).text
        assert 'stream_api_sessions_total{DataSource="A"} 2.0' in page
