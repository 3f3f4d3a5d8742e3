"""``SessionHubSessionService`` against ADK's own ``InMemorySessionService``, driven by hypothesis.

A program is a random sequence of the service's own calls (create with and without ids and initial
state, get with ``GetSessionConfig`` filters, list by app and by user, delete, append events with
app/user/temp/session state deltas and partial events, ``get_user_state``), on names that the hub's
ids refuse (spaces, ``/``, ``%``, non-ASCII, the empty user). It runs against both services, on
every backend; each call's result (or error type) must be the same, with only generated session ids
and creation times normalised.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import InMemorySessionService
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.session import Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub.integrations.adk import SessionHubSessionService

from .conftest import OpenHub

APPS = st.sampled_from(["shop", "shop assistant/v2", "long name " * 25])  # the last: digested ids
USERS = st.sampled_from(["ada", "bob smith", "", "ü%/x"])
LITERAL_IDS = st.sampled_from(["s1", " s2 ", "room/7", "ünïcode id"])
KEYS = st.sampled_from(["a", "b", "app:a", "app:b", "user:a", "user:", "temp:a", "temp:b"])
VALUES = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
STATES = st.dictionaries(KEYS, VALUES, max_size=4)
# a reference to a session: a literal id, or the n-th session created with a generated id
SESSION_REFS = LITERAL_IDS | st.integers(0, 2)


@st.composite
def configs(draw: st.DrawFn) -> GetSessionConfig | None:
    if draw(st.booleans()):
        return None
    return GetSessionConfig(
        num_recent_events=draw(st.none() | st.integers(0, 4)),
        after_timestamp=draw(st.none() | st.integers(0, 8).map(float)),
    )


OPS = st.one_of(
    st.tuples(st.just("create"), APPS, USERS, st.none() | LITERAL_IDS, st.none() | STATES),
    st.tuples(st.just("get"), APPS, USERS, SESSION_REFS, configs()),
    st.tuples(st.just("list"), APPS, st.none() | USERS),
    st.tuples(st.just("delete"), APPS, USERS, SESSION_REFS),
    st.tuples(
        st.just("append"), APPS, USERS, SESSION_REFS, STATES, st.booleans(), st.integers(0, 8)
    ),
    st.tuples(st.just("user_state"), APPS, USERS),
)
PROGRAMS = st.lists(OPS, min_size=1, max_size=20)


@dataclass
class Run:
    """One program's run on one service, and what it observed (normalised)."""

    service: BaseSessionService
    salt: str  # added to app names: programs on one server stay apart
    base: float  # event timestamps are base + a small offset; creation times are before it
    generated: list[str] = field(default_factory=list)
    latest: dict[tuple[str, str, str], Session] = field(default_factory=dict)
    seen: list[Any] = field(default_factory=list)

    def session_id(self, ref: str | int) -> str:
        if isinstance(ref, str):
            return ref
        return self.generated[ref] if ref < len(self.generated) else f"missing-{ref}"

    def norm_id(self, session_id: str) -> str:
        if session_id in self.generated:
            return f"generated-{self.generated.index(session_id)}"
        return session_id

    def norm_time(self, value: float) -> float | str:
        return value - self.base if value >= self.base else "creation time"

    def norm_event(self, event: Event) -> dict[str, Any]:
        return {**event.model_dump(mode="json"), "timestamp": self.norm_time(event.timestamp)}

    def norm_session(self, session: Session | None) -> Any:
        if session is None:
            return None
        return {
            "id": self.norm_id(session.id),
            "app": session.app_name.removesuffix(self.salt),
            "user": session.user_id,
            "state": session.state,
            "events": [self.norm_event(event) for event in session.events],
            "time": self.norm_time(session.last_update_time),
        }


async def call(run: Run, step: int, op: tuple[Any, ...]) -> Any:
    service = run.service
    name, app, user = op[0], op[1] + run.salt, op[2]
    if name == "create":
        session = await service.create_session(
            app_name=app, user_id=user, session_id=op[3], state=op[4]
        )
        if op[3] is None:
            run.generated.append(session.id)
        run.latest[(app, user, session.id)] = session
        return run.norm_session(session)
    if name == "get":
        sid = run.session_id(op[3])
        got = await service.get_session(app_name=app, user_id=user, session_id=sid, config=op[4])
        if got is not None:
            run.latest[(app, user, got.id)] = got
        return run.norm_session(got)
    if name == "list":
        listed = (await service.list_sessions(app_name=app, user_id=user)).sessions
        keys = [(s.last_update_time, s.user_id, s.id) for s in listed]
        assert keys == sorted(keys)  # oldest update first, ties by user and id
        # generated ids order differently in each run: compare what is listed, not the tie order
        return sorted((run.norm_session(s) for s in listed), key=repr)
    if name == "delete":
        sid = run.session_id(op[3])
        await service.delete_session(app_name=app, user_id=user, session_id=sid)
        return "deleted"
    if name == "append":
        sid = run.session_id(op[3]).strip()
        session = run.latest.get((app, user, sid)) or Session(id=sid, app_name=app, user_id=user)
        event = Event(
            id=f"event-{step}",
            invocation_id=f"inv-{step}",
            author="agent",
            partial=op[5] or None,
            timestamp=run.base + op[6],
            actions=EventActions(state_delta=dict(op[4])),
        )
        appended = await service.append_event(session, event)
        return {
            "event": run.norm_event(appended),
            "session": run.norm_session(session),
        }
    assert name == "user_state"
    return await service.get_user_state(app_name=app, user_id=user)


async def execute(
    service: BaseSessionService, program: list[tuple[Any, ...]], salt: str
) -> list[Any]:
    run = Run(service=service, salt=salt, base=time.time() + 1000)
    for step, op in enumerate(program):
        try:
            run.seen.append(await call(run, step, op))
        except Exception as exc:
            run.seen.append(type(exc).__name__)
    return run.seen


def check_program(open_hub: OpenHub, program: list[tuple[Any, ...]]) -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        salt = f"#{uuid.uuid4().hex[:8]}"
        expected = await execute(InMemorySessionService(), program, salt)
        async with open_hub() as hub:
            actual = await execute(SessionHubSessionService(hub), program, salt)
        return expected, actual

    expected, actual = asyncio.run(both())
    for step, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, f"step {step}: {program[step]}"


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(25)
@given(program=PROGRAMS)
def test_adk_service_matches_in_memory_service(open_agent_hub: OpenHub, program: list[Any]) -> None:
    check_program(open_agent_hub, program)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@fuzz(400)
@given(program=st.lists(OPS, min_size=1, max_size=60))
def test_adk_service_matches_in_memory_service_long(
    open_agent_hub: OpenHub, program: list[Any]
) -> None:
    check_program(open_agent_hub, program)
