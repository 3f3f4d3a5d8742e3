"""Sessions: create, get, find, count, update, link, end, pagination and retention."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest

from sessionhub import (
    DuplicateSession,
    ManualClock,
    Session,
    SessionHub,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from sessionhub._clock import new_session_id

from .helpers import HookLog, MakeHub

# create and get


async def test_create_fills_every_field(hub: SessionHub, clock: ManualClock) -> None:
    now = clock()
    session = await hub.create(
        user_id="ada",
        namespace="chat",
        labels={"role": "auth"},
        details={"model": "m1", "n": [1, 2]},
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", session.id)  # 128 bits, URL-safe
    assert (session.namespace, session.user_id, session.parent_id) == ("chat", "ada", None)
    assert (session.state, session.version, session.end_reason) == ("CREATED", 1, None)
    assert dict(session.labels) == {"role": "auth"}
    assert dict(session.details) == {"model": "m1", "n": [1, 2]}
    assert dict(session.counters) == {}
    assert session.created_at == session.updated_at == session.last_activity_at == now
    assert (session.idle_timeout, session.ttl) == (hub.idle_timeout, None)
    assert session.expires_at == now + 1800.0
    assert (session.ended_at, session.active_requests) == (None, 0)
    assert session.live
    assert await hub.get(session.id) == session


async def test_allocated_ids_differ(hub: SessionHub) -> None:
    ids = {(await hub.create()).id for _ in range(50)}
    assert len(ids) == 50


def test_allocated_ids_are_128_random_bits_in_token_urlsafe_form() -> None:
    ids = [new_session_id() for _ in range(1000)]  # several batches drawn from the CSPRNG
    assert len(set(ids)) == len(ids)
    for sid in ids:
        raw = base64.urlsafe_b64decode(sid + "==")
        assert (len(sid), len(raw)) == (22, 16)
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == sid  # canonical form
    # no byte of the ids is stuck (a bad interleaving would leave zeros)
    assert all(
        len({base64.urlsafe_b64decode(sid + "==")[k] for sid in ids}) > 100 for k in range(16)
    )


async def test_chosen_id_and_duplicate_id(hub: SessionHub) -> None:
    session = await hub.create("gripmock:test-1/a", details={"v": 1})
    assert session.id == "gripmock:test-1/a"
    with pytest.raises(DuplicateSession):
        await hub.create("gripmock:test-1/a", details={"v": 2})
    assert await hub.get(session.id) == session
    assert await hub.count() == 1


async def test_a_refused_create_of_an_existing_id_changes_nothing(
    hub: SessionHub, clock: ManualClock
) -> None:
    # A create that finds its id taken must refuse before it writes: the stored session keeps its
    # version, fields and index entries (test_bad_input: and no event is added).
    session = await hub.create("taken", user_id="ada", labels={"role": "auth"}, idle_timeout=60)
    clock.advance(5)
    await hub.touch(session.id)
    before = await hub.update(session.id, details={"n": 1})
    assert before.version == 3
    with pytest.raises(DuplicateSession):
        await hub.create("taken", user_id="bob", namespace="other", labels={"role": "x"}, ttl=9)
    assert await hub.get(session.id) == before
    assert [s.id for s in (await hub.find(labels={"role": "auth"})).items] == ["taken"]
    assert (await hub.find(labels={"role": "x"})).items == []
    assert (await hub.find(user_id="bob")).items == []
    assert (await hub.find(namespace="other")).items == []
    assert await hub.count() == 1
    assert (await hub.touch(session.id)).version == 4


async def test_injected_id_factory(make_hub: MakeHub) -> None:
    ids = iter(["first", "second"])
    hub = await make_hub(id_factory=lambda: next(ids))
    assert (await hub.create()).id == "first"
    assert (await hub.create()).id == "second"


async def test_details_and_labels_are_private_copies(hub: SessionHub) -> None:
    details = {"nested": {"a": 1}}
    labels = {"role": "auth"}
    session = await hub.create(details=details, labels=labels)
    details["nested"]["a"] = 2
    labels["role"] = "other"
    stored = await hub.get(session.id)
    assert dict(stored.details) == {"nested": {"a": 1}}
    assert dict(stored.labels) == {"role": "auth"}


async def test_timeouts_per_session(hub: SessionHub, clock: ManualClock) -> None:
    session = await hub.create(idle_timeout=10, ttl=5)
    assert (session.idle_timeout, session.ttl, session.expires_at) == (10.0, 5.0, clock() + 5)
    forever = await hub.create(idle_timeout=None)
    assert forever.expires_at is None


async def test_get_unknown(hub: SessionHub) -> None:
    with pytest.raises(SessionNotFound) as info:
        await hub.get("nobody")
    assert isinstance(info.value, LookupError)
    assert info.value.session_id == "nobody"
    assert await hub.exists("nobody") is False


# find, count and pages


async def test_an_id_made_again_in_another_namespace_is_listed_once(hub: SessionHub) -> None:
    """A session ended (and gone) in one namespace and created again under its id in another is
    one session: every listing and count across namespaces shows it once."""
    await hub.create("s", namespace="ns1")
    await hub.end("s")
    await hub.create("s", namespace="ns2")
    for include_ended in (False, True):
        page = await hub.find(include_ended=include_ended)
        assert [(x.id, x.namespace) for x in page.items] == [("s", "ns2")]
        assert await hub.count(include_ended=include_ended) == 1
    assert await hub.count(state="CREATED") == 1
    assert [x.id for x in (await hub.find(namespace="ns1", include_ended=True)).items] == []


async def test_find_and_count_by_each_filter(hub: SessionHub) -> None:
    parent = await hub.create("p", namespace="ns1", user_id="ada")
    a = await hub.create("a", namespace="ns1", user_id="ada", labels={"role": "x", "k": "1"})
    b = await hub.create(
        "b", namespace="ns1", user_id="bob", parent_id="p", labels={"role": "x", "k": "2"}
    )
    c = await hub.create("c", namespace="ns2", user_id="ada", parent_id="p", activate=True)
    b = await hub.transition("b", "SPAWN")

    async def ids(**filters: object) -> list[str]:
        page = await hub.find(**filters)  # type: ignore[arg-type]
        count = await hub.count(**filters)  # type: ignore[arg-type]
        assert count == len(page.items)
        assert page.cursor is None
        return [s.id for s in page.items]

    assert await ids() == ["a", "b", "c", "p"]
    assert await ids(namespace="ns1") == ["a", "b", "p"]
    assert await ids(namespace="ns3") == []
    assert await ids(user_id="ada") == ["a", "c", "p"]
    assert await ids(user_id="ada", namespace="ns1") == ["a", "p"]
    assert await ids(parent_id="p") == ["b", "c"]
    assert await ids(state="SPAWNING") == ["b"]
    assert await ids(state="active") == ["c"]
    assert await ids(state="CREATED", namespace="ns1") == ["a", "p"]
    assert await ids(labels={"role": "x"}) == ["a", "b"]
    assert await ids(labels={"role": "x", "k": "2"}) == ["b"]
    assert await ids(labels={"role": "x"}, user_id="bob") == ["b"]
    assert await ids(labels={"role": "y"}) == []
    page = await hub.find(parent_id="p")
    assert page.items == [b, c]
    assert (await hub.find(user_id="ada", namespace="ns1")).items == [a, parent]


async def test_pages_cover_everything_once_in_id_order(hub: SessionHub) -> None:
    created = sorted([(await hub.create(f"s{i:02d}", user_id="u")).id for i in range(25)])
    for filters in ({}, {"user_id": "u"}, {"namespace": "default"}, {"state": "CREATED"}):
        seen: list[str] = []
        sizes = []
        cursor = None
        while True:
            page = await hub.find(limit=10, cursor=cursor, **filters)  # type: ignore[arg-type]
            seen.extend(s.id for s in page.items)
            sizes.append(len(page.items))
            if page.cursor is None:
                break
            assert page.cursor == page.items[-1].id
            cursor = page.cursor
        assert seen == created
        assert sizes == [10, 10, 5]


async def test_a_full_last_page_has_no_cursor(hub: SessionHub) -> None:
    for i in range(10):
        await hub.create(f"s{i}")
    page = await hub.find(limit=10)
    assert (len(page.items), page.cursor) == (10, None)
    first = await hub.find(limit=5)
    second = await hub.find(limit=5, cursor=first.cursor)
    assert (len(second.items), second.cursor) == (5, None)


async def test_paging_goes_on_when_sessions_end_between_pages(hub: SessionHub) -> None:
    for i in range(9):
        await hub.create(f"s{i}")
    first = await hub.find(limit=3)
    assert [s.id for s in first.items] == ["s0", "s1", "s2"]
    await hub.end("s2")  # the cursor's own session
    await hub.end("s4")
    second = await hub.find(limit=3, cursor=first.cursor)
    assert [s.id for s in second.items] == ["s3", "s5", "s6"]


# update


async def test_update_merges_and_removes(hub: SessionHub, clock: ManualClock) -> None:
    session = await hub.create(details={"a": 1, "b": 2}, labels={"x": "1", "y": "2"})
    clock.advance(5)
    updated = await hub.update(
        session.id,
        details={"b": 3, "c": {"d": 4}},
        remove_details=["a"],
        labels={"z": "3"},
        remove_labels=["x"],
    )
    assert dict(updated.details) == {"b": 3, "c": {"d": 4}}
    assert dict(updated.labels) == {"y": "2", "z": "3"}
    assert updated.version == session.version + 1
    assert updated.updated_at == clock()
    assert updated.last_activity_at == session.last_activity_at  # an update is no heartbeat
    assert await hub.get(session.id) == updated
    assert [s.id for s in (await hub.find(labels={"z": "3"})).items] == [session.id]
    assert (await hub.find(labels={"x": "1"})).items == []


async def test_update_can_remove_every_key(hub: SessionHub) -> None:
    session = await hub.create(details={"a": 1}, labels={"x": "1"})
    updated = await hub.update(session.id, remove_details=["a", "absent"], remove_labels=["x"])
    assert (dict(updated.details), dict(updated.labels)) == ({}, {})


async def test_update_with_expected_version(hub: SessionHub) -> None:
    session = await hub.create()
    updated = await hub.update(session.id, details={"n": 1}, expected_version=1)
    assert updated.version == 2
    with pytest.raises(VersionConflict):
        await hub.update(session.id, details={"n": 2}, expected_version=1)
    assert await hub.get(session.id) == updated
    again = await hub.update(session.id, details={"n": 3}, expected_version=2)
    assert (again.version, again.details["n"]) == (3, 3)


async def test_transition_with_expected_version(hub: SessionHub) -> None:
    session = await hub.create()
    await hub.touch(session.id)
    with pytest.raises(VersionConflict):
        await hub.transition(session.id, "SPAWN", expected_version=1)
    assert (await hub.get(session.id)).state == "CREATED"
    assert (await hub.transition(session.id, "SPAWN", expected_version=2)).state == "SPAWNING"


async def test_versions_grow_with_every_change(hub: SessionHub) -> None:
    session = await hub.create()
    versions = [session.version]
    versions.append((await hub.touch(session.id)).version)
    await hub.incr(session.id, "n")
    versions.append((await hub.get(session.id)).version)
    versions.append((await hub.update(session.id, details={"a": 1})).version)
    versions.append((await hub.transition(session.id, "SPAWN")).version)
    async with hub.track_request(session.id) as inside:
        versions.append(inside.version)
    versions.append((await hub.get(session.id)).version)
    await hub.data(session.id).set("k", 1)
    versions.append((await hub.get(session.id)).version)
    await hub.history(session.id).append("call")
    versions.append((await hub.get(session.id)).version)
    assert versions == sorted(set(versions))


async def test_counters(hub: SessionHub) -> None:
    session = await hub.create()
    assert await hub.incr(session.id, "messages") == 1
    assert await hub.incr(session.id, "messages", 5) == 6
    assert await hub.incr(session.id, "messages", -2) == 4
    assert await hub.incr(session.id, "calls", 0) == 0
    assert dict((await hub.get(session.id)).counters) == {"messages": 4, "calls": 0}


# link and children


async def test_link_and_find_children(hub: SessionHub) -> None:
    parent = await hub.create("parent")
    child = await hub.create("child")
    linked = await hub.link(parent.id, child.id)
    assert linked.parent_id == "parent"
    assert linked.version == child.version + 1
    assert [s.id for s in (await hub.find(parent_id="parent")).items] == ["child"]
    other = await hub.create("other")
    await hub.link(other.id, child.id)  # moving a child to another parent
    assert (await hub.find(parent_id="parent")).items == []
    assert [s.id for s in (await hub.find(parent_id="other")).items] == ["child"]


async def test_link_refuses_cycles_and_unknown_parents(hub: SessionHub) -> None:
    a = await hub.create("a")
    b = await hub.create("b", parent_id="a")
    c = await hub.create("c", parent_id="b")
    for parent, child in (("c", "a"), ("b", "a"), ("a", "a")):
        with pytest.raises(ValidationError, match="cycle"):
            await hub.link(parent, child)
    with pytest.raises(SessionNotFound):
        await hub.link("ghost", "c")
    with pytest.raises(SessionNotFound):
        await hub.link("a", "ghost")
    assert [await hub.get(x) for x in "abc"] == [a, b, c]


async def test_create_under_an_unknown_parent(hub: SessionHub) -> None:
    with pytest.raises(SessionNotFound):
        await hub.create(parent_id="ghost")
    assert await hub.count() == 0


async def test_ending_a_parent_ends_its_children_first(hub: SessionHub, hook_log: HookLog) -> None:
    hub.on_end(hook_log)
    await hub.create("root")
    await hub.create("kid1", parent_id="root")
    await hub.create("kid2", parent_id="root")
    await hub.create("grandkid", parent_id="kid1")
    bystander = await hub.create("bystander")
    assert await hub.end("root", "done") is True
    assert hook_log.reasons == {
        "root": "done",
        "kid1": "parent_ended",
        "kid2": "parent_ended",
        "grandkid": "parent_ended",
    }
    order = hook_log.ids
    assert order.index("grandkid") < order.index("kid1") < order.index("root")
    assert order.index("kid2") < order.index("root")
    assert [s.id for s in (await hub.find()).items] == ["bystander"]
    assert await hub.get("bystander") == bystander


async def test_a_child_can_end_alone(hub: SessionHub) -> None:
    parent = await hub.create("parent")
    await hub.create("child", parent_id="parent")
    assert await hub.end("child") is True
    assert await hub.get("parent") == parent
    assert await hub.count(parent_id="parent") == 0


# end and retention


async def test_end_returns_true_then_false(hub: SessionHub, hook_log: HookLog) -> None:
    hub.on_end(hook_log)
    session = await hub.create()
    assert await hub.end(session.id) is True
    assert await hub.end(session.id) is False
    assert await hub.end(session.id, "again") is False
    assert await hub.end("never-existed") is False
    assert hook_log.reasons == {session.id: "ended"}


async def test_ended_sessions_leave_the_live_set_at_once(hub: SessionHub) -> None:
    keep = await hub.create(user_id="ada", labels={"k": "v"})
    gone = await hub.create(user_id="ada", labels={"k": "v"})
    assert await hub.count() == 2
    await hub.end(gone.id)
    assert await hub.count() == 1
    assert await hub.count(user_id="ada") == 1
    assert await hub.count(labels={"k": "v"}) == 1
    assert await hub.count(include_ended=True) == 1  # retention 0: gone at once
    assert [s.id for s in (await hub.find()).items] == [keep.id]
    assert await hub.exists(gone.id) is False
    with pytest.raises(SessionNotFound):
        await hub.get(gone.id)
    with pytest.raises(SessionNotFound):
        await hub.touch(gone.id)


async def test_an_ended_id_can_be_used_again(hub: SessionHub) -> None:
    await hub.create("reused", details={"old": True})
    await hub.end("reused")
    fresh = await hub.create("reused")
    assert (fresh.version, dict(fresh.details)) == (1, {})


@pytest.mark.parametrize("where", ["hub", "session"])
async def test_retention_keeps_ended_sessions_readable(
    make_hub: MakeHub, clock: ManualClock, where: str
) -> None:
    if where == "hub":
        hub = await make_hub(retention=60)
        session = await hub.create("kept", namespace="ns", user_id="ada")
    else:
        hub = await make_hub()
        session = await hub.create("kept", namespace="ns", user_id="ada", retention=60)
    live = await hub.create("live", namespace="ns")
    clock.advance(1)
    await hub.end(session.id, "bye")
    ended = await hub.get(session.id)
    assert (ended.state, ended.end_reason, ended.ended_at, ended.live) == (
        "CLEANED",
        "bye",
        clock(),
        False,
    )
    assert ended.version > session.version
    assert await hub.exists(session.id) is False
    assert await hub.count() == 1
    assert (await hub.find(namespace="ns")).items == [live]
    assert await hub.count(namespace="ns", include_ended=True) == 2
    assert [s.id for s in (await hub.find(include_ended=True)).items] == ["kept", "live"]
    assert (await hub.find(namespace="ns", include_ended=True)).items == [ended, live]
    with pytest.raises(SessionNotFound):  # readable, not live: no change is allowed
        await hub.update(session.id, details={"a": 1})
    assert await hub.end(session.id) is False

    clock.advance(59.5)
    assert await hub.get(session.id) == ended
    clock.advance(1)
    with pytest.raises(SessionNotFound):
        await hub.get(session.id)
    assert [s.id for s in (await hub.find(include_ended=True)).items] == ["live"]
    assert await hub.count(namespace="ns", include_ended=True) == 1


async def test_a_retained_id_is_free_again_once_retention_passed(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    hub = await make_hub(retention=10)
    await hub.create("reused")
    await hub.end("reused")
    with pytest.raises(DuplicateSession):  # still readable under that id
        await hub.create("reused")
    clock.advance(11)
    fresh = await hub.create("reused")
    assert (await hub.get("reused")) == fresh
    assert fresh.live


async def test_metrics_count_sessions(hub: SessionHub) -> None:
    a = await hub.create(namespace="n1")
    await hub.create(namespace="n1", activate=True)
    await hub.create(namespace="n2")
    await hub.end(a.id)
    snap = await hub.metrics()
    assert snap.live_sessions == 2
    assert snap.sessions == {("n1", "ACTIVE"): 1, ("n2", "CREATED"): 1}
    assert snap.created_total == 3
    assert snap.ended_total == {"ended": 1}


async def test_close_ends_sessions_of_an_ephemeral_store(
    make_hub: MakeHub, hook_log: HookLog
) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    session: Session = await hub.create()
    await hub.close()
    if hub.store.ephemeral:  # nothing outlives the process: hooks run now, reason shutdown
        assert hook_log.reasons == {session.id: "shutdown"}
    else:  # a durable store keeps its sessions for the next hub
        assert hook_log.calls == []


async def test_close_returns_when_the_expiry_task_was_just_woken(make_hub: MakeHub) -> None:
    """A change with a nearer deadline wakes the expiry task; closing right then must still stop
    it (on Python 3.11, asyncio.wait_for could swallow that cancellation and hang close)."""
    hub = await make_hub()
    for _ in range(3):
        await hub.create()  # wakes the expiry task
        for _ in range(10):
            await asyncio.sleep(0)  # which runs a pass and waits again
    await hub.create(idle_timeout=1)  # a nearer deadline: wakes it once more, and at once...
    closing = asyncio.create_task(hub.close())  # ...close stops it
    done, _ = await asyncio.wait({closing}, timeout=10)  # a safety net, not a speed assertion
    assert closing in done, "close() hangs waiting for the expiry task"
    await closing
