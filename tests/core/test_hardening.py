"""Issue 8, the hub and the stores: bounds on what can be stored, sessions that are ending, free-text
end reasons, short error messages, and the expiry task's corner cases. Every test here runs against
every store unless it says otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sessionhub import (
    Limits,
    ManualClock,
    PayloadTooLarge,
    Session,
    SessionHub,
    SessionHubError,
    SessionNotFound,
    ValidationError,
    connect,
)
from sessionhub.client import AsyncClient
from sessionhub.stores import MemoryStore
from sessionhub.stores._base import Change

from .helpers import HookLog, MakeHub, next_event, next_events

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def nested(depth: int, container: str = "list") -> Any:
    """A JSON value whose containers nest ``depth`` deep (0: a plain number)."""
    value: Any = 0
    for _ in range(depth):
        value = [value] if container == "list" else {"k": value}
    return value


# One nesting bound (64) for every value a caller stores


StoreValue = Callable[[SessionHub, Any], Awaitable[Any]]


async def _create_details(hub: SessionHub, value: Any) -> Any:
    return await hub.create(details={"v": value})  # the details object is the first level


async def _update_details(hub: SessionHub, value: Any) -> Any:
    session = await hub.create()
    return await hub.update(session.id, details={"v": value})


async def _data_value(hub: SessionHub, value: Any) -> Any:
    session = await hub.create()
    return await hub.data(session.id).set("k", [value])  # wrapped, so both forms get a level


async def _history_payload(hub: SessionHub, value: Any) -> Any:
    session = await hub.create()
    return await hub.history(session.id).append("call", [value])


STORE_VALUE: dict[str, StoreValue] = {
    "create details": _create_details,
    "update details": _update_details,
    "data value": _data_value,
    "history payload": _history_payload,
}


@pytest.mark.parametrize("container", ["list", "dict"])
@pytest.mark.parametrize("where", STORE_VALUE)
async def test_values_nested_deeper_than_the_bound_are_refused(
    hub: SessionHub, where: str, container: str
) -> None:
    store_value = STORE_VALUE[where]
    assert Limits.max_json_depth == 64
    await store_value(hub, nested(63, container))  # 64 levels with the wrapper: accepted
    for depth in (64, 976, 5000):
        with pytest.raises(ValidationError, match="more than 64 deep"):
            await store_value(hub, nested(depth, container))


async def test_nesting_bound_ignores_brackets_inside_strings(hub: SessionHub) -> None:
    text = "[{" * 500
    session = await hub.create(details={"text": text})
    assert (await hub.get(session.id)).details == {"text": text}


# Counters are signed 64-bit on every store


async def test_counters_hold_exactly_at_both_ends_of_int64(hub: SessionHub) -> None:
    sid = (await hub.create()).id
    assert await hub.incr(sid, "up", INT64_MAX) == INT64_MAX
    assert await hub.incr(sid, "up", -1) == INT64_MAX - 1  # exact, not a rounded double
    assert await hub.incr(sid, "up", 1) == INT64_MAX
    assert await hub.incr(sid, "down", INT64_MIN) == INT64_MIN
    assert await hub.incr(sid, "down", 1) == INT64_MIN + 1
    assert await hub.incr(sid, "down", -1) == INT64_MIN
    assert (await hub.get(sid)).counters == {"up": INT64_MAX, "down": INT64_MIN}


@pytest.mark.parametrize(
    ("start", "by"),
    [
        (INT64_MAX, 1),
        (1, INT64_MAX),
        (INT64_MIN, -1),
        (-2, INT64_MAX * -1),
        (0, 2**63),
        (0, -(2**63) - 1),
    ],
    ids=repr,
)
async def test_an_overflowing_increment_is_refused_and_changes_nothing(
    hub: SessionHub, start: int, by: int
) -> None:
    sid = (await hub.create()).id
    await hub.incr(sid, "n", start)
    await hub.incr(sid, "other", 7)
    before = await hub.get(sid)
    with pytest.raises(ValidationError, match="64-bit"):
        await hub.incr(sid, "n", by)
    assert await hub.get(sid) == before


async def test_a_change_of_several_counters_is_all_or_nothing(hub: SessionHub) -> None:
    """Through the store contract: one change may carry several counters (the Redis store must
    undo the ones it applied before the one that overflows)."""
    sid = (await hub.create()).id
    await hub.incr(sid, "b", INT64_MAX)
    before = await hub.get(sid)
    change = Change(now=before.updated_at, counters={"a": 5, "b": 1, "c": 1}, touch=True)
    with pytest.raises(ValidationError, match="counter b at 9223372036854775807 cannot change"):
        await hub.store.modify(sid, change)
    assert await hub.get(sid) == before


# A session being ended accepts no activity


ACTIVITIES: dict[str, Callable[[SessionHub, str], Awaitable[Any]]] = {
    "touch": lambda hub, sid: hub.touch(sid),
    "incr": lambda hub, sid: hub.incr(sid, "n"),
    "update": lambda hub, sid: hub.update(sid, details={"a": 1}),
    "transition": lambda hub, sid: hub.transition(sid, "SPAWN"),
    "data.set": lambda hub, sid: hub.data(sid).set("k", 1),
    "data.delete": lambda hub, sid: hub.data(sid).delete("k"),
    "history.append": lambda hub, sid: hub.history(sid).append("call", 1),
}


async def _track(hub: SessionHub, sid: str) -> None:
    async with hub.track_request(sid):
        pytest.fail("a session being ended let a request in")


ACTIVITIES["track_request"] = _track


@pytest.mark.parametrize("how", ["end", "expiry"])
async def test_a_session_being_ended_accepts_no_activity(
    make_hub: MakeHub, clock: ManualClock, how: str
) -> None:
    hub = await make_hub()
    outcomes: dict[str, object] = {}
    reads: list[object] = []

    @hub.on_end
    async def try_everything(session: Session, reason: str) -> None:
        for name, activity in ACTIVITIES.items():
            try:
                outcomes[name] = await activity(hub, session.id)
            except SessionHubError as exc:
                outcomes[name] = exc
        reads.append((await hub.get(session.id)).state)
        reads.append(await hub.data(session.id).get("k"))
        reads.append(await hub.history(session.id).count())

    session = await hub.create(ttl=10)
    await hub.data(session.id).set("k", "v")
    if how == "end":
        assert await hub.end(session.id, "bye")
    else:
        clock.advance(11)
        assert await hub.expire_due() == 1
    assert set(outcomes) == set(ACTIVITIES)
    refused = {name: type(outcome) for name, outcome in outcomes.items()}
    assert refused == dict.fromkeys(ACTIVITIES, SessionNotFound)
    assert all("being ended" in str(outcome) for outcome in outcomes.values())
    assert reads == ["TERMINATING", "v", 0]
    assert not await hub.exists(session.id)


# End reasons are free text


@pytest.mark.parametrize(
    "reason", ["user requested", "Benutzer hat beendet (ü)", "用户请求", "x" * 200, "a/b:c-d_e.f"]
)
async def test_end_reasons_are_free_printable_text(
    make_hub: MakeHub, hook_log: HookLog, reason: str
) -> None:
    hub = await make_hub(retention=60)
    hub.on_end(hook_log)
    session = await hub.create()
    events = hub.subscribe(kinds=["ended"])
    assert await hub.end(session.id, reason)
    assert hook_log.reasons == {session.id: reason}
    assert (await next_event(events)).session.end_reason == reason  # type: ignore[union-attr]
    assert (await hub.get(session.id)).end_reason == reason
    assert (await hub.metrics()).ended_total == {reason: 1}
    await events.aclose()


async def test_built_in_end_reasons_are_unchanged(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    parent = await hub.create("parent")
    await hub.create("child", parent_id=parent.id)
    await hub.create("idle", idle_timeout=5)
    clock.advance(6)
    await hub.expire_due()
    await hub.end(parent.id)
    assert hook_log.reasons == {"idle": "expired", "child": "parent_ended", "parent": "ended"}


# create(id=...)


async def test_create_takes_the_id_as_id_or_positionally(hub: SessionHub) -> None:
    assert (await hub.create(id="by-keyword")).id == "by-keyword"
    assert (await hub.create("positional")).id == "positional"
    assert await hub.exists("by-keyword")
    with pytest.raises(ValidationError, match="once"):
        await hub.create("one", id="two")
    assert not await hub.exists("one")
    assert not await hub.exists("two")


# Unknown states and empty kinds


async def test_an_unknown_state_filter_names_the_lifecycle_states(hub: SessionHub) -> None:
    await hub.create(activate=True)
    for call in (hub.find, hub.count):
        with pytest.raises(ValidationError) as info:
            await call(state="RUNNING")
        for state in ("CREATED", "SPAWNING", "ACTIVE", "TERMINATING", "CLEANED"):
            assert state in str(info.value)
    assert len((await hub.find(state="active")).items) == 1
    assert await hub.count(state="CLEANED", include_ended=True) == 0


@pytest.mark.parametrize("kinds", [[], (), set(), None])
async def test_subscribing_to_no_kinds_means_every_kind(hub: SessionHub, kinds: Any) -> None:
    events = hub.subscribe(kinds=kinds)
    session = await hub.create()
    await hub.update(session.id, details={"a": 1})
    await hub.transition(session.id, "SPAWN")
    await hub.end(session.id)
    got = await next_events(events, 5)
    assert [event.kind for event in got] == [
        "created",
        "updated",
        "transitioned",
        "transitioned",
        "ended",
    ]
    await events.aclose()


# Error messages quote a short prefix of a bad input

HUGE = "i" * 1_500_000
HUGE_TEXT = "é " * 750_000


def _short(exc: BaseException) -> str:
    message = str(exc)
    assert len(message) < 400, message[:500]
    return message


HUGE_CALLS: dict[str, Callable[[SessionHub, str], Awaitable[Any]]] = {
    "create": lambda hub, sid: hub.create(HUGE),
    "create id=": lambda hub, sid: hub.create(id=HUGE),
    "create user": lambda hub, sid: hub.create(user_id=HUGE),
    "get": lambda hub, sid: hub.get(HUGE),
    "touch": lambda hub, sid: hub.touch(HUGE),
    "incr": lambda hub, sid: hub.incr(HUGE, "n"),
    "update": lambda hub, sid: hub.update(HUGE, details={"a": 1}),
    "transition": lambda hub, sid: hub.transition(HUGE, "SPAWN"),
    "end": lambda hub, sid: hub.end(HUGE),
    "data": lambda hub, sid: hub.data(HUGE).get("k"),
    "history": lambda hub, sid: hub.history(HUGE).read(),
    "link": lambda hub, sid: hub.link(sid, HUGE),
    "find": lambda hub, sid: hub.find(user_id=HUGE),
    "find state": lambda hub, sid: hub.find(state=HUGE),
    "subscribe": lambda hub, sid: _first(hub.subscribe(session_id=HUGE)),
    "end reason": lambda hub, sid: hub.end(sid, HUGE_TEXT),
    "counter name": lambda hub, sid: hub.incr(sid, HUGE),
    "data key": lambda hub, sid: hub.data(sid).set(HUGE_TEXT, 1),
    "history kind": lambda hub, sid: hub.history(sid).append(HUGE, 1),
    "label value": lambda hub, sid: hub.update(sid, labels={"k": HUGE}),
    "state event": lambda hub, sid: hub.transition(sid, HUGE),
}


async def _first(events: Any) -> Any:
    return await anext(events)


@pytest.mark.parametrize("call", HUGE_CALLS)
async def test_a_huge_input_gets_a_short_error(hub: SessionHub, call: str) -> None:
    sid = (await hub.create()).id
    with pytest.raises((ValidationError, PayloadTooLarge)) as info:
        await HUGE_CALLS[call](hub, sid)
    assert "i" * 100 not in _short(info.value)


async def test_an_unknown_id_is_not_found_with_a_short_message(hub: SessionHub) -> None:
    sid = "u" * 200
    with pytest.raises(SessionNotFound) as info:
        await hub.touch(sid)
    assert "…(200 chars)" in _short(info.value)


# connect() takes the same keyword arguments for every URL (one rule: what does not apply is
# refused with ValidationError). No store fixture: runs once.


async def test_connect_refuses_options_that_do_not_apply() -> None:
    with pytest.raises(ValidationError, match="token"):
        connect("memory://", token="x" * 32)
    with pytest.raises(ValidationError, match="idle_timeout"):
        connect("http://127.0.0.1:1", idle_timeout=5)
    with pytest.raises(ValidationError, match="idle_timeout"):
        connect("grpc://127.0.0.1:1", idle_timeout=5)
    hub = connect("memory://", idle_timeout=5)
    assert isinstance(hub, SessionHub)
    assert hub.idle_timeout == 5
    client = connect("http://127.0.0.1:1", token="t" * 32, timeout=3)
    assert isinstance(client, AsyncClient)
    assert client.timeout == 3
    await client.close()


# The expiry task's corner cases. The first two drive the expiry task itself (a memory store and
# the real clock); the others run on every store.


class CountingStore(MemoryStore):
    """A memory store that counts expiry passes (``claim_expired`` calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    async def claim_expired(self, now: float, moves: Any, limit: int) -> list[Session]:
        self.passes += 1
        return await super().claim_expired(now, moves, limit)


async def test_activity_during_an_expiry_pass_does_not_start_another() -> None:
    store = CountingStore()
    started, release = asyncio.Event(), asyncio.Event()

    async with SessionHub(store, poll_interval=60) as hub:

        @hub.on_end
        async def slow(session: Session, reason: str) -> None:
            started.set()
            await release.wait()

        ended = hub.subscribe(kinds=["ended"])
        await hub.create("soon", ttl=0.05)
        await asyncio.wait_for(started.wait(), 10)  # a pass is in its hook now
        for i in range(5):
            session = await hub.create(f"later-{i}")  # deadlines in 30 minutes
            await hub.touch(session.id)
        passes = store.passes
        release.set()
        event = await next_event(ended)
        assert event.session is not None
        assert event.session.id == "soon"
        await asyncio.sleep(0.3)
        assert store.passes == passes  # no second pass for deadlines far away
        await ended.aclose()


async def test_close_finishes_the_ends_an_expiry_pass_claimed() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []
    hub = SessionHub("memory://", poll_interval=60)

    @hub.on_end
    async def slow(session: Session, reason: str) -> None:
        started.set()
        await release.wait()
        finished.append(reason)

    await hub.start()
    await hub.create("expiring", ttl=0.05)
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(hub.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the pass's hook, not cutting it short
    release.set()
    await asyncio.wait_for(closing, 10)
    assert finished == ["expired"]
    assert await hub.store.get("expiring") is None  # ended and gone, not stranded in TERMINATING


async def test_a_parent_and_its_children_expiring_together_are_cleaned_leaves_first(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    # Ids in the order of the expiry index, which is the reverse of the tree.
    await hub.create("a-root", ttl=10)
    await hub.create("b-child", parent_id="a-root", ttl=10)
    await hub.create("c-grandchild", parent_id="b-child", ttl=10)
    await hub.create("d-other", ttl=10)
    clock.advance(11)
    assert await hub.expire_due() == 4
    order = hook_log.ids
    assert order.index("c-grandchild") < order.index("b-child") < order.index("a-root")
    assert set(hook_log.reasons.values()) == {"expired"}


async def test_a_hook_that_runs_expiry_does_not_deadlock(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    hub = await make_hub(hook_timeout=5)
    inner: list[int] = []

    @hub.on_end
    async def expire_more(session: Session, reason: str) -> None:
        inner.append(await hub.expire_due())

    await hub.create("a", ttl=10)
    await hub.create("b", ttl=20)
    clock.advance(11)
    assert await asyncio.wait_for(hub.expire_due(), 10) == 1
    assert inner == [0]
    assert (await hub.metrics()).hook_failures_total == 0
    clock.advance(10)
    assert await hub.expire_due() == 1  # and later passes still run


@pytest.mark.parametrize("seconds", [1e12, 7.9e307, 1.7976931348623157e308])
async def test_timeouts_past_the_bound_are_refused_and_create_nothing(
    hub: SessionHub, seconds: float
) -> None:
    # Found by schemathesis: ttl and idle_timeout near the float limit made an infinite deadline
    # that the memory store could not schedule (a 500 over HTTP).
    with pytest.raises(ValidationError, match="below"):
        await hub.create(ttl=seconds)
    with pytest.raises(ValidationError, match="below"):
        await hub.create(idle_timeout=seconds)
    assert await hub.count() == 0
    session = await hub.create(ttl=9e11, idle_timeout=9e11)  # just inside: a finite deadline
    assert session.expires_at is not None
    with pytest.raises(ValidationError):
        await hub.update(session.id, ttl=seconds)
    assert (await hub.get(session.id)).ttl == 9e11
