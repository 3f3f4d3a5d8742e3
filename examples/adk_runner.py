"""A Google ADK ``Runner`` whose sessions live in sessionhub.

    python examples/adk_runner.py                                  # embedded hub, memory store
    python examples/adk_runner.py sqlite:///adk.db                 # survives restarts
    python examples/adk_runner.py http://127.0.0.1:7480            # a shared sessionhub server

The agent is a plain ``BaseAgent`` (no LLM, no network): it counts turns in session state, the
user's total in ``user:`` state (shared by all their sessions) and names itself in ``app:`` state.
Sessions expire after an hour without activity; the hook says so.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator

from google.adk.agents.base_agent import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.runners import Runner
from google.genai import types

from sessionhub import SessionHub
from sessionhub.integrations.adk import AdkSessionRef, SessionHubSessionService


class CountingAgent(BaseAgent):
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        turns = int(ctx.session.state.get("turns", 0)) + 1
        total = int(ctx.session.state.get("user:total", 0)) + 1
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            content=types.Content(
                role="model", parts=[types.Part(text=f"turn {turns} ({total} in all)")]
            ),
            actions=EventActions(
                state_delta={"turns": turns, "user:total": total, "app:agent": self.name}
            ),
        )


async def main(url: str) -> None:
    async with SessionHubSessionService(url, idle_timeout=3600) as service:
        if isinstance(service.hub, SessionHub):  # hooks run where the hub runs

            @service.on_end
            def expired(ref: AdkSessionRef, reason: str) -> None:
                print(f"session {ref.session_id} of {ref.user_id} ended: {reason}")

        runner = Runner(
            agent=CountingAgent(name="counter"), app_name="demo", session_service=service
        )
        session = await service.create_session(app_name="demo", user_id="ada")
        for text in ("hello", "and again"):
            message = types.Content(role="user", parts=[types.Part(text=text)])
            async for event in runner.run_async(
                user_id="ada", session_id=session.id, new_message=message
            ):
                if event.content and event.content.parts:
                    print(f"{event.author}: {event.content.parts[0].text}")
        stored = await service.get_session(app_name="demo", user_id="ada", session_id=session.id)
        assert stored is not None
        print("state:", stored.state, "events:", len(stored.events))
        print("user state:", await service.get_user_state(app_name="demo", user_id="ada"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "memory://"))
