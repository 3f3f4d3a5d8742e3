"""Backends the agent-framework adapters run on in these tests: a fresh hub per call of
``open_agent_hub``, on the memory store, a SQLite file, the tests' private Redis, or a real server
on a loopback port (one per test, reached through ``AsyncClient``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from sessionhub import AsyncClient, SessionHub
from sessionhub.integrations._hubs import Hub

from ..client.serving import ThreadedServer

AGENT_BACKENDS = ["memory", "sqlite", "redis", "server"]

OpenHub = Callable[[], AbstractAsyncContextManager[Hub]]


@pytest.fixture(params=AGENT_BACKENDS)
def agent_backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def open_agent_hub(
    agent_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[OpenHub]:
    """Fresh, empty hubs of one backend; on the server backend, fresh clients of one server
    (tests keep apart there by their own names)."""
    server: ThreadedServer | None = None
    url = ""
    if agent_backend == "sqlite":
        url = f"sqlite:///{tmp_path}/{{}}.db"
    elif agent_backend == "redis":
        url = request.getfixturevalue("redis_server").url + "?prefix={}:"
    elif agent_backend == "server":
        server = ThreadedServer()

    @contextlib.asynccontextmanager
    async def open_hub() -> AsyncIterator[Hub]:
        unique = uuid.uuid4().hex[:12]
        hub: Hub
        if server is not None:
            hub = AsyncClient(server.url, token=server.token)
        elif url:
            hub = SessionHub(url.format(unique), idle_timeout=None)
        else:
            hub = SessionHub(idle_timeout=None)
        await hub.start()
        try:
            yield hub
        finally:
            await hub.close()

    yield open_hub
    if server is not None:
        server.stop()
