"""The Redis Cluster store: sessions spread over every primary of a Redis (or Valkey) Cluster.

``RedisClusterStore("redis+cluster://host:port[,host:port...]")`` (``rediss+cluster://`` for TLS;
the same query options as ``redis://`` except ``db``, plus ``buckets=``). The full guide, key layout,
failure modes and figures are in ``docs/cluster.md``; this docstring is the summary.

Buckets
-------
Sessions are split into ``buckets`` (default 24: a multiple of 1, 2, 3, 4, 6, 8 and 12 primaries).
A session's bucket is a hash of its id; each bucket is a complete single-node layout (the one of
``sessionhub.stores.redis``) under the prefix ``P{<tag>}:``, whose hash tag puts every key of the
bucket (the sessions' records, data and history, and the bucket's indexes, census, deadlines,
claims, unique-label hash and event stream) in one slot. The tags are chosen so the buckets' slots
spread evenly over the slot ranges ``redis-cli --cluster create`` assigns, so buckets (and so the
sessions, the indexes and the work) spread over every primary. Because a bucket is a single-node
layout, the functions of ``_redis_lua`` run on it unchanged (``_cluster_lua`` imports them): every
single-session operation is still one ``FCALL`` round trip.

What spans buckets, and how
---------------------------
- ``find``/``count``/``census``/``next_deadline``/``purge``: every bucket is asked concurrently and
  the answers are merged (pages by id, counts summed). An index entry whose record is missing is
  skipped by the bucket's function, never listed.
- ``claim_expired``: every bucket claims its proportional share of ``limit`` at once, in one atomic
  function each (what a drained bucket leaves is shared again among the others): exactly one
  claimer per session among any number of processes. Claim leases (heartbeat keys) are kept in
  every bucket. ``finish_ends`` and ``having_children`` run the single node's functions once per
  bucket (per slice of 250 ends), all in flight together. A claim whose reply was lost (see the
  single-node store's "Expiry and claims") makes its bucket unsure: the next ``claim_expired``
  sweeps that bucket in its first round, whatever its share, and hands back this claimer's claims
  there that the instance is not handling. Claim calls are never sent twice: redis-py retries a
  lone command after a lost connection, and a claim that ran would then answer "not claimable"
  with its first reply lost unnoticed, so claims always take the pipelined path.
- A parent in another bucket: checked live before the create (``SessionNotFound``) and again after
  it; a parent that began ending in between ends the new child (reason ``parent_ended`` event
  ``transitioned``, then ``ended``) and the create fails with ``SessionNotFound``.
- Unique labels: one reservation key per ``(namespace, label, value)`` (its own hash tag, so they
  spread), written ``SET NX`` with ``<id>\\t<time>`` *before* the session, released after its end.
  A reservation whose holder is not live (ended, or no record for longer than ``2 x timeout`` after
  a crash between the steps) is taken over atomically; so a label is never held by two live
  sessions, and a crash leaves at worst a label blocked for ``2 x timeout``.
- Capacity and per-user quotas: a create under a limit takes a leased lock key per limit
  (capacity, then the user's), counts over the buckets, creates, and releases; creates without
  limits take no lock. The capacity lock is one key: with ``max_sessions`` set, creates serialize.

Events
------
Each bucket has its own stream; every open store tails all of them (one blocking ``XREAD`` per
bucket) and feeds one local log, snapshots left packed until a subscriber reads them. Event ids
are ``<bucket>:<stream id>``. Order: per session (one bucket, one stream) every process sees the
same order; across buckets each process sees the interleaving in which its tailers received them,
which can differ between processes. ``after=`` resumes exactly within a bucket; from an id another
process gave out, events of other buckets that arrived around that id can be seen again or, if
they were fed here before it, not again.

Client
------
redis-py's asyncio ``RedisCluster`` with hiredis (already this project's ``redis`` extra): slot map,
MOVED/ASK, topology refresh after a failover, TLS and auth. ``FCALL`` is routed by its first key
without the ``COMMAND GETKEYS`` round trip redis-py would otherwise make for it, and commands issued
concurrently are pipelined per primary (``_AutoPipeline``): redis-py alone spends a connection and a
send/receive per command, which made this store slower than one node. ``wait_replicas=`` ends each
pipelined write batch with ``WAIT`` on its connection. Figures beside today's client, coredis and
valkey-glide, and why redis-py stays: ``docs/cluster.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import redis.exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from .._errors import (
    CapacityExceeded,
    DuplicateSession,
    QuotaExceeded,
    SessionNotFound,
    StoreUnavailable,
    TransitionError,
    ValidationError,
    VersionConflict,
)
from .._events import EventLog
from .._lifecycle import DEFAULT_LIFECYCLE
from .._models import Page, Session
from ._base import DECODE_ERRORS, Change, CreateRules, Query, accepting_activity
from ._cluster_lua import CLUSTER_FUNCTIONS, CLUSTER_LIBRARY
from ._resp import Arg, RedisError
from .redis import (
    _DEFAULT_PREFIX,
    _FINISH_SLICE,
    RedisStore,
    _flat_id,
    _Refusal,
    _stream_id,
    _StreamEventLog,
    _StreamId,
)

__all__ = ["RedisClusterStore"]

logger = logging.getLogger("sessionhub.redis_cluster")
_T = TypeVar("_T")

_SLOTS = 16384
_MAX_IN_FLIGHT = 100  # store commands in flight at once, per store instance
_BATCHES = 4  # pipelined batches in flight at once (each holds one connection per node)
_REDIRECTS = 5  # MOVED/ASK redirects followed per command before giving up
_READ_FUNCTIONS = frozenset(
    CLUSTER_FUNCTIONS[name]
    for name in ("next_deadline", "find", "data_get", "data_items", "history_read",
                 "history_counts")
)  # fmt: skip
_READ_COMMANDS = frozenset(("GET", "HGETALL", "HMGET", "ZCARD", "ZRANGEBYSCORE", "XREVRANGE"))
# Never sent again by redis-py after a lost connection (see _AutoPipeline._on_node): a claim that
# ran, sent again, would answer "not claimable" and its first reply, lost, would go unnoticed.
_CLAIM_CALLS = frozenset((CLUSTER_FUNCTIONS[name],) for name in ("claim_end", "claim_expired"))
_STORE_OPTIONS = (
    "prefix",
    "timeout",
    "stream_length",
    "buckets",
    "wait_replicas",
    "wait_timeout_ms",
)
# Set by _run for the calling task: the bucket of the last function call, for _delivered.
_bucket_of_call: contextvars.ContextVar[int] = contextvars.ContextVar("bucket", default=0)
_skip_parent_check: contextvars.ContextVar[bool] = contextvars.ContextVar("parent", default=False)


def bucket_tags(buckets: int) -> list[str]:
    """One hash tag per bucket, bucket ``k``'s slot inside the ``k``-th of ``buckets`` equal slot
    ranges, so that evenly split primaries get an even share of buckets."""
    tags = []
    for k in range(buckets):
        low, high = k * _SLOTS // buckets, (k + 1) * _SLOTS // buckets
        j = 0
        while not low <= key_slot(f"b{k}.{j}".encode()) < high:
            j += 1
        tags.append(f"b{k}.{j}")
    return tags


class _FcallRouted(RedisCluster):
    """``RedisCluster`` that routes ``FCALL`` by its first key and ``XREAD`` by its stream (redis-py
    asks the server for the keys of a command with movable keys: one more round trip per call)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command == "FCALL" and int(args[1]) > 0:
            return self.keyslot(args[2])
        if command == "XREAD":  # XREAD COUNT n BLOCK ms STREAMS key id
            return self.keyslot(args[args.index("STREAMS") + 1])
        return await super()._determine_slot(command, *args)


