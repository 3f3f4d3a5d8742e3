"""Every hub verb through AsyncClient against a real server: same results as the embedded hub."""

from __future__ import annotations

import pytest

import sessionhub
from sessionhub import AsyncClient, DataEntry, HistoryRecord, Session

ODD_IDS = ["plain", "with/slash", "per%25cent%", "q?x=1#frag", "colon:and;semi", "~!@$&'()*+,"]


async def test_create_get_exists_and_end(client: AsyncClient) -> None:
    created = await client.create(
        "s-1",
        namespace="ns",
        user_id="ada",
        labels={"role": "auth"},
        details={"n": 1, "tags": ["a"]},
        idle_timeout=120,
        ttl=3600,
        activate=True,
    )
    assert isinstance(created, Session)
    assert (created.id, created.namespace, created.user_id) == ("s-1", "ns", "ada")
    assert created.labels == {"role": "auth"}
    assert created.details == {"n": 1, "tags": ["a"]}
    assert (created.idle_timeout, created.ttl, created.state) == (120, 3600, "ACTIVE")
    assert await client.get("s-1") == created
    assert await client.exists("s-1")
    assert await client.end("s-1", "done")
    assert not await client.exists("s-1")
    assert not await client.end("s-1")  # ending an ended session does nothing


async def test_create_allocates_ids_and_applies_server_defaults(client: AsyncClient) -> None:
    first, second = await client.create(), await client.create(idle_timeout=None, ttl=None)
    assert first.id != second.id
    assert len(first.id) >= 22
    assert first.idle_timeout is not None  # the server hub's default
    assert (second.idle_timeout, second.ttl, second.expires_at) == (None, None, None)
    assert first.state == "CREATED"


@pytest.mark.parametrize("session_id", ODD_IDS)
async def test_ids_with_reserved_url_characters_round_trip(
    client: AsyncClient, session_id: str
) -> None:
    await client.create(session_id)
    assert (await client.touch(session_id)).id == session_id
    await client.data(session_id).set("k/1?%", {"v": 1})
    assert await client.data(session_id).get("k/1?%") == {"v": 1}
    assert await client.incr(session_id, "calls") == 1
    assert (await client.get(session_id)).counters == {"calls": 1}
    assert await client.end(session_id)


async def test_find_filters_and_pages(client: AsyncClient) -> None:
    for n in range(5):
        await client.create(f"p{n}", namespace="paged", user_id="u" if n % 2 else None)
    await client.create("q", namespace="paged", labels={"role": "x", "team": "y"})
    await client.create("other", namespace="elsewhere")
    ids: list[str] = []
    cursor = None
    while True:
        page = await client.find(namespace="paged", limit=2, cursor=cursor)
        assert len(page.items) <= 2
        ids += [s.id for s in page.items]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert ids == ["p0", "p1", "p2", "p3", "p4", "q"]
    assert [s.id for s in (await client.find(user_id="u")).items] == ["p1", "p3"]
    assert [s.id for s in (await client.find(labels={"role": "x", "team": "y"})).items] == ["q"]
    assert (await client.find(labels={"role": "x", "team": "z"})).items == []
    assert await client.count(namespace="paged") == 6
    assert await client.count(namespace="paged", user_id="u") == 2
    assert await client.count(state="created") == 7
    await client.end("p0")
    assert await client.count(namespace="paged") == 5
    assert await client.count(namespace="paged", include_ended=False) == 5


async def test_update_merges_removes_and_checks_versions(client: AsyncClient) -> None:
    session = await client.create(labels={"a": "1", "b": "2"}, details={"x": 1, "y": 2})
    updated = await client.update(
        session.id,
        details={"z": 3},
        remove_details=["x"],
        labels={"c": "3"},
        remove_labels=["a"],
        idle_timeout=99,
        expected_version=session.version,
    )
    assert updated.details == {"y": 2, "z": 3}
    assert updated.labels == {"b": "2", "c": "3"}
    assert updated.idle_timeout == 99
    assert updated.version > session.version
    no_timeout = await client.update(session.id, idle_timeout=None, ttl=None)
    assert (no_timeout.idle_timeout, no_timeout.ttl) == (None, None)


async def test_transitions_walk_the_lifecycle(client: AsyncClient) -> None:
    session = await client.create()
    spawning = await client.transition(session.id, "spawn", expected_version=session.version)
    assert spawning.state == "SPAWNING"
    assert (await client.transition(session.id, "activate")).state == "ACTIVE"
    assert (await client.transition(session.id, "terminate")).state == "TERMINATING"
    cleaned = await client.transition(session.id, "clean")
    assert cleaned.ended_at is not None
    assert not await client.exists(session.id)


