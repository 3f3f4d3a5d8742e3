"""A claim whose reply was lost is finished while its claimer lives (issue 12: hooks never run
zero times). A TCP proxy between the store and a real redis-server forwards every request, and,
once armed, cuts both connections right after forwarding a chosen ``FCALL`` to Redis and before
forwarding its reply: Redis ran the claim, the store never hears of it. The claimer stays alive
(its heartbeat key is renewed), so no other process takes those claims over: this instance's next
``claim_expired`` must hand them back to its hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import hiredis
import pytest

from sessionhub import Session
from sessionhub._clock import ManualClock
from sessionhub._errors import SessionNotFound, StoreUnavailable
from sessionhub.stores._redis_lua import FUNCTIONS
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .lost_claims import counting_hub, ended_once, wait_ended
from .redis_records import unique_prefix

_PENDING = object()  # hiredis: no complete message yet
Request = list[bytes]


def _pack(request: Request) -> bytes:
    out = [b"*%d\r\n" % len(request)]
    for item in request:
        out += (b"$%d\r\n" % len(item), item, b"\r\n")
    return b"".join(out)


def fcall_of(operation: str) -> Callable[[Request], bool]:
    """A request that calls the store's function for ``operation``."""
    name = FUNCTIONS[operation].encode()
    return lambda request: request[:2] == [b"FCALL", name]


class CuttingProxy:
    """Forwards requests (parsed, so a predicate sees each whole) and raw replies; when armed,
    the first request the predicate accepts is forwarded, then nothing more either way: once
    Redis has answered it (it ran), both connections are closed and its reply is dropped. Armed
    to stall instead, it holds the replies from that request's on (``stalled`` once Redis has
    answered it) until ``released`` is set."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._armed: Callable[[Request], bool] | None = None
        self.cut = asyncio.Event()
        self._stall = False
        self.stalled = asyncio.Event()
        self.released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, predicate: Callable[[Request], bool], *, stall: bool = False) -> None:
        self.cut.clear()
        self._armed = predicate
        self._stall = stall

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.abort()
        for task in list(self._tasks):
            with contextlib.suppress(OSError):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            self._tasks.discard(task)
            return
        self._transports |= {client_w.transport, redis_w.transport}
        sent = 0  # requests forwarded
        cutting = asyncio.Event()
        stall_at: int | None = None  # replies held from this one on, when stalling

        async def requests() -> None:
            nonlocal sent, stall_at
            reader = hiredis.Reader(notEnoughData=_PENDING)
            while data := await client_r.read(65536):
                reader.feed(data)
                out = []
                while (request := reader.gets()) is not _PENDING:
                    out.append(_pack(request))
                    sent += 1
                    armed = self._armed
                    if armed is not None and armed(request):
                        self._armed = None
                        if self._stall:
                            stall_at = sent
                            continue
                        cutting.set()  # before it leaves: its reply is never forwarded
                        redis_w.write(b"".join(out))
                        return
                redis_w.write(b"".join(out))

        async def replies() -> None:
            nonlocal stall_at
            reader = hiredis.Reader(notEnoughData=_PENDING)
            answered = 0
            held: list[bytes] = []
            while data := await redis_r.read(65536):
                if stall_at is not None:
                    held.append(data)
                elif not cutting.is_set():
                    client_w.write(data)
                reader.feed(data)
                while reader.gets() is not _PENDING:
                    answered += 1
                if cutting.is_set() and answered >= sent:  # Redis ran the chosen request
                    return
                if stall_at is not None and answered >= stall_at:  # it ran: hold its reply
                    self.stalled.set()
                    await self.released.wait()
                    client_w.write(b"".join(held))
                    held.clear()
                    stall_at = None

        up = asyncio.create_task(requests())
        down = asyncio.create_task(replies())
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
            if cutting.is_set():
                await asyncio.wait((down,))
        finally:
            for pump in (up, down):
                pump.cancel()
            await asyncio.wait((up, down))
            for pump in (up, down):  # an OSError of a pump is its connection going: fine
                if not pump.cancelled():
                    pump.exception()
            for transport in (client_w.transport, redis_w.transport):
                transport.abort()
                self._transports.discard(transport)
            if cutting.is_set():
                self.cut.set()
            self._tasks.discard(task)


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[CuttingProxy]:
    running = CuttingProxy(redis_server.port)
    await running.start()
    yield running
    await running.close()


class Recorded(RedisStore):
    """The store, recording the ids each ``claim_expired`` hands to its hub."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[str] = []
        self.sweeps = 0

    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        claimed = await super().claim_expired(now, moves, limit)
        self.sweeps += 1
        self.handed += [session.id for session in claimed]
        return claimed


async def test_an_end_whose_claim_reply_was_lost_is_finished_with_its_reason(
    proxy: CuttingProxy,
) -> None:
    store = Recorded(proxy.url, prefix=unique_prefix("lc"), claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=None)
    async with hub:
        session = await hub.create()
        proxy.arm(fcall_of("claim_end"))
        with pytest.raises(StoreUnavailable):
            await hub.end(session.id, "logged out")
        assert proxy.cut.is_set()
        claimed = await hub.get(session.id)
        assert claimed.end_reason == "logged out"  # Redis ran the claim
        with pytest.raises(SessionNotFound):  # the session refuses activity meanwhile
            await hub.touch(session.id)
        assert await hub.end(session.id) is False  # being ended (here: by a claim nobody saw)

        await ended_once(hub, calls, store.handed, [session.id], "logged out")


