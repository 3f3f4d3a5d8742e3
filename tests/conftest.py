"""Fixtures shared by every test folder.

``make_store`` builds a fresh store of each kind in ``STORE_KINDS``: the conformance tests in
``tests/core`` run the whole hub behaviour against every one of them. ``SESSIONHUB_TEST_STORES``
(comma-separated kinds) narrows the list while developing; CI leaves it unset and runs them all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sessionhub.stores import MemoryStore, Store

from .cluster.cluster_server import RedisClusterServer
from .redis_server import RedisServer

ALL_STORE_KINDS = ["memory", "sqlite", "redis", "cluster"]
STORE_KINDS = [
    kind
    for kind in os.environ.get("SESSIONHUB_TEST_STORES", ",".join(ALL_STORE_KINDS)).split(",")
    if kind
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="long soak and fuzz runs (same as SESSIONHUB_SOAK=1); the default run is their short form",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--soak"):
        os.environ["SESSIONHUB_SOAK"] = "1"  # read by the tests that scale with it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only in soak runs; each has a short form that always runs."""
    if os.environ.get("SESSIONHUB_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="slow: runs with --soak or SESSIONHUB_SOAK=1")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server per test process (so per xdist worker)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """One private Redis Cluster (3 primaries, 3 replicas) per test process, started on first use;
    the ``cluster`` store kind's, and the Cluster tests'."""
    cluster = RedisClusterServer()
    yield cluster
    cluster.stop()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Store]:
    """A factory of fresh, empty stores of one kind (a new one for each call)."""
    if store_kind == "memory":
        return MemoryStore
    if store_kind == "sqlite":
        from sessionhub.stores.sqlite import SQLiteStore

        def sqlite_store() -> Store:
            return SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db")

        return sqlite_store
    if store_kind == "redis":
        from sessionhub.stores.redis import RedisStore

        url = request.getfixturevalue("redis_server").url

        def redis_store() -> Store:
            return RedisStore(url, prefix=f"t{uuid.uuid4().hex[:12]}:")

        return redis_store
    if store_kind == "cluster":
        from sessionhub.stores.redis_cluster import RedisClusterStore

        cluster_url = request.getfixturevalue("redis_cluster").url

        def cluster_store() -> Store:
            # 6 buckets: two per primary, enough to spread; fewer tailers to start per test
            return RedisClusterStore(cluster_url, prefix=f"t{uuid.uuid4().hex[:12]}:", buckets=6)

        return cluster_store
    raise AssertionError(f"no factory for store kind {store_kind}")
