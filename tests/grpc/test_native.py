"""Every rpc of ``sessionhub.v1.SessionHubService`` and every error status, through generated stubs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from sessionhub import Limits, SessionHub
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2 as pb

from .conftest import MakeServed, Served, error_code, eventually, failure


async def make(served: Served, **fields: Any) -> pb.Session:
    created: pb.Session = await served.native.Create(pb.CreateRequest(**fields))
    return created


async def test_create_and_get_carry_every_field(served: Served) -> None:
    created = await make(
        served,
        id="s/1",
        namespace="ns",
        user_id="ada",
        labels={"role": "auth"},
        details_json=json.dumps({"n": 1, "deep": {"x": [1, 2.5, None]}}),
        idle_timeout=pb.Timeout(seconds=30),
        ttl=pb.Timeout(),  # present, without seconds: no ttl
        retention=5,
        activate=True,
    )
    assert (created.id, created.namespace, created.state) == ("s/1", "ns", "ACTIVE")
    assert created.user_id == "ada"
    assert not created.HasField("parent_id")
    assert dict(created.labels) == {"role": "auth"}
    assert json.loads(created.details_json) == {"n": 1, "deep": {"x": [1, 2.5, None]}}
    assert created.idle_timeout == 30
    assert not created.HasField("ttl")
    assert created.retention == 5
    assert created.version == 1
    got = await served.native.Get(pb.GetRequest(id="s/1"))
    assert got == created
    hub = await served.hub.get("s/1")
    assert hub.created_at == got.created_at
    assert hub.expires_at == got.expires_at


async def test_create_defaults_are_the_hubs(served: Served) -> None:
    created = await make(served)
    assert created.namespace == "default"
    assert created.state == "CREATED"
    assert len(created.id) >= 22  # allocated from a CSPRNG
    assert created.idle_timeout == served.hub.idle_timeout
    assert created.details_json == "{}"


async def test_find_pages_through_every_match_and_count_agrees(served: Served) -> None:
    for n in range(7):
        await make(served, id=f"p{n}", namespace="pages", labels={"odd": str(n % 2)})
    await make(served, id="elsewhere", namespace="other")
    seen: list[str] = []
    cursor = None
    while True:
        page = await served.native.Find(
            pb.FindRequest(filters=pb.Filters(namespace="pages"), limit=3, cursor=cursor)
        )
        seen += [s.id for s in page.items]
        if not page.HasField("cursor"):
            break
        cursor = page.cursor
    assert seen == [f"p{n}" for n in range(7)]
    odd = pb.Filters(namespace="pages", labels={"odd": "1"})
    found = await served.native.Find(pb.FindRequest(filters=odd))
    assert [s.id for s in found.items] == ["p1", "p3", "p5"]
    assert (await served.native.Count(pb.CountRequest(filters=odd))).count == 3
    assert (await served.native.Count(pb.CountRequest())).count == 8


async def test_update_merges_and_honours_expected_version(served: Served) -> None:
    created = await make(served, id="u", details_json='{"a": 1, "b": 2}', labels={"x": "1"})
    updated = await served.native.Update(
        pb.UpdateRequest(
            id="u",
            details_json='{"c": 3}',
            remove_details=["a"],
            labels={"y": "2"},
            remove_labels=["x"],
            idle_timeout=pb.Timeout(),  # none
            expected_version=created.version,
        )
    )
    assert json.loads(updated.details_json) == {"b": 2, "c": 3}
    assert dict(updated.labels) == {"y": "2"}
    assert not updated.HasField("idle_timeout")
    assert not updated.HasField("expires_at")
    stale = await failure(
        served.native.Update(pb.UpdateRequest(id="u", details_json="{}", expected_version=1))
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    assert error_code(stale) == "version_conflict"
    assert (await served.hub.get("u")).version == updated.version  # nothing changed


async def test_transition_touch_incr_end(served: Served) -> None:
    await make(served, id="t")
    spawned = await served.native.Transition(pb.TransitionRequest(id="t", event="spawn"))
    assert spawned.state == "SPAWNING"
    active = await served.native.Transition(
        pb.TransitionRequest(id="t", event="ACTIVATE", expected_version=spawned.version)
    )
    assert active.state == "ACTIVE"
    bad = await failure(served.native.Transition(pb.TransitionRequest(id="t", event="SPAWN")))
    assert bad.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_code(bad) == "invalid_transition"
    assert "state=ACTIVE event=SPAWN" in bad.details()
    touched = await served.native.Touch(pb.TouchRequest(id="t"))
    assert touched.last_activity_at >= active.last_activity_at
    assert (await served.native.Incr(pb.IncrRequest(id="t", counter="calls"))).value == 1
    assert (await served.native.Incr(pb.IncrRequest(id="t", counter="calls", by=4))).value == 5
    ended = await served.native.End(pb.EndRequest(id="t", reason="finished"))
    assert ended.ended is True
    again = await served.native.End(pb.EndRequest(id="t"))
    assert again.ended is False  # ending an ended session is a no-op that says so
    gone = await failure(served.native.Get(pb.GetRequest(id="t")))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert error_code(gone) == "not_found"


async def test_link_makes_a_child_that_ends_with_its_parent(served: Served) -> None:
    await make(served, id="parent")
    await make(served, id="child")
    linked = await served.native.Link(pb.LinkRequest(parent_id="parent", child_id="child"))
    assert linked.parent_id == "parent"
    cycle = await failure(served.native.Link(pb.LinkRequest(parent_id="child", child_id="parent")))
    assert cycle.code() == grpc.StatusCode.INVALID_ARGUMENT
    await served.native.End(pb.EndRequest(id="parent"))
    assert not await served.hub.exists("child")


async def test_track_counts_a_request_while_the_call_is_open(served: Served) -> None:
    await make(served, id="tr")
    call = served.native.Track()
    await call.write(pb.TrackRequest(id="tr"))
    first = await call.read()
    assert first.id == "tr"
    assert first.active_requests == 1
    assert (await served.hub.get("tr")).active_requests == 1
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert (await served.hub.get("tr")).active_requests == 0
    # a client that cancels releases the request too
    call = served.native.Track()
    await call.write(pb.TrackRequest(id="tr"))
    await call.read()
    call.cancel()

    async def released() -> bool:
        return (await served.hub.get("tr")).active_requests == 0

    await eventually(released)
    unknown = served.native.Track()
    await unknown.write(pb.TrackRequest(id="nobody"))
    assert await unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_data_verbs(served: Served) -> None:
    await make(served, id="d")
    entry = await served.native.DataSet(pb.DataSetRequest(id="d", key="k", value_json='{"v": 1}'))
    assert (entry.key, json.loads(entry.value_json), entry.version) == ("k", {"v": 1}, 1)
    got = await served.native.DataGet(pb.DataGetRequest(id="d", key="k"))
    assert got.entry == entry
    missing = await served.native.DataGet(pb.DataGetRequest(id="d", key="nope"))
    assert not missing.HasField("entry")
    conflict = await failure(
        served.native.DataSet(
            pb.DataSetRequest(id="d", key="k", value_json="2", expected_version=0)
        )
    )
    assert conflict.code() == grpc.StatusCode.ABORTED
    await served.native.DataSet(pb.DataSetRequest(id="d", key="j", value_json="[1, 2]"))
    listed = await served.native.DataList(pb.DataListRequest(id="d"))
    assert [(e.key, json.loads(e.value_json)) for e in listed.entries] == [
        ("j", [1, 2]),
        ("k", {"v": 1}),
    ]
    deleted = await served.native.DataDelete(pb.DataDeleteRequest(id="d", key="k"))
    assert deleted.deleted is True
    assert (await served.native.DataDelete(pb.DataDeleteRequest(id="d", key="k"))).deleted is False
    nosession = await failure(served.native.DataGet(pb.DataGetRequest(id="ghost", key="k")))
    assert nosession.code() == grpc.StatusCode.NOT_FOUND


async def test_history_verbs(served: Served) -> None:
    await make(served, id="h")
    for n in range(5):
        kind = "call" if n % 2 == 0 else "note"
        record = await served.native.HistoryAppend(
            pb.HistoryAppendRequest(id="h", kind=kind, payload_json=json.dumps({"n": n}))
        )
        assert record.seq == n + 1
    bare = await served.native.HistoryAppend(pb.HistoryAppendRequest(id="h", kind="bare"))
    assert bare.payload_json == "null"
    page = await served.native.HistoryRead(pb.HistoryReadRequest(id="h", after=1, limit=2))
    assert [r.seq for r in page.records] == [2, 3]
    newest = await served.native.HistoryRead(
        pb.HistoryReadRequest(id="h", newest_first=True, kind="call")
    )
    assert [json.loads(r.payload_json)["n"] for r in newest.records] == [4, 2, 0]
    counts = await served.native.HistoryCounts(pb.HistoryCountsRequest(id="h"))
    assert dict(counts.counts) == {"call": 3, "note": 2, "bare": 1}


async def test_stats(served: Served) -> None:
    await make(served, namespace="st")
    stats = await served.native.Stats(pb.StatsRequest())
    assert stats.live_sessions == 1
    assert stats.created_total == 1
    assert [(c.namespace, c.state, c.count) for c in stats.sessions] == [("st", "CREATED", 1)]


async def test_bad_input_is_invalid_argument_and_changes_nothing(served: Served) -> None:
    cases = [
        served.native.Get(pb.GetRequest(id="")),
        served.native.Get(pb.GetRequest(id="has space")),
        served.native.Get(pb.GetRequest(id="x" * 201)),
        served.native.Create(pb.CreateRequest(id="bad id")),
        served.native.Create(pb.CreateRequest(namespace="")),
        served.native.Create(pb.CreateRequest(details_json="{not json")),
        served.native.Create(pb.CreateRequest(details_json="[1, 2]")),
        served.native.Create(pb.CreateRequest(idle_timeout=pb.Timeout(seconds=-1))),
        served.native.Find(pb.FindRequest(limit=0)),
        served.native.Find(pb.FindRequest(filters=pb.Filters(namespace="a b"))),
        served.native.Transition(pb.TransitionRequest(id="x", event="explode")),
        served.native.Incr(pb.IncrRequest(id="x", counter="no spaces allowed")),
        served.native.HistoryRead(pb.HistoryReadRequest(id="x", after=-1)),
        served.native.DataSet(pb.DataSetRequest(id="x", key="k", value_json="")),
    ]
    for call in cases:
        error = await failure(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error_code(error) == "invalid"
    assert (await served.native.Count(pb.CountRequest())).count == 0


async def test_unknown_sessions_are_not_found(served: Served) -> None:
    for call in (
        served.native.Get(pb.GetRequest(id="ghost")),
        served.native.Update(pb.UpdateRequest(id="ghost", details_json="{}")),
        served.native.Touch(pb.TouchRequest(id="ghost")),
        served.native.Incr(pb.IncrRequest(id="ghost", counter="c")),
        served.native.Transition(pb.TransitionRequest(id="ghost", event="spawn")),
        served.native.Link(pb.LinkRequest(parent_id="ghost", child_id="other")),
        served.native.DataList(pb.DataListRequest(id="ghost")),
        served.native.HistoryAppend(pb.HistoryAppendRequest(id="ghost", kind="k")),
        served.native.HistoryCounts(pb.HistoryCountsRequest(id="ghost")),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_code(error) == "not_found"


async def test_duplicates_limits_and_sizes(make_served: MakeServed) -> None:
    hub = SessionHub(
        unique_labels=["role"],
        limits=Limits(max_sessions=2, max_requests_per_session=1, max_details_bytes=100),
    )
    async with hub:
        served = await make_served(hub, max_message_bytes=64 * 1024)
        await make(served, id="one", labels={"role": "auth"})
        duplicate = await failure(make(served, id="one"))
        assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_code(duplicate) == "duplicate"
        role = await failure(make(served, id="two", labels={"role": "auth"}))
        assert error_code(role) == "duplicate"
        big = await failure(make(served, details_json=json.dumps({"x": "y" * 200})))
        assert big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(big) == "payload_too_large"
        labels = await failure(make(served, labels={f"k{n}": "v" for n in range(100)}))
        assert error_code(labels) == "payload_too_large"
        await make(served, id="two")
        full = await failure(make(served, id="three"))
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(full) == "capacity_exceeded"
        # a request past the message size limit is refused by gRPC itself
        huge = await failure(
            served.native.Update(pb.UpdateRequest(id="one", labels={"k": "v" * 100_000}))
        )
        assert huge.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with hub.track_request("one"):
            busy = served.native.Track()
            await busy.write(pb.TrackRequest(id="one"))
            refused = await failure(busy.read())
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_code(refused) == "too_many_requests"
        assert await hub.count() == 2


async def _anchor(served: Served, namespace: str) -> str:
    """The id of an event just published: watching after it reads a test's events in order."""
    await make(served, namespace=namespace)
    last = served.hub.store.events.last_id
    assert last is not None
    return last


