"""Fixtures of the Morgan compat tests: a manager as Morgan's documentation sets it up, on every
store.

``manager`` runs on a hub over each store kind of ``make_store`` (memory, SQLite, Redis) with a
``ManualClock`` and no background expiry: a test moves the clock and calls ``hub.expire_due()``,
what the hub's expiry task does at each deadline, so no assertion depends on the machine's speed.
``live_hub`` is a hub on the system clock whose expiry task runs, for the tests written exactly as
a Morgan user writes them (``datetime.now(timezone.utc) - timedelta(minutes=2)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from sessionhub import ManualClock, SessionHub
from sessionhub.compat import morgan
from sessionhub.compat.morgan import SessionManager, initialize_session_manager
from sessionhub.stores import Store


@pytest.fixture(autouse=True)
def no_global_manager() -> Iterator[None]:
    """Each test starts without a global manager, and leaves none behind."""
    saved = morgan._session_manager
    morgan._session_manager = None
    yield
    morgan._session_manager = saved


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
async def hub(make_store: Callable[[], Store], clock: ManualClock) -> AsyncIterator[SessionHub]:
    async with SessionHub(make_store(), clock=clock, auto_expire=False) as hub:
        yield hub


@pytest.fixture
async def manager(hub: SessionHub) -> AsyncIterator[SessionManager]:
    """Morgan's documented "Basic Session Creation" setup, on ``hub``."""
    manager = initialize_session_manager(
        session_timeout_minutes=60,
        cleanup_interval_seconds=300,
        max_concurrent_requests=100,
        hub=hub,
    )
    await manager.start()
    yield manager
    await manager.stop()


@pytest.fixture
async def live_hub(make_store: Callable[[], Store]) -> AsyncIterator[SessionHub]:
    """A hub on the system clock whose expiry task wakes at least every 50 ms."""
    async with SessionHub(make_store(), poll_interval=0.05) as hub:
        yield hub
