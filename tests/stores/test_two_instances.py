"""Two instances of a shared store (two hub processes on one Redis, Redis Cluster or SQLite file)
against the memory store, and two hubs over them against the hub's model.

The shared stores answer some calls from what an instance last wrote or claimed (on Redis: a touch,
a claim or a finish of a session it knows at the version Redis holds) and the rest from what is
stored, and the Cluster store splits some operations over several steps. Random sequences of store
calls, each made through either instance, must give what the memory store gives for the same calls:
the same sessions (every field), data, history and listings, or the same error, read back the same
from both instances after every step. So no instance trusts a copy another one made stale. And
the stateful model of tests/core/test_stateful.py drives two hubs, each over its own instance, with
each call made through either: the same live sessions, versions, deadlines and counts, and each
session's cleanup hooks run exactly once whichever hub ended or expired it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sessionhub.stores import Change, CreateRules, Query, Store
from sessionhub.stores.memory import MemoryStore
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.redis_cluster import RedisClusterStore
from sessionhub.stores.sqlite import SQLiteStore

from ..cluster.cluster_server import RedisClusterServer
from ..core.test_stateful import HubMachine
from ..redis_server import RedisServer
from .redis_records import MOVES, NOW, active_session, unique_prefix

T = TypeVar("T")
SOAK = os.environ.get("SESSIONHUB_SOAK") == "1"  # ten times the examples
pytestmark = pytest.mark.timeout(1800 if SOAK else 300)
IDS = st.sampled_from(["a", "b", "c"])
WHO = st.sampled_from([0, 1])  # which shared instance makes the call
RULES = CreateRules(unique_labels=("role",))
LIMITED = CreateRules(unique_labels=("role",), max_sessions=2, max_sessions_per_user=1)
ENDED = "CLEANED"


def _outcome(result: object) -> object:
    """What a call gave, comparable across stores: its value, or its error's type."""
    return type(result) if isinstance(result, BaseException) else result


def _events_by_session(store: Store) -> dict[str, list[object]]:
    """The events a store's log holds, per session: kind, time and snapshot."""
    log = store.events
    out: dict[str, list[object]] = {}
    for seq in range(log.oldest_seq, log.next_seq):
        event = log.event_at(seq)
        if event is None or event.session is None:
            continue
        out.setdefault(event.session.id, []).append((event.kind, event.at, event.session))
    return out


