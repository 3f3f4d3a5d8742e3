"""The Cluster tests: the ``redis_cluster`` fixture (tests/conftest.py) starts a real local Cluster.

Tests marked ``slow`` (the full-size soaks) run only with ``SESSIONHUB_SOAK=1``; each has a
scaled-down form that always runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SESSIONHUB_SOAK") == "1":
        return
    # conftest hooks see every collected item: leave other folders' tests alone
    kept = [
        item
        for item in items
        if item.get_closest_marker("slow") is None or _HERE not in item.path.parents
    ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