def _is_write(command: Sequence[Arg]) -> bool:
    name = command[0]
    if name == "FCALL":
        return command[1] not in _READ_FUNCTIONS
    return name not in _READ_COMMANDS


class _Pending:
    """A command waiting for its reply, and the redirects it has followed."""

    __slots__ = ("asking", "command", "future", "redirects")

    def __init__(self, command: tuple[Arg, ...], future: asyncio.Future[Any]) -> None:
        self.command, self.future = command, future
        self.asking: ClusterNode | None = None
        self.redirects = 0

    def settle(self, result: Any) -> None:
        if self.future.done():  # the caller gave up (cancelled) meanwhile
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class _AutoPipeline:
    """Store commands that are issued while earlier ones are in flight go out together: per
    primary, one write of all of them on one connection and one read of the replies.

    redis-py sends every command on a pooled connection of its own and waits for its reply, so 64
    concurrent operations cost 64 send/receive pairs and 64 wake-ups of Redis: measured 0.01-0.03x
    today's single-node client (which pipelines) on the same machine. Batching by primary with
    redis-py's own node pipelines (``ClusterNode.execute_pipeline``) keeps its slot map, TLS, auth
    and topology refresh, and follows MOVED/ASK per command. A lone command takes redis-py's
    ordinary path (its redirect handling included) unless ``WAIT`` is asked for, which must follow
    the write on the same connection: then every batch with a write ends with ``WAIT``.
    """

    def __init__(self, client: RedisCluster, wait: tuple[int, int] | None) -> None:
        self._client = client
        self._wait = wait
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, command: tuple[Arg, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after every task runnable now has queued its command
        return future

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < _BATCHES:
            batch, self._queue = self._queue, []
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            await self._route(batch)
        except BaseException as exc:  # never leave a caller waiting
            for pending in batch:
                pending.settle(exc)
            raise
        finally:
            self._in_flight -= 1
            self._flush()

    async def _route(self, batch: list[_Pending]) -> None:
        client = self._client
        try:
            if client._initialize:  # a connection failed: read the slot map again first
                await client.initialize()
        except Exception as exc:
            for pending in batch:
                pending.settle(exc)
            return
        by_node: dict[str, tuple[ClusterNode, list[_Pending]]] = {}
        for pending in batch:
            try:
                node = pending.asking or client.nodes_manager.get_node_from_slot(
                    await client._determine_slot(str(pending.command[0]), *pending.command[1:])
                )
            except Exception as exc:
                pending.settle(exc)
                continue
            by_node.setdefault(node.name, (node, []))[1].append(pending)
        if len(by_node) == 1:  # no task per node for a batch on one primary (a lone command)
            await self._on_node(*next(iter(by_node.values())))
        else:
            await asyncio.gather(*(self._on_node(n, items) for n, items in by_node.values()))

    async def _on_node(self, node: ClusterNode, items: list[_Pending]) -> None:
        wait = self._wait if any(_is_write(p.command) for p in items) else None
        lone = len(items) == 1 and wait is None and items[0].asking is None
        if lone and items[0].command[1:2] not in _CLAIM_CALLS:
            # (redis-py's path retries a command once after a connection error; a claim goes
            # the pipeline's way below, which does not, so its loss reaches the store.)
            pending = items[0]
            try:
                pending.settle(await self._client.execute_command(*pending.command))
            except Exception as exc:
                pending.settle(exc)
            return
        commands: list[PipelineCommand] = []
        for pending in items:
            if pending.asking is not None:
                commands.append(PipelineCommand(len(commands), "ASKING"))
            commands.append(PipelineCommand(len(commands), *pending.command))
        if wait is not None:
            commands.append(PipelineCommand(len(commands), "WAIT", *wait))
        try:
            await node.execute_pipeline(commands)
        except Exception as exc:
            if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
                # as redis-py does for one command: drop the node's connections and read the
                # slot map again before the next batch (a failover may have moved the slots)
                node.update_active_connections_for_reconnect()
                await node.disconnect_free_connections()
                self._client._initialize = True
            for pending in items:
                pending.settle(exc)
            return
        replies = [c.result for c in commands if c.args[0] != "ASKING"]
        shortfall: Exception | None = None
        if wait is not None:
            acked = replies.pop()
            if isinstance(acked, Exception) or int(acked) < wait[0]:
                shortfall = StoreUnavailable(
                    f"the write reached the primary {node.name} but {acked} of {wait[0]} "
                    f"replicas acknowledged it within {wait[1]} ms: it may be lost in a failover"
                )
        again: list[_Pending] = []
        for pending, reply in zip(items, replies, strict=True):
            pending.asking = None
            if isinstance(reply, redis_errors.AskError) and pending.redirects < _REDIRECTS:
                pending.redirects += 1
                if isinstance(reply, redis_errors.MovedError):  # a subclass of ASK's error
                    await self._client.nodes_manager.move_slot(reply)
                    again.append(pending)
                    continue
                pending.asking = self._client.get_node(reply.host, reply.port)
                if pending.asking is not None:
                    again.append(pending)
                else:
                    pending.settle(reply)
            elif isinstance(reply, redis_errors.ClusterDownError):
                self._client._initialize = True
                pending.settle(reply)
            elif isinstance(reply, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
                self._client._initialize = True  # as above: read the slot map again first
                pending.settle(reply)
            elif shortfall is not None and _is_write(pending.command):
                pending.settle(shortfall)
            else:
                pending.settle(reply)
        if again:
            await self._route(again)


class _ClusterEventLog(_StreamEventLog):
    """The local log of events from every bucket's stream; ids ``<bucket>:<ms>-<seq>``.

    Snapshots are kept packed and unpacked when a reader first gets to them, as on one node (the
    unpacking is the node's own): each process tails every bucket, and most events are never read
    here.

    An id not in the ring resumes after the last event held of the same bucket at or before it
    (an id older than every held event of its bucket: from the oldest held, after ``missed``; newer
    than all: from now on).
    """

    def position(self, after: str | None) -> int:
        if after is None or self.seq_of(after) is not None:
            return EventLog.position(self, after)
        bucket, sep, raw = after.partition(":")
        wanted = _stream_id(raw)
        if not sep or wanted is None:
            return EventLog.position(self, after)
        oldest = self.oldest_seq
        best, seen_older, seen_any = None, False, False
        for seq in range(oldest, self.next_seq):
            # By id only: placing a position unpacks no snapshot (markers' ids have no colon).
            event_id = self.id_of(seq)
            if not event_id.startswith(bucket + ":"):
                continue
            seen_any = True
            parsed = _stream_id(event_id.partition(":")[2])
            if parsed is not None and parsed <= wanted:
                best, seen_older = seq, True
        if best is not None:
            return best
        if seen_any and not seen_older:
            return oldest - 2  # older than everything held: the reader is told it missed some
        return self.next_seq - 1


def _wait_option(replicas: int | str, timeout_ms: int | str) -> tuple[int, int] | None:
    """``(replicas, timeout in ms)`` for ``WAIT`` after every write, or None (no waiting)."""
    try:
        count, ms = int(replicas), int(timeout_ms)
    except ValueError:
        raise ValidationError(
            f"wait_replicas and wait_timeout_ms must be numbers, got {replicas!r}, {timeout_ms!r}"
        ) from None
    if not 0 <= count <= 16 or not 1 <= ms <= 60_000:
        raise ValidationError(
            f"wait_replicas must be 0 to 16 and wait_timeout_ms 1 to 60000, got {count}, {ms}"
        )
    return (count, ms) if count else None


def _split_hosts(netloc: str) -> tuple[str, list[ClusterNode]]:
    """``user:pw@h1:p1,h2:p2`` → (credentials part, startup nodes)."""
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = []
    for host in hosts.split(","):
        parts = urllib.parse.urlsplit(f"//{host}")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ValidationError(f"malformed Redis Cluster URL: {exc}") from None
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", port))
    return userinfo + at, nodes


_CONNECTION_CODE = (
    os.path.join("redis", "asyncio", "connection.py"),
    os.path.join("asyncio", "streams.py"),
    os.path.join("asyncio", "selector_events.py"),
)


def _closed_writer_race(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's write on a connection the peer has just closed: redis-py 8.1
    lets it escape as ``AttributeError``/``TypeError`` instead of ``ConnectionError``
    (redis/redis-py#4287, #3546; seen here while a primary fails over). Only an error raised in
    that connection code counts, so a bug of ours is never mistaken for a lost connection."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.endswith(_CONNECTION_CODE)


def _refused_before_labels(old: Session | None, session_id: str, change: Change) -> Session:
    """``old`` if ``change`` gets as far as its labels. The function refuses an unknown, ended or
    ending session, a stale ``expected_version`` and a missing move before it looks at labels;
    the reservations, made before it runs, must not report a label taken instead (the function
    checks all of this again, atomically)."""
    old = accepting_activity(old, session_id)
    if change.expected_version is not None and change.expected_version != old.version:
        raise VersionConflict(
            f"session {session_id} is at version {old.version}, not {change.expected_version}"
        )
    if change.moves is not None and old.state not in change.moves:
        raise TransitionError(old.state, change.event or "?")
    return old


class RedisClusterStore(RedisStore):
    """Sessions on a Redis Cluster, shared by every hub process using the same URL and prefix."""

    def __init__(
        self,
        url: str = "redis+cluster://127.0.0.1:7000",
        *,
        prefix: str = _DEFAULT_PREFIX,
        event_buffer: int = 10_000,
        stream_length: int | None = None,
        timeout: float = 10.0,
        claim_lease: float = 30.0,
        buckets: int = 24,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ) -> None:
        scheme, sep, rest = url.partition("://")
        if scheme not in ("redis+cluster", "rediss+cluster") or not sep:
            raise ValidationError(f"a Redis Cluster URL starts with redis+cluster://: {url!r}")
        netloc, _, tail = rest.partition("/")
        credentials, nodes = _split_hosts(netloc)
        query_text = tail.partition("?")[2] if "?" in tail else ""
        if "?" in netloc:
            netloc, _, query_text = netloc.partition("?")
            credentials, nodes = _split_hosts(netloc)
        query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
        options = {name: query.pop(name) for name in _STORE_OPTIONS if name in query}
        # The single-node store's checks of prefix, timeout and stream length, on a stand-in URL.
        single = f"{scheme.split('+')[0]}://{credentials}{nodes[0].host}:{nodes[0].port}/0"
        passthrough = {k: v for k, v in options.items() if k in _STORE_OPTIONS[:3]}
        if query or passthrough:
            single += "?" + urllib.parse.urlencode({**query, **passthrough})
        RedisStore.__init__(
            self,
            single,
            prefix=prefix,
            event_buffer=event_buffer,
            stream_length=stream_length,
            timeout=timeout,
            claim_lease=claim_lease,
        )
        if "{" in self.prefix or "}" in self.prefix:
            raise ValidationError(f"a Redis Cluster key prefix cannot hold braces: {self.prefix!r}")
        try:
            count = int(options.get("buckets", buckets))
        except ValueError:
            raise ValidationError(f"buckets must be a number, got {options['buckets']!r}") from None
        if not 1 <= count <= 1024:
            raise ValidationError(f"buckets must be 1 to 1024, got {count}")
        self._wait = _wait_option(
            options.get("wait_replicas", wait_replicas),
            options.get("wait_timeout_ms", wait_timeout_ms),
        )
        self.events = _ClusterEventLog(event_buffer, self.damaged)
        self.buckets = count
        tags = bucket_tags(count)
        self._prefixes = [f"{self.prefix}{{{tag}}}:" for tag in tags]
        self._slots = [key_slot(tag.encode()) for tag in tags]
        address = self.address
        common: dict[str, Any] = {
            "startup_nodes": nodes,
            "username": address.username,
            "password": address.password,
            "ssl": address.ssl is not None,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": min(self.timeout, 2.0),
            "retry": Retry(NoBackoff(), 1),
            "max_connections": _MAX_IN_FLIGHT + 2 * count,  # + the tailers and heartbeats
        }
        if address.ssl is not None and address.ssl.verify_mode.name == "CERT_NONE":
            common |= {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
        self._nodes, self._common = nodes, common
        self._cluster: _FcallRouted | None = None
        self._pipeline: _AutoPipeline | None = None
        self._tail_cluster: _FcallRouted | None = None
        self._tailers: list[asyncio.Task[None]] = []
        self._last_ids = ["0-0"] * count
        self._fed_at: list[tuple[int, int]] = [(0, 0)] * count
        self._waiting: list[list[tuple[tuple[int, int], int, asyncio.Future[None]]]] = [
            [] for _ in range(count)
        ]
        self._calls = 0
        self._claim_turn = 0  # which buckets get the remainder of the next claim's split
        # redis-py refuses a command (MaxConnectionsError) rather than wait when a node's pool is
        # full: commands wait here instead, at most a pool's worth in flight.
        self._in_flight = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._limited = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> RedisClusterStore:
        """``redis+cluster://[[user]:password@]host:port[,host:port...][?prefix=&buckets=]``, or
        ``rediss+cluster://`` for TLS."""
        return cls(url)

    def __repr__(self) -> str:
        where = ",".join(f"{node.host}:{node.port}" for node in self._nodes)
        return f"RedisClusterStore({where}, prefix={self.prefix!r}, buckets={self.buckets})"

    @property
    def round_trips(self) -> int:
        """Commands sent for store operations so far (the event tailers' reads not counted)."""
        return self._calls

    def bucket(self, session_id: str) -> int:
        """The bucket of a session: CRC16 of its id, as Redis hashes keys, modulo the buckets."""
        return key_slot(session_id.encode()) % self.buckets

    def _key(self, kind: str, session_id: str) -> str:
        return f"{self._prefixes[self.bucket(session_id)]}{kind}:{{{session_id}}}"

    def _bucket_of_session(self, session_id: str) -> int:
        return self.bucket(session_id)

    def _epoch(self, session_id: str) -> Hashable:
        """The primary that serves the session's bucket now (see ``RedisStore._epoch``): after a
        failover another one, so copies made before it are not used."""
        client = self._cluster
        if client is None:
            return None
        slot = self._slots[self.bucket(session_id)]
        try:
            return client.nodes_manager.get_node_from_slot(slot).name
        except (redis_errors.RedisClusterException, KeyError):  # the slot is not covered now
            return None

    # the client

    def _client(self, *, tail: bool = False) -> _FcallRouted:
        client = self._tail_cluster if tail else self._cluster
        if client is None:
            raise StoreUnavailable("the Redis Cluster store is not open")
        return client

    async def _call(self, *command: Arg, tail: bool = False) -> Any:
        """One command, routed by its key; cluster and connection failures → ``StoreUnavailable``,
        other error replies → ``RedisError``."""
        self._calls += not tail
        try:
            if tail:
                return await self._client(tail=True).execute_command(*command)
            if self._pipeline is None:
                raise StoreUnavailable("the Redis Cluster store is not open")
            async with self._in_flight:
                return await self._pipeline.call(command)
        except (redis_errors.ClusterDownError, redis_errors.TryAgainError) as exc:
            raise StoreUnavailable(f"the Redis Cluster is failing over: {exc}") from None
        except redis_errors.ResponseError as exc:
            raise RedisError(str(exc)) from None
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
            raise StoreUnavailable(
                f"the Redis Cluster is unreachable: {type(exc).__name__}: {exc}"
            ) from None
        except (AttributeError, TypeError) as exc:
            if not _closed_writer_race(exc):
                raise
            raise StoreUnavailable(f"the Redis Cluster connection was lost: {exc}") from None

    # lifetime

    async def open(self) -> None:
        if self._opened:
            return
        self._new_claimer()
        tail_timeout = self.timeout + self._tail_block_ms / 1000 + 2.0
        try:
            self._cluster = _FcallRouted(decode_responses=True, **self._common)
            self._tail_cluster = _FcallRouted(
                decode_responses=False, **(self._common | {"socket_timeout": tail_timeout})
            )
            await self._cluster.initialize()
            await self._tail_cluster.initialize()
            self._pipeline = _AutoPipeline(self._cluster, self._wait)
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
            await self._drop_clients()
            raise StoreUnavailable(
                f"cannot reach the Redis Cluster: {type(exc).__name__}: {exc}"
            ) from None
        try:
            await self._load_functions()
            await self._heartbeat_all(tail=False)
            await self._prefill_all()
        except BaseException:
            await self._drop_clients()
            raise
        self._tailers = [
            asyncio.create_task(self._tail_bucket(b), name=f"sessionhub-cluster-events-{b}")
            for b in range(self.buckets)
        ]
        self._tailer = self._tailers[0]
        self._opened = True

    async def _drop_clients(self) -> None:
        for client in (self._cluster, self._tail_cluster):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._cluster = self._tail_cluster = None
        self._pipeline = None

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        # redis-py can hold on to a cancelled blocking read: closing the tailers' client ends
        # their reads, and a tailer that finds the store closed stops.
        for task in self._tailers:
            task.cancel()
        if self._tailers:
            await asyncio.wait(self._tailers, timeout=0.1)
        tail, self._tail_cluster = self._tail_cluster, None
        if tail is not None:
            with contextlib.suppress(Exception):
                await tail.aclose()
        for task in self._tailers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tailers, self._tailer = [], None
        for waiters in self._waiting:
            while waiters:
                future = heapq.heappop(waiters)[2]
                if not future.done():
                    future.set_result(None)
        with contextlib.suppress(StoreUnavailable):
            await asyncio.gather(
                *(self._call("DEL", p + self._beat_suffix) for p in self._prefixes)
            )
        await self._drop_clients()

    @property
    def _beat_suffix(self) -> str:
        return f"claimer:{self._claimer}"

    async def _load_functions(self) -> None:
        """``FUNCTION LOAD REPLACE`` on every primary (idempotent)."""
        client = self._client()
        try:
            await client.execute_command(
                "FUNCTION", "LOAD", "REPLACE", CLUSTER_LIBRARY, target_nodes=client.get_primaries()
            )
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
            raise StoreUnavailable(
                f"the Redis Cluster refused the sessionhub function library (Redis 7 or later is "
                f"needed, and FUNCTION permission): {str(exc)[:200]}"
            ) from None

    async def _heartbeat_all(self, *, tail: bool) -> None:
        lease = int(self.claim_lease * 1000)
        await asyncio.gather(
            *(self._call("SET", p + self._beat_suffix, "1", "PX", lease, tail=tail)
              for p in self._prefixes)
        )  # fmt: skip
        self._next_beat = time.monotonic() + self.claim_lease / 4

    # events

    async def _prefill_all(self) -> None:
        """The last events of every bucket, oldest first by stream time, so a subscriber can
        resume here from an id another process gave out."""
        replies = await asyncio.gather(
            *(
                self._call("XREVRANGE", p + "events", "+", "-", "COUNT", self.events.capacity,
                           tail=True)
                for p in self._prefixes
            )
        )  # fmt: skip
        merged = []
        for bucket, entries in enumerate(replies):
            for raw_id, values in entries or ():
                merged.append((_stream_id(raw_id.decode()) or (0, 0), bucket, raw_id, values))
        merged.sort(key=lambda item: item[0])
        for _, bucket, raw_id, values in merged[-self.events.capacity :]:
            self._feed_bucket(bucket, [(raw_id, values)])

    def _feed_bucket(self, bucket: int, entries: list[Any]) -> None:
        append = self.events.append_packed
        for raw_id, values in entries:
            stream_id = raw_id.decode()
            event_id = f"{bucket}:{stream_id}"
            # The snapshot stays packed until a subscriber reads the event (most never are here).
            try:
                append(values[b"k"].decode(), float(values[b"a"]), values[b"s"], event_id)
            except DECODE_ERRORS as exc:
                self.damaged(f"event {event_id}", exc)
            self._last_ids[bucket] = stream_id
        if entries:
            self._fed_at[bucket] = _stream_id(self._last_ids[bucket]) or self._fed_at[bucket]
            waiters = self._waiting[bucket]
            while waiters and waiters[0][0] <= self._fed_at[bucket]:
                future = heapq.heappop(waiters)[2]
                if not future.done():
                    future.set_result(None)

    async def _tail_bucket(self, bucket: int) -> None:
        key = self._prefixes[bucket] + "events"
        delay, outage = 0.05, False
        while True:
            try:
                if bucket == 0 and time.monotonic() >= self._next_beat:
                    await self._heartbeat_all(tail=True)
                reply = await self._call(
                    "XREAD", "COUNT", 1000, "BLOCK", self._tail_block_ms, "STREAMS", key,
                    self._last_ids[bucket], tail=True,
                )  # fmt: skip
            except Exception as exc:
                if not self._opened:
                    return
                if not outage:
                    logger.warning("event tail of bucket %d paused, retrying: %s", bucket, exc)
                    outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if outage:
                logger.warning("event tail of bucket %d resumed", bucket)
                outage = False
            delay = 0.05
            if reply:  # [[stream key, [(id, {field: value}), ...]]]
                self._feed_bucket(bucket, reply[0][1])

    def _ring_id(self, event_id: str) -> str:
        return f"{_bucket_of_call.get()}:{event_id}"  # as _feed_bucket names it

    async def _delivered(self, event_id: str) -> None:
        bucket = _bucket_of_call.get()
        wanted = _stream_id(event_id)
        if wanted is None or wanted <= self._fed_at[bucket] or not self._tailers:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_seq += 1
        heapq.heappush(self._waiting[bucket], (wanted, self._waiter_seq, future))
        try:
            await asyncio.wait_for(future, self._event_wait)
        except TimeoutError:
            logger.warning("event %s not yet tailed back from the Cluster; going on", event_id)

    # functions

    def _bucket_of_key(self, key: str) -> int:
        prefix = key[: key.index("}") + 2]
        return self._prefixes.index(prefix)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        if name == "create_checked" and _skip_parent_check.get():
            name = "create_checked_unparented"
        bucket = self._bucket_of_key(keys[0])
        _bucket_of_call.set(bucket)
        return await self._run_in(bucket, name, keys, args)

    async def _run_in(
        self, bucket: int, name: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        """One FCALL in a bucket; a function call without keys of its own names the bucket's
        ``live`` key, so it is routed to (and may only touch) the bucket's slot."""
        prefix = self._prefixes[bucket]
        keys = list(keys) or [prefix + "live"]
        command = ("FCALL", CLUSTER_FUNCTIONS[name], len(keys), *keys, prefix, *args)
        try:
            return await self._call(*command)
        except RedisError as exc:
            error = exc
        if "Function not found" in error.message:  # a new primary, or one that lost its data
            await self._load_functions()
            try:
                return await self._call(*command)
            except RedisError as exc:
                error = exc
        message = error.message
        if message.startswith("SH"):
            parts = message.split("\x1f")
            raise _Refusal(parts[0][2:], parts[1:-1])
        raise StoreUnavailable(f"the Redis Cluster failed the {name} operation: {message}")

    async def _each_bucket(self, name: str, args: Sequence[Arg]) -> list[Any]:
        return list(
            await asyncio.gather(*(self._run_in(b, name, (), args) for b in range(self.buckets)))
        )

    # sessions

    async def _record(self, key: str) -> list[str]:
        record: dict[str, str] = await self._call("HGETALL", key)
        return [item for pair in record.items() for item in pair]

    async def _fields(self, key: str, *names: str) -> list[str | None]:
        values: list[str | None] = await self._call("HMGET", key, *names)
        return values

    async def create(self, session: Session, rules: CreateRules) -> Session:
        elsewhere = session.parent_id is not None and (
            self.bucket(session.parent_id) != self.bucket(session.id)
        )
        if elsewhere:
            async with self._refused_as_one_node(session):
                await self._check_parent(session.parent_id or "")
        async with self._limit_locks(session, rules):
            async with self._refused_as_one_node(session):
                await self._check_limits(session, rules)
                taken = await self._reserve_unique(
                    session.id, session.namespace, session.labels, rules
                )
            token = _skip_parent_check.set(elsewhere)
            try:
                created = await super().create(
                    session, CreateRules(unique_labels=rules.unique_labels)
                )
            except BaseException:
                await self._release_unique(session.id, session.namespace, taken)
                raise
            finally:
                _skip_parent_check.reset(token)
        if elsewhere and not await self._parent_live(session.parent_id or ""):
            # The parent began ending between the check and the create: end the child, as the
            # hub would have, and refuse the create.
            await self._end_orphan(created, session.parent_id or "")
            raise SessionNotFound(session.parent_id or "", f"parent session is ending: "
                                  f"{session.parent_id}")  # fmt: skip
        return created

    @contextlib.asynccontextmanager
    async def _refused_as_one_node(self, session: Session) -> AsyncIterator[None]:
        """The checks this store makes before its create function (a parent elsewhere, limits,
        unique labels) come in another order than one node's function makes them: the id, the
        parent, then capacity, quota and labels. When one refuses, the error is the one a single
        node gives (found again only then: a create that passes costs nothing more)."""
        try:
            yield
        except (SessionNotFound, CapacityExceeded, QuotaExceeded, DuplicateSession):
            if await self._call("EXISTS", self._key("s", session.id)):
                raise DuplicateSession(f"session id already exists: {session.id}") from None
            if session.parent_id is not None:
                await self._check_parent(session.parent_id)
            raise

    async def _parent_live(self, parent_id: str) -> bool:
        parent = await self.get(parent_id)
        return parent is not None and parent.ended_at is None and parent.end_reason is None

    async def _check_parent(self, parent_id: str) -> None:
        parent = await self.get(parent_id)
        if parent is None or parent.ended_at is not None:
            raise SessionNotFound(parent_id)
        if parent.end_reason is not None:
            raise SessionNotFound(parent_id, f"parent session is ending: {parent_id}")

    async def _end_orphan(self, child: Session, parent_id: str) -> None:
        """End a child created under a parent that was ending meanwhile. The store does not know
        the hub's lifecycle: the child takes the state its parent ended in (the default
        lifecycle's when the parent is gone), and no hook runs for it (it was never handed out)."""
        parent = await self.get(parent_id)
        ended = parent.state if parent is not None and parent.ended_at is not None else None
        claimed = await self.claim_end(child.id, "parent_ended", child.created_at, {})
        if claimed is not None:
            state = ended or DEFAULT_LIFECYCLE.ended
            await self.finish_end(claimed.id, child.created_at, state, child.created_at)

    @contextlib.asynccontextmanager
    async def _limit_locks(self, session: Session, rules: CreateRules) -> AsyncIterator[None]:
        """Creates under a limit count and insert one at a time: a lock key per limit (capacity,
        then the user's quota, always in that order), leased for ``timeout`` so a crashed holder
        frees it. Creates without limits take no lock."""
        keys = []
        if rules.max_sessions is not None:
            keys.append(f"{self.prefix}lock:{{capacity}}")
        if rules.max_sessions_per_user is not None and session.user_id is not None:
            keys.append(f"{self.prefix}lock:{{user:{session.user_id}}}")
        if not keys:
            yield
            return
        held: list[str] = []
        # In this process, limited creates queue in call order (asyncio locks are fair), as their
        # FCALLs would on one Redis; the lock keys order them across processes.
        async with self._limited:
            try:
                for key in keys:
                    await self._lock(key, session.id)
                    held.append(key)
                yield
            finally:
                for key in held:
                    with contextlib.suppress(StoreUnavailable):
                        await self._run_in_key(key, "unique_release", (session.id,))

    async def _lock(self, key: str, owner: str) -> None:
        lease = int(self.timeout * 1000)
        give_up = time.monotonic() + self.timeout
        pause = 0.001
        while not await self._call("SET", key, f"{owner}\t", "NX", "PX", lease):
            if time.monotonic() > give_up:
                raise StoreUnavailable(f"the Redis Cluster lock {key} stayed taken; retry")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _check_limits(self, session: Session, rules: CreateRules) -> None:
        if rules.max_sessions is not None:
            live = await self._sum_zcard("live")
            if live >= rules.max_sessions:
                raise CapacityExceeded(
                    f"the hub holds its maximum of {rules.max_sessions} sessions"
                )
        if rules.max_sessions_per_user is not None and session.user_id is not None:
            owned = await self._sum_zcard("user:" + session.user_id)
            if owned >= rules.max_sessions_per_user:
                raise QuotaExceeded(
                    f"user {session.user_id} already has {owned} live sessions "
                    f"(limit {rules.max_sessions_per_user})"
                )

    async def _sum_zcard(self, suffix: str) -> int:
        counts = await asyncio.gather(*(self._call("ZCARD", p + suffix) for p in self._prefixes))
        return sum(int(n) for n in counts)

    # unique labels: one reservation key per (namespace, name, value), across buckets

    def _unique_key(self, namespace: str, name: str, value: str) -> str:
        return f"{self.prefix}u:{{{namespace}\t{len(name)}:{name}={value}}}"

    async def _reserve_unique(
        self,
        session_id: str,
        namespace: str,
        labels: Mapping[str, str],
        rules: CreateRules | Change,
    ) -> list[tuple[str, str]]:
        """Reserve each unique label the session will hold; ``DuplicateSession`` (nothing kept)
        when a live session holds one. Returns the reservations this call took: those the session
        held already (a create of an id that exists) are not the caller's to release."""
        taken: list[tuple[str, str]] = []
        try:
            for name in rules.unique_labels:
                value = labels.get(name)
                if value is not None and await self._reserve(session_id, namespace, name, value):
                    taken.append((name, value))
        except BaseException:
            await self._release_unique(session_id, namespace, taken)
            raise
        return taken

    async def _reserve(self, session_id: str, namespace: str, name: str, value: str) -> bool:
        """Reserve one label for the session: True if this call took it, False if it held it."""
        key = self._unique_key(namespace, name, value)
        mine = f"{session_id}\t{time.time()!r}"
        for _ in range(3):
            if await self._call("SET", key, mine, "NX"):
                return True
            current = await self._call("GET", key)
            if current is None:
                continue
            holder, _, since = current.partition("\t")
            if holder == session_id:
                return False
            record = await self.get(holder)
            if record is not None and record.ended_at is None:
                raise DuplicateSession(
                    f"label {name}={value} is held by live session {holder} in {namespace}"
                )
            if record is None and time.time() - float(since or 0) < 2 * self.timeout:
                raise DuplicateSession(
                    f"label {name}={value} is being taken by session {holder} in {namespace}"
                )
            if await self._run_in_key(key, "unique_take", (current, mine)):
                return True
        raise DuplicateSession(f"label {name}={value} is contended in {namespace}; retry")

    async def _run_in_key(self, key: str, name: str, args: Sequence[Arg]) -> Any:
        command = ("FCALL", CLUSTER_FUNCTIONS[name], 1, key, self.prefix, *args)
        try:
            return await self._call(*command)
        except RedisError as exc:
            if "Function not found" not in exc.message:
                raise StoreUnavailable(f"the Redis Cluster failed {name}: {exc.message}") from None
        await self._load_functions()
        return await self._call(*command)

    async def _release_unique(
        self, session_id: str, namespace: str, labels: Sequence[tuple[str, str]]
    ) -> None:
        for name, value in labels:
            with contextlib.suppress(StoreUnavailable):
                await self._run_in_key(
                    self._unique_key(namespace, name, value), "unique_release", (session_id,)
                )

    async def modify(self, session_id: str, change: Change) -> Session:
        if not change.unique_labels or (change.labels is None and not change.labels_remove):
            return await super().modify(session_id, change)
        old = _refused_before_labels(await self.get(session_id), session_id, change)
        merged = {**old.labels, **(change.labels or {})}
        for name in change.labels_remove:
            merged.pop(name, None)
        wanted = [
            (name, merged[name])
            for name in change.unique_labels
            if name in merged and old.labels.get(name) != merged[name]
        ]
        taken = await self._reserve_unique(session_id, old.namespace, dict(wanted), change)
        try:
            new = await super().modify(session_id, change)
        except BaseException:
            await self._release_unique(session_id, old.namespace, taken)
            raise
        dropped = [(n, v) for n, v in old.labels.items() if new.labels.get(n) != v]
        await self._release_unique(session_id, old.namespace, dropped)
        return new

    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        ended = await super().finish_end(session_id, now, ended_state, retain_until)
        if ended is not None and ended.labels:
            # After the end: a crash here leaves reservations held by a session that is not
            # live, which the next reservation takes over.
            await self._release_unique(session_id, ended.namespace, list(ended.labels.items()))
        return ended

    async def finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        # The single node's finish_ends function, once per slice of each bucket's ends (a bucket's
        # keys share one slot, so the function is valid there); every call goes out at once, one
        # pipelined batch per primary. Unique reservations are released after the ends, as
        # finish_end does.
        with self._handled_here([sid for sid, _ in ends]):  # (see RedisStore._handling)
            return await self._finish_ends(ends, now, ended_state)

    async def _finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        by_bucket: dict[int, list[int]] = {}
        for index, (sid, _) in enumerate(ends):
            by_bucket.setdefault(self.bucket(sid), []).append(index)
        calls = [
            (bucket, indexes[i : i + _FINISH_SLICE])
            for bucket, indexes in by_bucket.items()
            for i in range(0, len(indexes), _FINISH_SLICE)
        ]
        at = repr(float(now))
        head: list[Arg] = [self._maxlen, at, ended_state]
        built = []
        for _, part in calls:
            args, news = list(head), []
            for i in part:
                end, new = self._end_args(ends[i][0], ends[i][1], at, ended_state)
                args += end
                news.append(new)
            built.append((args, news))
        replies = await asyncio.gather(
            *(
                self._through_failover(self._run_in, bucket, "finish_ends", (), args)
                for (bucket, _), (args, _) in zip(calls, built, strict=True)
            ),
            return_exceptions=True,
        )
        finished: list[Session | None] = [None] * len(ends)
        last: dict[int, tuple[_StreamId, str]] = {}  # per bucket: its newest event
        failure: BaseException | None = None
        for (bucket, part), (_, news), reply in zip(calls, built, replies, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply  # the others are finished; these stay claimed
                continue
            for index, one, new in zip(part, reply, news, strict=True):
                ended = self._end_reply(one, new)
                if ended is not None:
                    event_id = ended[0]
                    position = _stream_id(event_id)
                    if position is not None and position > last.get(bucket, ((0, 0), ""))[0]:
                        last[bucket] = (position, event_id)
                    finished[index] = ended[1]
        await asyncio.gather(
            *(self._delivered_in(bucket, event_id) for bucket, (_, event_id) in last.items()),
            *(
                self._release_unique(ended.id, ended.namespace, list(ended.labels.items()))
                for ended in finished
                if ended is not None and ended.labels
            ),
        )
        if failure is not None:
            raise failure
        return finished

    async def _delivered_in(self, bucket: int, event_id: str) -> None:
        _bucket_of_call.set(bucket)  # this task's own context: a gathered coroutine is a task
        await self._delivered(event_id)

    async def having_children(self, session_ids: Sequence[str]) -> set[str]:
        # A child is indexed in its own bucket, which need not be its parent's: every bucket runs
        # the single node's having_children on all the ids, at once (one pipelined batch per
        # primary). ``parent:<id>`` exists while a child is live or claimed for its end.
        if not session_ids:
            return set()
        found = await asyncio.gather(
            *(
                self._through_failover(self._run_in, b, "having_children", (), session_ids)
                for b in range(self.buckets)
            )
        )
        return {sid for part in found for sid in part}

    async def _through_failover(self, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``call(*args)``, again while the Cluster answers ``StoreUnavailable``, for up to half
        the claim lease (a failover takes seconds).

        For the steps after a claim: on a Cluster one primary can fail while the others answer,
        so an expiry batch can be claimed in the live buckets and then fail to look up children
        or to finish in a failing one. Its claimer is alive, so no other process takes those
        claims over; giving up at once would leave them unfinished. Both steps can be repeated:
        a lookup only reads, and an end already finished answers nothing the second time."""
        give_up = time.monotonic() + self.claim_lease / 2
        pause = 0.05
        while True:
            try:
                return await call(*args)
            except StoreUnavailable:
                if not self._opened or time.monotonic() + pause > give_up:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    # fan-out reads

    async def find(self, query: Query, *, limit: int, cursor: str | None) -> Page:
        args = self._query_args(query, "find", limit, cursor)
        merged: list[Sequence[str]] = []
        for flats in await self._each_bucket("find", args):
            merged += flats
        merged.sort(key=_flat_id)
        more = len(merged) > limit
        items = self._listed(merged[:limit])
        # The cursor is the last id read, so a damaged record at the page's end is passed too.
        return Page(items=items, cursor=_flat_id(merged[limit - 1]) if more else None)

    async def count(self, query: Query) -> int:
        args = self._query_args(query, "count", 0, None)
        return sum(int(n) for n in await self._each_bucket("find", args))

    async def census(self) -> dict[tuple[str, str], int]:
        replies = await asyncio.gather(
            *(self._call("HGETALL", p + "census") for p in self._prefixes)
        )
        out: dict[tuple[str, str], int] = {}
        for reply in replies:
            for field, value in reply.items():
                namespace, _, state = field.partition("\t")
                out[namespace, state] = out.get((namespace, state), 0) + int(value)
        return {key: n for key, n in out.items() if n > 0}

    async def next_deadline(self) -> float | None:
        scores = [s for s in await self._each_bucket("next_deadline", ()) if s is not None]
        return self._sweep_due(min((float(s) for s in scores), default=None))

    async def purge(self, now: float) -> int:
        at = repr(float(now))
        purged = await asyncio.gather(*(self._purge_bucket(b, at) for b in range(self.buckets)))
        return sum(purged)

    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        """Up to ``limit`` due sessions: every bucket claims its proportional share at once, one
        atomic function call per bucket (exactly one claimer per session among any number of
        processes).

        Sessions hash evenly over the buckets, so under a burst each holds about its share of what
        is due. A bucket that claims less than its share has nothing more due (its function reads
        on past stale deadline entries until it has its share or none is left); what it left of
        ``limit`` is shared again among the buckets that claimed their whole share, until
        ``limit`` are claimed or every bucket is drained (the hub takes a short batch to mean
        that nothing more is due). Each bucket claims its own earliest; across buckets the order
        is by bucket share, not strictly by deadline.

        A bucket where a claim's reply was lost is swept at the first round of the next call,
        whatever its share, and hands back this claimer's claims there that it is not handling
        (see ``RedisStore``'s "Expiry and claims")."""
        self._swept = (now, time.monotonic())
        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + self.claim_lease / 4
        unsure = dict(self._unsure)  # bucket -> the losses counted there when asked
        handling: dict[int, list[str]] = {}
        if unsure:
            self._racing = set()
            handling = self._handling()
        try:
            return await self._claim_buckets(now, moves, limit, sweep, unsure, handling)
        except (StoreUnavailable, _Refusal):
            raise  # a bucket's own failure, counted there (_claim_in)
        except BaseException:
            # Cancelled: whatever some bucket claimed did not reach the hub. Every bucket is
            # swept next.
            for bucket in range(self.buckets):
                self._unsure_of(bucket)
            raise
        finally:
            if unsure:
                self._racing = None

    async def _claim_buckets(
        self,
        now: float,
        moves: Mapping[str, str],
        limit: int,
        sweep: bool,
        unsure: dict[int, int],
        handling: dict[int, list[str]],
    ) -> list[Session]:
        claimed: list[Session] = []
        failure: BaseException | None = None
        active = list(range(self.buckets))
        while len(claimed) < limit and active:
            shares = self._shares(active, limit - len(claimed))
            asked = [b for b in active if shares[b] or sweep or b in unsure]
            replies = await asyncio.gather(
                *(
                    self._claim_in(b, now, moves, shares[b], sweep, unsure.get(b), handling)
                    for b in asked
                ),
                return_exceptions=True,
            )
            sweep = False
            unsure = {}
            done: set[int] = set()  # claimed less than its share: nothing more due there now
            for bucket, reply in zip(asked, replies, strict=True):
                if isinstance(reply, BaseException):
                    # Raised only if nothing was claimed: what other buckets claimed must reach
                    # the hub (their claimer is alive, so no other process would take them).
                    failure = failure or reply
                    done.add(bucket)
                    continue
                claimed += reply
                if len(reply) < shares[bucket]:
                    done.add(bucket)
            active = [b for b in active if b not in done]
        if failure is not None and not claimed:
            raise failure
        claimed.sort(key=lambda s: (s.expires_at if s.expires_at is not None else now, s.id))
        return claimed

    def _shares(self, active: Sequence[int], limit: int) -> dict[int, int]:
        """``limit`` split evenly over the ``active`` buckets; the remainder goes one each to
        buckets taken in turn across calls, so a small ``limit`` does not favour the first."""
        base, extra = divmod(limit, len(active))
        start = self._claim_turn % len(active)
        self._claim_turn += extra
        lucky = {active[(start + i) % len(active)] for i in range(extra)}
        return {b: base + (b in lucky) for b in active}

    async def _claim_in(
        self,
        bucket: int,
        now: float,
        moves: Mapping[str, str],
        share: int,
        sweep: bool,
        mark: int | None,
        handling: Mapping[int, Sequence[str]],
    ) -> list[Session]:
        """One bucket's claims; with ``mark`` (the losses counted in the bucket), it also hands
        back this claimer's claims there that this instance is not handling (``handling``, by
        bucket)."""
        pairs: list[Arg] = [item for pair in moves.items() for item in pair]
        limit = max(share, 1 if sweep or mark is not None else 0)
        mode = "2" if mark is not None else "1" if sweep else "0"
        args: list[Arg] = [
            self._maxlen, repr(float(now)), limit, self._claimer, mode, len(pairs) // 2, *pairs,
        ]  # fmt: skip
        if mark is not None:
            handled = handling.get(bucket, ())
            args += (len(handled), *handled)
        try:
            claimed = await self._run_in(bucket, "claim_expired", (), args)
            if mark is not None:
                claimed = self._adopted(bucket, mark, claimed, limit)
            if not claimed:
                return []
            _bucket_of_call.set(bucket)  # this task's own context (see _ring_id)
            event_ids = [event_id for event_id, _ in claimed if event_id]
            if event_ids:
                await self._delivered(event_ids[-1])
            return await self._claimed(claimed)
        except BaseException:
            self._unsure_of(bucket)
            raise
