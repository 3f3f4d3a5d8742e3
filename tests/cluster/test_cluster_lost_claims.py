"""A claim whose reply was lost is finished while its claimer lives, on a Redis Cluster: per
bucket, as on one node (``tests/stores/test_redis_lost_claims.py``). A proxy cannot stand between
redis-py and a Cluster (the client connects to the addresses the nodes announce), so the store's
command call is wrapped instead: the chosen ``FCALL`` goes to the Cluster and runs, and its reply
is dropped for ``StoreUnavailable``, as a connection lost before the reply was read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from sessionhub import Session
from sessionhub._clock import ManualClock
from sessionhub._errors import SessionNotFound, StoreUnavailable
from sessionhub.stores._cluster_lua import CLUSTER_FUNCTIONS
from sessionhub.stores._resp import Arg
from sessionhub.stores.redis_cluster import RedisClusterStore

from ..stores.lost_claims import counting_hub, ended_once
from .cluster_server import RedisClusterServer


class ReplyLosing(RedisClusterStore):
    """Once armed, the first call of the chosen function whose reply ``worth`` accepts runs on
    the Cluster and then raises ``StoreUnavailable`` instead of answering."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._armed: tuple[str, Callable[[Any], bool]] | None = None
        self.lost = asyncio.Event()
        self.handed: list[str] = []

    def arm(self, operation: str, worth: Callable[[Any], bool] = lambda reply: True) -> None:
        self._armed = (CLUSTER_FUNCTIONS[operation], worth)

    async def _call(self, *command: Arg, tail: bool = False) -> Any:
        reply = await super()._call(*command, tail=tail)
        armed = self._armed
        if armed is not None and command[:2] == ("FCALL", armed[0]) and armed[1](reply):
            self._armed = None
            self.lost.set()
            raise StoreUnavailable("the Redis Cluster is unreachable: the reply was lost (test)")
        return reply

    async def claim_expired(self, now: float, moves: Any, limit: int) -> list[Session]:
        claimed = await super().claim_expired(now, moves, limit)
        self.handed += [session.id for session in claimed]
        return claimed


def _store(cluster: RedisClusterServer) -> ReplyLosing:
    return ReplyLosing(
        cluster.url, prefix=f"lc{uuid.uuid4().hex[:12]}:", buckets=6, claim_lease=1.0
    )


async def test_an_end_whose_claim_reply_was_lost_is_finished_with_its_reason(
    redis_cluster: RedisClusterServer,
) -> None:
    store = _store(redis_cluster)
    hub, calls = counting_hub(store, idle_timeout=None)
    async with hub:
        session = await hub.create()
        store.arm("claim_end")
        with pytest.raises(StoreUnavailable):
            await hub.end(session.id, "logged out")
        assert store.lost.is_set()
        with pytest.raises(SessionNotFound):  # claimed: the session refuses activity
            await hub.touch(session.id)
        await ended_once(hub, calls, store.handed, [session.id], "logged out")


async def test_a_bucket_whose_expiry_claim_reply_was_lost_ends_every_session_once(
    redis_cluster: RedisClusterServer,
) -> None:
    clock = ManualClock()
    store = _store(redis_cluster)
    hub, calls = counting_hub(store, idle_timeout=10.0, clock=clock)
    async with hub:
        ids = [(await hub.create()).id for _ in range(30)]
        store.arm("claim_expired", lambda reply: bool(reply))  # a bucket's batch, not nothing
        clock.advance(11.0)
        await asyncio.wait_for(store.lost.wait(), 5.0)
        await ended_once(hub, calls, store.handed, ids, "expired")
