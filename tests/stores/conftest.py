"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionhub.stores._resp import RedisAddress, RedisClient

from ..redis_server import RedisServer


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    """A plain connection to the test server, for looking at keys and counters."""
    client = RedisClient(RedisAddress(port=redis_server.port), name="test-admin")
    yield client
    await client.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    """A connection that does not decode replies (event snapshots are MessagePack)."""
    client = RedisClient(RedisAddress(port=redis_server.port), decode=False, name="test-raw")
    yield client
    await client.close()
