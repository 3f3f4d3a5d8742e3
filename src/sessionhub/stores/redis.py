"""The Redis store: many hub processes on many machines share one Redis (7.0 or later).

``RedisStore("redis://host:6379/0")`` (also ``rediss://`` for TLS and ``unix:///path.sock?db=0``;
``?prefix=app1:`` sets the key prefix, ``?timeout=`` seconds per request, ``?stream_length=`` the
retained events). Sessions, indexes, data, history and the event log live in Redis; every store
operation is one round trip (a function of the library in ``_redis_lua`` run by ``FCALL``, or one
plain ``HMGET`` or ``HGETALL``: see "Reads" for the one exception), atomic on the server, so
uniqueness, quotas, compare-and-set, transitions and
expiry claims hold across every process sharing the Redis. Redis's own persistence (AOF with
``appendfsync always`` or ``everysec``) decides what survives a crash of Redis.

Client
------
``_resp.RedisClient``: one multiplexed connection per store, the requests of one event-loop tick
sent in one write, replies parsed by hiredis. Chosen by measurement on the project's 2-core machine
(shared and busy: load 2.5-6), 50 concurrent asyncio tasks doing GET against a private redis-server,
in the same runs as ``redis-benchmark -t get -c 50`` (34,000-47,000/s there):

- redis-py 8.1 asyncio + hiredis: 3,000-8,200/s, 0.1-0.22x (a pooled connection is checked out and
  several Python layers run per command): at or below the 0.25x target before the store does
  anything;
- valkey-glide 2.6: 14,000-22,500/s, 0.35-0.65x (a Rust core behind an FFI; a large native wheel, a
  new dependency, and reconnection rules of its own);
- this client: 85,000-150,000/s, 2-4x (one write carries many commands; hiredis was already locked).

The store's ``get`` (``HGETALL`` plus decoding) then runs at about 0.8-1.5x redis-benchmark;
``benchmarks/bench_redis.py`` prints the ratio. The client sits behind three names (``call``,
``RedisError``, ``StoreUnavailable``), so another client can replace it without touching the store.

Key layout
----------
All keys start with the prefix ``P`` (default ``sessionhub:``; two stores with different prefixes on
one Redis never see each other, as long as neither prefix is a prefix of the other). Every key of one
session carries the hash tag ``{<session id>}``, so in a Redis Cluster they share one slot:

==========================  =====================================================================
``P s:{id}``                hash: the record. Scalars ``id ns st u p ca ua la ea en it ttl ret ar er
                            v`` (floats as exact decimal text), ``l:<name>`` labels, ``d:<JSON key>``
                            detail values as JSON, ``c:<name>`` counters, ``dq`` the score of its
                            entry in the deadline index (stale from the claim of its end to
                            ``finish_end``), ``cb`` the instance that claimed its end (written by
                            versions before 2026-12; the claims hash names it). ``ar`` (requests
                            in flight) may be absent, read as 0 by every version. ``ce`` which
                            incarnation of the id it is (compared, never parsed: the creating
                            instance and a count of its creates, or the id of the ``created``
                            event; absent from records of versions before 2026-12). A create
                            writes the record with ``RESTORE`` (see ``_hash_dump``): the hash
                            ``HSET`` of its fields makes. Every change of a field but
                            ``dq`` and ``cb`` raises ``v``: a hand edit must too, or instances
                            that hold a copy of the session keep answering with it (see "Reads")
``P d:{id}``                hash: data key -> ``<version>:<JSON value>``
``P h:{id}``                list: history records ``<kind>\\t<at>\\t<JSON payload>`` (seq = position+1)
``P hc:{id}``               hash: history kind -> count
==========================  =====================================================================

Global keys, each a single key (its own slot in a Cluster); sorted sets of ids have score 0 and are
read with ``ZRANGEBYLEX``, so pages come in id order from a cursor:

==========================  =====================================================================
``P live``, ``P ns:<ns>``   live sessions: all, per namespace
``P ended``, ``P ended:<ns>``
                            ended sessions kept for a retention (``include_ended``: merged with
                            ``live`` / ``ns:<ns>`` by id), written when a session ends retained
``P all``, ``P all:<ns>``   only in data written by earlier versions (before issue 12's Redis CPU
                            work): live and retained ended sessions, written at create; still read
                            (merged) and emptied as those sessions end or are purged
``P user:<u>``              live sessions of a user
``P parent:<id>``           live children of a session
``P label:<n>:<name>=<v>``  live sessions with a label (``<n>`` the name's byte length)
``P uniq``                  hash ``<ns>\\t<n>:<name>=<value>`` -> holder id (unique labels)
``P census``                hash ``<ns>\\t<state>`` -> live count (a count that drops to 0 stays
                            at 0, skipped by readers, until a ``purge`` deletes it)
``P deadlines``             sorted set id -> deadline (live, unclaimed sessions)
``P retained``              sorted set id -> end of retention (ended sessions kept readable)
``P claims``                hash id -> claimer, the ends claimed and not yet finished
``P claimer:<c>``           string with a TTL: instance ``<c>`` is alive (its heartbeat)
``P events``                stream of events, trimmed to about ``stream_length`` (``MAXLEN ~``)
==========================  =====================================================================

(The spaces above are for reading: keys are ``P`` and the rest joined, e.g. ``sessionhub:s:{abc}``.)

Functions and slots: ``get`` (``HMGET``, ``HGETALL``), ``data_get``, ``data_items``, ``history_read`` and
``history_counts`` read one session's slot only; ``data_set``, ``data_delete``, ``history_append``
and updates that change neither labels, parent nor state and emit no event (``touch``, ``incr``,
``track_request``) write their session's slot and, only when the deadline moved earlier,
``P deadlines``. ``create``, the other ``modify`` calls, ``claim_end``, ``claim_expired``,
``finish_end``, ``find``, ``count``, ``next_deadline`` and ``purge`` touch the session's keys and
global keys (several slots) and most append to ``P events``. So this store runs on one Redis (a
primary with replicas and Sentinel included). ``sessionhub.stores.redis_cluster`` spreads sessions
over a Cluster by running this same layout once per bucket, under a prefix that is a hash tag, so
each bucket's keys share a slot and these functions run there unchanged.

Events
------
Each change appends its event to ``P events`` in the same function (``XADD``; every 64th event of a
prefix trims the stream with ``MAXLEN ~ stream_length``, so it holds up to 64 entries more than a
trim at each would leave), with the session snapshot MessagePack-packed. Every store instance tails
the stream with ``XREAD BLOCK`` on a connection of its own, started by ``open()``, and feeds each
entry into ``self.events`` with the stream id as the event id, so every node's subscribers see one
order and ``subscribe(after=<id>)`` resumes on any node. The snapshot stays packed in the ring until
a subscriber reads the event: every node reads every node's events, and unpacking them all cost a
busy node more than its own work. ``open()`` first loads the last ``event_buffer`` entries, so a
node that just started can resume a subscriber from an id another node gave out. When Redis goes
away the tailer retries and resumes from the last id it saw: nothing is lost while the entries are
still in the stream. A mutation returns once the local tailer has delivered its event (a bounded
wait), so a subscriber started after a call never sees that call's event, as with the memory store.

Reads
-----
``get`` of a session this instance holds a copy of (it created, changed or read it last: the
copies ``claim_end`` and touches use, below) reads two fields, ``v`` and ``ce``: a record at the
copy's version and incarnation holds what the copy does, so the copy is the answer. That costs
Redis a seventh of ``HGETALL``'s instructions for the record and the process no decoding. A copy
found stale (another instance changed the session) costs a second round trip, ``HGETALL``; so the
instance reads versions first only while at least four in five recent gets of held sessions found
their copies current (it goes on scoring what it would have found while it reads records at once).
Hubs that share each session's work (no sticky sessions) thus pay one ``HGETALL`` per get, as
before; a hub that serves its own sessions pays an ``HMGET``. Other gets read the record.

A copy is trusted only over the connection it was written or read over (on a Cluster: while the
same primary serves its bucket). Redis can lose a write it acknowledged, but only with the server
that held it (a restart without persistence, a failover to a replica the write had not reached),
and another instance's write can then bring the record to the copy's version with other content,
which the version check alone would take for the copy; every such loss breaks the connection, so
gets, touches, claims and finishes after it read the record (tests: a Redis restarted from a
snapshot taken before the write; a Cluster replica that never received it promoted).

Expiry and claims
-----------------
``claim_expired`` takes due ids from ``P deadlines`` and, in the same function, marks each session as
ending (``end_reason``), records the claimer and removes it from the deadline index, so among any
number of hub processes exactly one claims each session and runs its hooks. Claims come earliest
first by the real deadline: an entry that activity left early (see ``_redis_lua``) is queued again
at its session's deadline before anything due after that is claimed. Each open instance keeps
``P claimer:<c>`` alive (``SET PX claim_lease``, renewed every quarter lease by the event tailer) and
deletes it on ``close()``; each ``open()`` is a new claimer, so a store opened again takes over
the claims its earlier opening left unfinished. A process that dies between claiming and ``finish_end`` leaves claims whose
claimer key expires: the next sweep (``claim_expired`` every quarter lease) of another instance takes
them over and finishes those ends, so a crash can make hooks run again for those sessions (at least
once), never zero times. The hub's expiry finishes the ends of a batch with ``finish_ends``: one
function call per slice of 250, whose index writes are gathered by key (one ``ZREM`` per index for
the slice, not one per session). A claim's reply is its event id: the claimed session is read from
that event's snapshot, which the tailer brings (or from the record, when the ring lacks it). The
instance keeps the sessions it claimed (up to 20,000, the oldest dropped) and finishes them from
that copy: the function then reads three fields instead of the record, and the ``ended`` snapshot
is packed here (see ``_redis_lua``); an end claimed by another instance, or a record changed
behind its claim, is finished from the stored record. Likewise ``claim_end``: the instance keeps
the live sessions it last created, touched or updated (up to 10,000, the oldest dropped) and
claims one of them from that copy while Redis holds the same version; otherwise from the record.
A heartbeat (``modify`` with only a touch) of such a session is written from that copy too: the
store computes the new deadline and the function checks the version, creation time and queued
deadline, writes, and replies 1 instead of the record.

A claim whose reply is lost (the connection drops after Redis ran ``claim_end`` or
``claim_expired`` and before the reply was read; or the caller is cancelled meanwhile) leaves
claims that name this live claimer: no other instance takes them over while its heartbeat lives,
and this one does not know of them. So a claim call that ends without a usable reply marks the
instance unsure (per bucket on a Cluster), and its next ``claim_expired`` also hands back, as
taken-over claims are handed back, the claims in ``P claims`` that name this claimer and that
the instance is not handling: not held for a finish and not being claimed (``claim_end``) or
finished here; that call, and only it, sends those ids. A ``claim_end`` begun while that sweep is
out keeps its session out of the sweep's answer (it answers for it itself), and the instance
stays unsure for the next sweep; it is sure again once a sweep answered with nothing left (fewer
sessions handed back than its limit, none kept out) and no claim was lost meanwhile. Nothing of
this is on the normal path: no round trip, and no Lua work but reading the sweep's mode.
``next_deadline`` answers the earliest deadline or, when sooner, this instance's next sweep (a
quarter lease after the last; at once while unsure), in the hub's time as its last
``claim_expired`` gave it: so the hub's expiry calls ``claim_expired`` at least every quarter
lease, whatever its poll interval. (After a pass that failed, the hub waits its poll interval.)
A finish whose reply was lost fails its end in the hub, which owes it and finishes it in its
next expiry pass without running its hooks again (a sweep that hands its claim back meanwhile is
ignored by the hub: it is ending that session).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import msgspec

from .._errors import (
    CapacityExceeded,
    DamagedRecord,
    DuplicateSession,
    PayloadTooLarge,
    QuotaExceeded,
    SessionNotFound,
    StoreUnavailable,
    TooManyRequests,
    TransitionError,
    ValidationError,
    VersionConflict,
    quoted,
    shortened,
)
from .._events import EventLog
from .._models import (
    EMPTY,
    DataEntry,
    HistoryRecord,
    Page,
    Session,
    expires_at,
    json_encoder,
)
from ._base import (
    DECODE_ERRORS,
    Change,
    CreateRules,
    Query,
    StackRead,
    Store,
    appended_records,
    counter_overflow,
    ended_record,
    ending,
)
from ._hash_dump import hash_payload
from ._redis_lua import FUNCTIONS, LIBRARY
from ._resp import Arg, RedisAddress, RedisClient, RedisError

__all__ = ["RedisStore"]

logger = logging.getLogger("sessionhub.redis")

_json_decode = msgspec.json.decode
_msgpack_decode = msgspec.msgpack.Decoder(list[str]).decode
_msgpack_encode = msgspec.msgpack.Encoder().encode
_DEFAULT_PREFIX = "sessionhub:"
_STORE_OPTIONS = ("prefix", "timeout", "stream_length")
_StreamId = tuple[int, int]
_FINISH_SLICE = 250  # ends per finish_ends call: one call holds Redis a few milliseconds at most
_HELD = 20_000  # claimed records held for their finish (see RedisStore._hold)
_KNOWN = 10_000  # live records last written or read here (see RedisStore._know)
_EndArgs = tuple[list[Arg], Session | None]
_FIXED = 8  # the items of the fields every record begins with: id ns st ca (see _encode_session)
_CREATED = 7  # the creation time's place in an encoded record


def _stream_id(value: str) -> _StreamId | None:
    ms, sep, seq = value.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _decode_session(flat: Sequence[str]) -> Session:
    """A session from its hash's fields, as ``HGETALL`` (or an event's snapshot) lists them."""
    scalars: dict[str, str] = {}
    labels: dict[str, str] = {}
    details: list[str] = []
    counters: dict[str, int] = {}
    for i in range(0, len(flat), 2):
        name = flat[i]
        if name[1:2] == ":":
            kind = name[0]
            if kind == "l":
                labels[name[2:]] = flat[i + 1]
            elif kind == "d":
                details.append(f"{name[2:]}:{flat[i + 1]}")
            elif kind == "c":
                counters[name[2:]] = int(flat[i + 1])
        else:
            scalars[name] = flat[i + 1]
    get = scalars.get
    return Session(
        id=scalars["id"],
        namespace=scalars["ns"],
        state=scalars["st"],
        user_id=get("u"),
        parent_id=get("p"),
        labels=labels or EMPTY,
        details=_json_decode("{" + ",".join(details) + "}") if details else EMPTY,
        counters=counters or EMPTY,
        created_at=float(scalars["ca"]),
        updated_at=float(scalars["ua"]),
        last_activity_at=float(scalars["la"]),
        expires_at=_float(get("ea")),
        ended_at=_float(get("en")),
        idle_timeout=_float(get("it")),
        ttl=_float(get("ttl")),
        retention=_float(get("ret")),
        active_requests=int(get("ar") or 0),
        end_reason=get("er"),
        version=int(scalars["v"]),
    )


def _flat_id(flat: Sequence[str]) -> str:
    """The id in a record's fields, without decoding the rest."""
    for i in range(0, len(flat), 2):
        if flat[i] == "id":
            return flat[i + 1]
    return "?"