class TwoInstances(RuleBasedStateMachine):
    def __init__(self, make: Callable[[str], Store]) -> None:
        """``make(place)``: an instance of the shared store at ``place`` (new for each example)."""
        super().__init__()
        self.runner = asyncio.Runner()
        self.now = NOW
        self.model = MemoryStore()
        place = unique_prefix("d")
        self.shared = [make(place) for _ in range(2)]
        for store in (self.model, *self.shared):
            self.run(store.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            for store in (self.model, *self.shared):
                self.run(store.close())
        finally:
            self.runner.close()

    def both(self, who: int, call: Callable[[Store], Awaitable[T]]) -> None:
        """Make ``call`` on the model and on shared instance ``who``; they must give the same."""

        async def outcome(store: Store) -> object:
            try:
                return _outcome(await call(store))
            except Exception as exc:
                return _outcome(exc)

        expected = self.run(outcome(self.model))
        assert self.run(outcome(self.shared[who])) == expected

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    @rule(
        who=WHO,
        sid=IDS,
        idle=st.sampled_from([None, 30.0]),
        role=st.sampled_from([None, "x"]),
        namespace=st.sampled_from(["default", "other"]),
        user=st.sampled_from(["u", "v"]),
        parent=st.sampled_from([None, "a", "b", "c"]),
        limits=st.sampled_from([RULES, LIMITED]),
    )
    def create(
        self,
        who: int,
        sid: str,
        idle: float | None,
        role: str | None,
        namespace: str,
        user: str,
        parent: str | None,
        limits: CreateRules,
    ) -> None:
        session = active_session(
            sid,
            created_at=self.tick(1),
            idle_timeout=idle,
            namespace=namespace,
            user_id=user,
            parent_id=parent,
            labels={"role": role} if role else {},
        )
        self.both(who, lambda store: store.create(session, limits))

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
        version=st.sampled_from([None, 1, 2, 3]),
    )
    def update(
        self, who: int, sid: str, plan: str, role: str | None, count: int, version: int | None
    ) -> None:
        change = Change(
            now=self.tick(1),
            expected_version=version,
            details={"plan": plan},
            labels={"role": role} if role else None,
            labels_remove=() if role else ("role",),
            unique_labels=RULES.unique_labels,
            counters={"n": count},
            touch=True,
            emit="updated",
        )
        self.both(who, lambda store: store.modify(sid, change))

    @rule(who=WHO, sid=IDS, pause=st.booleans())
    def transition(self, who: int, sid: str, pause: bool) -> None:
        moves = {"ACTIVE": "PAUSED"} if pause else {"PAUSED": "ACTIVE"}
        event = "PAUSE" if pause else "RESUME"
        change = Change(now=self.tick(1), moves=moves, event=event, emit="transitioned")
        self.both(who, lambda store: store.modify(sid, change))

    @rule(who=WHO, sid=IDS, parent=st.sampled_from([None, "a", "b", "c"]))
    def link(self, who: int, sid: str, parent: str | None) -> None:
        change = Change(now=self.tick(1), parent_id=parent, emit="updated")
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

    @rule(who=WHO, sids=st.lists(IDS, min_size=1, max_size=3, unique=True), kept=st.booleans())
    def finish_together(self, who: int, sids: list[str], kept: bool) -> None:
        now = self.tick(1)
        ends = [(sid, now + 60 if kept else now) for sid in sids]
        self.both(who, lambda store: store.finish_ends(ends, now, ENDED))

    @rule(who=WHO, seconds=st.sampled_from([1.0, 90.0]))
    def purge(self, who: int, seconds: float) -> None:
        """What a purge removes is the store's own affair (events, counts at zero, records past
        their retention): only what is read afterwards must agree."""
        now = self.tick(seconds)
        self.run(self.model.purge(now))
        self.run(self.shared[who].purge(now))

    @rule(who=WHO, seconds=st.sampled_from([10.0, 40.0]))
    def expire(self, who: int, seconds: float) -> None:
        now = self.tick(seconds)

        async def ids(store: Store) -> list[str]:
            return sorted(s.id for s in await store.claim_expired(now, MOVES, 10))

        self.both(who, ids)

    @rule(
        who=WHO,
        sid=IDS,
        key=st.sampled_from(["k1", "k2"]),
        value=st.sampled_from([b"1", b'{"a": [1, 2]}', b'"x"']),
        expected=st.sampled_from([None, 0, 1, 2]),
    )
    def data_set(self, who: int, sid: str, key: str, value: bytes, expected: int | None) -> None:
        now = self.tick(0.5)
        self.both(who, lambda store: store.data_set(sid, key, value, expected, now))

    @rule(who=WHO, sid=IDS, key=st.sampled_from(["k1", "k2"]))
    def data_delete(self, who: int, sid: str, key: str) -> None:
        now = self.tick(0.5)
        self.both(who, lambda store: store.data_delete(sid, key, None, now))

    @rule(
        who=WHO,
        sid=IDS,
        kinds=st.lists(st.sampled_from(["item", "note"]), min_size=1, max_size=3),
    )
    def history_append(self, who: int, sid: str, kinds: list[str]) -> None:
        now = self.tick(0.5)
        records = [(kind, b'{"n": %d}' % i) for i, kind in enumerate(kinds)]
        self.both(who, lambda store: store.history_append_many(sid, records, now))

    @rule(who=WHO, sid=IDS)
    def history_pop(self, who: int, sid: str) -> None:
        now = self.tick(0.5)
        self.both(who, lambda store: store.history_pop(sid, "item", "pop", now))

    @invariant()
    def every_instance_reads_what_the_model_holds(self) -> None:
        async def read(store: Store, sid: str) -> object:
            try:
                return (
                    await store.get(sid),
                    await store.data_items(sid, self.now),
                    await store.history_read(
                        sid, after=None, limit=20, newest_first=True, kind=None, now=self.now
                    ),
                    await store.history_counts(sid, self.now),
                )
            except Exception as exc:
                return _outcome(exc)

        for sid in ("a", "b", "c"):
            expected = self.run(read(self.model, sid))
            for store in self.shared:
                assert self.run(read(store, sid)) == expected

    @invariant()
    def every_instance_tells_each_session_s_events_as_the_model(self) -> None:
        """Each session's events, in order (the order that holds across sessions differs by
        store: a Cluster's buckets interleave as each process receives them), with their times
        and snapshots. An instance receives the other's events from the shared log a little later:
        waited for, up to a bound."""
        expected = _events_by_session(self.model)
        total = sum(len(events) for events in expected.values())

        async def caught_up(store: Store) -> dict[str, list[object]]:
            for _ in range(500):
                got = _events_by_session(store)
                if sum(len(events) for events in got.values()) >= total:
                    break
                await asyncio.sleep(0.01)
            return got

        for store in self.shared:
            assert self.run(caught_up(store)) == expected

    @invariant()
    def listings_and_counts_match_the_model(self) -> None:
        async def seen(store: Store) -> object:
            page = await store.find(Query(include_ended=True), limit=10, cursor=None)
            users = await store.find(Query(user_id="u"), limit=10, cursor=None)
            other = await store.find(
                Query(namespace="other", include_ended=True), limit=10, cursor=None
            )
            roles = await store.count(Query(labels={"role": "x"}))
            children = await store.find(Query(parent_id="a"), limit=10, cursor=None)
            return (
                [s.id for s in page.items],
                [s.id for s in users.items],
                [s.id for s in other.items],
                roles,
                [s.id for s in children.items],
                sorted(await store.having_children(["a", "b", "c"])),
                await store.census(),
            )

        assert self.run(seen(self.shared[0])) == self.run(seen(self.model))