async def test_touch_incr_and_track_request_refresh_activity(client: AsyncClient) -> None:
    session = await client.create()
    touched = await client.touch(session.id)
    assert touched.last_activity_at >= session.last_activity_at
    assert touched.version > session.version
    assert await client.incr(session.id, "messages") == 1
    assert await client.incr(session.id, "messages", 5) == 6
    assert await client.incr(session.id, "messages", -6) == 0
    async with client.track_request(session.id) as inside:
        assert (inside.id, inside.active_requests) == (session.id, 1)
    after = await client.get(session.id)
    assert after.last_activity_at >= inside.last_activity_at  # released: activity again
    assert after.active_requests == 0


async def test_track_request_on_unknown_session_raises(client: AsyncClient) -> None:
    with pytest.raises(sessionhub.SessionNotFound):
        async with client.track_request("nobody"):
            pytest.fail("the block must not run")


async def test_link_makes_children_that_end_with_their_parent(client: AsyncClient) -> None:
    parent, child = await client.create(), await client.create()
    linked = await client.link(parent.id, child.id)
    assert linked.parent_id == parent.id
    assert [s.id for s in (await client.find(parent_id=parent.id)).items] == [child.id]
    assert await client.end(parent.id)
    assert not await client.exists(child.id)


async def test_data_is_a_versioned_store_per_session(client: AsyncClient) -> None:
    a, b = await client.create(), await client.create()
    data = client.data(a.id)
    first = await data.set("stub", {"reply": 1})
    assert first == DataEntry(key="stub", value={"reply": 1}, version=1)
    second = await data.set("stub", {"reply": 2}, expected_version=1)
    assert second.version == 2
    with pytest.raises(sessionhub.VersionConflict):
        await data.set("stub", {"reply": 3}, expected_version=1)
    with pytest.raises(sessionhub.VersionConflict):
        await data.set("stub", "x", expected_version=0)  # 0: only if absent
    assert await data.entry("stub") == second
    assert await data.get("absent", "dflt") == "dflt"
    assert await data.entry("absent") is None
    await data.set("n", None)
    assert await data.items() == {"n": None, "stub": {"reply": 2}}
    assert [e.key for e in await data.entries()] == ["n", "stub"]
    assert await client.data(b.id).items() == {}  # another session sees nothing
    with pytest.raises(sessionhub.VersionConflict):
        await data.delete("stub", expected_version=1)
    assert await data.delete("stub", expected_version=2)
    assert not await data.delete("stub")
    await client.end(a.id)
    with pytest.raises(sessionhub.SessionNotFound):
        await data.entry("n")  # the session is gone, not just the key
    with pytest.raises(sessionhub.SessionNotFound):
        await data.items()


async def test_history_appends_reads_and_counts(client: AsyncClient) -> None:
    session = await client.create()
    history = client.history(session.id)
    for n in range(5):
        record = await history.append("call" if n % 2 == 0 else "note", {"n": n})
        assert isinstance(record, HistoryRecord)
        assert record.seq == n + 1
    assert [r.seq for r in await history.read()] == [1, 2, 3, 4, 5]
    assert [r.seq for r in await history.read(after=2, limit=2)] == [3, 4]
    assert [r.seq for r in await history.read(newest_first=True, limit=2)] == [5, 4]
    assert [r.seq for r in await history.read(newest_first=True, after=4)] == [3, 2, 1]
    assert [r.payload for r in await history.read(kind="note")] == [{"n": 1}, {"n": 3}]
    assert await history.counts() == {"call": 3, "note": 2}
    assert await history.count("call") == 3
    assert await history.count() == 5
    assert await history.count("never") == 0
    other = await client.create()
    assert await client.history(other.id).read() == []


async def test_metrics_report_the_server_hub(client: AsyncClient) -> None:
    await client.create(namespace="m", activate=True)
    await client.create(namespace="m", activate=True)
    gone = await client.create(namespace="m")
    await client.end(gone.id, "why")
    metrics = await client.metrics()
    assert isinstance(metrics, sessionhub.MetricsSnapshot)
    assert metrics.sessions[("m", "ACTIVE")] == 2
    assert metrics.live_sessions == 2
    assert metrics.created_total == 3
    assert metrics.ended_total == {"why": 1}
    assert await client.health() == "ok"


async def test_connect_gives_an_async_client(server_url: str, server_token: str) -> None:
    async with sessionhub.connect(server_url, token=server_token) as hub:
        assert isinstance(hub, AsyncClient)
        session = await hub.create()
        assert await hub.get(session.id) == session
