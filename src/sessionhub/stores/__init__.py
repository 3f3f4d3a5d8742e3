"""Stores: where sessions live. Each is a small class over the ``Store`` contract in ``_base``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._base import Change, CreateRules, Query, StackRead, Store
from .memory import MemoryStore

__all__ = ["Change", "CreateRules", "MemoryStore", "Query", "StackRead", "Store", "store_from_url"]


@contextlib.contextmanager
def _needs_extra(extra: str) -> Iterator[None]:
    """A store whose dependencies are not installed says which extra brings them."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{exc.msg}: this store needs the {extra} extra: pip install 'sessionhub[{extra}]'",
            name=exc.name,
        ) from exc


def store_from_url(url: str) -> Store:
    """``memory://``, ``sqlite:///path.db``, ``redis://host:port/db`` or
    ``redis+cluster://host:port[,host:port...]``."""
    from .._errors import ValidationError

    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValidationError(f"a store URL looks like memory:// or sqlite:///path.db, got {url!r}")
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        with _needs_extra("cluster"):
            from .redis_cluster import RedisClusterStore

        return RedisClusterStore.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        with _needs_extra("redis"):
            from .redis import RedisStore

        return RedisStore.from_url(url)
    raise ValidationError(
        f"unknown store scheme {scheme!r} in {url!r} (memory, sqlite, redis, redis+cluster)"
    )