async def take(call: Any, n: int) -> list[pb.Event]:
    async with asyncio.timeout(10):
        return [await call.read() for _ in range(n)]


async def test_watch_streams_events_with_filters(served: Served) -> None:
    call = served.native.Watch(pb.WatchRequest(namespace="w", kinds=["created", "ended"]))
    await call.initial_metadata()  # the subscription is live once the headers arrive
    await make(served, id="w1", namespace="w")
    await make(served, id="other", namespace="x")
    await served.native.Update(pb.UpdateRequest(id="w1", details_json='{"a": 1}'))
    await served.native.End(pb.EndRequest(id="w1"))
    events = await take(call, 2)
    assert [(e.kind, e.session.id) for e in events] == [("created", "w1"), ("ended", "w1")]
    assert events[1].session.state == "CLEANED"
    assert events[1].session.end_reason == "ended"
    call.cancel()
    single = served.native.Watch(pb.WatchRequest(session_id="x1"))
    await single.initial_metadata()
    await make(served, id="x0")
    await make(served, id="x1")
    assert [e.session.id for e in await take(single, 1)] == ["x1"]
    single.cancel()


async def test_watch_resumes_after_an_event_id(served: Served) -> None:
    after = await _anchor(served, "anchor")
    await make(served, id="r1", namespace="r")
    await served.native.Touch(pb.TouchRequest(id="r1"))  # no event
    await served.native.Transition(pb.TransitionRequest(id="r1", event="spawn"))
    call = served.native.Watch(pb.WatchRequest(namespace="r", after=after))
    events = await take(call, 2)
    assert [e.kind for e in events] == ["created", "transitioned"]
    resumed = served.native.Watch(pb.WatchRequest(namespace="r", after=events[0].id))
    assert [e.id for e in await take(resumed, 1)] == [events[1].id]
    call.cancel()
    resumed.cancel()
    unknown = await failure(served.native.Watch(pb.WatchRequest(after="not-an-event")).read())
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_kind = await failure(served.native.Watch(pb.WatchRequest(kinds=["exploded"])).read())
    assert bad_kind.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stopping_the_server_ends_open_streams_cleanly(make_served: MakeServed) -> None:
    served = await make_served()
    call = served.native.Watch(pb.WatchRequest())
    await call.initial_metadata()
    await make(served, id="held")
    track = served.native.Track()
    await track.write(pb.TrackRequest(id="held"))
    await track.read()
    await served.server.stop(5)
    async with asyncio.timeout(10):
        assert [e.kind for e in [m async for m in call]] == ["created"]
        assert await call.code() == grpc.StatusCode.OK
        assert await track.code() == grpc.StatusCode.OK
    assert (await served.hub.get("held")).active_requests == 0


