"""Adapters that plug sessionhub into other frameworks; each imports its framework only there.

- ``sessionhub.integrations.adk``: ``SessionHubSessionService``, a Google ADK session service
  (extra ``sessionhub[adk]``).
- ``sessionhub.integrations.openai_agents``: ``SessionHubSession``, an OpenAI Agents SDK session
  (extra ``sessionhub[openai-agents]``).
- ``sessionhub.integrations.promptfoo``: ``extension_hook``, ``session_aware`` and ``SessionPool``
  for promptfoo's Python hooks and providers (no extra).
"""
