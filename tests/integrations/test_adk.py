"""``SessionHubSessionService`` beyond the differential test: a real ADK ``Runner`` with a non-LLM
agent read back from another process, stale writers, two processes appending to one session,
expiry with its hook, shared app/user state, paginated listing."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from google.adk.agents.base_agent import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.platform import uuid as platform_uuid
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionhub import Limits, ManualClock, PayloadTooLarge, SessionHub, ValidationError
from sessionhub.integrations._hubs import hub_name, hub_name_under
from sessionhub.integrations.adk import AdkSessionRef, SessionHubSessionService

from .conftest import OpenHub


class CountingAgent(BaseAgent):
    """A non-LLM agent: answers with a count it keeps in session, user and app state."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        turns = int(ctx.session.state.get("turns", 0)) + 1
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            content=types.Content(role="model", parts=[types.Part(text=f"turn {turns}")]),
            actions=EventActions(
                state_delta={
                    "turns": turns,
                    "user:seen": turns,
                    "app:agent": self.name,
                    "temp:scratch": "never stored",
                }
            ),
        )


async def run_python(script: str, *args: str) -> str:
    """Run ``script`` in another Python process; what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0
    return out.decode()


def say(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


READ_BACK = """
import asyncio, json, sys
from sessionhub import SessionHub
from sessionhub.integrations.adk import SessionHubSessionService

