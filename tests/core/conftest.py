"""Fixtures of the conformance suite: hubs over a fresh store of each kind, on a manual clock.

Every hub-behaviour test builds its hub through ``make_hub`` (``SessionHub(make_store(),
clock=ManualClock(), ...)``) and talks to it through the public ``SessionHub`` interface only, so the
same tests run unchanged against every store in ``STORE_KINDS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sessionhub import ManualClock, SessionHub
from sessionhub.stores import Store

from .helpers import HookLog, MakeHub


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_hub(make_store: Callable[[], Store], clock: ManualClock) -> AsyncIterator[MakeHub]:
    """Start hubs (``SessionHub`` keyword arguments) over fresh stores; all closed at teardown.

    Time only moves when a test advances ``clock``, and the test then calls ``expire_due``; no
    background expiry task runs (``auto_expire=False``), so nothing races those calls on stores
    whose operations suspend.
    """
    hubs: list[SessionHub] = []

    async def build(**options: Any) -> SessionHub:
        options.setdefault("auto_expire", False)
        hub = SessionHub(make_store(), clock=clock, **options)
        await hub.start()
        hubs.append(hub)
        return hub

    yield build
    for hub in reversed(hubs):
        await hub.close()


@pytest.fixture
async def hub(make_hub: MakeHub) -> SessionHub:
    return await make_hub()


@pytest.fixture
def hook_log() -> HookLog:
    return HookLog()
