"""Cleanup hooks: sync and async, once per session, in order, each under ``hook_timeout``; a hook that
raises or hangs is logged and counted, and the cleanup goes on."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from sessionhub import ManualClock, Session, SessionHub, SessionNotFound, ValidationError

from .helpers import HookLog, MakeHub


async def test_sync_and_async_hooks_run_once_in_order(hub: SessionHub, clock: ManualClock) -> None:
    calls: list[tuple[str, str, str, str]] = []
    threads: list[bool] = []

    def sync_hook(session: Session, reason: str) -> None:
        threads.append(threading.current_thread() is not threading.main_thread())
        calls.append(("sync", session.id, session.state, reason))

    async def async_hook(session: Session, reason: str) -> None:
        await asyncio.sleep(0)
        calls.append(("async", session.id, session.state, reason))

    assert hub.on_end(sync_hook) is sync_hook  # usable as a decorator
    hub.on_end(async_hook)
    session = await hub.create()
    assert calls == []
    assert await hub.end(session.id, "done") is True
    assert await hub.end(session.id, "done") is False
    assert calls == [
        ("sync", session.id, "TERMINATING", "done"),
        ("async", session.id, "TERMINATING", "done"),
    ]
    assert threads == [True]  # sync hooks run in a worker thread, not on the event loop
    snap = await hub.metrics()
    assert (snap.hook_calls_total, snap.hook_failures_total) == (2, 0)


async def test_a_callable_object_with_an_async_call_is_awaited(
    hub: SessionHub, hook_log: HookLog
) -> None:
    hub.on_end(hook_log)
    session = await hub.create()
    await hub.end(session.id)
    assert hook_log.reasons == {session.id: "ended"}


async def test_decorator_form(hub: SessionHub) -> None:
    seen: list[str] = []

    @hub.on_end
    async def release(session: Session, reason: str) -> None:
        seen.append(reason)

    session = await hub.create()
    await hub.end(session.id, "gone")
    assert seen == ["gone"]


async def test_a_raising_hook_is_logged_and_counted_and_cleanup_goes_on(
    hub: SessionHub, hook_log: HookLog, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_sync(session: Session, reason: str) -> None:
        raise RuntimeError("sync hook broke")

    async def broken_async(session: Session, reason: str) -> None:
        raise KeyError("async hook broke")

    hub.on_end(broken_sync)
    hub.on_end(broken_async)
    hub.on_end(hook_log)
    session = await hub.create()
    with caplog.at_level(logging.ERROR, logger="sessionhub"):
        assert await hub.end(session.id) is True
    assert hook_log.reasons == {session.id: "ended"}  # the later hook still ran
    with pytest.raises(SessionNotFound):  # and the session was cleaned
        await hub.get(session.id)
    messages = [r.getMessage() for r in caplog.records if r.name == "sessionhub"]
    assert len(messages) == 2
    assert all("failed" in m and session.id in m for m in messages)
    assert "sync hook broke" in messages[0]
    assert "async hook broke" in messages[1]
    snap = await hub.metrics()
    assert (snap.hook_calls_total, snap.hook_failures_total) == (3, 2)
    assert snap.ended_total == {"ended": 1}


async def test_a_hanging_async_hook_hits_the_timeout(
    make_hub: MakeHub, hook_log: HookLog, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(hook_timeout=0.05)
    cancelled = asyncio.Event()

    async def hangs(session: Session, reason: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    hub.on_end(hangs)
    hub.on_end(hook_log)
    session = await hub.create()
    with caplog.at_level(logging.ERROR, logger="sessionhub"):
        assert await hub.end(session.id) is True
    assert cancelled.is_set()  # the hanging hook was stopped, not left behind
    assert hook_log.reasons == {session.id: "ended"}
    assert await hub.exists(session.id) is False
    assert any("timed out" in r.getMessage() for r in caplog.records)
    snap = await hub.metrics()
    assert (snap.hook_calls_total, snap.hook_failures_total) == (2, 1)


async def test_a_hanging_sync_hook_hits_the_timeout(make_hub: MakeHub, hook_log: HookLog) -> None:
    hub = await make_hub(hook_timeout=0.05)
    release = threading.Event()

    def hangs(session: Session, reason: str) -> None:
        release.wait(30)  # a thread cannot be cancelled: the test lets it go at the end

    hub.on_end(hangs)
    hub.on_end(hook_log)
    session = await hub.create()
    try:
        assert await hub.end(session.id) is True
        assert hook_log.reasons == {session.id: "ended"}
        assert (await hub.metrics()).hook_failures_total == 1
    finally:
        release.set()


async def test_hooks_run_once_for_each_way_of_ending(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=10)
    hub.on_end(hook_log)
    await hub.create("ended")
    await hub.create("expired")
    await hub.create("child", parent_id="ended")
    await hub.create("cleaned")
    await hub.create("forever", idle_timeout=None)
    await hub.touch("forever")
    await hub.end("ended")
    await hub.transition("cleaned", "TERMINATE")
    await hub.transition("cleaned", "CLEAN")
    clock.advance(10)
    await hub.expire_due()
    await hub.end_all("stop")
    await hub.expire_due()
    await hub.end("ended")
    assert sorted(hook_log.ids) == ["child", "cleaned", "ended", "expired", "forever"]
    assert hook_log.reasons == {
        "ended": "ended",
        "child": "parent_ended",
        "cleaned": "ended",
        "expired": "expired",
        "forever": "stop",
    }
    snap = await hub.metrics()
    assert snap.hook_calls_total == 5
    assert snap.ended_total == {"ended": 2, "parent_ended": 1, "expired": 1, "stop": 1}


async def test_a_hook_sees_the_session_still_readable(hub: SessionHub) -> None:
    seen: list[tuple[bool, str]] = []

    async def inspect(session: Session, reason: str) -> None:
        current = await hub.get(session.id)  # data and record are still there during cleanup
        value = await hub.data(session.id).get("k")
        seen.append((current.live, value))

    hub.on_end(inspect)
    session = await hub.create()
    await hub.data(session.id).set("k", "v")
    await hub.end(session.id)
    assert seen == [(True, "v")]


async def test_on_end_refuses_what_cannot_be_called(hub: SessionHub) -> None:
    with pytest.raises(ValidationError):
        hub.on_end("not a hook")  # type: ignore[type-var]
    session = await hub.create()
    assert await hub.end(session.id) is True
    assert (await hub.metrics()).hook_calls_total == 0
