"""Adapters that plug sessionhub into other frameworks; each imports its framework only there.

- ``sessionhub.integrations.adk``: ``SessionHubSessionService``, a Google ADK session service
  (extra ``sessionhub[adk]``).
- ``sessionhub.integrations.openai_agents``: ``SessionHubSession``, an OpenAI Agents SDK session
  (extra ``sessionhub[openai-agents]``).
"""