def _json_key(key: str) -> str:
    return json_encoder.encode(key).decode()


def _encode_session(session: Session) -> list[Arg]:
    """A record's fields, beginning with ``id ns st ca ua la ar v`` in this order (the Lua
    ``create`` is sent the first four's values alone: see ``_FIXED``)."""
    out: list[Arg] = [
        "id", session.id,
        "ns", session.namespace,
        "st", session.state,
        "ca", repr(float(session.created_at)),
        "ua", repr(float(session.updated_at)),
        "la", repr(float(session.last_activity_at)),
        "ar", str(session.active_requests),
        "v", str(session.version),
    ]  # fmt: skip
    optional = (
        ("u", session.user_id),
        ("p", session.parent_id),
        ("er", session.end_reason),
    )
    for name, text in optional:
        if text is not None:
            out += (name, text)
    numbers = (
        ("ea", session.expires_at),
        ("en", session.ended_at),
        ("it", session.idle_timeout),
        ("ttl", session.ttl),
        ("ret", session.retention),
    )
    for name, number in numbers:
        if number is not None:
            out += (name, repr(float(number)))
    for key, detail in session.details.items():
        out += ("d:" + _json_key(key), json_encoder.encode(detail))
    for counter, count in session.counters.items():
        out += ("c:" + counter, str(count))
    for label, value in session.labels.items():  # last: create indexes them from there
        out += ("l:" + label, value)
    return out


