"""OpenAI Agents SDK sessions kept in sessionhub: ``SessionHubSession`` implements the SDK's
``Session`` protocol.

    session = SessionHubSession("chat-42", "http://127.0.0.1:8700", user_id="ada", ttl=86400)
    result = await Runner.run(agent, "Hello", session=session)

A conversation is one hub session (namespace ``openai-agents``, owned by ``user_id``, with labels
and metadata), and each item one record of its history, in order. The history is append-only, so
``pop_item`` and ``clear_session`` append markers instead of deleting: a ``pop`` record removes the
newest item still there when it was appended, a ``clear`` record everything before it (the
history read as a stack, ``stores._base.stack_top``).

A pop is the history's ``pop`` verb: one atomic store operation (one round trip on Redis, one
request over a server) that appends the marker with the seq of the item left on top, so neither the
pop nor a later read walks back past earlier pops; ``add_items`` is one ``append_many``, so the
items of one call are contiguous whatever other writers do. Two tasks (or processes) popping at
once always pop two different items. Histories written by earlier versions over a server hold bare
``pop`` markers (without the item left on top); reads still resolve them.

Reads. On a ``SessionHub``, ``get_items`` is the store's ``history_stack``; over SQLite or Redis
the markers are resolved beside the read (in the SQLite worker thread: one hop, one statement
usually; on Redis: one ``history_read`` call), a marker's jump lands in the page already read when
it can, and only the items returned are decoded, straight to plain values (no ``HistoryRecord`` per
record). A handle's read that expects nothing hidden (its first, or after reads that found no
marker) first takes the newest records as plain items: on SQLite one statement of one column
(payloads, NULL for other records), on Redis straight from the reply; a marker or a damaged record
among them sends the read to the walk (on SQLite a second statement: a fresh handle's first read
after pops costs ~10% more). The walk's first read also takes the records markers hid last time
(this handle's pops count two each) when they are few, so a read after pops stays one statement /
one round trip. The memory store walks its own pages; clients of a server walk ``history.read``
pages in a plain loop. A pop on Redis is one ``FCALL`` (``_redis_lua``): about 11 us of server
time, a third of it the session's activity refresh; the rest of its ~40 us is the round trip.

Measured with ``benchmarks/bench_agents.py --quick`` (3 runs before, 12 after, 2-core machine shared
with other work, load 2-5; peer time / ours, each the best of 3 rounds): get_items(50) of 200,
SQLite 1.8-2.0x -> 2.4-2.9x (in the worker 35 -> 22 us), Redis 1.2-2.0x -> 2.0-2.4x; pop_item on
Redis 1.0-1.8x -> 1.7-2.4x (its floor is the round trip: a bare ``RPOP`` through the store's client
costs a third of ``RedisSession``'s pop), on SQLite 2.3-5.0x. In 3 of the 12 runs a burst of load
during sessionhub's turn cut its reads to 1.3-1.6x and the Redis pop to 1.3x: these operations
wait on another thread or process, which a busy machine schedules late.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, cast

from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings, resolve_session_limit

from .._containers import MAX_HISTORY_BATCH
from .._errors import DuplicateSession, SessionNotFound
from .._hub import SessionHub
from .._limits import encode_json
from .._models import HistoryRecord
from .._models import Session as HubSession
from ..stores import StackRead
from ._hubs import HistoryLike, Hub, HubLink, hub_name

__all__ = ["NAMESPACE", "SessionHubSession", "list_conversations"]

NAMESPACE = "openai-agents"
_ITEM, _POP, _CLEAR = "item", "pop", "clear"
_PAGE = 1000  # the most records one history read returns
# The JSON one batch of `add_items` may carry: half a server's default request limit
# (`--max-body-bytes`, 2 MiB), so that a call of many large items still reaches a server.
_BATCH_BYTES = 1024 * 1024


class _Stack(Protocol):
    """The history verbs of every hub (``SessionHub``, ``AsyncClient``, ``GrpcClient``) beyond the
    ``HistoryLike`` of ``_hubs``, which the adapters share."""

    async def append_many(self, records: Iterable[tuple[str, Any]]) -> list[HistoryRecord]: ...

    async def pop(self, kind: str, *, marker: str) -> HistoryRecord | None: ...


def _stack(hub: Hub, session_id: str) -> _Stack:
    return cast(_Stack, hub.history(session_id))


class SessionHubSession:
    """A conversation of the OpenAI Agents SDK, kept in a sessionhub hub, client or URL.

    The hub session is made on the first write, with ``user_id`` as its owner, ``labels`` and
    ``metadata`` (its details), and ``idle_timeout`` / ``ttl`` in seconds (``None``: never). Once
    it expires or is ended, the conversation is empty and the next write starts it again.
    """

    def __init__(
        self,
        session_id: str,
        hub: Hub | str = "memory://",
        *,
        user_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idle_timeout: float | None = None,
        ttl: float | None = None,
        session_settings: SessionSettings | None = None,
    ) -> None:
        self.session_id = session_id
        self.session_settings: SessionSettings | None = session_settings or SessionSettings()
        self.user_id = user_id
        self.labels = dict(labels or {})
        self.metadata = dict(metadata or {})
        self.idle_timeout = idle_timeout
        self.ttl = ttl
        self._link = HubLink(hub)
        self._key = hub_name(session_id)
        self._hidden = 0  # records the last read found hidden by markers (see get_items)

    @property
    def hub(self) -> Hub:
        return self._link.hub

    async def close(self) -> None:
        """Close the hub if this session made it from a URL."""
        await self._link.close()

    # the Session protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation, oldest first; with a limit (or ``session_settings.limit``) only the
        newest ``limit`` items. A limit of 0 gives nothing, a negative one everything (as the
        SDK's ``SQLiteSession``)."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted < 0:
            wanted = None
        if wanted == 0:
            return []
        hub = await self._link.ready()
        try:
            if isinstance(hub, SessionHub):
                # The store walks the markers beside its read: one hop or round trip, usually;
                # its first read also takes the records markers hid last time (and since).
                read = StackRead(_ITEM, _POP, _CLEAR, wanted, self._hidden)
                items, self._hidden = await hub.store.history_stack(self._key, read, hub.clock())
                return items
            items = await _newest(hub.history(self._key), wanted)
        except SessionNotFound:
            return []
        items.reverse()
        return items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if not items:
            return
        hub = await self._link.ready()
        try:
            await self._append_all(hub, items)
        except SessionNotFound:
            await self._start(hub)
            await self._append_all(hub, items)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (``None`` when there is none), atomically: the
        ``pop`` record's place in the history decides which item it removed."""
        hub = await self._link.ready()
        try:
            if isinstance(hub, SessionHub):  # the store's operation without the handle's checks
                popped = await hub.store.history_pop(self._key, _ITEM, _POP, hub.clock())
            else:
                popped = await _stack(hub, self._key).pop(_ITEM, marker=_POP)
        except SessionNotFound:
            return None
        if popped is None:
            return None
        self._hidden += 2  # its marker, and the item it hides
        item: TResponseInputItem = popped.payload
        return item

    async def clear_session(self) -> None:
        hub = await self._link.ready()
        try:
            await hub.history(self._key).append(_CLEAR)
        except SessionNotFound:
            return
        self._hidden = 0  # reads stop at the clear

    # beyond the protocol

    async def end(self, reason: str = "ended") -> bool:
        """End the hub session now (its cleanup hooks run); whether this call ended it."""
        hub = await self._link.ready()
        return await hub.end(self._key, reason)

    async def _start(self, hub: Hub) -> None:
        with contextlib.suppress(DuplicateSession):  # another writer started it first
            await hub.create(
                self._key,
                namespace=NAMESPACE,
                user_id=None if self.user_id is None else hub_name(self.user_id),
                labels=self.labels,
                details={**self.metadata, "openai_agents": {"session_id": self.session_id}},
                idle_timeout=self.idle_timeout,
                ttl=self.ttl,
            )

    async def _append_all(self, hub: Hub, items: list[TResponseInputItem]) -> None:
        history = _stack(hub, self._key)
        # A server's limit is its own (the default, unless it was started with another).
        limit = hub.limits.max_history_batch if isinstance(hub, SessionHub) else MAX_HISTORY_BATCH
        for batch in _batches(items, limit or len(items)):
            await history.append_many([(_ITEM, item) for item in batch])


