"""A Morgan user's random session traffic against a plain model of Morgan's semantics (its
``Session`` dataclass and cleanup loop), driven by hypothesis, on every store.

Writes go to the live objects exactly as Morgan code makes them (``add_request``, in-place
``metadata`` changes, ``last_activity`` assignments); a cleanup run is ``await manager.sync()`` then
``hub.expire_due()``, what the cleanup loop and the hub's expiry task do. Morgan's loop ends a
session idle for more than the timeout, the hub at its deadline: the clock moves in steps that keep
the two apart from that one instant (see ``STEPS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sessionhub import ManualClock, SessionHub
from sessionhub.compat.morgan import Session, SessionManager
from sessionhub.stores import Store

T = TypeVar("T")
TIMEOUT = 3600.0
# Clock steps; any sum of them plus a backdating below is never exactly one timeout.
STEPS = st.sampled_from([7.5, 600.25, 3599.5, 3600.5, 7200.125])
BACKDATE_MINUTES = st.sampled_from([1, 30, 59, 61, 120])
USERS = st.sampled_from([None, "u1", "user 2", "ü"])
KEYS = st.sampled_from(["a", "b"])
REQUESTS = st.sampled_from(["req-1", "req-2"])


@dataclass
class Model:
    """What Morgan's manager holds for one session."""

    user: str | None
    order: int
    last_activity: float
    metadata: dict[str, int] = field(default_factory=dict)
    requests: set[str] = field(default_factory=set)


class MorganUser(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self, make_store: Callable[[], Store]) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = ManualClock()
        self.live: dict[str, Model] = {}
        self.objects: dict[str, Session] = {}
        self.created = self.expired = self.cleaned = 0

        async def start() -> SessionManager:
            hub = SessionHub(make_store(), clock=self.clock, auto_expire=False)
            manager = SessionManager(hub=hub)
            await manager.start()
            return manager

        self.manager = self.run(start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        async def stop() -> None:
            await self.manager.stop()
            await self.manager.hub.close()

        try:
            self.run(stop())
        finally:
            self.runner.close()

    def now(self) -> float:
        return self.clock()

    # rules

    @rule(target=sessions, user=USERS, value=st.integers(0, 9))
    def create(self, user: str | None, value: int) -> str:
        session = self.run(self.manager.create_session(user_id=user, metadata={"a": value}))
        self.created += 1
        self.live[session.session_id] = Model(user, self.created, self.now(), {"a": value})
        self.objects[session.session_id] = session
        return session.session_id

    @rule(sid=sessions)
    def get_session(self, sid: str) -> None:
        found = self.run(self.manager.get_session(sid))
        if sid in self.live:
            assert found is self.objects[sid]
            self.live[sid].last_activity = self.now()
        else:
            assert found is None

    @rule(user=USERS)
    def get_session_by_user(self, user: str | None) -> None:
        found = self.run(self.manager.get_session_by_user(user))  # type: ignore[arg-type]
        mine = [(m.order, sid) for sid, m in self.live.items() if user and m.user == user]
        if not mine:
            assert found is None
            return
        newest = max(mine)[1]
        assert found is self.objects[newest]
        self.live[newest].last_activity = self.now()

    @rule(sid=sessions, key=KEYS, value=st.integers(0, 9))
    def write_metadata(self, sid: str, key: str, value: int) -> None:
        if sid in self.live:
            self.objects[sid].metadata[key] = value
            self.live[sid].metadata[key] = value

    @rule(sid=sessions, request_id=REQUESTS)
    def add_request(self, sid: str, request_id: str) -> None:
        if sid in self.live:
            self.objects[sid].add_request(request_id)
            self.live[sid].requests.add(request_id)
            self.live[sid].last_activity = self.now()

    @rule(sid=sessions, request_id=REQUESTS)
    def remove_request(self, sid: str, request_id: str) -> None:
        if sid in self.live:
            self.objects[sid].remove_request(request_id)
            self.live[sid].requests.discard(request_id)
            self.live[sid].last_activity = self.now()

    @rule(sid=sessions)
    def track_request(self, sid: str) -> None:
        async def track() -> bool:
            try:
                async with self.manager.track_request(sid) as session:
                    assert session is self.objects[sid]
                    assert len(session.active_requests) == len(self.live[sid].requests) + 1
            except ValueError:
                return False
            return True

        assert self.run(track()) == (sid in self.live)
        if sid in self.live:
            self.live[sid].last_activity = self.now()

    @rule(sid=sessions, minutes=BACKDATE_MINUTES)
    def backdate(self, sid: str, minutes: int) -> None:
        if sid in self.live:
            when = datetime.fromtimestamp(self.now(), tz=UTC) - timedelta(minutes=minutes)
            self.objects[sid].last_activity = when
            self.live[sid].last_activity = when.timestamp()

    @rule(sid=sessions)
    def delete(self, sid: str) -> None:
        assert self.run(self.manager.delete_session(sid)) == (sid in self.live)
        if self.live.pop(sid, None) is not None:
            self.cleaned += 1

    @rule(seconds=STEPS)
    def cleanup_run(self, seconds: float) -> None:
        self.clock.advance(seconds)

        async def cleanup() -> None:
            await self.manager.sync()
            await self.manager.hub.expire_due()

        self.run(cleanup())
        now = self.now()
        for sid, model in list(self.live.items()):
            if not model.requests and now - model.last_activity > TIMEOUT:
                del self.live[sid]
                self.expired += 1
                self.cleaned += 1

    # what must hold after every step

    @invariant()
    def the_hub_holds_what_the_objects_hold(self) -> None:
        async def check() -> None:
            await self.manager.sync()
            for sid, model in self.live.items():
                session = self.objects[sid]
                record = await self.manager.hub.get(sid)
                assert record.live
                assert record.details == model.metadata == session.metadata
                assert record.active_requests == len(model.requests)
                assert session.active_requests == model.requests
                assert session.last_activity.timestamp() == model.last_activity
                assert session.user_id == model.user

        self.run(check())

    @invariant()
    def the_metrics_match(self) -> None:
        metrics = self.manager.get_metrics()
        assert metrics["active_sessions"] == len(self.live)
        assert metrics["total_sessions_created"] == self.created
        assert metrics["total_sessions_expired"] == self.expired
        assert metrics["total_sessions_cleaned"] == self.cleaned


def test_morgan_traffic_against_a_model(make_store: Callable[[], Store]) -> None:
    class Machine(MorganUser):
        def __init__(self) -> None:
            super().__init__(make_store)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
