"""``SessionHubSession`` against the Agents SDK's own ``SQLiteSession(":memory:")``, a real SDK
``Runner`` with a fake model (no network) persisting through sessionhub and read back from another
process, concurrent pops, and what the SDK lacks: owner, labels, metadata, listing, expiry."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.memory import Session, SessionSettings
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.tool import Tool
from agents.usage import Usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from sessionhub import Limits, ManualClock, PayloadTooLarge, SessionHub
from sessionhub.integrations.openai_agents import SessionHubSession, list_conversations

from .conftest import OpenHub

SESSION_IDS = st.sampled_from(["chat 1", "chat/2", "ünï"])
ITEMS = st.builds(
    lambda role, text: {"role": role, "content": text},
    st.sampled_from(["user", "assistant"]),
    st.text(max_size=6),
)
OPS = st.one_of(
    st.tuples(st.just("add"), SESSION_IDS, st.lists(ITEMS, max_size=4)),
    st.tuples(st.just("get"), SESSION_IDS, st.none() | st.integers(-1, 5)),
    st.tuples(st.just("pop"), SESSION_IDS),
    st.tuples(st.just("clear"), SESSION_IDS),
)


async def execute(sessions: dict[str, Session], program: list[tuple[Any, ...]]) -> list[Any]:
    seen: list[Any] = []
    for op in program:
        session = sessions[op[1]]
        if op[0] == "add":
            await session.add_items(op[2])
            seen.append(None)
        elif op[0] == "get":
            seen.append(await session.get_items(op[2]))
        elif op[0] == "pop":
            seen.append(await session.pop_item())
        else:
            await session.clear_session()
            seen.append(None)
    for session in sessions.values():  # and what each holds at the end, also with the default limit
        seen.append(await session.get_items())
    return seen


def check_program(open_hub: OpenHub, program: list[tuple[Any, ...]], limit: int | None) -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        salt = uuid.uuid4().hex[:8]
        names = ["chat 1", "chat/2", "ünï"]
        config = SessionSettings(limit=limit)
        reference: dict[str, Session] = {
            name: SQLiteSession(name, ":memory:", session_settings=config) for name in names
        }
        expected = await execute(reference, program)
        async with open_hub() as hub:
            ours: dict[str, Session] = {
                name: SessionHubSession(f"{name}{salt}", hub, session_settings=config)
                for name in names
            }
            actual = await execute(ours, program)
        return expected, actual

    expected, actual = asyncio.run(both())
    assert actual == expected


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(25)
@given(program=st.lists(OPS, min_size=1, max_size=25), limit=st.none() | st.integers(1, 3))
def test_agents_session_matches_sqlite_session(
    open_agent_hub: OpenHub, program: list[Any], limit: int | None
) -> None:
    check_program(open_agent_hub, program, limit)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@fuzz(400)
@given(program=st.lists(OPS, min_size=1, max_size=80), limit=st.none() | st.integers(1, 3))
def test_agents_session_matches_sqlite_session_long(
    open_agent_hub: OpenHub, program: list[Any], limit: int | None
) -> None:
    check_program(open_agent_hub, program, limit)


def test_agents_session_is_the_sdk_protocol() -> None:
    assert isinstance(SessionHubSession("x"), Session)


async def test_agents_concurrent_pops_take_different_items(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        session = SessionHubSession(f"pops-{uuid.uuid4().hex}", hub)
        items: list[TResponseInputItem] = [{"role": "user", "content": str(i)} for i in range(20)]
        await session.add_items(items)
        other = SessionHubSession(session.session_id, hub)  # a second handle, as another task has
        popped = await asyncio.gather(*(s.pop_item() for s in [session, other] * 12))
        taken = [item for item in popped if item is not None]
        assert len(taken) == 20
        assert popped.count(None) == 4
        assert sorted(str(item) for item in taken) == sorted(str(item) for item in items)
        assert await session.get_items() == []


async def test_agents_add_items_past_one_request_or_batch(open_agent_hub: OpenHub) -> None:
    """A call of more items, or more JSON, than one batch or one request to a server with the
    default body limit (2 MiB) carries is written whole, in order; an item past the record limit
    is refused before anything is written."""
    async with open_agent_hub() as hub:
        session = SessionHubSession(f"big-{uuid.uuid4().hex}", hub)
        many: list[TResponseInputItem] = [{"role": "user", "content": str(i)} for i in range(1500)]
        large: list[TResponseInputItem] = [
            {"role": "user", "content": f"{i}" + "x" * 60_000} for i in range(40)
        ]  # 2.4 MB
        await session.add_items(many)
        await session.add_items(large)
        assert await session.get_items() == many + large
        with pytest.raises(PayloadTooLarge):
            await session.add_items([{"role": "user", "content": "x" * 70_000}])
        assert len(await session.get_items()) == len(many) + len(large)


async def test_agents_add_items_follow_the_hubs_batch_limit() -> None:
    """An embedded hub with a smaller ``max_history_batch`` takes a long call in batches it
    accepts (and one without a bound in one); the items come back whole and in order."""
    items: list[TResponseInputItem] = [{"role": "user", "content": str(i)} for i in range(10)]
    for most in (3, None):
        async with SessionHub(limits=Limits(max_history_batch=most)) as hub:
            session = SessionHubSession("batched", hub)
            await session.add_items(items)
            assert await session.get_items() == items


async def test_agents_owner_labels_listing_and_expiry() -> None:
    clock = ManualClock(1000.0)
    async with SessionHub(clock=clock, auto_expire=False) as hub:
        ended: list[str] = []
        hub.on_end(lambda record, reason: ended.append(f"{record.id}:{reason}"))
        chats = [
            SessionHubSession(
                f"chat {i}",
                hub,
                user_id="ada lovelace",
                labels={"topic": "math"},
                metadata={"title": f"#{i}"},
                idle_timeout=60,
            )
            for i in range(3)
        ]
        for chat in chats:
            await chat.add_items([{"role": "user", "content": "hi"}])
        page, cursor = await list_conversations(hub, user_id="ada lovelace", limit=2)
        rest, last = await list_conversations(hub, user_id="ada lovelace", cursor=cursor)
        listed = page + rest
        assert last is None
        assert len(listed) == 3
        assert {s.details["title"] for s in listed} == {"#0", "#1", "#2"}
        assert {s.labels["topic"] for s in listed} == {"math"}
        clock.advance(30)
        await chats[0].add_items([{"role": "assistant", "content": "hello"}])  # activity
        clock.advance(40)
        assert await hub.expire_due() == 2
        assert await chats[1].get_items() == []
        assert len(await chats[0].get_items()) == 2
        assert sorted(ended) == ["chat%201:expired", "chat%202:expired"]


class EchoModel(Model):
    """A model that answers without a network: it echoes how many user messages it was given."""

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        given = [input] if isinstance(input, str) else input
        users = sum(1 for item in given if isinstance(item, dict) and item.get("role") == "user")
        text = ResponseOutputText(
            text=f"seen {users} user messages", type="output_text", annotations=[]
        )
        message = ResponseOutputMessage(
            id=f"msg-{users}", content=[text], role="assistant", status="completed", type="message"
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("this test runs without streaming")


READ_BACK = """
import asyncio, json, sys
from sessionhub import SessionHub
from sessionhub.integrations.openai_agents import SessionHubSession