async def _newest(history: HistoryLike, wanted: int | None) -> list[TResponseInputItem]:
    """The ``wanted`` newest items in the conversation (``None``: all), newest first.

    Walking back, a ``pop`` written by ``history_pop`` jumps to the item it left on top, a bare
    one removes the next item not removed yet, and a ``clear`` ends the walk: the same items a
    forward replay of the markers leaves. A page at a time in a plain loop (no generator of
    records: one resumption per item cost more than the store's read); one read, usually.
    """
    items: list[TResponseInputItem] = []
    cursor: int | None = None
    pops = 0
    size = _PAGE if wanted is None else min(_PAGE, wanted + 1)
    while True:
        page = await history.read(after=cursor, limit=size, newest_first=True)
        jumped = False
        for record in page:
            kind = record.kind
            if kind == _ITEM:
                if pops:
                    pops -= 1
                    continue
                items.append(record.payload)
                if len(items) == wanted:
                    return items
            elif kind == _POP:
                below = _below(record)
                if below is None:
                    pops += 1
                elif below == 0:
                    return items
                else:
                    cursor, jumped = below + 1, True
                    break
            elif kind == _CLEAR:
                return items
        if not jumped:
            if len(page) < size:
                return items
            cursor = page[-1].seq
            size = min(_PAGE, size * 4)  # markers hid some: read further, in growing pages


def _batches(items: list[TResponseInputItem], most: int) -> Iterator[list[TResponseInputItem]]:
    """The items of one ``add_items`` call in as few batches as a server takes in one request: at
    most ``most`` items (the hub's ``max_history_batch``) and about ``_BATCH_BYTES`` of JSON each
    (one, usually)."""
    if len(items) == 1:
        yield items
        return
    batch: list[TResponseInputItem] = []
    size = 0
    for item in items:
        grown = size + len(encode_json(item, "history record", None))
        if batch and (grown > _BATCH_BYTES or len(batch) == most):
            yield batch
            batch, grown = [], grown - size
        batch.append(item)
        size = grown
    yield batch


def _below(marker: HistoryRecord) -> int | None:
    """The item a ``history_pop`` marker left on top (0: none), as ``stores._base.stack_top``
    reads it; ``None`` for a bare marker."""
    payload = marker.payload
    below = payload.get("below") if isinstance(payload, dict) else None
    return below if type(below) is int and 0 <= below < marker.seq else None


async def list_conversations(
    hub: Hub, *, user_id: str, limit: int = 100, cursor: str | None = None
) -> tuple[list[HubSession], str | None]:
    """One page of a user's live conversations (their hub sessions, with labels and metadata);
    pass the cursor back for the next page (``None`` after the last)."""
    page = await hub.find(
        namespace=NAMESPACE, user_id=hub_name(user_id), limit=limit, cursor=cursor
    )
    return page.items, page.cursor
