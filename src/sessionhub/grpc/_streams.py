"""Server streams of hub events (``Watch``, the Stream API notifications) that the server can end.

Each stream reads its hub subscription through a pump task and a small queue, as the SSE face does:
when the client reads slowly the pump waits, so that subscription falls behind in the hub's bounded
event log (and later reads a ``missed`` event) while the hub and every other stream go on. Stopping
the server ends every open stream cleanly (status OK) instead of leaving it to be cancelled, and a
client that cancels or vanishes releases its subscription at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator

from .._errors import SessionHubError
from .._models import SessionEvent

__all__ = ["EventStreams"]

_QUEUE = 64
logger = logging.getLogger("sessionhub.grpc")


class _Feed:
    """A subscription read by a pump task into a bounded buffer; iterate it to read."""

    __slots__ = ("_done", "_items", "_pump", "_readable", "_writable")

    def __init__(self, events: AsyncGenerator[SessionEvent, None]) -> None:
        self._items: deque[SessionEvent] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._done = False
        self._pump = asyncio.create_task(self._run(events), name="sessionhub-grpc-stream")
        self._pump.add_done_callback(self._finished)

    async def _run(self, events: AsyncGenerator[SessionEvent, None]) -> None:
        try:
            async for event in events:
                self._items.append(event)
                self._readable.set()
                if len(self._items) >= _QUEUE:  # the client reads slowly: wait for it
                    self._writable.clear()
                    await self._writable.wait()
        finally:
            await events.aclose()

    def _finished(self, pump: asyncio.Task[None]) -> None:
        self._done = True
        self._readable.set()
        if pump.cancelled():
            return
        error = pump.exception()
        if error is not None and not isinstance(error, SessionHubError):
            logger.error("event stream failed", exc_info=error)

    def check(self) -> None:
        """Raise the ``SessionHubError`` the subscription failed with, if it did."""
        if self._pump.done() and not self._pump.cancelled():
            error = self._pump.exception()
            if isinstance(error, SessionHubError):
                raise error

    def stop(self) -> None:
        self._pump.cancel()

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.wait([self._pump])  # never swallows a cancellation of the caller

    async def __aiter__(self) -> AsyncIterator[SessionEvent]:
        items = self._items
        while True:
            if items:
                event = items.popleft()
                if len(items) < _QUEUE:
                    self._writable.set()
                yield event
            elif self._done:
                return
            else:
                self._readable.clear()
                await self._readable.wait()


class EventStreams:
    """The event streams a server has open; ``close()`` ends them all."""

    def __init__(self) -> None:
        self._feeds: set[_Feed] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._feeds)

    @contextlib.asynccontextmanager
    async def open(
        self, events: AsyncGenerator[SessionEvent, None]
    ) -> AsyncIterator[AsyncIterator[SessionEvent]]:
        """Read ``events`` for the block's duration; the subscription is live when this enters
        (the pump has positioned it), so nothing published afterwards is missed."""
        feed = _Feed(events)
        self._feeds.add(feed)
        if self.closed:
            feed.stop()  # the server is stopping: the stream ends at once
        try:
            await asyncio.sleep(0)  # let the pump take its position in the event log
            feed.check()  # a bad resume point fails here, before the stream starts
            yield feed.__aiter__()
        finally:
            self._feeds.discard(feed)
            await feed.close()

    def close(self) -> None:
        """End every open stream (each reads what is queued, then finishes)."""
        self.closed = True
        for feed in list(self._feeds):
            feed.stop()

    def reopen(self) -> None:
        self.closed = False
