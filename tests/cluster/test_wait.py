"""``wait_replicas``/``wait_timeout_ms`` on a real local Cluster: writes are followed by ``WAIT`` on
the connection that wrote them, so an acknowledged write is on that many replicas."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from sessionhub import SessionHub, StoreUnavailable, ValidationError
from sessionhub.stores import store_from_url

from .cluster_server import RedisClusterServer


def _keys_on(ports: list[int], prefix: str) -> int:
    total = 0
    for port in ports:
        node = redis.Redis(port=port)
        try:
            total += sum(1 for _ in node.scan_iter(match=prefix + "*", count=1000))
        finally:
            node.close()
    return total


async def test_acknowledged_writes_are_on_the_replicas(redis_cluster: RedisClusterServer) -> None:
    prefix = f"w{uuid.uuid4().hex[:10]}:"
    url = f"{redis_cluster.url}?prefix={prefix}&wait_replicas=1&wait_timeout_ms=10000"
    hub = SessionHub(store_from_url(url), auto_expire=False)
    await hub.start()
    try:
        # concurrent, so that writes share pipelined batches (one WAIT each)
        sessions = await asyncio.gather(*(hub.create(labels={"n": str(i)}) for i in range(64)))
        await asyncio.gather(*(hub.touch(s.id) for s in sessions))
        await hub.data(sessions[0].id).set("k", "v")
        assert await hub.count() == 64
    finally:
        await hub.close()
    primaries = redis_cluster.primaries()
    replicas = [port for port in redis_cluster.ports if port not in primaries]
    # every key a primary has, its replica had when the write was acknowledged
    # (the store's heartbeat keys were deleted at close; compare what stays)
    assert _keys_on(replicas, prefix + "{") >= _keys_on(primaries, prefix + "{") > 64


async def test_a_replica_count_the_cluster_cannot_meet_fails_clearly(
    redis_cluster: RedisClusterServer,
) -> None:
    prefix = f"w{uuid.uuid4().hex[:10]}:"
    # each primary has one replica: two never acknowledge; opening writes heartbeats
    strict = f"{redis_cluster.url}?prefix={prefix}&wait_replicas=2&wait_timeout_ms=20"
    with pytest.raises(StoreUnavailable, match="1 of 2 replicas"):
        await SessionHub(store_from_url(strict), auto_expire=False).start()
    async with SessionHub(
        store_from_url(f"{redis_cluster.url}?prefix={prefix}"), auto_expire=False
    ) as plain:
        created = await plain.create()
        found = await plain.get(created.id)
        assert found is not None


@pytest.mark.parametrize(
    "query",
    ["wait_replicas=x", "wait_replicas=-1", "wait_replicas=1&wait_timeout_ms=0",
     "wait_timeout_ms=soon"],
)  # fmt: skip
def test_bad_wait_options_are_refused(query: str) -> None:
    with pytest.raises(ValidationError, match="wait_"):
        store_from_url(f"redis+cluster://127.0.0.1:7000?{query}")
