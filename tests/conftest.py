"""Fixtures shared by every test folder.

``make_store`` builds a fresh store of each kind in ``STORE_KINDS``: the conformance tests in
``tests/core`` run the whole hub behaviour against every one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sessionhub.stores import MemoryStore, Store

STORE_KINDS = ["memory"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_store(store_kind: str) -> Callable[[], Store]:
    """A factory of fresh, empty stores of one kind (a new one for each call)."""
    if store_kind == "memory":
        return MemoryStore
    raise AssertionError(f"no factory for store kind {store_kind}")