async def test_a_history_batch_past_the_hubs_limit_is_invalid_argument_writing_nothing(
    make_served: MakeServed,
) -> None:
    async with SessionHub(limits=Limits(max_history_batch=2)) as hub:
        served = await make_served(hub)
        await make(served, id="h")
        records = [pb.HistoryEntry(kind="k", payload_json=str(i)) for i in range(3)]
        request = pb.HistoryAppendManyRequest(id="h", records=records)
        error = await failure(served.native.HistoryAppendMany(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error_code(error) == "invalid"
        assert await hub.history("h").counts() == {}
        del request.records[2]
        answer = await served.native.HistoryAppendMany(request)
        assert [(r.seq, r.kind) for r in answer.records] == [(1, "k"), (2, "k")]


async def test_history_batch_and_pop_refuse_bad_input_writing_nothing(
    make_served: MakeServed,
) -> None:
    hub = SessionHub(limits=Limits(max_history_record_bytes=100))
    async with hub:
        served = await make_served(hub, max_message_bytes=64 * 1024)
        await make(served, id="h")
        entry = pb.HistoryEntry
        invalid = [
            pb.HistoryAppendManyRequest(id="h"),  # no records
            pb.HistoryAppendManyRequest(id="h", records=[entry(kind="k")] * 1001),
            pb.HistoryAppendManyRequest(id="h", records=[entry(kind="k"), entry(kind="a b")]),
            pb.HistoryAppendManyRequest(
                id="h", records=[entry(kind="k"), entry(kind="k", payload_json="{not json")]
            ),
            pb.HistoryAppendManyRequest(id="bad id", records=[entry(kind="k")]),
        ]
        for request in invalid:
            error = await failure(served.native.HistoryAppendMany(request))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert error_code(error) == "invalid"
        for kind, marker in [("k", "k"), ("", "pop"), ("k", ""), ("k", "a b")]:
            pop = pb.HistoryPopRequest(id="h", kind=kind, marker=marker)
            error = await failure(served.native.HistoryPop(pop))
            assert error_code(error) == "invalid", (kind, marker)
        big = pb.HistoryAppendManyRequest(
            id="h", records=[entry(kind="k"), entry(kind="k", payload_json=json.dumps("x" * 200))]
        )
        too_large = await failure(served.native.HistoryAppendMany(big))
        assert too_large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(too_large) == "payload_too_large"
        for call in (
            served.native.HistoryAppendMany(
                pb.HistoryAppendManyRequest(id="ghost", records=[entry(kind="k")])
            ),
            served.native.HistoryPop(pb.HistoryPopRequest(id="ghost", kind="k", marker="pop")),
        ):
            assert error_code(await failure(call)) == "not_found"
        assert await hub.history("h").counts() == {}


async def test_history_batch_and_pop(served: Served) -> None:
    await make(served, id="h")
    entries = [pb.HistoryEntry(kind="item", payload_json=json.dumps(n)) for n in range(3)]
    appended = await served.native.HistoryAppendMany(
        pb.HistoryAppendManyRequest(id="h", records=[*entries, pb.HistoryEntry(kind="item")])
    )
    assert [(r.seq, r.kind, r.payload_json) for r in appended.records] == [
        (1, "item", "0"),
        (2, "item", "1"),
        (3, "item", "2"),
        (4, "item", "null"),
    ]
    popped = await served.native.HistoryPop(pb.HistoryPopRequest(id="h", kind="item", marker="p"))
    assert popped.HasField("record")
    assert (popped.record.seq, popped.record.payload_json) == (4, "null")
    marker = (await served.hub.history("h").read(newest_first=True, limit=1))[0]
    assert (marker.kind, marker.payload) == ("p", {"popped": 4, "below": 3})
    await served.hub.history("h").append("clear")
    empty = await served.native.HistoryPop(pb.HistoryPopRequest(id="h", kind="item", marker="p"))
    assert not empty.HasField("record")


async def test_an_end_past_its_deadline_still_finishes(served: Served) -> None:
    """A client's deadline cancels the server's handler; the end it claimed still finishes, and
    its hook is not cut short."""
    release, started, completed = asyncio.Event(), asyncio.Event(), []

    async def hook(session: Any, reason: str) -> None:
        started.set()
        await release.wait()
        completed.append((session.id, reason))

    served.hub.on_end(hook)
    await served.hub.create("slow")
    call = served.native.End(pb.EndRequest(id="slow", reason="bye"), timeout=0.2)
    try:
        assert (await failure(call)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert started.is_set()
    finally:
        release.set()

    async def ended() -> bool:
        return completed == [("slow", "bye")] and (await served.hub.count()) == 0

    await eventually(ended)