async def main() -> None:
    async with SessionHub(sys.argv[1]) as hub:
        print(json.dumps(await SessionHubSession(sys.argv[2], hub).get_items()))

asyncio.run(main())
"""


async def test_agents_runner_persists_through_sessionhub(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/agents.db"
    agent = Agent(name="echo", instructions="echo", model=EchoModel())
    config = RunConfig(tracing_disabled=True)
    async with SessionHub(url) as hub:
        session = SessionHubSession("conversation 1", hub, user_id="ada")
        first = await Runner.run(agent, "hello", session=session, run_config=config)
        second = await Runner.run(agent, "again", session=session, run_config=config)
        assert first.final_output == "seen 1 user messages"
        assert second.final_output == "seen 2 user messages"  # the first turn came from the hub
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", READ_BACK, url, "conversation 1", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0
    items = json.loads(out)
    assert [item.get("role") for item in items] == ["user", "assistant", "user", "assistant"]
    assert items[0]["content"] == "hello"
    assert items[2]["content"] == "again"
    assert items[3]["content"][0]["text"] == "seen 2 user messages"


async def test_agents_session_over_a_url_starts_and_closes_its_hub(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/own.db"
    session = SessionHubSession("mine", url)
    await session.add_items([{"role": "user", "content": "x"}])
    assert await session.get_items() == [{"role": "user", "content": "x"}]
    await session.close()
    again = SessionHubSession("mine", url)
    assert await again.pop_item() == {"role": "user", "content": "x"}
    await again.close()
