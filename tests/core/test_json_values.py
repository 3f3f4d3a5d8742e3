"""A generic guard over every store: any JSON value a caller may hand over (nested up to and past the
bound, integers at and past the int64 limits, floats at theirs, Unicode, long strings), stored as
details, a data value or a history payload, is either stored and then readable everywhere (``get``,
listings, the container reads, the event stream) or refused with a ``SessionHubError`` subclass:
never another exception, never a broken listing or stream."""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub import SessionEvent, SessionHub, SessionHubError
from sessionhub.stores import Store

from .helpers import next_event

INTS = st.integers() | st.sampled_from(
    [2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, 2**70, -(2**70), 10**400]
)
FLOATS = st.floats() | st.sampled_from(
    [sys.float_info.max, -sys.float_info.max, sys.float_info.min, 5e-324, -0.0, math.inf, math.nan]
)
TEXT = (
    st.text(max_size=20)
    | st.text(min_size=1_000, max_size=40_000, alphabet='aé😀"\\\n')
    | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "[{" * 100, '"}]' * 50])
)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT


def _nested(depth: int, container: str, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if container == "list" else {"k": value}
    return value


DEEP = st.builds(
    _nested,
    st.integers(0, 70) | st.sampled_from([63, 64, 65, 200, 1_200]),
    st.sampled_from(["list", "dict"]),
    SCALARS,
)
JSON_VALUES = DEEP | st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _normal(value: Any) -> Any:
    """What reading a stored value gives back: its JSON form (NaN and infinities are null)."""
    return msgspec.json.decode(msgspec.json.encode(value))


async def _created_event(events: AsyncGenerator[SessionEvent, None], sid: str) -> SessionEvent:
    while True:
        event = await next_event(events)
        if event.kind == "created" and event.session is not None and event.session.id == sid:
            return event


async def _store_and_read(
    hub: SessionHub, events: AsyncGenerator[SessionEvent, None], sid: str, value: Any
) -> None:
    try:
        session = await hub.create(sid, details={"v": value})
    except SessionHubError:
        session = await hub.create(sid)
        details: dict[str, Any] = {}
    else:
        details = {"v": _normal(value)}
    assert session.details == details
    assert (await hub.get(sid)).details == details
    assert (await _created_event(events, sid)).session == session
    assert sid in {s.id for s in (await hub.find(limit=1000)).items}

    data, history = hub.data(sid), hub.history(sid)
    try:
        entry = await data.set("k", value)
    except SessionHubError:
        assert await data.get("k", "absent") == "absent"
    else:
        assert entry.value == _normal(value)
        assert await data.get("k") == entry.value
        assert await data.items() == {"k": entry.value}
    try:
        record = await history.append("h", value)
    except SessionHubError:
        assert await history.read() == []
    else:
        assert record.payload == _normal(value)
        assert [r.payload for r in await history.read()] == [record.payload]


async def _listings_work(hub: SessionHub, created: int) -> None:
    seen, cursor = [], None
    while True:
        page = await hub.find(limit=7, cursor=cursor)
        seen += [session.id for session in page.items]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == created == await hub.count()


def test_any_json_value_is_stored_and_readable_or_refused(make_store: Callable[[], Store]) -> None:
    with asyncio.Runner() as runner:
        hub = SessionHub(make_store(), auto_expire=False)
        runner.run(hub.start())
        events = hub.subscribe()
        ids = (f"value-{n:05}" for n in itertools.count())
        created = 0

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(value=JSON_VALUES)
        def stored_or_refused(value: Any) -> None:
            nonlocal created
            runner.run(_store_and_read(hub, events, next(ids), value))
            created += 1

        stored_or_refused()
        runner.run(_listings_work(hub, created))
        runner.run(events.aclose())
        runner.run(hub.close())