def _new_record(record: list[Arg], born: str, deadline: str) -> list[Arg]:
    """The record of a new session as a create stores it, from its encoded fields (see
    ``_encode_session``): ``born`` its ``ce``, ``deadline`` its ``dq`` and ``ea``. The fields the
    hot paths look up come first (Redis finds a field of a small hash by walking it from the start:
    see ``created`` in _redis_lua), and ``ar`` is left out while 0 (every version reads a record
    without it as 0): the record the fields' form of a create writes, field for field."""
    stored: list[Arg] = ["v", record[15], "ce", born, "ca", record[7]]
    if deadline:
        stored += ("dq", deadline, "ea", deadline)
    stored += ("la", record[11], "ua", record[9], "st", record[5], "id", record[1])
    stored += ("ns", record[3])
    rest = 16  # past id ns st ca ua la ar v
    if len(record) > rest and record[rest] == "u":
        stored += ("u", record[rest + 1])
        rest += 2
    if record[13] != "0":
        stored += ("ar", record[13])
    for i in range(rest, len(record), 2):
        if record[i] != "ea":
            stored += (record[i], record[i + 1])
    return stored


def _snapshot(record: list[Arg]) -> bytes:
    """An event's session snapshot as the functions pack it (``cmsgpack.pack`` of the record's
    fields: every item a MessagePack string), packed here so that ``create`` need not in Lua."""
    return _msgpack_encode([item.decode() if isinstance(item, bytes) else item for item in record])


def _ended(
    claimed: Session, now: str, state: str, retain_until: float
) -> tuple[Session, list[Arg]]:
    """A claimed session ended at ``now`` (what the Lua ``finish`` makes of its stored record) and
    the arguments ``finish_known`` reads instead of that record, the event's snapshot packed."""
    at = float(now)
    ended = ended_record(claimed, at, state, retain_until)
    # The retention finish writes when the record had none (as the Lua finish does).
    stated = "" if ended.retention is claimed.retention else f"{ended.retention:.17g}"  # Lua's fnum
    record = _encode_session(ended)
    if stated:  # the snapshot states it as the record does
        record[record.index("ret") + 1] = stated
    labels = [item for pair in claimed.labels.items() for item in pair]
    kept = "" if retain_until <= at else "a" if claimed.active_requests else "k"
    args: list[Arg] = [
        str(claimed.version),
        repr(float(claimed.created_at)),  # as create stored it: tells a session created again
        str(ended.version),
        claimed.state,
        claimed.namespace,
        claimed.user_id or "",
        claimed.parent_id or "",
        _snapshot(record),
        stated,
        kept,
        len(labels) // 2,
        *labels,
    ]
    return ended, args