def test_two_redis_instances_behave_as_the_memory_store(redis_server: RedisServer) -> None:
    _check(lambda prefix: RedisStore(redis_server.url, prefix=prefix), examples=100)


def test_two_cluster_instances_behave_as_the_memory_store(
    redis_cluster: RedisClusterServer,
) -> None:
    _check(
        lambda prefix: RedisClusterStore(redis_cluster.url, prefix=prefix, buckets=6), examples=50
    )


def test_two_sqlite_instances_behave_as_the_memory_store(tmp_path: Path) -> None:
    _check(lambda name: SQLiteStore(tmp_path / f"{name[:-1]}.db"), examples=50)


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples * (10 if SOAK else 1),
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def _check(make: Callable[[str], Store], examples: int) -> None:
    class Machine(TwoInstances):
        def __init__(self) -> None:
            super().__init__(make)

    run_state_machine_as_test(Machine, settings=_settings(examples, steps=25))


class TwoHubs(HubMachine):
    """The hub model with two hubs on one shared store; ``switch`` picks the hub of the next calls."""

    @rule(turn=WHO)
    def switch(self, turn: int) -> None:
        self.hub = self.hubs[turn]


def _check_hubs(make: Callable[[str], Store], examples: int) -> None:
    class Machine(TwoHubs):
        def __init__(self) -> None:
            place = unique_prefix("h")
            super().__init__(lambda: make(place), hubs=2)

    run_state_machine_as_test(Machine, settings=_settings(examples, steps=30))


def test_two_hubs_on_one_redis_behave_as_the_model(redis_server: RedisServer) -> None:
    _check_hubs(lambda prefix: RedisStore(redis_server.url, prefix=prefix), examples=50)


def test_two_hubs_on_one_cluster_behave_as_the_model(redis_cluster: RedisClusterServer) -> None:
    _check_hubs(
        lambda prefix: RedisClusterStore(redis_cluster.url, prefix=prefix, buckets=6), examples=25
    )


def test_two_hubs_on_one_sqlite_file_behave_as_the_model(tmp_path: Path) -> None:
    _check_hubs(lambda name: SQLiteStore(tmp_path / f"{name[:-1]}.db"), examples=25)
