"""An OpenAI Agents SDK ``Runner`` whose conversation lives in sessionhub.

    python examples/agents_runner.py                               # embedded hub, memory store
    python examples/agents_runner.py sqlite:///agents.db           # survives restarts
    python examples/agents_runner.py http://127.0.0.1:7480         # a shared sessionhub server

The model is a local fake (no network, no API key): it tells how many user messages it has seen,
so the second turn shows that the first came back from sessionhub. The conversation has an owner,
a label and a title, expires after a day, and is listed among its owner's conversations.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

import sessionhub
from sessionhub.integrations.openai_agents import SessionHubSession, list_conversations


class CountingModel(Model):
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        given = [input] if isinstance(input, str) else input
        users = sum(1 for item in given if isinstance(item, dict) and item.get("role") == "user")
        text = ResponseOutputText(
            text=f"I have seen {users} messages from you", type="output_text", annotations=[]
        )
        message = ResponseOutputMessage(
            id=f"msg-{users}", content=[text], role="assistant", status="completed", type="message"
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError


async def main(url: str) -> None:
    async with sessionhub.connect(url) as hub:
        session = SessionHubSession(
            "support-42",
            hub,
            user_id="ada",
            labels={"channel": "web"},
            metadata={"title": "Printer trouble"},
            ttl=86400,
        )
        agent = Agent(name="helper", instructions="Help.", model=CountingModel())
        for text in ("My printer is on fire", "Still on fire"):
            result = await Runner.run(
                agent, text, session=session, run_config=RunConfig(tracing_disabled=True)
            )
            print(f"user: {text}\nhelper: {result.final_output}")
        conversations, _ = await list_conversations(hub, user_id="ada")
        print("ada's conversations:", [c.details["title"] for c in conversations])
        print("items stored:", len(await session.get_items()))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "memory://"))
