"""Ends cut short: a claimed end always finishes, whatever happens to the call that claimed it.

A caller cancelled in the middle of ``end()`` (an HTTP client that went away, a gRPC deadline, an
``asyncio.timeout``) must not leave the session claimed and never finished: it would refuse all
activity, never expire and never run the rest of its hooks. And an end whose finish fails (the
store went away) is finished by the next expiry pass, without running its hooks again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable

import pytest

from sessionhub import EventKind, ManualClock, Session, SessionHub, SessionNotFound
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .helpers import MakeHub, gone, next_event


class BlockingHook:
    """A cleanup hook that waits for ``release`` and records whether it ran to its end."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.completed: list[str] = []
        self.cancelled = 0

    async def __call__(self, session: Session, reason: str) -> None:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.completed.append(session.id)


async def _cancel_while_hook_runs(hook: BlockingHook, call: Awaitable[object]) -> None:
    """Run ``call`` until ``hook`` has started, then cancel it: the caller gives up midway."""
    task = asyncio.ensure_future(call)
    await asyncio.wait_for(hook.started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_end_whose_caller_is_cancelled_still_finishes(make_hub: MakeHub) -> None:
    hub = await make_hub()
    hook = BlockingHook()
    hub.on_end(hook)
    session = await hub.create(user_id="u1")
    ended = hub.subscribe(kinds=[EventKind.ENDED])

    await _cancel_while_hook_runs(hook, hub.end(session.id, "gone"))

    # The end goes on without its caller: it is still claimed, refusing activity, not re-runnable.
    assert await hub.end(session.id) is False
    with pytest.raises(SessionNotFound):
        await hub.touch(session.id)
    hook.release.set()
    event = await next_event(ended)
    await ended.aclose()
    assert event.session is not None
    assert event.session.id == session.id
    assert event.session.end_reason == "gone"
    assert hook.completed == [session.id]
    assert hook.cancelled == 0
    with pytest.raises(SessionNotFound):
        await hub.get(session.id)
    assert (await hub.find(user_id="u1")).items == []


async def test_a_transition_to_the_end_whose_caller_is_cancelled_still_finishes(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub()
    hook = BlockingHook()
    hub.on_end(hook)
    session = await hub.create()
    ended = hub.subscribe(kinds=[EventKind.ENDED])
    await hub.transition(session.id, hub.lifecycle.terminate)
    # terminate moves it to its terminating state; clean claims the end and finishes it.
    clean = hub.transition(session.id, hub.lifecycle.clean)
    await _cancel_while_hook_runs(hook, clean)
    hook.release.set()
    event = await next_event(ended)
    await ended.aclose()
    assert event.session is not None
    assert event.session.id == session.id
    assert hook.completed == [session.id]


async def test_close_finishes_an_end_whose_caller_left(make_hub: MakeHub) -> None:
    hub = await make_hub()
    hook = BlockingHook()
    hub.on_end(hook)
    session = await hub.create()
    await _cancel_while_hook_runs(hook, hub.end(session.id))
    closing = asyncio.ensure_future(hub.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the hook it must not cut short
    hook.release.set()
    await asyncio.wait_for(closing, 10)
    assert hook.completed == [session.id]
    assert hook.cancelled == 0


async def test_ending_many_with_a_timeout_leaves_none_half_ended(make_hub: MakeHub) -> None:
    hub = await make_hub()
    calls: list[str] = []

    async def slow_hook(session: Session, reason: str) -> None:
        await asyncio.sleep(0.2)
        calls.append(session.id)

    hub.on_end(slow_hook)
    ids = [(await hub.create()).id for _ in range(20)]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await asyncio.gather(*(hub.end(sid) for sid in ids))
    for _ in range(500):  # the ends go on without their callers
        if len(calls) == len(ids):
            break
        await asyncio.sleep(0.01)
    assert sorted(calls) == sorted(ids)
    assert [await gone(hub, sid) for sid in ids] == [True] * len(ids)


# The store going away between the hooks and the finish: a real Redis refusing FCALL (ACL).


@pytest.fixture
async def fcall_restored(redis_server: RedisServer) -> AsyncIterator[None]:
    """Whatever a test refused, the shared server runs functions again after it."""
    yield
    await _fcall(redis_server, allowed=True)


@pytest.fixture
async def redis_hub(redis_server: RedisServer, fcall_restored: None) -> SessionHub:
    store = RedisStore(redis_server.url + f"?prefix=cut{secrets.token_hex(4)}:")
    return SessionHub(store, clock=ManualClock(), auto_expire=False, idle_timeout=10)


async def _fcall(redis_server: RedisServer, allowed: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
    rule = b"+fcall" if allowed else b"-fcall"
    writer.write(b"*4\r\n$3\r\nACL\r\n$7\r\nSETUSER\r\n$7\r\ndefault\r\n$6\r\n" + rule + b"\r\n")
    await writer.drain()
    assert await reader.readline() == b"+OK\r\n"
    writer.close()
    await writer.wait_closed()


class RefusingHook:
    """A cleanup hook recording the sessions it ran for, which makes the Redis server refuse
    functions (so the finish that follows fails) at its ``at``-th call."""

    def __init__(self, redis_server: RedisServer, at: int) -> None:
        self.redis_server = redis_server
        self.at = at
        self.calls: list[str] = []

    async def __call__(self, session: Session, reason: str) -> None:
        self.calls.append(session.id)
        if len(self.calls) == self.at:
            await _fcall(self.redis_server, allowed=False)


async def test_an_end_whose_finish_failed_is_finished_by_the_next_pass(
    redis_hub: SessionHub, redis_server: RedisServer
) -> None:
    hub = redis_hub
    hook = RefusingHook(redis_server, at=1)  # the finish that follows fails
    hub.on_end(hook)
    async with hub:
        session = await hub.create()
        with pytest.raises(Exception, match="failed the finish_end operation"):
            await hub.end(session.id)
        await _fcall(redis_server, allowed=True)
        stuck = await hub.get(session.id)
        assert stuck is not None
        assert stuck.end_reason == "ended"
        assert await hub.expire_due() == 0  # nothing due: it finishes what it owes first
        assert await gone(hub, session.id)
        assert hook.calls == [session.id]  # the hooks did not run again


async def test_expired_ends_whose_finish_failed_are_finished_by_the_next_pass(
    redis_hub: SessionHub, redis_server: RedisServer
) -> None:
    hub = redis_hub
    hook = RefusingHook(redis_server, at=5)
    hub.on_end(hook)
    async with hub:
        ids = [(await hub.create()).id for _ in range(5)]
        assert isinstance(hub.clock, ManualClock)
        hub.clock.advance(11)
        with pytest.raises(Exception, match="failed the finish_end"):
            await hub.expire_due()
        await _fcall(redis_server, allowed=True)
        await hub.expire_due()
        assert [await gone(hub, sid) for sid in ids] == [True] * 5
        assert sorted(hook.calls) == sorted(ids)


async def test_the_expiry_task_goes_on_after_a_pass_that_failed(
    redis_server: RedisServer, fcall_restored: None
) -> None:
    store = RedisStore(redis_server.url + f"?prefix=cut{secrets.token_hex(4)}:")
    hub = SessionHub(store, idle_timeout=0.2, poll_interval=0.05)
    hook = RefusingHook(redis_server, at=1)  # this pass's finish fails
    hub.on_end(hook)
    async with hub:
        first = await hub.create()
        for _ in range(500):
            if hook.calls:
                break
            await asyncio.sleep(0.01)
        await _fcall(redis_server, allowed=True)
        second = await hub.create()
        for _ in range(500):  # the task finishes what it owes and expires what comes due
            if await gone(hub, first.id) and await gone(hub, second.id):
                break
            await asyncio.sleep(0.01)
        assert await gone(hub, first.id)
        assert await gone(hub, second.id)
        assert hook.calls == [first.id, second.id]
