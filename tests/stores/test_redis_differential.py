"""Two Redis (or Cluster) store instances sharing one prefix (two hub processes) against the
memory store.

The Redis store answers many calls from what an instance last wrote or claimed (a touch, a claim, a
finish of a session it knows at the version Redis holds) and from the stored record otherwise. Random
sequences of store calls, each made through either instance, must give what the memory store gives
for the same calls: the same sessions (every field) or the same error, and the same reads from both
instances after every step, so no cached copy is ever trusted when another instance changed the
session meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sessionhub import Session
from sessionhub.stores import Change, CreateRules, Query, Store
from sessionhub.stores.memory import MemoryStore
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.redis_cluster import RedisClusterStore

from ..cluster.cluster_server import RedisClusterServer
from ..redis_server import RedisServer
from .redis_records import MOVES, NOW, unique_prefix

T = TypeVar("T")
SOAK = os.environ.get("SESSIONHUB_SOAK") == "1"  # ten times the examples
IDS = st.sampled_from(["a", "b", "c"])
WHO = st.sampled_from([0, 1])  # which Redis instance makes the call
RULES = CreateRules(unique_labels=("role",))
ENDED = "CLEANED"


def _outcome(result: object) -> object:
    """What a call gave, comparable across stores: its value, or its error's type."""
    return type(result) if isinstance(result, BaseException) else result


class TwoInstances(RuleBasedStateMachine):
    def __init__(self, kind: type[RedisStore], url: str) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.now = NOW
        self.model = MemoryStore()
        prefix = unique_prefix("d")
        self.redis = [kind(url, prefix=prefix) for _ in range(2)]
        for store in (self.model, *self.redis):
            self.run(store.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            for store in (self.model, *self.redis):
                self.run(store.close())
        finally:
            self.runner.close()

    def both(self, who: int, call: Callable[[Store], Awaitable[T]]) -> None:
        """Make ``call`` on the model and on instance ``who``; they must give the same."""

        async def outcome(store: Store) -> object:
            try:
                return _outcome(await call(store))
            except Exception as exc:
                return _outcome(exc)

        expected = self.run(outcome(self.model))
        assert self.run(outcome(self.redis[who])) == expected

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    @rule(who=WHO, sid=IDS, idle=st.sampled_from([None, 30.0]), role=st.sampled_from([None, "x"]))
    def create(self, who: int, sid: str, idle: float | None, role: str | None) -> None:
        now = self.tick(1)
        session = Session(
            id=sid,
            state="ACTIVE",
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            idle_timeout=idle,
            expires_at=None if idle is None else now + idle,
            user_id="u",
            labels={"role": role} if role else {},
        )
        self.both(who, lambda store: store.create(session, RULES))

    @rule(who=WHO, sid=IDS, seconds=st.sampled_from([0.5, 3.0]))
    def touch(self, who: int, sid: str, seconds: float) -> None:
        change = Change(now=self.tick(seconds), touch=True)
        self.both(who, lambda store: store.modify(sid, change))

    @rule(
        who=WHO,
        sid=IDS,
        plan=st.sampled_from(["free", "pro"]),
        role=st.sampled_from([None, "x", "y"]),
        count=st.integers(-2, 2),
    )
    def update(self, who: int, sid: str, plan: str, role: str | None, count: int) -> None:
        change = Change(
            now=self.tick(1),
            details={"plan": plan},
            labels={"role": role} if role else None,
            labels_remove=() if role else ("role",),
            unique_labels=RULES.unique_labels,
            counters={"n": count},
            touch=True,
            emit="updated",
        )
        self.both(who, lambda store: store.modify(sid, change))

    @rule(who=WHO, sid=IDS, requests=st.sampled_from([1, -1]))
    def track(self, who: int, sid: str, requests: int) -> None:
        change = Change(now=self.tick(0.5), requests=requests, touch=True)
        self.both(who, lambda store: store.modify(sid, change))

    @rule(who=WHO, sid=IDS)
    def claim(self, who: int, sid: str) -> None:
        now = self.tick(1)
        self.both(who, lambda store: store.claim_end(sid, "ended", now, MOVES))

    @rule(who=WHO, sid=IDS, retained=st.booleans())
    def finish(self, who: int, sid: str, retained: bool) -> None:
        now = self.tick(1)
        until = now + 60 if retained else now
        self.both(who, lambda store: store.finish_end(sid, now, ENDED, until))

    @rule(who=WHO, seconds=st.sampled_from([10.0, 40.0]))
    def expire(self, who: int, seconds: float) -> None:
        now = self.tick(seconds)

        async def ids(store: Store) -> list[str]:
            return sorted(s.id for s in await store.claim_expired(now, MOVES, 10))

        self.both(who, ids)

    @invariant()
    def every_instance_reads_what_the_model_holds(self) -> None:
        for sid in ("a", "b", "c"):
            expected = self.run(self.model.get(sid))
            for store in self.redis:
                assert self.run(store.get(sid)) == expected

    @invariant()
    def listings_and_counts_match_the_model(self) -> None:
        async def seen(store: Store) -> object:
            page = await store.find(Query(include_ended=True), limit=10, cursor=None)
            users = await store.find(Query(user_id="u"), limit=10, cursor=None)
            roles = await store.count(Query(labels={"role": "x"}))
            return (
                [s.id for s in page.items],
                [s.id for s in users.items],
                roles,
                await store.census(),
            )

        assert self.run(seen(self.redis[0])) == self.run(seen(self.model))


def test_two_redis_instances_behave_as_the_memory_store(redis_server: RedisServer) -> None:
    _check(RedisStore, redis_server.url, examples=100)


def test_two_cluster_instances_behave_as_the_memory_store(
    redis_cluster: RedisClusterServer,
) -> None:
    _check(RedisClusterStore, redis_cluster.url, examples=50)


def _check(kind: type[RedisStore], url: str, examples: int) -> None:
    class Machine(TwoInstances):
        def __init__(self) -> None:
            super().__init__(kind, url)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples * (10 if SOAK else 1),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