async def test_an_expiry_batch_whose_claim_reply_was_lost_ends_every_session_once(
    proxy: CuttingProxy,
) -> None:
    clock = ManualClock()
    store = Recorded(proxy.url, prefix=unique_prefix("lc"), claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=10.0, clock=clock)
    due_at = clock() + 10.0
    async with hub:
        ids = [(await hub.create()).id for _ in range(30)]
        # The first claim_expired to see them due claims them all (one batch): cut it.
        claim_expired = FUNCTIONS["claim_expired"].encode()
        proxy.arm(lambda r: r[:2] == [b"FCALL", claim_expired] and float(r[5]) >= due_at)
        clock.advance(11.0)
        await asyncio.wait_for(proxy.cut.wait(), 5.0)
        await ended_once(hub, calls, store.handed, ids, "expired")


async def test_a_sweep_after_a_lost_claim_leaves_the_ends_this_instance_is_running(
    proxy: CuttingProxy,
) -> None:
    store = Recorded(proxy.url, prefix=unique_prefix("lc"), claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=None)
    release = asyncio.Event()

    @hub.on_end
    async def hold(session: Session, reason: str) -> None:
        if session.id == running.id:
            await release.wait()

    async with hub:
        running = await hub.create()
        lost = await hub.create()
        ending = asyncio.create_task(hub.end(running.id, "first"))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 5.0
        while running.id not in calls:  # its hooks run (the second one waits)
            assert loop.time() < give_up, "the end's first hook did not run"
            await asyncio.sleep(0.01)

        proxy.arm(fcall_of("claim_end"))
        with pytest.raises(StoreUnavailable):
            await hub.end(lost.id, "second")
        await wait_ended(hub, lost.id)  # a sweep handed it back: it ran while the first was held
        release.set()
        assert await asyncio.wait_for(ending, 5.0) is True
        assert calls == {running.id: ["first"], lost.id: ["second"]}
        assert store.handed == [lost.id]


async def test_the_expiry_task_sweeps_claims_every_quarter_lease_whatever_its_poll(
    redis_server: RedisServer,
) -> None:
    """Another instance's claim, left when it stopped, is taken over within a quarter lease
    (and a little) by a hub whose poll interval is far longer and which has no deadline due:
    the store's next_deadline wakes it for its sweep."""
    prefix = unique_prefix("lc")
    store = Recorded(redis_server.url, prefix=prefix, claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=None, poll_interval=30.0)
    async with hub:
        session = await hub.create()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 5.0
        while not store.sweeps:  # its first pass swept already: the claim comes after
            assert loop.time() < give_up, "the expiry task did not run"
            await asyncio.sleep(0.01)
        stopped = RedisStore(redis_server.url, prefix=prefix, claim_lease=1.0)
        await stopped.open()
        assert await stopped.claim_end(session.id, "handed over", hub.clock(), {}) is not None
        await stopped.close()  # its heartbeat key goes: its claims are free at once
        ended = await wait_ended(hub, session.id, within=3.0)
        assert ended.end_reason == "handed over"
        assert calls == {session.id: ["handed over"]}


async def test_an_end_cancelled_while_its_claim_was_out_is_finished(proxy: CuttingProxy) -> None:
    """The caller of a claim gives up while it is at Redis: Redis claims the session, the reply
    comes to nobody; the next sweep hands it back. (The hub's own ``end()`` goes on without its
    caller, see tests/core/test_cut_short.py: here the store is called directly.)"""
    store = Recorded(proxy.url, prefix=unique_prefix("lc"), claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=None)
    async with hub:
        session = await hub.create()
        proxy.arm(fcall_of("claim_end"), stall=True)
        moves = hub.lifecycle.moves(hub.lifecycle.terminate)
        ending = asyncio.create_task(store.claim_end(session.id, "gave up", hub.clock(), moves))
        await asyncio.wait_for(proxy.stalled.wait(), 5.0)  # Redis has claimed it
        ending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ending
        proxy.released.set()
        await ended_once(hub, calls, store.handed, [session.id], "gave up")


async def test_claims_left_at_close_are_taken_over_when_the_store_opens_again(
    redis_server: RedisServer,
) -> None:
    """A store closed with a claim unfinished and opened again is a new claimer: the claim of
    its earlier opening is an orphan, and its own next sweep takes it over."""
    store = Recorded(redis_server.url, prefix=unique_prefix("lc"), claim_lease=1.0)
    hub, calls = counting_hub(store, idle_timeout=None)
    async with hub:
        session = await hub.create()
        moves = hub.lifecycle.moves(hub.lifecycle.terminate)
        assert await store.claim_end(session.id, "left", hub.clock(), moves) is not None
    async with hub:  # the same store, opened again
        await ended_once(hub, calls, store.handed, [session.id], "left")
