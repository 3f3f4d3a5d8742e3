"""The stores' own ``history_append_many``, ``history_pop`` and ``history_stack`` (the Agents SDK
adapter's pops, batches and reads) against a plain Python model of the history read as a stack, on
every store kind: random programs of single appends, batches, pops, bare markers (as a server
client writes them), markers naming the top they leave in other spellings of their JSON (as
another writer may append them) and other records (which empty the stack), with the same results
as the model's and the history exactly what the model appended."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub import SessionHub, SessionNotFound, ValidationError
from sessionhub.stores import StackRead, Store

ITEM, POP, OTHER = "item", "pop", "note"

OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 999)),
    st.tuples(st.just("many"), st.lists(st.integers(0, 999), max_size=4)),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("bare_pop"), st.none()),
    st.tuples(st.just("spelled_pop"), st.integers(0, 3)),
    st.tuples(st.just("other"), st.none()),
)


class StackModel:
    """What the history holds, and its stack of items as the adapter reads it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []
        self.stack: list[tuple[int, Any]] = []

    def append(self, kind: str, payload: Any) -> int:
        self.records.append((kind, payload))
        seq = len(self.records)
        if kind == ITEM:
            self.stack.append((seq, payload))
        elif kind == POP:
            if self.stack:
                self.stack.pop()
        else:
            self.stack.clear()
        return seq


async def run_program(hub: SessionHub, session_id: str, program: list[tuple[str, Any]]) -> None:
    store, model = hub.store, StackModel()
    for op, value in program:
        now = hub.clock()
        if op == "append":
            record = await store.history_append(session_id, ITEM, _payload(value), now)
            assert record.seq == model.append(ITEM, {"n": value})
        elif op == "many":
            records = await store.history_append_many(
                session_id, [(ITEM, _payload(v)) for v in value], now
            )
            assert [(r.seq, r.kind, r.payload) for r in records] == [
                (model.append(ITEM, {"n": v}), ITEM, {"n": v}) for v in value
            ]
        elif op == "pop":
            expected = model.stack[-1] if model.stack else None
            popped = await store.history_pop(session_id, ITEM, POP, now)
            if expected is None:
                assert popped is None  # nothing appended for an empty stack
            else:
                assert popped is not None
                assert (popped.seq, popped.kind, popped.payload) == (expected[0], ITEM, expected[1])
                model.records.append((POP, None))  # its payload is the store's bookkeeping
                model.stack.pop()
        elif op == "bare_pop":  # a marker without ``below``, as a pop over a server writes it
            await store.history_append(session_id, POP, b"{}", now)
            model.append(POP, {})
        elif op == "spelled_pop":  # the marker history_pop writes, spelled otherwise
            top = model.stack[-1][0] if model.stack else 0
            below = model.stack[-2][0] if len(model.stack) > 1 else 0
            payload = SPELLINGS[value] % {b"popped": top, b"below": below}
            await store.history_append(session_id, POP, payload, now)
            model.append(POP, json.loads(payload))
        else:
            await store.history_append(session_id, OTHER, b"null", now)
            model.append(OTHER, None)
    stored = await hub.history(session_id).read(limit=1000, newest_first=False)
    assert [r.seq for r in stored] == list(range(1, len(model.records) + 1))
    assert [r.kind for r in stored] == [kind for kind, _ in model.records]
    assert [r.payload for r in stored if r.kind == ITEM] == [
        payload for kind, payload in model.records if kind == ITEM
    ]
    for record in stored:  # each marker names the item it removed and the new top
        if record.kind == POP and record.payload:
            assert set(json.loads(json.dumps(record.payload))) >= {"popped", "below"}
    # reads, stopping at the other records as the stack empties at them: the first read of a
    # handle (nothing hidden expected) and later ones (some expected)
    items = [payload for _, payload in model.stack]
    for wanted in (None, 0, 1, 2, 5, len(items), len(items) + 1):
        for hidden in (0, 2, 50):
            read = StackRead(ITEM, POP, OTHER, wanted, hidden)
            found, _ = await store.history_stack(session_id, read, hub.clock())
            newest = items if wanted is None else items[max(len(items) - wanted, 0) :]
            assert found == newest, (wanted, hidden)


# the marker's JSON as history_pop writes it, and as other writers may: spaces, another key
# order, another field
SPELLINGS = (
    b'{"popped":%(popped)d,"below":%(below)d}',
    b'{"popped": %(popped)d, "below": %(below)d}',
    b'{"below":%(below)d,"popped":%(popped)d}',
    b'{"popped":%(popped)d,"below":%(below)d,"by":"x"}',
)


def _payload(value: int) -> bytes:
    return json.dumps({"n": value}).encode()


def test_history_pop_and_batches_follow_the_stack_model(make_store: Callable[[], Store]) -> None:
    with asyncio.Runner() as runner:
        hub = SessionHub(make_store(), auto_expire=False)
        runner.run(hub.start())
        ids = (f"stack-{n:05}" for n in itertools.count())

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(program=st.lists(OPS, min_size=1, max_size=30))
        def follows_the_model(program: list[tuple[str, Any]]) -> None:
            session = runner.run(hub.create(next(ids)))
            runner.run(run_program(hub, session.id, program))

        try:
            follows_the_model()
        finally:
            runner.run(hub.close())


async def test_a_pop_or_batch_on_an_ended_or_unknown_session_is_refused_and_writes_nothing(
    make_store: Callable[[], Store],
) -> None:
    async with SessionHub(make_store(), auto_expire=False, retention=60) as hub:
        session = await hub.create()
        await hub.store.history_append_many(session.id, [(ITEM, b"1"), (ITEM, b"2")], hub.clock())
        await hub.end(session.id)
        for call in (
            hub.store.history_pop(session.id, ITEM, POP, hub.clock()),
            hub.store.history_append_many(session.id, [(ITEM, b"3")], hub.clock()),
            hub.store.history_pop("no-such-session", ITEM, POP, hub.clock()),
        ):
            with pytest.raises(SessionNotFound):
                await call
        assert [r.payload for r in await hub.history(session.id).read(newest_first=False)] == [1, 2]


@pytest.mark.parametrize("wanted", [-1, 1.5, "3", True])
def test_a_stack_read_of_a_bad_size_is_refused(wanted: Any) -> None:
    with pytest.raises(ValidationError, match="wanted must be an int >= 0"):
        StackRead(ITEM, POP, OTHER, wanted)
    with pytest.raises(ValidationError, match="hidden must be an int >= 0"):
        StackRead(ITEM, POP, OTHER, 1, wanted)
