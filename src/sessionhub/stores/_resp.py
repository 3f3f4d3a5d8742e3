"""A small multiplexed Redis client: one connection, many concurrent requests, hiredis parsing.

Why not redis-py or valkey-glide: measured on the project's 2-core machines beside
``redis-benchmark -t get -c 50`` (34,000-47,000 GET/s there), 50 concurrent asyncio tasks doing GET
got 3,000-8,200/s through redis-py's asyncio client with hiredis (each command checks a connection out
of a pool and runs several layers of Python per call), 14,000-22,500/s through valkey-glide (a Rust
core behind an FFI), and 85,000-150,000/s through this module, which writes every request of one
event-loop tick in one ``write`` on one connection and parses the replies with hiredis (already a
dependency of the ``redis`` extra). Redis answers in order, so a FIFO of futures is all the
bookkeeping multiplexing needs.

The store sees three things only: ``RedisClient.call`` (one command, one reply: one round trip),
``RedisError`` (a reply the server marked as an error) and ``StoreUnavailable`` (no usable server:
unreachable, gone, too slow, or refusing our credentials). Swapping the client means reimplementing
those, nothing in the store.

A lost connection fails every request in flight with ``StoreUnavailable`` and the next call connects
again, so the store recovers by itself when Redis comes back. A watchdog closes a connection whose
oldest request has waited longer than ``timeout``, so a frozen server cannot hang callers forever.
Messages name the server as ``host:port`` (or the socket path), never with the password.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis

from .._errors import StoreUnavailable

__all__ = ["RedisAddress", "RedisClient", "RedisError"]

Arg = str | bytes | int | float


class RedisError(Exception):
    """An error reply of the server (a script's own refusal, NOSCRIPT, OOM, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect; ``where`` is safe to log (no credentials)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    ssl: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        if self.path is not None:
            return f"unix:{self.path} db {self.db}"
        return f"{self.host}:{self.port} db {self.db}"


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        if isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, int):
            raw = b"%d" % arg
        else:
            raw = repr(float(arg)).encode()  # repr round-trips the float exactly
        append(b"$%d\r\n" % len(raw))
        append(raw)
        append(b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """One connection: requests go out in per-tick batches, replies resolve futures in order."""

    def __init__(self, where: str, timeout: float, decode: bool) -> None:
        self._where = where
        self._timeout = timeout
        # Everything sessionhub stores is UTF-8 text, so the operations connection decodes once,
        # in C; the event tailer reads MessagePack and keeps bytes.
        self._reader = hiredis.Reader(encoding="utf-8") if decode else hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self.lost: StoreUnavailable | None = None
        self.sent = 0  # commands written, for tests and benchmarks counting round trips

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._arm_watchdog()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(StoreUnavailable(f"garbled reply from Redis at {self._where}: {exc}"))
                return
            if reply is False:
                return
            if not waiters:
                self._abort(StoreUnavailable(f"unexpected reply from Redis at {self._where}"))
                return
            future = waiters.popleft()
            self._sent_at.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped, order kept
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else ""
        self._fail(StoreUnavailable(f"lost the connection to Redis at {self._where}{why}"))

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise StoreUnavailable(self.lost.message)
        future: asyncio.Future[Any] = self._loop.create_future()
        idle = not self._waiters
        self._waiters.append(future)
        self._sent_at.append(time.monotonic())
        self.sent += 1
        if idle and self._transport is not None:
            # Nothing in flight: nobody to batch with, so it leaves now, a loop turn sooner.
            self._transport.write(payload)
        else:
            if not self._out:
                # Requests made while others are out leave in one write at the end of the
                # tick: fewer syscalls under load, same order.
                self._loop.call_soon(self._flush)
            self._out.append(payload)
        return future

    def _flush(self) -> None:
        if self._transport is not None and self.lost is None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _arm_watchdog(self) -> None:
        self._watchdog = self._loop.call_later(max(self._timeout / 4, 0.05), self._check_timeout)

    def _check_timeout(self) -> None:
        if self.lost is not None:
            return
        if self._sent_at and time.monotonic() - self._sent_at[0] > self._timeout:
            self._abort(
                StoreUnavailable(
                    f"Redis at {self._where} did not answer within {self._timeout:g} s"
                )
            )
            return
        self._arm_watchdog()

    def _abort(self, error: StoreUnavailable) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: StoreUnavailable) -> None:
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(StoreUnavailable(self.lost.message))
        self._sent_at.clear()
        self._out.clear()

    def close(self) -> None:
        self._fail(StoreUnavailable(f"the connection to Redis at {self._where} was closed"))
        if self._transport is not None:
            self._transport.close()


