"""The Cluster tests: the ``redis_cluster`` fixture (tests/conftest.py) starts a real local Cluster.

Tests marked ``slow`` (the full-size soaks) run only with ``SESSIONHUB_SOAK=1``; each has a
scaled-down form that always runs.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SESSIONHUB_SOAK") == "1":
        return
    kept = [item for item in items if item.get_closest_marker("slow") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
