"""Each session's private containers: ``data`` (compare-and-set by version) and ``history`` (an
append-only log read in pages), isolated from every other session and deleted with the session."""

from __future__ import annotations

import pytest

from sessionhub import (
    ManualClock,
    SessionHub,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)

from .helpers import MakeHub

# data


async def test_data_set_get_versions(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    assert await data.get("stub") is None
    assert await data.get("stub", "fallback") == "fallback"
    assert await data.entry("stub") is None
    first = await data.set("stub", {"reply": "hi"})
    assert (first.key, first.value, first.version) == ("stub", {"reply": "hi"}, 1)
    second = await data.set("stub", {"reply": "yo"})
    assert second.version == 2
    assert await data.get("stub") == {"reply": "yo"}
    assert await data.entry("stub") == second


async def test_data_compare_and_set(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    entry = await data.set("k", 1)
    updated = await data.set("k", 2, expected_version=entry.version)
    assert updated.version == 2
    with pytest.raises(VersionConflict):
        await data.set("k", 3, expected_version=entry.version)  # stale
    with pytest.raises(VersionConflict):
        await data.set("k", 3, expected_version=0)  # present, so not "only if absent"
    with pytest.raises(VersionConflict):
        await data.set("k", 3, expected_version=7)
    assert await data.entry("k") == updated


async def test_data_expected_version_zero_means_only_if_absent(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    lock = await data.set("lock", True, expected_version=0)
    assert lock.version == 1
    with pytest.raises(VersionConflict):
        await data.set("lock", False, expected_version=0)
    assert await data.get("lock") is True
    with pytest.raises(VersionConflict):  # absent key: only version 0 matches
        await data.set("other", 1, expected_version=1)
    assert await data.entry("other") is None


async def test_data_delete(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    entry = await data.set("k", "v")
    assert await data.delete("absent") is False
    with pytest.raises(VersionConflict):
        await data.delete("k", expected_version=entry.version + 1)
    assert await data.get("k") == "v"
    assert await data.delete("k", expected_version=entry.version) is True
    assert await data.get("k") is None
    assert await data.delete("k") is False
    again = await data.set("k", "new", expected_version=0)  # absent again after the delete
    assert again.value == "new"


async def test_data_items_in_key_order(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    for key, value in (("b", [1, 2]), ("a", {"x": None}), ("c", 1.5), ("d", "s")):
        await data.set(key, value)
    await data.set("b", [3])
    assert await data.items() == {"a": {"x": None}, "b": [3], "c": 1.5, "d": "s"}
    assert list(await data.items()) == ["a", "b", "c", "d"]
    assert [(e.key, e.version) for e in await data.entries()] == [
        ("a", 1),
        ("b", 2),
        ("c", 1),
        ("d", 1),
    ]


async def test_data_values_are_copies(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    value = {"list": [1, 2]}
    await data.set("k", value)
    value["list"].append(3)
    read = await data.get("k")
    assert read == {"list": [1, 2]}
    read["list"].append(4)
    assert await data.get("k") == {"list": [1, 2]}


async def test_data_writes_bump_the_session_version(hub: SessionHub) -> None:
    session = await hub.create()
    await hub.data(session.id).set("k", 1)
    after = await hub.get(session.id)
    assert after.version > session.version


# history


async def test_history_append_and_read(hub: SessionHub, clock: ManualClock) -> None:
    session = await hub.create()
    log = hub.history(session.id)
    first = await log.append("call", {"method": "Greeter/SayHello"})
    clock.advance(1)
    second = await log.append("reply")
    assert (first.seq, first.kind, first.at, first.payload) == (
        1,
        "call",
        clock() - 1,
        {"method": "Greeter/SayHello"},
    )
    assert (second.seq, second.payload, second.at) == (2, None, clock())
    assert await log.read() == [first, second]
    assert await log.read(newest_first=True) == [second, first]


async def test_history_pages(hub: SessionHub) -> None:
    session = await hub.create()
    log = hub.history(session.id)
    for i in range(25):
        await log.append("call" if i % 3 else "reply", {"i": i})

    async def pages(**options: object) -> list[list[int]]:
        out: list[list[int]] = []
        after = None
        while True:
            page = await log.read(after=after, limit=10, **options)  # type: ignore[arg-type]
            if not page:
                return out
            out.append([r.seq for r in page])
            after = page[-1].seq

    assert await pages() == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert await pages(newest_first=True) == [
        list(range(25, 15, -1)),
        list(range(15, 5, -1)),
        list(range(5, 0, -1)),
    ]
    calls = [i + 1 for i in range(25) if i % 3]
    replies = [i + 1 for i in range(25) if not i % 3]
    assert [seq for page in await pages(kind="call") for seq in page] == calls
    assert [seq for page in await pages(kind="reply", newest_first=True) for seq in page] == (
        replies[::-1]
    )
    assert [r.seq for r in await log.read(limit=3, newest_first=True)] == [25, 24, 23]
    assert [r.seq for r in await log.read(after=20, limit=3)] == [21, 22, 23]
    assert [r.seq for r in await log.read(after=4, newest_first=True)] == [3, 2, 1]
    assert await log.read(after=25) == []
    assert await log.read(after=1, newest_first=True) == []
    assert await log.read(kind="other") == []


async def test_history_counts(hub: SessionHub) -> None:
    session = await hub.create()
    log = hub.history(session.id)
    assert await log.counts() == {}
    assert await log.count() == 0
    for kind in ("call", "call", "reply", "call"):
        await log.append(kind)
    assert await log.counts() == {"call": 3, "reply": 1}
    assert await log.count() == 4
    assert await log.count("call") == 3
    assert await log.count("never") == 0


# isolation and lifetime


async def test_containers_are_private_to_their_session(hub: SessionHub) -> None:
    a = await hub.create()
    b = await hub.create()
    await hub.data(a.id).set("stub", "a's")
    await hub.history(a.id).append("call", "a's")
    assert await hub.data(b.id).get("stub") is None
    assert await hub.data(b.id).items() == {}
    assert await hub.history(b.id).read() == []
    assert await hub.history(b.id).counts() == {}
    await hub.data(b.id).set("stub", "b's")
    first_of_b = await hub.history(b.id).append("call", "b's")
    assert first_of_b.seq == 1  # sequences are per session
    assert await hub.data(a.id).get("stub") == "a's"
    assert [r.payload for r in await hub.history(a.id).read()] == ["a's"]


async def test_containers_are_deleted_with_the_session(hub: SessionHub) -> None:
    session = await hub.create("s1")
    await hub.data("s1").set("k", "old")
    await hub.history("s1").append("call", "old")
    await hub.end(session.id)
    with pytest.raises(SessionNotFound):
        await hub.data("s1").get("k")
    with pytest.raises(SessionNotFound):
        await hub.data("s1").items()
    with pytest.raises(SessionNotFound):
        await hub.history("s1").read()
    with pytest.raises(SessionNotFound):
        await hub.history("s1").count()
    with pytest.raises(SessionNotFound):
        await hub.data("s1").set("k", "new")
    with pytest.raises(SessionNotFound):
        await hub.history("s1").append("call")
    with pytest.raises(SessionNotFound):
        await hub.data("s1").delete("k")
    await hub.create("s1")  # the same id, a new session: nothing of the old one is left
    assert await hub.data("s1").items() == {}
    assert await hub.history("s1").read() == []
    assert (await hub.history("s1").append("call")).seq == 1


async def test_retained_containers_are_readable_not_writable(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    hub = await make_hub(retention=30)
    session = await hub.create()
    await hub.data(session.id).set("k", "v")
    await hub.history(session.id).append("call", 1)
    await hub.end(session.id)
    assert await hub.data(session.id).get("k") == "v"
    assert await hub.history(session.id).count("call") == 1
    with pytest.raises(SessionNotFound):
        await hub.data(session.id).set("k", "w")
    with pytest.raises(SessionNotFound):
        await hub.history(session.id).append("call")
    assert await hub.data(session.id).get("k") == "v"
    clock.advance(29.5)
    assert await hub.data(session.id).items() == {"k": "v"}
    assert [r.payload for r in await hub.history(session.id).read()] == [1]
    clock.advance(0.5)  # retention ends: unreadable at once, though no purge ran yet
    with pytest.raises(SessionNotFound):
        await hub.get(session.id)
    with pytest.raises(SessionNotFound):
        await hub.data(session.id).get("k")
    with pytest.raises(SessionNotFound):
        await hub.data(session.id).items()
    with pytest.raises(SessionNotFound):
        await hub.history(session.id).read()
    with pytest.raises(SessionNotFound):
        await hub.history(session.id).counts()


async def test_containers_of_unknown_sessions(hub: SessionHub) -> None:
    with pytest.raises(SessionNotFound):
        await hub.data("ghost").get("k")
    with pytest.raises(SessionNotFound):
        await hub.data("ghost").set("k", 1)
    with pytest.raises(SessionNotFound):
        await hub.history("ghost").append("call")
    with pytest.raises(SessionNotFound):
        await hub.history("ghost").counts()
    with pytest.raises(ValidationError):
        hub.data("a b")
    with pytest.raises(ValidationError):
        hub.history("")
    assert await hub.count() == 0
