"""Limits: capacity, per-user quotas (reject or evict the oldest), requests in flight, payload sizes,
and unique labels held until the session is cleaned."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessionhub import (
    CapacityExceeded,
    DuplicateSession,
    Limits,
    ManualClock,
    PayloadTooLarge,
    QuotaExceeded,
    Session,
    SessionHub,
    TooManyRequests,
    ValidationError,
)

from .helpers import HookLog, MakeHub


async def test_limits_are_off_or_bounded_by_default(hub: SessionHub) -> None:
    limits = hub.limits
    assert (limits.max_sessions, limits.max_sessions_per_user) == (None, None)
    assert limits.max_requests_per_session is None
    assert (limits.max_details_bytes, limits.max_labels, limits.max_label_length) == (
        64 * 1024,
        64,
        256,
    )
    assert (limits.max_data_value_bytes, limits.max_history_record_bytes) == (
        1024 * 1024,
        64 * 1024,
    )
    for _ in range(200):
        await hub.create(user_id="ada")
    assert await hub.count(user_id="ada") == 200


async def test_max_sessions(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_sessions=3))
    sessions = [await hub.create() for _ in range(3)]
    with pytest.raises(CapacityExceeded) as info:
        await hub.create()
    assert (info.value.code, info.value.http_status) == ("capacity_exceeded", 503)
    assert await hub.count() == 3
    await hub.end(sessions[0].id)
    await hub.create()  # room again once one has ended
    with pytest.raises(CapacityExceeded):
        await hub.create()
    assert (await hub.metrics()).created_total == 4


async def test_quota_per_user_rejects(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_sessions_per_user=2))
    first = await hub.create(user_id="ada")
    await hub.create(user_id="ada")
    with pytest.raises(QuotaExceeded) as info:
        await hub.create(user_id="ada")
    assert info.value.http_status == 429
    await hub.create(user_id="bob")  # other users and anonymous sessions are not affected
    await hub.create()
    await hub.create()
    assert await hub.count(user_id="ada") == 2
    await hub.end(first.id)
    await hub.create(user_id="ada")
    assert await hub.count(user_id="ada") == 2


async def test_quota_evicts_the_oldest(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(limits=Limits(max_sessions_per_user=2, quota_policy="evict_oldest"))
    hub.on_end(hook_log)
    oldest = await hub.create("z-oldest", user_id="ada")
    clock.advance(1)
    middle = await hub.create("a-middle", user_id="ada")
    clock.advance(1)
    await hub.create("other", user_id="bob")
    newest = await hub.create("m-newest", user_id="ada")
    assert hook_log.reasons == {oldest.id: "evicted"}
    assert [s.id for s in (await hub.find(user_id="ada")).items] == [middle.id, newest.id]
    clock.advance(1)
    await hub.create("last", user_id="ada")
    assert hook_log.reasons == {oldest.id: "evicted", middle.id: "evicted"}
    assert await hub.count(user_id="ada") == 2
    assert await hub.count(user_id="bob") == 1
    assert (await hub.metrics()).ended_total == {"evicted": 2}


async def test_max_requests_per_session(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_requests_per_session=2))
    session = await hub.create()
    other = await hub.create()
    async with hub.track_request(session.id), hub.track_request(session.id) as second:
        with pytest.raises(TooManyRequests) as info:
            async with hub.track_request(session.id):
                pytest.fail("a third request must not enter")
        assert info.value.code == "too_many_requests"
        assert await hub.get(session.id) == second  # the refused request changed nothing
        async with hub.track_request(other.id) as elsewhere:  # the limit is per session
            assert elsewhere.active_requests == 1
    assert (await hub.get(session.id)).active_requests == 0
    async with hub.track_request(session.id) as again:
        assert again.active_requests == 1


async def test_details_size(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_details_bytes=100))
    with pytest.raises(PayloadTooLarge) as info:
        await hub.create(details={"blob": "x" * 200})
    assert (info.value.code, info.value.http_status) == ("payload_too_large", 413)
    assert await hub.count() == 0
    session = await hub.create(details={"blob": "x" * 60})
    with pytest.raises(PayloadTooLarge):  # each update fits, the merged details do not
        await hub.update(session.id, details={"more": "y" * 60})
    assert await hub.get(session.id) == session
    smaller = await hub.update(session.id, details={"more": "y" * 60}, remove_details=["blob"])
    assert set(smaller.details) == {"more"}


async def test_labels_count_and_length(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_labels=2, max_label_length=8))
    with pytest.raises(PayloadTooLarge):
        await hub.create(labels={"a": "1", "b": "2", "c": "3"})
    with pytest.raises(PayloadTooLarge):
        await hub.create(labels={"a": "123456789"})
    with pytest.raises(PayloadTooLarge):
        await hub.create(labels={"123456789": "a"})
    assert await hub.count() == 0
    session = await hub.create(labels={"a": "12345678", "b": "2"})
    with pytest.raises(PayloadTooLarge):  # merged: three labels
        await hub.update(session.id, labels={"c": "3"})
    with pytest.raises(PayloadTooLarge):
        await hub.update(session.id, labels={"a": "x" * 9})
    assert await hub.get(session.id) == session
    replaced = await hub.update(session.id, labels={"c": "3"}, remove_labels=["b"])
    assert dict(replaced.labels) == {"a": "12345678", "c": "3"}


async def test_data_value_size(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_data_value_bytes=50))
    session = await hub.create()
    data = hub.data(session.id)
    await data.set("k", "small")
    with pytest.raises(PayloadTooLarge):
        await data.set("k", "x" * 100)
    assert await data.get("k") == "small"
    assert (await data.entry("k")) is not None
    assert (await data.entry("k")).version == 1  # type: ignore[union-attr]
    with pytest.raises(PayloadTooLarge):
        await data.set("other", ["x"] * 30)
    assert await data.items() == {"k": "small"}


async def test_history_record_size(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_history_record_bytes=50))
    session = await hub.create()
    log = hub.history(session.id)
    await log.append("msg", {"text": "hi"})
    with pytest.raises(PayloadTooLarge):
        await log.append("msg", {"text": "x" * 100})
    assert await log.count() == 1
    assert [r.payload for r in await log.read()] == [{"text": "hi"}]


async def test_size_limits_can_be_switched_off(make_hub: MakeHub) -> None:
    hub = await make_hub(
        limits=Limits(
            max_details_bytes=None,
            max_labels=None,
            max_label_length=None,
            max_history_record_bytes=None,
        )
    )
    session = await hub.create(
        details={"blob": "x" * 100_000}, labels={f"k{i}": "v" * 300 for i in range(100)}
    )
    assert len(session.labels) == 100
    await hub.history(session.id).append("big", "y" * 100_000)
    assert await hub.history(session.id).count("big") == 1


async def test_bad_limits_are_refused() -> None:
    bad_limits: list[dict[str, Any]] = [
        {"max_sessions": 0},
        {"max_sessions_per_user": -1},
        {"max_requests_per_session": 1.5},
        {"max_labels": True},
        {"quota_policy": "drop"},
    ]
    for bad in bad_limits:
        with pytest.raises(ValidationError):
            Limits(**bad)


# unique labels


async def test_unique_label_refuses_a_second_live_session(make_hub: MakeHub) -> None:
    hub = await make_hub(unique_labels=["role"])
    auth = await hub.create(labels={"role": "auth"})
    with pytest.raises(DuplicateSession) as info:
        await hub.create(labels={"role": "auth"})
    assert info.value.http_status == 409
    assert await hub.count() == 1
    await hub.create(labels={"role": "chat"})  # another value
    await hub.create(labels={"role": "auth"}, namespace="other")  # another namespace
    await hub.create(labels={"team": "auth"})  # a label that is not unique
    await hub.create(labels={"team": "auth"})
    assert await hub.count(labels={"role": "auth"}) == 2
    await hub.end(auth.id)
    again = await hub.create(labels={"role": "auth"})
    assert again.labels["role"] == "auth"


async def test_unique_label_through_update(make_hub: MakeHub) -> None:
    hub = await make_hub(unique_labels=["role"])
    auth = await hub.create(labels={"role": "auth"})
    chat = await hub.create(labels={"role": "chat"})
    with pytest.raises(DuplicateSession):
        await hub.update(chat.id, labels={"role": "auth"})
    assert await hub.get(chat.id) == chat
    moved = await hub.update(auth.id, labels={"role": "billing"})  # frees "auth"
    assert moved.labels["role"] == "billing"
    await hub.update(chat.id, labels={"role": "auth"})  # frees "chat"
    await hub.create(labels={"role": "chat"})
    await hub.update(moved.id, remove_labels=["role"])  # frees "billing"
    await hub.create(labels={"role": "billing"})
    with pytest.raises(DuplicateSession):
        await hub.create(labels={"role": "auth"})


async def test_a_unique_label_stays_held_through_changes_that_leave_it(
    make_hub: MakeHub,
) -> None:
    # Linking, touching, tracking and updating other fields and labels keep the label's holder.
    hub = await make_hub(unique_labels=["role"])
    parent = await hub.create()
    auth = await hub.create(labels={"role": "auth", "team": "a"})
    await hub.link(parent.id, auth.id)
    with pytest.raises(DuplicateSession):
        await hub.create(labels={"role": "auth"})
    await hub.touch(auth.id)
    await hub.update(auth.id, details={"n": 1}, labels={"team": "b"}, idle_timeout=60)
    async with hub.track_request(auth.id):
        pass
    with pytest.raises(DuplicateSession):
        await hub.create(labels={"role": "auth"})
    with pytest.raises(DuplicateSession):
        await hub.update(parent.id, labels={"role": "auth"})
    assert [s.id for s in (await hub.find(labels={"role": "auth"})).items] == [auth.id]


async def test_unique_label_is_held_until_cleaned(make_hub: MakeHub) -> None:
    hub = await make_hub(unique_labels=["role"])
    in_hook = asyncio.Event()
    release = asyncio.Event()

    async def slow_cleanup(session: Session, reason: str) -> None:
        in_hook.set()
        await release.wait()

    hub.on_end(slow_cleanup)
    auth = await hub.create(labels={"role": "auth"})
    await hub.transition(auth.id, "TERMINATE")
    with pytest.raises(DuplicateSession):  # terminating is not cleaned
        await hub.create(labels={"role": "auth"})
    ending = asyncio.create_task(hub.end(auth.id))
    await asyncio.wait_for(in_hook.wait(), 10)
    with pytest.raises(DuplicateSession):  # hooks still running: still held
        await hub.create(labels={"role": "auth"})
    release.set()
    assert await ending is True
    await hub.create(labels={"role": "auth"})
