"""Helpers of the Redis store's white-box tests (claims, ends, touches, activity): a live record
as a store creates it, stores sharing one prefix, and a record's raw fields."""

from __future__ import annotations

import uuid
from typing import Any

from sessionhub import Session
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

NOW = 1_750_000_000.0
MOVES = {"ACTIVE": "TERMINATING"}


def active_session(
    sid: str,
    *,
    created_at: float = NOW,
    idle_timeout: float | None = 10.0,
    ttl: float | None = None,
    **fields: Any,
) -> Session:
    """An ACTIVE session created (and last active) at ``created_at``, due when the first of its
    idle timeout and ttl runs out."""
    deadlines = [created_at + t for t in (idle_timeout, ttl) if t is not None]
    return Session(
        id=sid,
        state="ACTIVE",
        created_at=created_at,
        updated_at=created_at,
        last_activity_at=created_at,
        idle_timeout=idle_timeout,
        ttl=ttl,
        expires_at=min(deadlines, default=None),
        **fields,
    )


def unique_prefix(tag: str = "t") -> str:
    """A key prefix no other test uses: tests share one redis-server."""
    return f"{tag}{uuid.uuid4().hex[:12]}:"


async def opened_stores(url: str, prefix: str, n: int, **options: Any) -> list[RedisStore]:
    """``n`` opened stores on one prefix, as hub processes sharing one Redis have."""
    stores = [RedisStore(url, prefix=prefix, **options) for _ in range(n)]
    for store in stores:
        await store.open()
    return stores


async def record_fields(admin: RedisClient, prefix: str, sid: str) -> dict[str, str]:
    """The session's record hash as stored, but for ``ce`` (the id of its ``created`` event,
    another for every session: see ``without_incarnation``)."""
    flat = await admin.call("HGETALL", f"{prefix}s:{{{sid}}}")
    return without_incarnation(dict(zip(flat[::2], flat[1::2], strict=True)))


def without_incarnation(fields: dict[str, str]) -> dict[str, str]:
    """A record's or snapshot's fields but ``ce``, which differs between any two sessions (so
    that records of two sessions compare by what the store wrote of them)."""
    return {name: value for name, value in fields.items() if name != "ce"}