async def main() -> None:
    async with SessionHub(sys.argv[1], idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        session = await service.get_session(app_name="counter", user_id="ada", session_id="s1")
        assert session is not None
        texts = [part.text for e in session.events if e.content for part in e.content.parts or []]
        print(json.dumps({"state": session.state, "texts": texts}))

asyncio.run(main())
"""


async def test_adk_runner_persists_through_sessionhub(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/adk.db"
    async with SessionHub(url, idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        runner = Runner(
            agent=CountingAgent(name="counter"), app_name="counter", session_service=service
        )
        await service.create_session(app_name="counter", user_id="ada", session_id="s1")
        for text in ("one", "two", "three"):
            async for _ in runner.run_async(user_id="ada", session_id="s1", new_message=say(text)):
                pass
    seen = json.loads(await run_python(READ_BACK, url))
    assert seen["texts"] == ["one", "turn 1", "two", "turn 2", "three", "turn 3"]
    assert seen["state"] == {"turns": 3, "user:seen": 3, "app:agent": "counter"}


async def test_adk_stale_copy_is_refused(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        first = await service.create_session(app_name="a", user_id="u", session_id="s")
        second = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert second is not None
        await service.append_event(
            first, Event(author="x", actions=EventActions(state_delta={"k": 1}))
        )
        with pytest.raises(StaleSessionError):
            await service.append_event(
                second, Event(author="y", actions=EventActions(state_delta={"k": 2}))
            )
        stored = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert stored is not None
        assert stored.state == {"k": 1}
        assert [event.author for event in stored.events] == ["x"]


async def test_adk_racing_creates_of_one_id_make_one_session(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        outcomes = await asyncio.gather(
            *(
                service.create_session(
                    app_name="a", user_id="u", session_id="same", state={"by": i}
                )
                for i in range(6)
            ),
            return_exceptions=True,
        )
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, AlreadyExistsError)]
        assert len(made) == 1
        assert len(refused) == 5
        stored = await service.get_session(app_name="a", user_id="u", session_id="same")
        assert stored is not None
        assert stored.state == made[0].state


@pytest.mark.parametrize(
    "limits",
    [Limits(max_history_record_bytes=2000), Limits(max_data_value_bytes=2000)],
    ids=["too large for the history", "too large for the head (a data value)"],
)
async def test_adk_event_too_large_is_refused_whole(limits: Limits) -> None:
    async with SessionHub(idle_timeout=None, limits=limits) as hub:
        service = SessionHubSessionService(hub)
        session = await service.create_session(app_name="a", user_id="u", session_id="s")
        big = Event(
            author="x", content=types.Content(role="model", parts=[types.Part(text="x" * 5000)])
        )
        with pytest.raises(PayloadTooLarge):
            await service.append_event(session, big)
        await service.append_event(
            session, Event(author="y", actions=EventActions(state_delta={"k": 1}))
        )
        stored = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert stored is not None
        assert [e.author for e in stored.events] == ["y"]
        assert stored.state == {"k": 1}


async def test_adk_redelivered_event_is_stored_once(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        session = await service.create_session(app_name="a", user_id="u", session_id="s")
        copy = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert copy is not None
        event = Event(author="x", actions=EventActions(state_delta={"k": 1}))
        await service.append_event(session, event)
        await service.append_event(session, event)  # the same event again, as a retrying caller
        await service.append_event(copy, event)  # a copy that never saw the first answer
        assert [e.id for e in copy.events] == [event.id]
        await service.append_event(copy, Event(author="y"))  # and it can go on from there
        stored = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert stored is not None
        assert [e.author for e in stored.events] == ["x", "y"]


async def test_adk_stale_copies_in_tasks_never_interleave(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        await service.create_session(app_name="a", user_id="u", session_id="s")

        async def writer(name: str) -> int:
            written = 0
            while written < 10:
                session = await service.get_session(app_name="a", user_id="u", session_id="s")
                assert session is not None
                try:
                    event = Event(
                        author=name, actions=EventActions(state_delta={name: written + 1})
                    )
                    await service.append_event(session, event)
                    written += 1
                except StaleSessionError:
                    await asyncio.sleep(0)
            return written

        assert list(await asyncio.gather(writer("p"), writer("q"))) == [10, 10]
        stored = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert stored is not None
        assert stored.state == {"p": 10, "q": 10}
        for name in ("p", "q"):  # each writer's events are all there, in its own order
            assert [e.actions.state_delta[name] for e in stored.events if e.author == name] == list(
                range(1, 11)
            )


WRITER = """
import asyncio, sys
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from sessionhub import SessionHub
from sessionhub.integrations.adk import SessionHubSessionService

async def main(url: str, name: str, count: int) -> None:
    async with SessionHub(url, idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        written = stale = 0
        while written < count:
            session = await service.get_session(app_name="a", user_id="u", session_id="s")
            event = Event(author=name, actions=EventActions(state_delta={name: written + 1}))
            try:
                await service.append_event(session, event)
                written += 1
            except StaleSessionError:
                stale += 1
        print(stale)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_adk_two_processes_append_to_one_session(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    async with SessionHub(url, idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        await service.create_session(app_name="a", user_id="u", session_id="s")
        writers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, url, name, "25", stdout=asyncio.subprocess.PIPE
            )
            for name in ("p", "q")
        ]
        for writer in writers:
            await asyncio.wait_for(writer.communicate(), 120)
            assert writer.returncode == 0
        stored = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert stored is not None
        assert stored.state == {"p": 25, "q": 25}
        assert len(stored.events) == 50
        for name in ("p", "q"):
            assert [e.actions.state_delta[name] for e in stored.events if e.author == name] == list(
                range(1, 26)
            )


async def test_adk_idle_session_expires_and_its_hook_runs_once() -> None:
    clock = ManualClock(1000.0)
    async with SessionHub(clock=clock, auto_expire=False) as hub:
        service = SessionHubSessionService(hub, idle_timeout=60)
        ended: list[tuple[AdkSessionRef, str]] = []
        service.on_end(lambda ref, reason: ended.append((ref, reason)))
        idle = await service.create_session(app_name="app", user_id="ada l.", session_id="idle one")
        busy = await service.create_session(app_name="app", user_id="ada l.", session_id="busy")
        await service.append_event(
            idle, Event(author="x", actions=EventActions(state_delta={"user:k": 1}))
        )
        clock.advance(50)
        await service.append_event(busy, Event(author="x"))
        clock.advance(20)
        assert await hub.expire_due() == 1
        assert await hub.expire_due() == 0
        assert ended == [(AdkSessionRef("app", "ada l.", "idle one"), "expired")]
        assert (
            await service.get_session(app_name="app", user_id="ada l.", session_id="idle one")
            is None
        )
        listed = await service.list_sessions(app_name="app", user_id="ada l.")
        assert [s.id for s in listed.sessions] == ["busy"]
        # user state outlives the session that wrote it, as in ADK
        assert await service.get_user_state(app_name="app", user_id="ada l.") == {"k": 1}


async def test_adk_paginated_listing(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        for i in range(7):
            await service.create_session(app_name="paged", user_id=f"u{i % 2}", session_id=f"s{i}")
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = await service.list_sessions_page(
                app_name="paged", user_id="u0", limit=3, cursor=cursor
            )
            assert len(page) <= 3
            seen += [session.id for session in page]
            if cursor is None:
                break
        assert sorted(seen) == ["s0", "s2", "s4", "s6"]


async def test_adk_service_over_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/own.db"
    async with SessionHubSessionService(url) as service:
        await service.create_session(app_name="a", user_id="u", session_id="s", state={"app:v": 1})
    async with SessionHubSessionService(url) as service:
        session = await service.get_session(app_name="a", user_id="u", session_id="s")
        assert session is not None
        assert session.state == {"app:v": 1}


def said(event: Event) -> str:
    assert event.content is not None
    assert event.content.parts
    return event.content.parts[0].text or ""


async def test_adk_session_made_again_under_its_id_is_read_afresh(open_agent_hub: OpenHub) -> None:
    """A reader that cached the events of a session must not serve them for a new session made
    under the same id by another process (here: another service, with its own cache)."""
    async with open_agent_hub() as hub:
        reader, other = SessionHubSessionService(hub), SessionHubSessionService(hub)
        session = await reader.create_session(app_name="a", user_id="u", session_id="s")
        for text in ("old 1", "old 2"):
            await reader.append_event(session, Event(author="x", content=say(text)))
        before = await reader.get_session(app_name="a", user_id="u", session_id="s")
        assert before is not None
        assert [said(e) for e in before.events] == ["old 1", "old 2"]
        await other.delete_session(app_name="a", user_id="u", session_id="s")
        again = await other.create_session(app_name="a", user_id="u", session_id="s")
        await other.append_event(again, Event(author="y", content=say("new 1")))
        after = await reader.get_session(app_name="a", user_id="u", session_id="s")
        assert after is not None
        assert [said(e) for e in after.events] == ["new 1"]
        await reader.delete_session(app_name="a", user_id="u", session_id="s")
        mine = await reader.create_session(app_name="a", user_id="u", session_id="s")
        assert mine.events == []
        read = await reader.get_session(app_name="a", user_id="u", session_id="s")
        assert read is not None
        assert read.events == []


async def test_adk_events_read_are_the_callers_to_change(open_agent_hub: OpenHub) -> None:
    """Each read returns its own deep copies (as ADK's in-memory service does): changing one
    changes neither the stored events nor the next read."""
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        session = await service.create_session(app_name="a", user_id="u", session_id="s")
        event = Event(
            author="x", content=say("hello"), actions=EventActions(state_delta={"k": [1, 2]})
        )
        await service.append_event(session, event)
        for _ in range(2):
            read = await service.get_session(app_name="a", user_id="u", session_id="s")
            assert read is not None
            (got,) = read.events
            assert got == event
            assert got is not event
            assert got.content is not None
            assert got.content.parts
            got.content.parts[0].text = "changed"
            got.actions.state_delta["k"].append(3)
            got.actions.state_delta["new"] = True


@pytest.mark.parametrize(
    "parts",
    [
        ("adk:shop", "ada", "3f1c-uuid"),
        ("",),
        ("a b", "é", "%", "/", "x/y%z"),
        ("".join(chr(c) for c in range(0x21, 0x7F)),),
        ("tab\there", "line\nbreak", "ä\u2028"),
        ("x" * 199,),
        ("x" * 201,),
    ],
)
def test_adk_hub_names_are_the_stored_layout(parts: tuple[str, ...]) -> None:
    # ids already stored must keep naming the same sessions: the fast path for safe text gives
    # exactly what percent-encoding every part gives
    safe = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%/")
    quoted = "/".join(quote(part, safe=safe) or "%" for part in parts)
    expected = quoted if len(quoted) <= 200 else None
    name = hub_name(*parts)
    if expected is None:
        assert name.startswith("#")
        assert len(name) == 65
    else:
        assert name == expected


@settings(max_examples=200, deadline=None)
@given(
    parent=st.lists(st.text(max_size=120), min_size=1, max_size=3).map(tuple),
    last=st.text(max_size=120) | st.sampled_from(["#x", "%", "", "a/b", "x" * 199]),
)
def test_adk_names_made_under_a_parent_are_hub_names(parent: tuple[str, ...], last: str) -> None:
    # create_session names a new session with hub_name_under: it must be the very id that
    # get_session and append_event name with hub_name, short, long (digested) or unusual
    assert hub_name_under(parent, last) == hub_name(*parent, last)


async def test_adk_new_session_ids_are_uuid4_text_or_the_applications_own() -> None:
    async with SessionHub(idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        made = [await service.create_session(app_name="a", user_id="u") for _ in range(50)]
        for session in made:
            parsed = uuid.UUID(session.id)
            assert str(parsed) == session.id
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122
        assert len({session.id for session in made}) == 50
        # an application's id provider (ADK's platform hook) is honoured, as ADK's services do
        counter = iter(range(100))
        platform_uuid.set_id_provider(lambda: f"fixed-{next(counter)}")
        try:
            first = await service.create_session(app_name="a", user_id="u")
            second = await service.create_session(app_name="a", user_id="u")
        finally:
            platform_uuid.reset_id_provider()
        assert (first.id, second.id) == ("fixed-0", "fixed-1")
        got = await service.get_session(app_name="a", user_id="u", session_id="fixed-1")
        assert got is not None
        assert got.id == "fixed-1"
        assert uuid.UUID((await service.create_session(app_name="a", user_id="u")).id).version == 4


async def test_adk_name_with_a_lone_surrogate_is_refused_clearly() -> None:
    # A Python str may hold a lone surrogate, which no JSON can carry: a clear ValidationError,
    # nothing written, and the service goes on (it used to leak a UnicodeEncodeError).
    assert hub_name("u\udc80") == "u%ED%B2%80"
    async with SessionHub(idle_timeout=None) as hub:
        service = SessionHubSessionService(hub)
        with pytest.raises(ValidationError, match="JSON"):
            await service.create_session(app_name="a", user_id="u\udc80", session_id="s")
        assert await hub.count() == 0
        made = await service.create_session(app_name="a", user_id="u", session_id="s")
        assert made.user_id == "u"


async def test_adk_scoped_state_made_later_by_another_service_is_read(
    open_agent_hub: OpenHub,
) -> None:
    async with open_agent_hub() as hub:
        first, second = SessionHubSessionService(hub), SessionHubSessionService(hub)
        before = await first.create_session(app_name="a", user_id="u", session_id="s1")
        assert before.state == {}
        await second.create_session(
            app_name="a", user_id="u", session_id="s2", state={"user:seen": 1, "app:v": 2}
        )
        after = await first.create_session(app_name="a", user_id="u", session_id="s3")
        assert after.state == {"user:seen": 1, "app:v": 2}
        listed = await first.list_sessions(app_name="a", user_id="u")
        assert [s.state for s in listed.sessions] == [{"user:seen": 1, "app:v": 2}] * 3


async def test_adk_listing_skips_hub_sessions_it_did_not_make(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        await service.create_session(app_name="a", user_id="u", session_id="s")
        # in the app's namespace and the user's index, but without the adapter's names
        await hub.create(
            hub_name("adk:a", "u", "other"),
            namespace=hub_name("adk:a"),
            user_id="u",
            details={"adk": "not names"},
        )
        await hub.create(namespace=hub_name("adk:a"), user_id="u")
        listed = await service.list_sessions(app_name="a", user_id="u")
        assert [s.id for s in listed.sessions] == ["s"]


async def test_adk_refused_append_leaves_temp_state_unapplied(open_agent_hub: OpenHub) -> None:
    # as InMemorySessionService: an append to a session gone raises before touching the session
    async with open_agent_hub() as hub:
        service = SessionHubSessionService(hub)
        session = await service.create_session(app_name="a", user_id="u", state={"k": 0})
        await service.delete_session(app_name="a", user_id="u", session_id=session.id)
        event = Event(author="x", actions=EventActions(state_delta={"temp:t": 1, "k": 1}))
        with pytest.raises(SessionNotFoundError):
            await service.append_event(session, event)
        assert session.state == {"k": 0}
        assert session.events == []
        # and an append that is stored applies it, as ADK does, without storing it
        kept = await service.create_session(app_name="a", user_id="u", session_id="kept")
        event = Event(author="x", actions=EventActions(state_delta={"temp:t": 1, "k": 1}))
        await service.append_event(kept, event)
        assert kept.state == {"temp:t": 1, "k": 1}
        stored = await service.get_session(app_name="a", user_id="u", session_id="kept")
        assert stored is not None
        assert stored.state == {"k": 1}


async def test_adk_listed_sessions_do_not_share_scoped_state(open_agent_hub: OpenHub) -> None:
    # as InMemorySessionService (deep copies per session): changing one listed session's app or
    # user value changes neither another listed session nor what is stored
    def fresh() -> dict[str, object]:
        return {"app:cfg": {"tags": ["a"]}, "user:prefs": {"lang": "en"}}

    async with open_agent_hub() as hub:
        for service in (InMemorySessionService(), SessionHubSessionService(hub)):
            await service.create_session(app_name="a", user_id="u", session_id="s1", state=fresh())
            await service.create_session(app_name="a", user_id="u", session_id="s2")
            for user_id in ("u", None):
                listed = (await service.list_sessions(app_name="a", user_id=user_id)).sessions
                first, second = listed
                first.state["app:cfg"]["tags"].append("changed")
                first.state["user:prefs"]["lang"] = "fr"
                assert second.state == fresh(), type(service).__name__
                assert (await service.list_sessions(app_name="a")).sessions[0].state == fresh()
            assert await service.get_user_state(app_name="a", user_id="u") == {
                "prefs": {"lang": "en"}
            }


async def test_adk_refused_append_leaves_the_callers_event_as_it_was(
    open_agent_hub: OpenHub,
) -> None:
    # InMemorySessionService raises SessionNotFoundError before touching the event: its temp
    # keys stay in its delta (the caller may retry it elsewhere); a stale append leaves it too
    def event() -> Event:
        return Event(author="x", actions=EventActions(state_delta={"temp:t": 1, "k": 1}))

    async with open_agent_hub() as hub:
        for service in (InMemorySessionService(), SessionHubSessionService(hub)):
            session = await service.create_session(app_name="a", user_id="u", session_id="gone")
            await service.delete_session(app_name="a", user_id="u", session_id="gone")
            refused = event()
            with pytest.raises(SessionNotFoundError):
                await service.append_event(session, refused)
            assert refused.actions.state_delta == {"temp:t": 1, "k": 1}, type(service).__name__
        ours = SessionHubSessionService(hub)
        first = await ours.create_session(app_name="a", user_id="u", session_id="s")
        second = await ours.get_session(app_name="a", user_id="u", session_id="s")
        assert second is not None
        await ours.append_event(first, Event(author="w"))
        stale = event()
        with pytest.raises(StaleSessionError):
            await ours.append_event(second, stale)
        assert stale.actions.state_delta == {"temp:t": 1, "k": 1}
        assert second.state == {}
        # an append that is stored trims it, as ADK's base service does
        stored = event()
        await ours.append_event(first, stored)
        assert stored.actions.state_delta == {"k": 1}


async def test_adk_state_changed_in_place_by_a_reader_is_not_stored(
    open_agent_hub: OpenHub,
) -> None:
    # as InMemorySessionService: a session read is a copy; a value changed in place in its state
    # (not through an event's delta) is not what the next append stores
    async with open_agent_hub() as hub:
        for service in (InMemorySessionService(), SessionHubSessionService(hub)):
            await service.create_session(
                app_name="a", user_id="u", session_id="s", state={"cfg": {"x": 1}}
            )
            read = await service.get_session(app_name="a", user_id="u", session_id="s")
            assert read is not None
            read.state["cfg"]["x"] = 2
            await service.append_event(read, Event(author="x"))
            again = await service.get_session(app_name="a", user_id="u", session_id="s")
            assert again is not None
            assert again.state == {"cfg": {"x": 1}}, type(service).__name__


class RedactedEvent(Event):
    """An application's event whose own JSON leaves its metadata out."""

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs["exclude"] = {**(kwargs.get("exclude") or {}), "custom_metadata": True}
        return super().model_dump_json(**kwargs)


async def test_adk_event_subclass_is_stored_as_its_own_json_makes_it(
    open_agent_hub: OpenHub,
) -> None:
    async with open_agent_hub() as hub:
        writer = SessionHubSessionService(hub)
        session = await writer.create_session(app_name="a", user_id="u", session_id="s")
        event = RedactedEvent(
            author="x",
            custom_metadata={"secret": 1},
            actions=EventActions(state_delta={"k": 1, "temp:t": 2}),
        )
        await writer.append_event(session, event)
        read = await SessionHubSessionService(hub).get_session(
            app_name="a", user_id="u", session_id="s"
        )
        assert read is not None
        (stored,) = read.events
        assert stored.custom_metadata is None
        assert stored.actions.state_delta == {"k": 1}
        assert stored.id == event.id
