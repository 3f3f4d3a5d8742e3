"""The hub against a plain Python model, driven by hypothesis: random creates, updates, transitions,
touches, increments, requests, ends (some whose caller is cancelled midway), and clock advances with ``expire_due``. After every step the
live set, each session's state, version, counters, details and deadline, the counts, the census and
the hook calls must match the model."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sessionhub import (
    DuplicateSession,
    ManualClock,
    SessionHub,
    SessionNotFound,
    TransitionError,
    VersionConflict,
)
from sessionhub.stores import Store

from .helpers import HookLog

T = TypeVar("T")

VALID = {
    ("CREATED", "SPAWN"): "SPAWNING",
    ("CREATED", "TERMINATE"): "TERMINATING",
    ("SPAWNING", "ACTIVATE"): "ACTIVE",
    ("SPAWNING", "TERMINATE"): "TERMINATING",
    ("ACTIVE", "TERMINATE"): "TERMINATING",
    ("TERMINATING", "TERMINATE"): "TERMINATING",
}
IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
USERS = st.sampled_from([None, "u1", "u2"])
EVENTS = st.sampled_from(["SPAWN", "ACTIVATE", "TERMINATE", "CLEAN"])


@dataclass
class Model:
    state: str
    version: int
    created_at: float
    last_activity: float
    idle: float | None
    ttl: float | None
    user: str | None
    counters: dict[str, int] = field(default_factory=dict)
    details: dict[str, int] = field(default_factory=dict)

    def deadline(self, in_flight: bool = False) -> float | None:
        idle = None if self.idle is None or in_flight else self.last_activity + self.idle
        cap = None if self.ttl is None else self.created_at + self.ttl
        deadlines = [d for d in (idle, cap) if d is not None]
        return min(deadlines) if deadlines else None


class HubMachine(RuleBasedStateMachine):
    """One hub per example, on its own event loop: every rule runs on that loop, and the hub is
    created and closed inside it."""

    def __init__(self, make_store: Callable[[], Store], hubs: int = 1) -> None:
        """``hubs`` hubs, each over its own ``make_store()`` (two processes sharing one store when
        the stores are instances of one shared store); every rule uses ``self.hub``, the hub whose
        turn it is (``switch``)."""
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = ManualClock()
        self.hooks = HookLog()
        self.live: dict[str, Model] = {}
        self.expected_hooks: Counter[tuple[str, str]] = Counter()
        self.hook_calls = 0

        async def start() -> SessionHub:
            hub = SessionHub(make_store(), clock=self.clock, auto_expire=False)
            hub.on_end(self.hooks)
            await hub.start()
            return hub

        self.hubs = [self.run(start()) for _ in range(hubs)]
        self.hub = self.hubs[0]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            for hub in self.hubs:
                self.run(hub.close())
        finally:
            self.runner.close()

    def _ended(self, sid: str, reason: str) -> None:
        del self.live[sid]
        self.expected_hooks[sid, reason] += 1
        self.hook_calls += 1

    def _expire(self, in_flight: str | None = None) -> list[str]:
        now = self.clock()
        due = []
        for sid, model in self.live.items():
            deadline = model.deadline(in_flight=sid == in_flight)
            if deadline is not None and deadline <= now:
                due.append(sid)
        for sid in due:
            self._ended(sid, "expired")
        return due

    # rules

    @rule(
        sid=IDS,
        idle=st.sampled_from([None, 5.0, 10.0, 30.0]),
        ttl=st.sampled_from([None, 20.0, 60.0]),
        activate=st.booleans(),
        user=USERS,
    )
    def create(
        self, sid: str, idle: float | None, ttl: float | None, activate: bool, user: str | None
    ) -> None:
        call = self.hub.create(sid, idle_timeout=idle, ttl=ttl, activate=activate, user_id=user)
        if sid in self.live:
            with pytest.raises(DuplicateSession):
                self.run(call)
            return
        session = self.run(call)
        now = self.clock()
        model = Model("ACTIVE" if activate else "CREATED", 1, now, now, idle, ttl, user)
        self.live[sid] = model
        assert (session.state, session.version) == (model.state, 1)

    @rule(
        sid=IDS,
        key=st.sampled_from(["x", "y"]),
        value=st.integers(-5, 5),
        mode=st.sampled_from(["none", "current", "stale"]),
    )
    def update(self, sid: str, key: str, value: int, mode: str) -> None:
        model = self.live.get(sid)
        expected = None
        if model is not None and mode != "none":
            expected = model.version if mode == "current" else model.version + 1
        call = self.hub.update(sid, details={key: value}, expected_version=expected)
        if model is None:
            with pytest.raises(SessionNotFound):
                self.run(call)
        elif mode == "stale":
            with pytest.raises(VersionConflict):
                self.run(call)
        else:
            session = self.run(call)
            model.details[key] = value
            model.version += 1
            assert session.version == model.version

    @rule(sid=IDS, event=EVENTS)
    def transition(self, sid: str, event: str) -> None:
        model = self.live.get(sid)
        call = self.hub.transition(sid, event)
        if model is None:
            with pytest.raises(SessionNotFound):
                self.run(call)
        elif event == "CLEAN" and model.state == "TERMINATING":
            session = self.run(call)
            assert (session.state, session.live) == ("CLEANED", False)
            self._ended(sid, "ended")
        elif (model.state, event) in VALID:
            session = self.run(call)
            model.state = VALID[model.state, event]
            model.version += 1
            assert (session.state, session.version) == (model.state, model.version)
        else:
            with pytest.raises(TransitionError) as info:
                self.run(call)
            assert (info.value.state, info.value.event) == (model.state, event)

    @rule(sid=IDS)
    def touch(self, sid: str) -> None:
        model = self.live.get(sid)
        if model is None:
            with pytest.raises(SessionNotFound):
                self.run(self.hub.touch(sid))
            return
        session = self.run(self.hub.touch(sid))
        model.last_activity = self.clock()
        model.version += 1
        assert session.version == model.version

    @rule(sid=IDS, counter=st.sampled_from(["m", "n"]), by=st.integers(-3, 3))
    def incr(self, sid: str, counter: str, by: int) -> None:
        model = self.live.get(sid)
        if model is None:
            with pytest.raises(SessionNotFound):
                self.run(self.hub.incr(sid, counter, by))
            return
        value = self.run(self.hub.incr(sid, counter, by))
        model.counters[counter] = model.counters.get(counter, 0) + by
        model.last_activity = self.clock()
        model.version += 1
        assert value == model.counters[counter]

    @rule(sid=IDS, reason=st.sampled_from(["ended", "bye"]))
    def end(self, sid: str, reason: str) -> None:
        ended = self.run(self.hub.end(sid, reason))
        assert ended is (sid in self.live)
        if ended:
            self._ended(sid, reason)

    @rule(sid=IDS, reason=st.sampled_from(["ended", "bye"]), steps=st.integers(1, 4))
    def end_cut_short(self, sid: str, reason: str, steps: int) -> None:
        """An end whose caller is cancelled once it began still ends the session, once."""
        hub = self.hub

        async def cut() -> None:
            ending = asyncio.create_task(hub.end(sid, reason))
            for _ in range(steps):  # it begins, and may be anywhere in its claim or hooks
                await asyncio.sleep(0)
            ending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ending
            for _ in range(1000):  # the end goes on without its caller
                if not await hub.exists(sid):
                    return
                await asyncio.sleep(0.005)

        self.run(cut())
        if sid in self.live:
            self._ended(sid, reason)

    @rule(seconds=st.sampled_from([0.0, 1.0, 4.0, 5.0, 10.0, 11.0, 25.0, 61.0]))
    def advance_and_expire(self, seconds: float) -> None:
        self.clock.advance(seconds)
        expired = self.run(self.hub.expire_due())
        assert expired == len(self._expire())

    @rule(sid=IDS, seconds=st.sampled_from([1.0, 10.0, 30.0, 61.0]))
    def request_across_time(self, sid: str, seconds: float) -> None:
        """A request in flight while time passes: only the ttl can end its session meanwhile."""
        model = self.live.get(sid)
        hub = self.hub

        async def request() -> tuple[int, int]:
            async with hub.track_request(sid) as inside:
                self.clock.advance(seconds)
                expired = await hub.expire_due()
            return inside.version, expired

        if model is None:
            with pytest.raises(SessionNotFound):
                self.run(request())
            return
        model.last_activity = self.clock()
        model.version += 1
        entered_version, expired = self.run(request())
        assert entered_version == model.version
        assert expired == len(self._expire(in_flight=sid))
        if sid in self.live:  # the exit is activity too
            model.last_activity = self.clock()
            model.version += 1

    # the model and the hub agree

    @invariant()
    def hub_matches_model(self) -> None:
        hub, live = self.hub, self.live

        async def check() -> None:
            page = await hub.find(limit=1000)
            assert page.cursor is None
            assert [s.id for s in page.items] == sorted(live)
            assert await hub.count() == len(live)
            for session in page.items:
                model = live[session.id]
                assert session.state == model.state
                assert session.version == model.version
                assert session.user_id == model.user
                assert dict(session.counters) == model.counters
                assert dict(session.details) == model.details
                assert session.last_activity_at == model.last_activity
                assert session.expires_at == model.deadline()
                assert session.active_requests == 0
                assert await hub.get(session.id) == session
            for user in ("u1", "u2"):
                owned = sum(m.user == user for m in live.values())
                assert await hub.count(user_id=user) == owned
            census = Counter(("default", m.state) for m in live.values())
            snap = await hub.metrics()
            assert snap.sessions == dict(census)
            assert snap.live_sessions == len(live)
            hook_calls = [(await each.metrics()).hook_calls_total for each in self.hubs]
            assert sum(hook_calls) == self.hook_calls

        self.run(check())
        assert Counter((s.id, r) for s, r in self.hooks.calls) == self.expected_hooks


def test_hub_against_a_model(make_store: Callable[[], Store]) -> None:
    class Machine(HubMachine):
        def __init__(self) -> None:
            super().__init__(make_store)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=75,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