class RedisClient:
    """A lazily (re)connecting client over one multiplexed connection."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        decode: bool = True,
        name: str = "sessionhub",
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._decode = decode
        self._name = name
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False
        self._sent_before = 0  # commands sent over earlier connections
        self._connections = 0

    @property
    def sent(self) -> int:
        """Commands sent so far over every connection (each is one round trip)."""
        current = self._protocol.sent if self._protocol is not None else 0
        return self._sent_before + current

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.lost is None

    @property
    def connection(self) -> int | None:
        """Which connection a command sent now would go over (1, 2, ... in the order they were
        made); None while there is none, so the next command would open a new one."""
        return self._connections if self.connected else None

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its reply; ``RedisError`` for an error reply."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connected()
        return await protocol.request(pack(args))

    async def connect(self) -> None:
        """Connect now (or check the live connection), raising ``StoreUnavailable`` if we cannot."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            await self._connected()

    async def _connected(self) -> _Protocol:
        if self._closed:
            raise StoreUnavailable(f"the Redis store for {self.address.where} is closed")
        if self._connecting is None:
            # Every caller that finds the connection down waits for the same attempt.
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, future: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not future.cancelled() and future.exception() is None:
            if self._protocol is not None:
                self._sent_before += self._protocol.sent
            self._protocol = future.result()
            self._connections += 1

    async def _open(self) -> _Protocol:
        address = self.address
        where = address.where
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(where, self.timeout, self._decode)

        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        factory, address.path, ssl=address.ssl
                    )
                else:
                    _, protocol = await loop.create_connection(
                        factory,
                        address.host,
                        address.port,
                        ssl=address.ssl,
                        server_hostname=address.host if address.ssl is not None else None,
                    )
        except TimeoutError:
            raise StoreUnavailable(
                f"cannot reach Redis at {where}: no connection within {self.connect_timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreUnavailable(f"cannot reach Redis at {where}: {reason}") from None
        try:
            await self._handshake(protocol)
        except BaseException:
            protocol.close()
            raise
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        """Authenticate and select the database; turn refusals into messages a person can act on."""
        address = self.address
        where = address.where
        steps: list[tuple[Arg, ...]] = []
        if address.password is not None:
            if address.username:
                steps.append(("AUTH", address.username, address.password))
            else:
                steps.append(("AUTH", address.password))
        steps.append(("CLIENT", "SETNAME", self._name))
        if address.db:
            steps.append(("SELECT", address.db))
        steps.append(("PING",))
        futures = [protocol.request(pack(step)) for step in steps]
        try:
            async with asyncio.timeout(self.connect_timeout):
                for step, future in zip(steps, futures, strict=True):
                    try:
                        await future
                    except RedisError as exc:
                        raise _handshake_error(str(step[0]), exc.message, where) from None
        except TimeoutError:
            raise StoreUnavailable(
                f"Redis at {where} accepted the connection but did not answer within "
                f"{self.connect_timeout:g} s"
            ) from None
        finally:
            for future in futures:  # mark failures of later steps as seen
                if future.done() and not future.cancelled():
                    future.exception()

    async def close(self) -> None:
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        if self._protocol is not None:
            self._protocol.close()

    def reopen(self) -> None:
        self._closed = False


def _handshake_error(step: str, message: str, where: str) -> StoreUnavailable:
    code = message.split(" ", 1)[0]
    if code == "WRONGPASS" or (step == "AUTH" and "invalid password" in message):
        return StoreUnavailable(
            f"Redis at {where} refused the user name or password in the store URL ({code})"
        )
    if code == "NOAUTH":
        return StoreUnavailable(
            f"Redis at {where} requires a password: put it in the store URL, as in "
            "redis://:PASSWORD@host:6379/0"
        )
    if step == "AUTH":
        return StoreUnavailable(f"Redis at {where} refused authentication: {message}")
    if step == "SELECT":
        return StoreUnavailable(f"Redis at {where} has no such database: {message}")
    if code == "LOADING":
        return StoreUnavailable(f"Redis at {where} is still loading its data; try again shortly")
    return StoreUnavailable(f"Redis at {where} refused {step}: {message}")