def _counted(items: Sequence[Arg] | None, width: int = 1) -> list[Arg]:
    if items is None:
        return [-1]
    return [len(items) // width, *items]


def _pairs(mapping: Mapping[str, Any] | None) -> list[Arg]:
    out: list[Arg] = []
    if mapping:
        for key, value in mapping.items():
            out += (key, value)
    return out


def _keep_or(value: object, number: bool) -> str:
    """A field a ``Change`` may keep (unset), clear (``None``) or set."""
    if value is msgspec.UNSET:
        return "k"
    if value is None:
        return "n"
    return "=" + (repr(float(value)) if number else str(value))  # type: ignore[arg-type]


class _Refusal(Exception):
    """A script refused the operation before writing anything (``SH<CODE>`` error reply)."""

    def __init__(self, code: str, args: list[str]) -> None:
        super().__init__(code)
        self.code = code
        self.args_ = args


class _StreamEventLog(EventLog):
    """The event ring, resuming from stream ids it does not hold by their order.

    Event ids are Redis stream ids (``<ms>-<seq>``), which order events across every node. An id
    older than the ring resumes from the oldest event held, after a ``missed`` event (the exact
    number lost is not known locally, so it says one); an id newer than the newest held (a node
    whose tailer is a moment behind) resumes from now on. Snapshots are unpacked when read.
    """

    def __init__(self, capacity: int, damaged: Callable[[str, BaseException], object]) -> None:
        super().__init__(capacity)
        self._damaged = damaged

    def unpack(self, packed: bytes, event_id: str) -> Session | None:
        try:
            return _decode_session(_msgpack_decode(packed))
        except DECODE_ERRORS as exc:
            self._damaged(f"event {event_id}", exc)
            return None

    def position(self, after: str | None) -> int:
        if after is None or self.seq_of(after) is not None:
            return super().position(after)
        wanted = _stream_id(after)
        if wanted is None:
            return super().position(after)
        oldest, newest = self.oldest_seq, self.next_seq - 1
        held = [
            (seq, parsed)
            for seq in (oldest, newest)
            if seq >= 1 and (parsed := _stream_id(self.id_of(seq))) is not None
        ]
        if len(held) < 2 or wanted >= held[1][1]:
            return newest
        if wanted < held[0][1]:
            return oldest - 2  # the reader is told it missed events before the oldest held
        low, high = oldest, newest  # the last event at or before ``wanted``
        while low < high:
            middle = (low + high + 1) // 2
            parsed = _stream_id(self.id_of(middle))
            if parsed is not None and parsed <= wanted:
                low = middle
            else:
                high = middle - 1
        return low


def _parse_url(url: str) -> tuple[RedisAddress, dict[str, str]]:
    """Connection settings and the store options (``prefix``, ...) of a Redis URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"malformed Redis URL: {exc}") from None
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    password = query.pop("password", password)
    username = query.pop("username", username) or None
    db_text = query.pop("db", None)
    if db_text is None and parts.scheme != "unix":
        db_text = parts.path.lstrip("/") or "0"
    try:
        db = int(db_text or 0)
    except ValueError:
        raise ValidationError(f"the Redis database must be a number, got {db_text!r}") from None
    context: ssl.SSLContext | None = None
    cert_reqs = query.pop("ssl_cert_reqs", None)
    ca_certs = query.pop("ssl_ca_certs", None)
    if parts.scheme == "rediss":
        context = ssl.create_default_context(cafile=ca_certs)
        if cert_reqs is not None and cert_reqs.lower() in ("none", "cert_none"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    elif parts.scheme == "redis":
        pass
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValidationError(f"a unix socket URL needs a path: unix:///path.sock, got {url!r}")
    else:
        raise ValidationError(f"a Redis URL starts with redis://, rediss:// or unix://: {url!r}")
    options = {name: query.pop(name) for name in _STORE_OPTIONS if name in query}
    if query:
        raise ValidationError(
            f"unknown Redis URL options {sorted(query)}: known are db, username, password, "
            f"ssl_cert_reqs, ssl_ca_certs, {', '.join(_STORE_OPTIONS)}"
        )
    address = RedisAddress(
        host=parts.hostname or "127.0.0.1",
        port=port or 6379,
        path=parts.path if parts.scheme == "unix" else None,
        db=db,
        username=username,
        password=password,
        ssl=context,
    )
    return address, options


def _check_prefix(prefix: object) -> str:
    if (
        not isinstance(prefix, str)
        or not 1 <= len(prefix) <= 100
        or not prefix.isprintable()
        or any(c.isspace() for c in prefix)
    ):
        raise ValidationError(
            f"the Redis key prefix must be 1-100 printable characters without spaces, got {prefix!r}"
        )
    if ("{" in prefix) != ("}" in prefix):
        raise ValidationError(f"a Redis key prefix with a hash tag needs both braces: {prefix!r}")
    return prefix


def _positive(value: object, what: str) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(f"{what} must be a positive number, got {value!r}")
    return float(value)


class RedisStore(Store):
    """Sessions in Redis, shared by every hub process that uses the same URL and prefix."""

    ephemeral = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = _DEFAULT_PREFIX,
        event_buffer: int = 10_000,
        stream_length: int | None = None,
        timeout: float = 10.0,
        claim_lease: float = 30.0,
    ) -> None:
        super().__init__(event_buffer=event_buffer)
        self.events = _StreamEventLog(event_buffer, self.damaged)
        address, options = _parse_url(url)
        if "prefix" in options and prefix not in (_DEFAULT_PREFIX, options["prefix"]):
            raise ValidationError(
                f"two key prefixes given: {prefix!r} and {options['prefix']!r} in the URL"
            )
        self.prefix = _check_prefix(options.get("prefix", prefix))
        try:
            self.timeout = _positive(float(options.get("timeout", timeout)), "timeout")
            length = int(options.get("stream_length", stream_length or event_buffer))
        except ValueError as exc:
            raise ValidationError(f"bad Redis store option: {exc}") from None
        if length < 1:
            raise ValidationError(f"stream_length must be at least 1, got {length}")
        self.stream_length = length
        self.address = address
        self._maxlen = str(length)
        self._ops = RedisClient(address, timeout=self.timeout, name="sessionhub")
        # XREAD BLOCK holds its connection; the tailer has its own, allowed to wait out the block.
        self._tail_block_ms = 1000
        self._tail = RedisClient(
            address, timeout=self.timeout + 2.0, decode=False, name="sessionhub-events"
        )
        self._loading: asyncio.Future[None] | None = None
        self._events_key = self.prefix + "events"
        self._tailer: asyncio.Task[None] | None = None
        self._last_id: str | None = None
        self._fed: _StreamId = (0, 0)
        self._fed_waiters: list[tuple[_StreamId, int, asyncio.Future[None]]] = []
        self._waiter_seq = 0
        self._event_wait = min(self.timeout, 2.0)
        # Claims are leased: this instance keeps a heartbeat key alive while it is open, and the
        # claims of an instance whose key expired are taken over by the next sweep elsewhere.
        self.claim_lease = _positive(claim_lease, "claim_lease")
        self._claimer = secrets.token_hex(8)
        self._beat_key = f"{self.prefix}claimer:{self._claimer}"
        self._next_beat = 0.0
        self._next_sweep = 0.0
        self._opened = False
        # The sessions this instance claimed, by id, as their claims left them: its finish sends
        # what the function would read from the record (see _redis_lua.finish_known). Bounded,
        # the oldest dropped: a claim never finished here (hooks failed, another instance took it
        # over) leaves its entry until then; an end not held is finished from the stored record.
        self._held: dict[str, tuple[Session, Hashable]] = {}  # with its _epoch
        # Live sessions as this instance last wrote or read them, by id, each with the id of its
        # 'created' event (the record's 'ce': which incarnation of the id it is): a touch or a
        # claim_end of one sends its version and that id, so the function need not read the
        # record when nothing changed it since (see _redis_lua's touch), and a get reads only
        # those two fields to know whether the copy is the record. Bounded, oldest dropped.
        # Each is trusted only over the connection it came from (see _epoch).
        self._known: dict[str, tuple[Session, str, Hashable]] = {}
        # Creates restore their records whole (see _hash_dump) unless this Redis refused RESTORE
        # (an ACL without it): then they write the fields. 'ce' values are this claimer's and a
        # count of its creates: unique to each incarnation of an id, as the created event's id
        # (what the fields' form writes there) is.
        self._restore = True
        self._births = 0
        self._copies_current = 0  # see _score_copy
        # Claims this instance may hold without knowing (see "Expiry and claims"): per bucket (0
        # on one node), how many claim calls ended without a usable reply there; the next
        # claim_expired hands back this claimer's claims that it is not handling (held, or
        # being claimed or finished: ``_busy``) and, once that succeeded, forgets the count it
        # saw. ``_racing``: ids whose claim_end began while such a sweep was out.
        self._census_cursors: dict[int, str] = {}  # per bucket: where purge's census scan is
        self._unsure: dict[int, int] = {}
        self._busy: dict[str, int] = {}
        self._racing: set[str] | None = None
        # The hub's time at the last claim_expired and time.monotonic() then: next_deadline
        # answers the next sweep in the hub's time (see _sweep_due).
        self._swept: tuple[float, float] | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://[[user]:password@]host[:port][/db][?prefix=app1:&timeout=10]``, ``rediss://``
        for TLS, or ``unix:///path/redis.sock?db=0``."""
        return cls(url)

    def __repr__(self) -> str:
        return f"RedisStore({self.address.where}, prefix={self.prefix!r})"

    @property
    def round_trips(self) -> int:
        """Commands sent for store operations so far (each is one round trip); the event tailer's
        reads are not counted."""
        return self._ops.sent

    # lifetime

    async def open(self) -> None:
        if self._opened:
            return
        self._new_claimer()
        self._ops.reopen()
        self._tail.reopen()
        await self._ops.connect()
        try:
            await self._load_functions()
        except BaseException:
            await self._ops.close()
            raise
        await self._heartbeat(self._ops)
        if self._last_id is None:
            await self._prefill()
        self._tailer = asyncio.create_task(self._tail_forever(), name="sessionhub-redis-events")
        self._opened = True

    def _new_claimer(self) -> None:
        """A claimer of its own each time the store opens: the claims an earlier opening left
        unfinished (its key deleted at close, or expired) are then orphans that any sweep takes
        over, this instance's own included, not claims of a live claimer that nobody finishes."""
        self._claimer = secrets.token_hex(8)
        self._beat_key = f"{self.prefix}claimer:{self._claimer}"
        self._held.clear()
        self._unsure.clear()
        self._next_sweep = 0.0

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        if self._tailer is not None:
            self._tailer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tailer
            self._tailer = None
        self._release_waiters(force=True)
        with contextlib.suppress(StoreUnavailable):
            # A clean stop frees this instance's unfinished claims at once, not after the lease.
            await self._ops.call("DEL", self._beat_key)
        await self._ops.close()
        await self._tail.close()

    # events

    async def _prefill(self) -> None:
        """The last ``event_buffer`` events, so a subscriber can resume here from any node's id."""
        entries = await self._tail.call(
            "XREVRANGE", self._events_key, "+", "-", "COUNT", self.events.capacity
        )
        self._last_id = "0-0"
        if entries:
            self._feed(list(reversed(entries)))

    def _feed(self, entries: list[Any]) -> None:
        append = self.events.append_packed
        for raw_id, values in entries:
            event_id = raw_id.decode()
            # The script writes the fields in this order: k kind, a at, s snapshot. The snapshot
            # is unpacked only if a subscriber reads the event (most are never read here).
            try:
                append(values[1].decode(), float(values[3]), values[5], event_id)
            except DECODE_ERRORS as exc:
                self.damaged(f"event {event_id}", exc)
            self._last_id = event_id
        if entries and self._last_id is not None:
            self._fed = _stream_id(self._last_id) or self._fed
            self._release_waiters()

    async def _heartbeat(self, client: RedisClient) -> None:
        await client.call("SET", self._beat_key, "1", "PX", int(self.claim_lease * 1000))
        self._next_beat = time.monotonic() + self.claim_lease / 4

    async def _tail_forever(self) -> None:
        delay = 0.05
        outage = False
        while True:
            try:
                if time.monotonic() >= self._next_beat:  # the block lasts a second at most
                    await self._heartbeat(self._tail)
                reply = await self._tail.call(
                    "XREAD", "COUNT", 1000, "BLOCK", self._tail_block_ms,
                    "STREAMS", self._events_key, self._last_id or "0-0",
                )  # fmt: skip
            except (StoreUnavailable, RedisError) as exc:
                if not outage:
                    logger.warning("event tail paused, retrying: %s", exc)
                    outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if outage:
                logger.warning("event tail resumed after %s", self._last_id)
                outage = False
            delay = 0.05
            if reply:
                self._feed(reply[0][1])

    def _release_waiters(self, force: bool = False) -> None:
        waiters = self._fed_waiters
        while waiters and (force or waiters[0][0] <= self._fed):
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    async def _delivered(self, event_id: str) -> None:
        """Wait until the local tailer has put ``event_id`` into ``self.events`` (bounded)."""
        wanted = _stream_id(event_id)
        if wanted is None or wanted <= self._fed or self._tailer is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_seq += 1
        heapq.heappush(self._fed_waiters, (wanted, self._waiter_seq, future))
        try:
            await asyncio.wait_for(future, self._event_wait)
        except TimeoutError:
            logger.warning("event %s not yet tailed back from Redis; going on", event_id)

    # scripts

    def _key(self, kind: str, session_id: str) -> str:
        return f"{self.prefix}{kind}:{{{session_id}}}"

    async def _load_functions(self) -> None:
        """Load the library (``FUNCTION LOAD REPLACE`` is idempotent); concurrent callers that all
        found it missing after a restart share one load."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(
                self._ops.call("FUNCTION", "LOAD", "REPLACE", LIBRARY)
            )
            self._loading.add_done_callback(self._loaded)
        try:
            await asyncio.shield(self._loading)
        except RedisError as exc:
            raise StoreUnavailable(
                f"Redis at {self.address.where} refused the sessionhub function library "
                f"(Redis 7 or later is needed, and FUNCTION permission): {exc.message}"
            ) from None

    def _loaded(self, future: asyncio.Future[None]) -> None:
        self._loading = None
        if not future.cancelled():
            future.exception()  # seen: every waiter got it

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """One FCALL; the library is loaded again only when Redis lost it (a restart)."""
        call = self._ops.call
        command = ("FCALL", FUNCTIONS[name], len(keys), *keys, self.prefix, *args)
        try:
            return await call(*command)
        except RedisError as exc:
            error = exc
        if "Function not found" in error.message:
            await self._load_functions()
            try:
                return await call(*command)
            except RedisError as exc:
                error = exc
        message = error.message
        if message.startswith("SH"):
            parts = message.split("\x1f")
            raise _Refusal(parts[0][2:], parts[1:-1])
        code = message.split(" ", 1)[0]
        if code in ("NOAUTH", "WRONGPASS"):
            raise StoreUnavailable(
                f"Redis at {self.address.where} no longer accepts our credentials ({code})"
            )
        if code == "LOADING":
            raise StoreUnavailable(f"Redis at {self.address.where} is loading its data; retry")
        raise StoreUnavailable(
            f"Redis at {self.address.where} failed the {name} operation: {message}"
        )

    async def _run_in(
        self, bucket: int, name: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        """One FCALL in a bucket of keys (one node: bucket 0 holds every key)."""
        return await self._run(name, keys, args)

    # sessions

    async def create(self, session: Session, rules: CreateRules) -> Session:
        record = _encode_session(session)
        deadline = "" if session.expires_at is None else repr(float(session.expires_at))
        born = f"{self._claimer}.{self._births:x}"  # the record's 'ce' (see _new_record)
        self._births += 1
        payload = hash_payload(_new_record(record, born, deadline)) if self._restore else None
        if payload is not None:
            # The record restored whole (see _hash_dump), its labels sent again for the index.
            rest: list[Arg] = [payload]
            rest += (
                item for label in session.labels.items() for item in ("l:" + label[0], label[1])
            )
        else:
            # The function is sent the user and the deadline once and names their fields, and
            # writes what a new session's record holds by default (see `created` in
            # _redis_lua) unless it is sent otherwise.
            created = record[_CREATED]
            implied: dict[Arg, Arg] = {"ua": created, "la": created, "ar": "0", "v": "1"}
            rest = [
                item
                for i in range(_FIXED, len(record), 2)
                if record[i] not in ("u", "ea") and implied.get(record[i]) != record[i + 1]
                for item in (record[i], record[i + 1])
            ]
        unique = [
            item
            for name in rules.unique_labels
            if name in session.labels
            for item in (name, session.labels[name])
        ]
        fixed = record[1:_FIXED:2]
        user = session.user_id or ""
        snapshot = _snapshot([*record, "dq", deadline] if deadline else record)
        limited = rules.max_sessions is not None or rules.max_sessions_per_user is not None
        if session.parent_id is None and not unique and not limited:
            function = "create"  # nothing to check but the id: fewer arguments and commands
            args: list[Arg] = [self._maxlen, user, deadline, snapshot, *fixed, *rest]
        else:
            function = "create_checked"
            args = [
                self._maxlen,
                "" if rules.max_sessions is None else rules.max_sessions,
                "" if rules.max_sessions_per_user is None else rules.max_sessions_per_user,
                user,
                session.parent_id or "",
                deadline,
                snapshot,
                len(unique) // 2,
                *unique,
                *fixed,
                *rest,
            ]
        try:
            event_id = await self._run(function, [self._key("s", session.id)], args)
        except _Refusal as refusal:
            code, parts = refusal.code, refusal.args_
            if code == "NORESTORE":
                logger.warning(
                    "Redis refused RESTORE (%s): creates write their records' fields instead",
                    parts[0] if parts else "",
                )
                self._restore = False
                return await self.create(session, rules)
            if code == "DUPID":
                raise DuplicateSession(f"session id already exists: {session.id}") from None
            if code == "NOTFOUND":
                raise SessionNotFound(parts[0]) from None
            if code == "PARENTENDING":
                raise SessionNotFound(parts[0], f"parent session is ending: {parts[0]}") from None
            if code == "CAPACITY":
                raise CapacityExceeded(
                    f"the hub holds its maximum of {rules.max_sessions} sessions"
                ) from None
            if code == "QUOTA":
                raise QuotaExceeded(
                    f"user {session.user_id} already has {parts[0]} live sessions "
                    f"(limit {rules.max_sessions_per_user})"
                ) from None
            self._refused(refusal, session.id)
        self._know(session, born if payload is not None else event_id)
        await self._delivered(event_id)
        return session

    async def get(self, session_id: str) -> Session | None:
        key = self._key("s", session_id)
        known, born = self._current_copy(session_id)
        if known is not None and self._copies_current >= 0:
            epoch = self._epoch(session_id)
            # Every change of a session's fields bumps its version, and 'ce' tells incarnations
            # apart: a record at the copy's version and 'ce' holds what the copy does. Two
            # fields read instead of all (a seventh of HGETALL's Redis CPU, no decoding).
            version, stored_born = await self._fields(key, "v", "ce")
            if epoch != self._epoch(session_id):  # (a Cluster's failover meanwhile)
                known = None
            elif version == str(known.version) and stored_born == born:
                self._score_copy(current=True)
                return self._know(known, born)  # (the most recently used: dropped last)
            else:
                self._score_copy(current=False)
                known = None
        flat = await self._record(key)
        if not flat:
            return None
        session = self._know_stored(flat)
        if known is not None:  # not asked: what asking would have found
            self._score_copy(current=known == session)
        return session

    def _epoch(self, session_id: str) -> Hashable:
        """Where a copy of a session held here may be trusted: the connection it was written or
        read over (None: none is up). Redis can lose a write it acknowledged only with the
        server that held it (a restart without persistence, a failover to a replica the write
        had not reached); another write can then bring the record to the copy's version with
        other content, which the version check would take for the copy. A new connection
        follows any such loss, so copies of an earlier one are not used."""
        return self._ops.connection

    def _current_copy(
        self, session_id: str, pop: bool = False
    ) -> tuple[Session, str] | tuple[None, str]:
        """The copy held of a session and its record's 'ce', if it may be trusted now (see
        ``_epoch``); ``pop``: and no longer hold it."""
        copy = self._known.pop(session_id, None) if pop else self._known.get(session_id)
        if copy is None or copy[2] != self._epoch(session_id):
            return None, ""
        known, born, _ = copy
        return known, born

    def _score_copy(self, *, current: bool) -> None:
        """Whether a get found the copy held here current: worth asking the version first while
        at least four in five do (a stale copy cost a second round trip)."""
        score = self._copies_current + 1 if current else self._copies_current - 4
        self._copies_current = max(-8, min(8, score))

    async def _record(self, key: str) -> list[str]:
        """A hash's fields and values, flat (empty: no such key)."""
        flat: list[str] = await self._ops.call("HGETALL", key)
        return flat

    async def _fields(self, key: str, *names: str) -> list[str | None]:
        values: list[str | None] = await self._ops.call("HMGET", key, *names)
        return values

    def _decoded(self, flat: Sequence[str]) -> Session:
        try:
            return _decode_session(flat)
        except DECODE_ERRORS as exc:
            raise self.damaged(f"session {_flat_id(flat)}", exc) from None

    def _listed(self, flats: Sequence[Sequence[str]]) -> list[Session]:
        """The sessions of records read; damaged ones are skipped (and counted)."""
        sessions = []
        for flat in flats:
            try:
                sessions.append(_decode_session(flat))
            except DECODE_ERRORS as exc:
                self.damaged(f"session {_flat_id(flat)}", exc)
        return sessions

    def _query_args(self, query: Query, mode: str, limit: int, cursor: str | None) -> list[Arg]:
        labels = _pairs(query.labels)
        return [
            mode,
            limit,
            cursor or "",
            query.namespace or "",
            query.user_id or "",
            query.parent_id or "",
            query.state or "",
            "1" if query.include_ended else "0",
            len(labels) // 2,
            *labels,
        ]

    async def find(self, query: Query, *, limit: int, cursor: str | None) -> Page:
        flats = await self._run("find", (), self._query_args(query, "find", limit, cursor))
        more = len(flats) > limit
        items = self._listed(flats[:limit])
        # The cursor is the last id read, so a damaged record at the page's end is passed too.
        return Page(items=items, cursor=_flat_id(flats[limit - 1]) if more else None)

    async def count(self, query: Query) -> int:
        count: int = await self._run("find", (), self._query_args(query, "count", 0, None))
        return count

    async def census(self) -> dict[tuple[str, str], int]:
        flat = await self._ops.call("HGETALL", self.prefix + "census")
        out: dict[tuple[str, str], int] = {}
        for i in range(0, len(flat), 2):
            namespace, _, state = flat[i].partition("\t")
            count = int(flat[i + 1])
            if count > 0:
                out[namespace, state] = count
        return out

    async def modify(self, session_id: str, change: Change) -> Session:
        if change == Change(now=change.now, touch=True):
            return await self._touch(session_id, change.now)
        details = change.details
        args: list[Arg] = [
            self._maxlen,
            repr(float(change.now)),
            "" if change.expected_version is None else change.expected_version,
            change.event or "",
            "1" if change.touch else "0",
            change.requests,
            "" if change.max_requests is None else change.max_requests,
            "" if change.max_labels is None else change.max_labels,
            "" if change.max_details_bytes is None else change.max_details_bytes,
            _keep_or(change.idle_timeout, number=True),
            _keep_or(change.ttl, number=True),
            _keep_or(change.parent_id, number=False),
            change.emit or "",
            *_counted(None if change.moves is None else _pairs(change.moves), 2),
            *_counted(_pairs(change.labels), 2),
            *_counted(list(change.labels_remove)),
            *_counted(
                [
                    item
                    for key, value in (details or {}).items()
                    for item in (_json_key(key), json_encoder.encode(value))
                ],
                2,
            ),
            *_counted([_json_key(key) for key in change.details_remove]),
            *_counted(list(change.unique_labels)),
            *_counted(_pairs(change.counters), 2),
        ]
        try:
            event_id, flat = await self._run("modify", [self._key("s", session_id)], args)
        except _Refusal as refusal:
            code, parts = refusal.code, refusal.args_
            if code == "VERSION":
                raise VersionConflict(
                    f"session {session_id} is at version {parts[0]}, not {change.expected_version}"
                ) from None
            if code == "TRANSITION":
                raise TransitionError(parts[0], parts[1]) from None
            if code == "LABELS":
                raise PayloadTooLarge(
                    f"{parts[0]} labels is more than the limit of {change.max_labels}"
                ) from None
            if code == "DETAILS":
                raise PayloadTooLarge(
                    f"details would be {parts[0]} bytes, more than the limit of "
                    f"{change.max_details_bytes}"
                ) from None
            if code == "TOOMANY":
                raise TooManyRequests(
                    f"session {session_id} already has {parts[0]} requests in flight "
                    f"(limit {change.max_requests})"
                ) from None
            self._refused(refusal, session_id)
        if event_id:
            await self._delivered(event_id)
        return self._know_stored(flat)

    async def _touch(self, session_id: str, now: float) -> Session:
        """A heartbeat, by a function that does only that (half the Redis CPU of ``modify``).
        A session known here is sent its version, creation time and new deadline: the function
        then writes without reading the record and replies 1 (see ``_redis_lua``'s touch)."""
        at = repr(float(now))
        known, born = self._current_copy(session_id)
        touched = None
        args: tuple[Arg, ...] = (at,)
        if known is not None:
            touched = msgspec.structs.replace(
                known, updated_at=float(at), last_activity_at=float(at),
                expires_at=expires_at(
                    created_at=known.created_at, last_activity_at=float(at),
                    idle_timeout=known.idle_timeout, ttl=known.ttl,
                    active_requests=known.active_requests,
                ),
                version=known.version + 1,
            )  # fmt: skip
            # A deadline that goes (never, by the rule, as a touch moves it later) is left to
            # the function that reads the record.
            if touched.expires_at is not None or known.expires_at is None:
                deadline = "" if touched.expires_at is None else f"{touched.expires_at:.17g}"
                args = (
                    at, str(known.version), born, str(touched.version),
                    deadline,  # as the Lua writes it (fnum)
                )  # fmt: skip
        sent_over = self._epoch(session_id)
        try:
            reply = await self._run("touch", [self._key("s", session_id)], args)
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        if reply == 1:  # touched at the version known here
            assert touched is not None
            if self._epoch(session_id) != sent_over:  # over another server meanwhile
                return await self._reread(session_id)
            return self._know(touched, born)
        return self._know_stored(reply)

    async def _reread(self, session_id: str) -> Session:
        """The session as stored, after a write built on a copy that is no longer trusted."""
        self._known.pop(session_id, None)
        session = await self.get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    def _know(self, session: Session, born: str | None) -> Session:
        """Keep ``session`` as this instance last saw it stored, ``born`` its record's ``ce``
        (None: a record written before ``ce`` existed, which is not kept: see ``_touch``)."""
        known = self._known
        known.pop(session.id, None)  # to the newest end: the oldest seen leave first
        if born is not None and session.ended_at is None and session.end_reason is None:
            known[session.id] = (session, born, self._epoch(session.id))
            if len(known) > _KNOWN:
                del known[next(iter(known))]
        return session

    def _know_stored(self, flat: Sequence[str]) -> Session:
        """The session of a record as a function returned it, kept as known here."""
        session = self._decoded(flat)
        born = None
        for i in range(0, len(flat), 2):  # ('ce' is the record's second field)
            if flat[i] == "ce":
                born = flat[i + 1]
                break
        return self._know(session, born)

    async def claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        with self._handled_here((session_id,)):
            if self._racing is not None:
                self._racing.add(session_id)
            try:
                return await self._claim_end(session_id, reason, now, moves)
            except BaseException:
                # Redis may have claimed it (a lost reply, a cancelled caller): the next sweep
                # hands back what this claimer holds and does not handle.
                self._unsure_of(self._bucket_of_session(session_id))
                raise

    async def _claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        at = repr(float(now))
        args: list[Arg] = [self._maxlen, reason, at, self._claimer, *_counted(_pairs(moves), 2)]
        known, born = self._current_copy(session_id, pop=True)
        claimed = None
        if known is None:
            args.append("")
        else:
            # What the claim makes of the record if it is still at this version.
            state = moves.get(known.state, known.state)
            claimed = msgspec.structs.replace(
                known, state=state, end_reason=reason, updated_at=float(at),
                version=known.version + 1,
            )  # fmt: skip
            args += (
                str(known.version), born, session_id, known.state,
                state, known.namespace, str(claimed.version), _snapshot(_encode_session(claimed)),
            )  # fmt: skip
        sent_over = self._epoch(session_id)
        reply = await self._run("claim_end", [self._key("s", session_id)], args)
        if reply is None:
            return None
        if isinstance(reply, str):  # claimed at the version known here
            assert claimed is not None
            await self._delivered(reply)
            if self._epoch(session_id) != sent_over:  # over another server meanwhile
                claimed = await self._reread(session_id)
            self._hold(claimed)
            return claimed
        await self._delivered(reply[0])
        found = await self._claimed([(reply[0], session_id)])
        return found[0] if found else None

    async def _claimed(self, replies: Sequence[tuple[str, str | list[str]]]) -> list[Session]:
        """The sessions of claims (``claim_end``, ``claim_expired``: event id and session id, or
        ``''`` and the record for a taken-over claim), each held for its finish (see ``_hold``).
        A claim's record is its event's snapshot, which the tailer has brought (the caller waited
        for the last one) and a subscriber would unpack anyway. One the ring does not hold (a
        tailer far behind, the ring overrun) is read from Redis: a claim leaves the record
        unchanged but for its claimer."""
        found: list[Session | str | None] = []  # in claim order; a session id: read it
        events = self.events
        unheld: list[str] = []
        for event_id, item in replies:
            if not isinstance(item, str):
                found += self._listed([item]) or [None]
                continue
            seq = events.seq_of(self._ring_id(event_id))
            if seq is None:
                unheld.append(item)
                found.append(item)
                continue
            event = events.event_at(seq)
            # None when damaged (counted): skipped, as _listed skips a damaged record
            found.append(None if event is None else event.session)
        if unheld:
            read = await asyncio.gather(*(self.get(sid) for sid in unheld), return_exceptions=True)
            by_id: dict[str, Session | None] = {}
            for sid, session in zip(unheld, read, strict=True):
                if isinstance(session, BaseException) and not isinstance(session, DamagedRecord):
                    raise session
                live = isinstance(session, Session) and session.ended_at is None
                by_id[sid] = session if live and isinstance(session, Session) else None
            found = [by_id[item] if isinstance(item, str) else item for item in found]
        sessions = [session for session in found if isinstance(session, Session)]
        for session in sessions:
            self._hold(session)
        return sessions

    def _ring_id(self, event_id: str) -> str:
        """The id under which the tailer puts an event a function returned into ``self.events``."""
        return event_id

    def _hold(self, claimed: Session) -> None:
        """Keep a session claimed here for its finish (see ``_redis_lua.finish_known``)."""
        held = self._held
        self._known.pop(claimed.id, None)  # claimed: no longer claimable
        held[claimed.id] = (claimed, self._epoch(claimed.id))
        if len(held) > _HELD:
            del held[next(iter(held))]

    def _end_args(self, session_id: str, retain_until: float, now: str, state: str) -> _EndArgs:
        """One end's arguments for ``finish_end``/``finish_ends``, and the ended session when this
        instance holds the claimed one (then the function replies with the event id alone)."""
        until = repr(float(retain_until))
        claimed, epoch = self._held.pop(session_id, None) or (None, None)
        if claimed is None or epoch != self._epoch(session_id):
            return [session_id, until, ""], None  # the function reads the record
        ended, known = _ended(claimed, now, state, retain_until)
        return [session_id, until, *known], ended

    def _end_reply(self, reply: Any, ended: Session | None) -> tuple[str, Session] | None:
        """An end's event id and ended session from its reply (see ``_end_args``)."""
        if not reply:
            return None
        if isinstance(reply, str):
            assert ended is not None  # an event id alone answers a held record only
            return reply, ended
        event_id, flat = reply
        return event_id, self._decoded(flat)

    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        self._swept = (now, time.monotonic())
        mark = self._unsure.get(0)
        sweep = mark is not None or time.monotonic() >= self._next_sweep
        args: list[Arg] = [
            self._maxlen,
            repr(float(now)),
            limit,
            self._claimer,
            "0" if not sweep else "1" if mark is None else "2",
            *_counted(_pairs(moves), 2),
        ]
        if mark is not None:
            handled = self._handling().get(0, [])
            args += (len(handled), *handled)
            self._racing = set()
        try:
            claimed = await self._run("claim_expired", (), args)
            if mark is not None:
                claimed = self._adopted(0, mark, claimed, limit)
            if sweep:
                self._next_sweep = time.monotonic() + self.claim_lease / 4
            if not claimed:
                return []
            event_ids = [event_id for event_id, _ in claimed if event_id]
            if event_ids:
                await self._delivered(event_ids[-1])
            return await self._claimed(claimed)
        except BaseException:
            self._unsure_of(0)
            raise
        finally:
            if mark is not None:
                self._racing = None

    # claims whose reply was lost

    def _bucket_of_session(self, session_id: str) -> int:
        """The bucket whose claims hash lists the session's claim (one node: 0)."""
        return 0

    def _unsure_of(self, bucket: int) -> None:
        """A claim call in ``bucket`` ended without a usable reply: Redis may have claimed
        sessions this instance does not know of."""
        self._unsure[bucket] = self._unsure.get(bucket, 0) + 1

    @contextlib.contextmanager
    def _handled_here(self, session_ids: Sequence[str]) -> Iterator[None]:
        """The sessions' claims or finishes are in flight here during the block (see
        ``_handling``)."""
        busy = self._busy
        for sid in session_ids:
            busy[sid] = busy.get(sid, 0) + 1
        try:
            yield
        finally:
            for sid in session_ids:
                left = busy.get(sid, 1) - 1
                if left > 0:
                    busy[sid] = left
                else:
                    busy.pop(sid, None)

    def _handling(self) -> dict[int, list[str]]:
        """The ids this instance is handling (claims held for their finish, claims and finishes
        in flight) by bucket, for an adopting ``claim_expired``."""
        buckets: dict[int, list[str]] = {}
        for sid in {*self._held, *self._busy}:
            buckets.setdefault(self._bucket_of_session(sid), []).append(sid)
        return buckets

    def _adopted(self, bucket: int, mark: int, claimed: list[Any], limit: int) -> list[Any]:
        """An adopting ``claim_expired``'s reply without the claims handed back whose
        ``claim_end`` began while it was out (that call answers for them, or, if it too ends
        without a reply, the next sweep); the bucket is no longer unsure unless something was
        left (the limit reached, or such a claim) or another claim was lost meanwhile."""
        racing = self._racing or set()
        kept = []
        handed = dropped = 0
        for reply in claimed:
            if not reply[0]:  # handed back or taken over: '' and the record
                handed += 1
                if _flat_id(reply[1]) in racing:
                    dropped += 1
                    continue
            kept.append(reply)
        if not dropped and handed < limit and self._unsure.get(bucket) == mark:
            del self._unsure[bucket]
        return kept

    def _sweep_due(self, deadline: float | None) -> float | None:
        """``deadline``, or the time of this instance's next sweep of claims if that comes first
        (now while a claim's reply may be lost), in the hub's time as its last ``claim_expired``
        gave it: so the hub's expiry calls ``claim_expired`` at least every quarter lease."""
        swept = self._swept
        if swept is None:
            return deadline
        now, at = swept
        due = now if self._unsure else now + max(self._next_sweep - at, 0.0)
        return due if deadline is None or due < deadline else deadline

    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        with self._handled_here((session_id,)):
            return await self._finish_end(session_id, now, ended_state, retain_until)

    async def _finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        at = repr(float(now))
        end, new = self._end_args(session_id, retain_until, at, ended_state)
        args: list[Arg] = [self._maxlen, at, ended_state, *end]
        reply = await self._run("finish_end", [self._key("s", session_id)], args)
        ended = self._end_reply(reply, new)
        if ended is None:
            return None
        await self._delivered(ended[0])
        return ended[1]

    async def finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        # One FCALL per slice of the group, not one per session: Redis's per-call cost (argument
        # set-up, the function entry) and ours (a command packed, a reply awaited) are paid once
        # per slice. Slices bound how long one call holds Redis; they leave in one write.
        if len(ends) == 1:  # straight out, not a task's tick later
            (sid, until), *_ = ends
            return [await self.finish_end(sid, now, ended_state, until)]
        with self._handled_here([sid for sid, _ in ends]):
            return await self._finish_ends(ends, now, ended_state)

    async def _finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        at = repr(float(now))
        head: list[Arg] = [self._maxlen, at, ended_state]
        slices = [ends[i : i + _FINISH_SLICE] for i in range(0, len(ends), _FINISH_SLICE)]
        calls = []
        for part in slices:
            args, news = list(head), []
            for sid, until in part:
                end, new = self._end_args(sid, until, at, ended_state)
                args += end
                news.append(new)
            calls.append((args, news))
        replies = await asyncio.gather(
            *(self._run("finish_ends", (), args) for args, _ in calls),
            return_exceptions=True,
        )
        finished: list[Session | None] = []
        last: _StreamId = (0, 0)
        last_id = None
        failure: BaseException | None = None
        for (_, news), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
                finished += [None] * len(news)
                continue
            for one, new in zip(reply, news, strict=True):
                ended = self._end_reply(one, new)
                if ended is None:
                    finished.append(None)
                    continue
                event_id = ended[0]
                position = _stream_id(event_id)
                if position is not None and position > last:
                    last, last_id = position, event_id
                finished.append(ended[1])
        if last_id is not None:
            await self._delivered(last_id)
        if failure is not None:
            raise failure
        return finished

    async def having_children(self, session_ids: Sequence[str]) -> set[str]:
        # ``P parent:<id>`` exists while the session has a live child (Redis drops empty sets);
        # one function call looks them all up.
        if not session_ids:
            return set()
        parents: list[str] = await self._run("having_children", (), session_ids)
        return set(parents)

    async def next_deadline(self) -> float | None:
        score = await self._run("next_deadline", (), ())
        return self._sweep_due(None if score is None else float(score))

    async def purge(self, now: float) -> int:
        return await self._purge_bucket(0, repr(float(now)))

    async def _purge_bucket(self, bucket: int, now: str) -> int:
        """Purge one bucket's retained ends that are due, and a slice of its census counts left
        at 0 (from where the last call left off; see ``_redis_lua``'s purge)."""
        purged, batch = 0, 1000
        cursor = self._census_cursors.get(bucket, "0")
        while True:
            reply = await self._run_in(bucket, "purge", (), (now, batch, cursor))
            deleted, examined, cursor = reply
            self._census_cursors[bucket] = cursor or "0"
            cursor = ""  # one slice per purge
            purged += int(deleted)
            if examined < batch:
                return purged

    # data

    async def data_get(self, session_id: str, key: str, now: float) -> DataEntry | None:
        keys = [self._key("s", session_id), self._key("d", session_id)]
        try:
            raw = await self._run("data_get", keys, (key, repr(float(now))))
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        if raw is None:
            return None
        version, _, value = raw.partition(":")
        try:
            return DataEntry(key=key, value=_json_decode(value), version=int(version))
        except DECODE_ERRORS as exc:
            raise self.damaged(f"data value {key} of session {session_id}", exc) from None

    async def data_set(
        self, session_id: str, key: str, value: bytes, expected_version: int | None, now: float
    ) -> DataEntry:
        keys = [self._key("s", session_id), self._key("d", session_id)]
        expected = "" if expected_version is None else expected_version
        try:
            version: int = await self._run(
                "data_set", keys, (key, value, expected, repr(float(now)))
            )
        except _Refusal as refusal:
            self._refused(refusal, session_id, key=key, expected=expected_version)
        return DataEntry(key=key, value=_json_decode(value), version=version)

    async def data_delete(
        self, session_id: str, key: str, expected_version: int | None, now: float
    ) -> bool:
        keys = [self._key("s", session_id), self._key("d", session_id)]
        expected = "" if expected_version is None else expected_version
        try:
            deleted = await self._run("data_delete", keys, (key, expected, repr(float(now))))
        except _Refusal as refusal:
            self._refused(refusal, session_id, key=key, expected=expected_version)
        return bool(deleted)

    async def data_items(self, session_id: str, now: float) -> list[DataEntry]:
        keys = [self._key("s", session_id), self._key("d", session_id)]
        try:
            flat = await self._run("data_items", keys, (repr(float(now)),))
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        entries = []
        for i in range(0, len(flat), 2):
            version, _, value = flat[i + 1].partition(":")
            try:
                entry = DataEntry(key=flat[i], value=_json_decode(value), version=int(version))
            except DECODE_ERRORS as exc:
                self.damaged(f"data value {flat[i]} of session {session_id}", exc)
                continue
            entries.append(entry)
        entries.sort(key=lambda entry: entry.key)
        return entries

    # history

    async def history_append(
        self, session_id: str, kind: str, payload: bytes, now: float
    ) -> HistoryRecord:
        keys = [
            self._key("s", session_id),
            self._key("h", session_id),
            self._key("hc", session_id),
        ]
        try:
            seq = await self._run("history_append", keys, (kind, payload, repr(float(now))))
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        return HistoryRecord(seq=seq, kind=kind, at=now, payload=_json_decode(payload))

    async def history_read(
        self,
        session_id: str,
        *,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
        now: float,
    ) -> list[HistoryRecord]:
        keys = [self._key("s", session_id), self._key("h", session_id)]
        args: list[Arg] = [
            "" if after is None else after,
            limit,
            int(newest_first),
            kind or "",
            repr(float(now)),
        ]
        try:
            reply = await self._run("history_read", keys, args)
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        numbered: Iterable[tuple[int, str]]
        if kind:
            numbered = zip(reply[::2], reply[1::2], strict=True)
        else:  # the first seq, then consecutive records oldest first
            numbered = enumerate(reply[1], reply[0])
            if newest_first:
                numbered = reversed(list(numbered))
        records = []
        for seq, record in numbered:
            record_kind, at, payload = record.split("\t", 2)
            try:
                decoded = _json_decode(payload)
            except DECODE_ERRORS as exc:
                self.damaged(f"history record {seq} of session {session_id}", exc)
                continue
            records.append(HistoryRecord(seq=seq, kind=record_kind, at=float(at), payload=decoded))
        return records

    async def history_stack(
        self, session_id: str, read: StackRead, now: float
    ) -> tuple[list[Any], int]:
        """``Store.history_stack`` beside one ``history_read`` call (one round trip) unless
        markers hide more than its page holds."""
        keys = [self._key("s", session_id), self._key("h", session_id)]
        walk = self._stack_walk(session_id, read)
        cursor: int | str = ""
        now_arg = repr(float(now))
        while True:
            try:
                first, records = await self._run(
                    "history_read", keys, (cursor, walk.size, 1, "", now_arg)
                )
            except _Refusal as refusal:
                self._refused(refusal, session_id)
            if not records:
                break
            wanted = read.wanted
            # the first page holds the wanted newest records, or all there are (shorter than
            # asked): when they are plain items, they are the answer
            if (
                cursor == ""
                and wanted is not None
                and not read.hidden
                and (len(records) >= wanted or len(records) < walk.size)
            ):
                items = _plain_items(records, read.kind, wanted)
                if items is not None:
                    return items, 0
            # the page comes oldest first from seq `first`; the walk reads it newest first
            rows: list[tuple[int, str, str]] = []
            for i in range(len(records) - 1, -1, -1):
                record_kind, _, payload = records[i].split("\t", 2)
                rows.append((first + i, record_kind, payload))
            next_cursor = walk.feed(rows)
            if next_cursor is None:
                break
            cursor = next_cursor
        return walk.oldest_first(), walk.hidden

    async def history_counts(self, session_id: str, now: float) -> dict[str, int]:
        keys = [self._key("s", session_id), self._key("hc", session_id)]
        try:
            flat = await self._run("history_counts", keys, (repr(float(now)),))
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def history_append_many(
        self, session_id: str, records: Sequence[tuple[str, bytes]], now: float
    ) -> list[HistoryRecord]:
        keys = [
            self._key("s", session_id),
            self._key("h", session_id),
            self._key("hc", session_id),
        ]
        args: list[Arg] = [repr(float(now))]
        for kind, payload in records:
            args += (kind, payload)
        try:
            first = await self._run("history_append_many", keys, args)
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        return appended_records(first, records, now)

    async def history_pop(
        self, session_id: str, kind: str, marker: str, now: float
    ) -> HistoryRecord | None:
        keys = [
            self._key("s", session_id),
            self._key("h", session_id),
            self._key("hc", session_id),
        ]
        try:
            popped = await self._run("history_pop", keys, (kind, marker, repr(float(now))))
        except _Refusal as refusal:
            self._refused(refusal, session_id)
        if not popped:
            return None
        _, at, payload = popped[1].split("\t", 2)
        return HistoryRecord(seq=popped[0], kind=kind, at=float(at), payload=_json_decode(payload))

    # errors

    def _refused(
        self,
        refusal: _Refusal,
        session_id: str,
        *,
        key: str | None = None,
        expected: int | None = None,
    ) -> NoReturn:
        """The errors every script may raise; the operation-specific ones are mapped by callers."""
        code, parts = refusal.code, refusal.args_
        if code == "NOTFOUND":
            raise SessionNotFound(parts[0] if parts else session_id) from None
        if code == "ENDING":
            raise ending(session_id) from None
        if code == "OVERFLOW":
            name, value, delta = parts
            raise counter_overflow(name, int(value), int(delta)) from None
        if code == "DUPLABEL":
            name, value, holder, namespace = parts
            raise DuplicateSession(
                f"label {shortened(name)}={shortened(value)} is held by live session {holder} in {namespace}"
            ) from None
        if code == "DATAVERSION":
            raise VersionConflict(
                f"data key {quoted(key)} of session {session_id} is at version {parts[0]}, not {expected}"
            ) from None
        raise StoreUnavailable(f"unexpected refusal from the Redis store: {code} {parts}")


def _plain_items(records: list[str], kind: str, wanted: int) -> list[Any] | None:
    """The decoded payloads of the ``wanted`` newest ``records`` (a page of ``history_read``,
    oldest first), when all of them are ``kind`` records that decode: the usual first read, with
    nothing popped or cleared among them. ``None`` otherwise, found newest first (where markers
    are), so the walk that then reads the page has lost little: it resolves the markers and
    reports the damage. A third less CPU than the walk's rows on get_items(50)."""
    payloads = []
    for record in reversed(records[max(len(records) - wanted, 0) :]):  # ([-0:] would be all)
        record_kind, _, payload = record.split("\t", 2)
        if record_kind != kind:
            return None
        payloads.append(payload)
    try:
        items = [_json_decode(payload) for payload in payloads]
    except DECODE_ERRORS:
        return None
    items.reverse()
    return items
