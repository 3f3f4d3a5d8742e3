"""The SQLite store: sessions survive restarts, and several processes on one machine share one file.

    SQLiteStore("sessions.db")             # or store_from_url("sqlite:///sessions.db")
    store_from_url("sqlite:////var/lib/sessionhub.db?synchronous=full")

Durability. The database runs in WAL mode. ``synchronous="normal"`` (the default) writes each commit
to the WAL before the call returns but leaves the fsync to checkpoints: an acknowledged write survives
``kill -9`` of any process (the operating system still holds the written pages), not a power cut or a
kernel crash, which may lose the last commits (never corrupt the file). ``synchronous="full"`` fsyncs
every commit and survives power loss too, at the cost of one fsync per write. Pick ``full`` when the
machine itself may go down before its page cache reaches the disk.

Concurrency. Each store owns one connection, used only by one dedicated worker thread: the event loop
never waits on SQLite. Every operation is one transaction run in that thread; writes start with
``BEGIN IMMEDIATE``, so they take the database's single write lock before reading anything and every
check (unique ids and labels, capacity and quotas, versions, claims) is atomic across processes.
Waiting for the lock is bounded by ``busy_timeout`` seconds, then ``StoreUnavailable``. Expiry claims
are such transactions too: each session is claimed by exactly one process. A claimer that dies before
finishing an end (killed, or closed while cleaning up) leaves its claims orphaned; every process
records a heartbeat (a one-row write a second), and once a claimer's heartbeat is ``claim_lease``
seconds old (wall clock) its claims are taken over by the next ``claim_expired`` elsewhere, so hooks
run once, or again after such a crash, and no session stays half-ended. A claim whose caller was
cancelled while the worker made it is committed all the same: this instance keeps what it claimed
and its next ``claim_expired`` hands it back (nobody else would take over a live claimer's ends).

Events. Every change appends its event to the ``events`` table in the same transaction, numbered by
an ``AUTOINCREMENT`` row id that is never reused; the row id is the event id. Writes commit one at a
time, so row ids appear in commit order and every process reads the table as one ordered log: a
background task polls it every ``poll_interval`` seconds (default 0.05 s: an event from another
process reaches local subscribers within about that; an idle poll is one primary-key lookup), and
each write also brings in, before it returns, everything up to its own events. The in-process ring
(``self.events``) is numbered by row id too, so ``subscribe(after=id)`` resumes with an id from any
process, also after a restart (the last ``event_buffer`` events are loaded on open), and counts what
a reader missed exactly. ``purge`` keeps the newest ``event_retention`` events in the table.

Files. The schema version is ``PRAGMA user_version`` (and ``application_id`` marks the file as
sessionhub's); a file of an older version is upgraded when opened, in one transaction. Opening a file this store must not use raises ``StoreUnavailable``, writes nothing and
leaves the file as it was: a newer schema version, another application's database, a file that is not
a database, a corrupt one (``PRAGMA quick_check`` on open, skip it with ``quick_check=False`` for huge
files you trust), a read-only one (no write permission bit, even for root, or one SQLite cannot
write), or a directory. They are ``StoreUnavailable`` rather than ``ValidationError`` because the
arguments are fine and the file is what must change (restored, upgraded, made writable), after which
the same call succeeds; malformed URLs and options are ``ValidationError``. Errors SQLite reports
later (the disk is full, the file got corrupted, the lock stayed busy) are ``StoreUnavailable`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import msgspec

from .._errors import (
    CapacityExceeded,
    DuplicateSession,
    QuotaExceeded,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
    VersionConflict,
    quoted,
    shortened,
)
from .._events import EventLog
from .._models import (
    DataEntry,
    EventKind,
    HistoryRecord,
    Page,
    Session,
    SessionEvent,
    json_encoder,
)
from ._base import (
    DECODE_ERRORS,
    Change,
    CreateRules,
    Query,
    StackRead,
    Store,
    accepting_activity,
    appended_records,
    apply_change,
    ended_record,
    live_session,
    pop_marker,
    refreshed,
    stack_top,
)
from ._stack import PAGE

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger("sessionhub.sqlite")

T = TypeVar("T")
Synchronous = Literal["normal", "full", "extra"]

#: ``PRAGMA user_version`` of the schema below; files of a newer version are refused, files of an
#: older one are upgraded on open.
SCHEMA_VERSION: Final = 3
#: ``PRAGMA application_id``: "SHub", so that another program's SQLite file is never taken for ours.
APPLICATION_ID: Final = 0x53487562

# History is one b-tree keyed by (session, seq): an append writes one page of it, not also a rowid
# index and a kind index (a read by kind walks the session's records). Its counts per kind are a
# JSON object in the session's row, which every append rewrites anyway (activity).
_HISTORY_TABLE: Final = """CREATE TABLE {name} (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID"""

# Column conventions: user_id and parent_id are kept only while a session is live (and label rows
# exist only for live sessions), so their indexes hold live sessions alone, as Query documents;
# deadline is set while the session is live and unclaimed, to its expires_at or, once activity moved
# that later, to an earlier one (the expiry claim sets it right when it comes due); record is the whole Session as JSON, what every read returns.
_SCHEMA: Final = (
    """CREATE TABLE sessions (
        id           TEXT PRIMARY KEY,
        namespace    TEXT NOT NULL,
        user_id      TEXT,
        parent_id    TEXT,
        state        TEXT NOT NULL,
        live         INTEGER NOT NULL,
        deadline     REAL,
        claimed_by   TEXT,
        retain_until REAL,
        record       BLOB NOT NULL,
        history_counts TEXT
    )""",
    "CREATE INDEX sessions_namespace ON sessions (namespace, id)",
    "CREATE INDEX sessions_user ON sessions (user_id, id) WHERE user_id IS NOT NULL",
    "CREATE INDEX sessions_parent ON sessions (parent_id, id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX sessions_deadline ON sessions (deadline, id) WHERE deadline IS NOT NULL",
    "CREATE INDEX sessions_claimed ON sessions (claimed_by) WHERE claimed_by IS NOT NULL",
    "CREATE INDEX sessions_retained ON sessions (retain_until) WHERE retain_until IS NOT NULL",
    """CREATE TABLE labels (
        name TEXT NOT NULL, value TEXT NOT NULL, session_id TEXT NOT NULL,
        PRIMARY KEY (name, value, session_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE unique_labels (
        namespace TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, session_id TEXT NOT NULL,
        PRIMARY KEY (namespace, name, value)
    ) WITHOUT ROWID""",
    """CREATE TABLE census (
        namespace TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (namespace, state)
    ) WITHOUT ROWID""",
    """CREATE TABLE data (
        session_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (session_id, key)
    )""",
    _HISTORY_TABLE.format(name="history"),
    """CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        kind    TEXT NOT NULL,
        at      REAL NOT NULL,
        session BLOB
    )""",
    """CREATE TABLE claimers (
        token TEXT PRIMARY KEY, pid INTEGER NOT NULL, seen_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

#: The statements that bring a file of each older schema version to the next one.
_UPGRADES: Final = {
    1: (  # version 2: history WITHOUT ROWID, no kind index, counts in the session's row
        _HISTORY_TABLE.format(name="history_v2"),
        "INSERT INTO history_v2 SELECT session_id, seq, kind, at, payload FROM history",
        "DROP TABLE history",
        "ALTER TABLE history_v2 RENAME TO history",
        "ALTER TABLE sessions ADD COLUMN history_counts TEXT",
        "UPDATE sessions SET history_counts = (SELECT json_group_object(kind, n) FROM "
        "history_counts AS c WHERE c.session_id = sessions.id) "
        "WHERE id IN (SELECT session_id FROM history_counts)",
        "DROP TABLE history_counts",
    ),
    # version 3: the deadline column may lag behind a deadline that activity moved later; a
    # process of version 2 would claim such a session early, so it must not open the file.
    2: (),
}

_encode = json_encoder.encode
_decode_session = msgspec.json.Decoder(Session).decode
_decode_json = msgspec.json.decode
_replace = msgspec.structs.replace

#: An event as the worker thread hands it to the loop: (row id, kind, at, session).
_Row = tuple[int, str, float, Session | None]
#: A write waiting for the worker: the function, its arguments, and where its outcome goes.
_Write = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any]"]


class _SharedLog(EventLog):
    """The in-process ring, numbered by the shared log's row ids.

    ``EventLog`` resolves an id that has already left its ring as one of its own sequence numbers,
    to tell the reader how many events it missed; numbering the ring by row id makes that exact
    across processes and restarts. Rows this process never saw (trimmed before it read them, or
    before it started) become ``missed`` markers of one event each.
    """

    def feed(self, rows: Sequence[_Row]) -> None:
        for row_id, kind, at, session in rows:
            if row_id < self.next_seq:
                continue  # fed already
            self.skip_to(row_id, at)
            # Its id is its number (the row id); a row that cannot be decoded comes as a MISSED
            # kind without a session, which the ring holds as a one-event ``missed`` marker.
            self.append(kind, at, session)


def _deadline(session: Session) -> float | None:
    """What the deadline column holds: only live, unclaimed sessions are due to expire."""
    return session.expires_at if session.end_reason is None and session.ended_at is None else None


def _positive(value: object, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValidationError(f"{what} must be a positive number, got {value!r}")
    return float(value)


class SQLiteStore(Store):
    """Sessions in one SQLite file that several hub processes on one machine may share.

    ``synchronous``: ``"normal"`` survives process crashes, ``"full"`` power loss too (module
    docstring). ``busy_timeout``: seconds a write waits for another process's write lock.
    ``poll_interval``: seconds between reads of events other processes wrote. ``event_retention``:
    how many events the table keeps for resuming subscribers (at least ``event_buffer``).
    ``claim_lease``: seconds without a heartbeat after which a process's unfinished ends are taken
    over. ``quick_check``: verify the file's structure when opening it.
    """

    ephemeral = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        event_buffer: int = 10_000,
        synchronous: Synchronous = "normal",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.05,
        event_retention: int = 100_000,
        claim_lease: float = 30.0,
        quick_check: bool = True,
    ) -> None:
        super().__init__(event_buffer=event_buffer)
        self.events: _SharedLog = _SharedLog(event_buffer)
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValidationError(f"an SQLite store needs a file path, got {path!r}")
        if os.fspath(path) == ":memory:":
            raise ValidationError("an in-memory SQLite database is not shared: use memory://")
        if synchronous not in ("normal", "full", "extra"):
            raise ValidationError(f"synchronous must be normal, full or extra, got {synchronous!r}")
        if type(event_retention) is not int or event_retention < event_buffer:
            raise ValidationError(
                f"event_retention must be an integer of at least event_buffer ({event_buffer}), "
                f"got {event_retention!r}"
            )
        self.path = Path(path).absolute()
        self.synchronous = synchronous
        self.busy_timeout = _positive(busy_timeout, "busy_timeout")
        self.poll_interval = _positive(poll_interval, "poll_interval")
        self.event_retention = event_retention
        self.claim_lease = _positive(claim_lease, "claim_lease")
        self.quick_check = bool(quick_check)
        # Identifies this store's claims; a new one at each open, so a restarted process never
        # mistakes its predecessor's orphaned claims for its own.
        self._token = ""
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        # Touched only by the worker thread:
        self._conn: sqlite3.Connection | None = None
        self._fed = 0  # row id of the newest event handed to the loop
        self._pending: list[_Row] = []  # events the current transaction appended
        self._outbox: list[_Row] = []  # committed events the loop has not been given yet
        self._writes: deque[_Write] = deque()  # writes submitted, not yet run (see _write)
        self._unseen: list[Session] = []  # see _claimed_unseen
        self._next_sweep = 0.0  # when to look for orphaned claims next (monotonic)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; the query string may
        set ``synchronous``, ``busy_timeout``, ``poll_interval`` and ``event_buffer``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
            raise ValidationError(
                f"an SQLite store URL looks like sqlite:///relative.db or sqlite:////abs.db, "
                f"got {url!r}"
            )
        path = urllib.parse.unquote(parts.path[1:])
        if not path:
            raise ValidationError(f"the SQLite store URL {url!r} names no file")
        kinds: dict[str, Callable[[str], Any]] = {
            "synchronous": str.lower,
            "busy_timeout": float,
            "poll_interval": float,
            "event_buffer": int,
        }
        options: dict[str, Any] = {}
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name not in kinds:
                raise ValidationError(f"unknown option {name!r} in SQLite store URL {url!r}")
            try:
                options[name] = kinds[name](value)
            except ValueError:
                raise ValidationError(f"bad value {value!r} for {name} in {url!r}") from None
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # lifetime

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._writes.clear()  # submitted to a worker that closed before running them
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionhub-sqlite")
        try:
            recent = await loop.run_in_executor(executor, self._open)
        except BaseException as exc:
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise self._unavailable(exc) from exc
            raise
        self._loop, self._executor = loop, executor
        self.events.feed(recent)
        self._poller = loop.create_task(self._poll_forever(), name="sessionhub-sqlite-events")

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        except sqlite3.Error as exc:
            logger.warning("closing %s: %s", self.path, exc)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    async def _poll_forever(self) -> None:
        """Bring in other processes' events, and keep this process's claims alive."""
        loop = asyncio.get_running_loop()
        beat_every = min(1.0, self.claim_lease / 4)
        next_beat = loop.time() + beat_every
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if loop.time() >= next_beat:
                    await self._write(self._heartbeat)
                    next_beat = loop.time() + beat_every
                await self._submit(self._tail)
                failing = False
            except StoreUnavailable as exc:
                if not failing:  # once per outage, not twenty times a second
                    logger.warning("reading events from %s paused: %s", self.path, exc)
                failing = True
            except Exception:
                logger.exception("reading events from %s failed; retrying", self.path)

    # worker-thread plumbing

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        text = str(exc)
        if "locked" in text or "busy" in text:
            text = f"the database stayed locked by another process for {self.busy_timeout} s"
        elif "readonly" in text or "read-only" in text:
            text = "the database file is read-only"
        return StoreUnavailable(f"SQLite store {self.path}: {text}")

    async def _submit(
        self, fn: Callable[..., T], *args: Any, dropped: Callable[[T], object] | None = None
    ) -> T:
        """Run ``fn`` in the worker thread; hand the loop the events it committed, in order.

        One wake-up of the loop per call: the callback that delivers the result feeds the events
        first (so the caller's subscribers have them when its await returns), and feeds them even
        when the caller was cancelled meanwhile, since the worker has counted them as delivered.
        A result that the cancelled caller will never see goes to ``dropped``.
        """
        executor, loop = self._executor, self._loop
        if executor is None or loop is None:
            raise StoreUnavailable(
                f"SQLite store {self.path} is not open (use it through a started SessionHub)"
            )
        waiter: asyncio.Future[T] = loop.create_future()

        def settle(job: Future[tuple[T | None, BaseException | None, list[_Row]]]) -> None:
            value, error, rows = job.result()  # _call never raises
            if rows:
                self.events.feed(rows)
            if waiter.cancelled():
                if dropped is not None and error is None:
                    dropped(value)  # type: ignore[arg-type]  # T, since error is None
                return
            if isinstance(error, sqlite3.Error):
                waiter.set_exception(self._unavailable(error))
            elif error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(value)  # type: ignore[arg-type]  # T, since error is None

        def done(job: Future[tuple[T | None, BaseException | None, list[_Row]]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(settle, job)

        executor.submit(self._call, fn, args).add_done_callback(done)
        return await waiter

    def _call(
        self, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> tuple[T | None, BaseException | None, list[_Row]]:
        """The worker side of ``_submit``: the result or the error, and the events to feed."""
        try:
            value: T | None = fn(*args)
            error: BaseException | None = None
        except BaseException as exc:  # handed to the caller, whatever it is
            value, error = None, exc
        rows, self._outbox = self._outbox, []
        return value, error, rows

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in one read transaction: every statement sees the same snapshot."""
        return await self._submit(self._in_read_transaction, fn, *args)

    async def _write(
        self, fn: Callable[..., T], *args: Any, dropped: Callable[[T], object] | None = None
    ) -> T:
        """Run ``fn`` in a write transaction, holding the database's write lock throughout.

        Writes that queue up while the worker is busy share its next transaction: one commit (one
        fsync with ``synchronous="full"``) for all of them. Each runs in a savepoint of its own,
        so one that fails is undone alone, and every caller is answered after the commit.
        """
        if self._executor is None:  # not open: _submit refuses it
            return await self._submit(self._in_write_transaction, fn, *args)
        write: Future[T] = Future()
        self._writes.append((fn, args, write))
        return await self._submit(self._queued_write, write, dropped=dropped)

    def _queued_write(self, write: Future[T]) -> T:
        """The worker side of ``_write``: run every queued write, unless an earlier call has
        already run this one with its own."""
        if not write.done():
            batch = []
            while self._writes:
                batch.append(self._writes.popleft())
            if len(batch) == 1:
                fn, args, only = batch[0]
                try:
                    only.set_result(self._in_write_transaction(fn, *args))
                except BaseException as exc:  # handed to the caller, whatever it is
                    only.set_exception(exc)
            else:
                self._write_batch(batch)
        return write.result()

    def _write_batch(self, batch: list[_Write]) -> None:
        db = self._db
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, args, write in batch:
                outcomes.append((write, *self._in_savepoint(fn, args)))
            rows = self._pending
            if rows and rows[0][0] != self._fed + 1:
                # Other processes committed events since our last read: ours come after them.
                rows = self._events_between(self._fed, rows[0][0]) + rows
            db.execute("COMMIT")
        except BaseException as exc:  # nothing of the batch is committed: every write fails
            if db.in_transaction:
                db.execute("ROLLBACK")
            for _, _, write in batch:
                write.set_exception(exc)
            return
        finally:
            self._pending = []
        self._hand_over(rows)
        for write, value, error in outcomes:
            if error is None:
                write.set_result(value)
            else:
                write.set_exception(error)

    def _in_savepoint(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, Any]:
        """``fn``'s result and error; a failed ``fn`` leaves the transaction as it found it."""
        db, mark = self._db, len(self._pending)
        db.execute("SAVEPOINT write")
        try:
            value = fn(*args)
        except BaseException as exc:
            if not db.in_transaction:
                raise  # SQLite ended the whole transaction: the batch fails
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            del self._pending[mark:]
            return None, exc
        db.execute("RELEASE write")
        return value, None

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "used only in the worker thread, between open and close"
        return self._conn

    def _in_read_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        db = self._db
        db.execute("BEGIN")
        try:
            return fn(*args)
        finally:
            if db.in_transaction:  # an error may have ended it already
                db.execute("COMMIT")

    def _in_write_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
            rows = self._pending
            if rows and rows[0][0] != self._fed + 1:
                # Other processes committed events since our last read: ours come after them.
                rows = self._events_between(self._fed, rows[0][0]) + rows
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            self._pending = []
        self._hand_over(rows)
        return result

    def _hand_over(self, rows: list[_Row]) -> None:
        """Queue committed events for the loop (``_call`` returns them with the result)."""
        if rows:
            self._fed = rows[-1][0]
            self._outbox += rows

    def _emit(self, kind: str, at: float, session: Session) -> None:
        cursor = self._db.execute(
            "INSERT INTO events (kind, at, session) VALUES (?, ?, ?)", (kind, at, _encode(session))
        )
        assert cursor.lastrowid is not None
        self._pending.append((cursor.lastrowid, kind, at, session))

    def _events_between(self, after: int, before: int | None, limit: int = -1) -> list[_Row]:
        sql = "SELECT id, kind, at, session FROM events WHERE id > ?"
        params: tuple[int, ...] = (after,)
        if before is not None:
            sql += " AND id < ?"
            params += (before,)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [self._event_row(*row) for row in rows]

    def _event_row(self, row_id: int, kind: str, at: float, raw: bytes | None) -> _Row:
        """An event as read from the table; one that cannot be decoded becomes a ``missed``
        marker, so the stream goes on past it."""
        try:
            return row_id, kind, at, None if raw is None else _decode_session(raw)
        except DECODE_ERRORS as exc:
            self.damaged(f"event {row_id}", exc)
            return row_id, EventKind.MISSED, at, None

    def _tail(self) -> None:
        """Hand the loop every event committed since the last one it got."""
        while True:
            rows = self._events_between(self._fed, None, 1000)
            self._hand_over(rows)
            if len(rows) < 1000:
                return

    def _heartbeat(self) -> None:
        updated = self._db.execute(
            "UPDATE claimers SET seen_at = ? WHERE token = ?", (time.time(), self._token)
        ).rowcount
        if not updated:  # presumed dead by another process (a long stall): register again
            self._register()

    def _register(self) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO claimers (token, pid, seen_at) VALUES (?, ?, ?)",
            (self._token, os.getpid(), time.time()),
        )

    # opening: check everything before writing anything

    def _refuse(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"cannot use {self.path} as a sessionhub SQLite store: {why}")

    def _open(self) -> list[_Row]:
        path = self.path
        if path.is_dir():
            raise self._refuse("it is a directory")
        exists = path.exists()
        if exists and (not os.stat(path).st_mode & 0o222 or not os.access(path, os.R_OK | os.W_OK)):
            # A file nobody may write is refused even when this process could (root): someone
            # protected it.
            raise self._refuse("the file is read-only")
        if not exists and not path.parent.is_dir():
            raise self._refuse(f"the directory {path.parent} does not exist")
        uri = f"file:{urllib.parse.quote(str(path))}?mode={'rw' if exists else 'rwc'}"
        db = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,  # transactions are begun and ended explicitly
            timeout=self.busy_timeout,
            check_same_thread=False,  # only the worker thread uses it; closing may come later
        )
        try:
            self._conn = db
            self._check_file(db)
            self._switch_to_wal(db)
            db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            self._token = secrets.token_hex(8)
            db.execute("BEGIN IMMEDIATE")
            try:
                self._create_schema(db)
                self._register()  # the first write: a read-only file fails here, having changed nothing
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return self._recent_events()
        except BaseException as exc:
            self._conn = None
            db.close()
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                exc, sqlite3.OperationalError
            ):
                raise self._refuse(f"{exc} (not an SQLite database, or a damaged one)") from exc
            raise

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        # A file in rollback mode is switched by a write. When two connections' switches would
        # deadlock, SQLite answers one "database is locked" at once instead of waiting: that one
        # backs off and tries again, within busy_timeout.
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        if str(mode).lower() != "wal":
            raise self._refuse(f"it cannot be switched to WAL mode (journal mode {mode})")

    def _check_file(self, db: sqlite3.Connection) -> None:
        # The first read of a file that is not a database fails here with "file is not a database".
        # One statement, so one snapshot: another process creating the schema meanwhile commits
        # it whole, and separate reads could see its version before and its tables after.
        version, application, tables = db.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT application_id FROM pragma_application_id),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if application not in (0, APPLICATION_ID) or (version == 0 and tables):
            raise self._refuse("it is another application's SQLite database")
        if version > SCHEMA_VERSION:
            raise self._refuse(
                f"its schema version {version} is newer than this sessionhub's "
                f"({SCHEMA_VERSION}); upgrade sessionhub"
            )
        if version and self.quick_check:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise self._refuse(f"the file is corrupt ({'; '.join(problems)})")

    def _create_schema(self, db: sqlite3.Connection) -> None:
        # Checked again under the write lock: another process may have just created or upgraded it.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        for older in range(version, SCHEMA_VERSION):
            for statement in _UPGRADES[older]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {older + 1}")

    def _recent_events(self) -> list[_Row]:
        """The newest ``event_buffer`` events, so that subscribers resume across a restart."""
        newest = self._db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        start = max(self._fed, newest - self.events.capacity)
        rows = self._events_between(start, None)
        self._fed = rows[-1][0] if rows else self._fed
        return rows

    def _close(self) -> None:
        db = self._conn
        if db is None:
            return
        self._conn = None
        try:
            # Claims still held (an end cut short by shutdown) are orphaned now, not after the lease.
            db.execute("DELETE FROM claimers WHERE token = ?", (self._token,))
        finally:
            db.close()

    # sessions: worker-thread helpers

    def _record(self, session_id: str) -> Session | None:
        row = self._db.execute("SELECT record FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else self._decoded(session_id, row[0])

    def _decoded(self, session_id: str, raw: bytes) -> Session:
        try:
            return _decode_session(raw)
        except DECODE_ERRORS as exc:
            raise self.damaged(f"session {session_id}", exc) from None

    def _listed(self, rows: Iterable[tuple[str, bytes]]) -> list[Session]:
        """The sessions of ``(id, record)`` rows; damaged records are skipped (and counted)."""
        sessions = []
        for session_id, raw in rows:
            try:
                sessions.append(_decode_session(raw))
            except DECODE_ERRORS as exc:
                self.damaged(f"session {session_id}", exc)
        return sessions

    def _live(self, session_id: str) -> Session:
        return live_session(self._record(session_id), session_id)

    def _active(self, session_id: str) -> Session:
        return accepting_activity(self._record(session_id), session_id)

    def _readable(self, session_id: str, now: float) -> None:
        row = self._db.execute(
            "SELECT retain_until FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None or (row[0] is not None and row[0] <= now):
            raise SessionNotFound(session_id)

    def _census_add(self, namespace: str, state: str, delta: int) -> None:
        db = self._db
        db.execute(
            "INSERT INTO census (namespace, state, n) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, state) DO UPDATE SET n = n + excluded.n",
            (namespace, state, delta),
        )
        if delta < 0:
            db.execute(
                "DELETE FROM census WHERE namespace = ? AND state = ? AND n <= 0",
                (namespace, state),
            )

    def _check_unique(
        self, namespace: str, labels: Mapping[str, str], names: Iterable[str], session_id: str
    ) -> None:
        for name in names:
            value = labels.get(name)
            if value is None:
                continue
            row = self._db.execute(
                "SELECT session_id FROM unique_labels WHERE namespace = ? AND name = ? AND value = ?",
                (namespace, name, value),
            ).fetchone()
            if row is not None and row[0] != session_id:
                raise DuplicateSession(
                    f"label {shortened(name)}={shortened(value)} is held by live session {row[0]} in {namespace}"
                )

    def _hold_unique(self, session: Session, names: Iterable[str]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO unique_labels (namespace, name, value, session_id) "
            "VALUES (?, ?, ?, ?)",
            [
                (session.namespace, name, session.labels[name], session.id)
                for name in names
                if name in session.labels
            ],
        )

    def _release_unique(self, session: Session) -> None:
        self._db.executemany(
            "DELETE FROM unique_labels "
            "WHERE namespace = ? AND name = ? AND value = ? AND session_id = ?",
            [
                (session.namespace, name, value, session.id)
                for name, value in session.labels.items()
            ],
        )

    def _index_labels(self, session: Session, labels: Mapping[str, str], add: bool) -> None:
        sql = (
            "INSERT OR IGNORE INTO labels (name, value, session_id) VALUES (?, ?, ?)"
            if add
            else "DELETE FROM labels WHERE name = ? AND value = ? AND session_id = ?"
        )
        self._db.executemany(sql, [(name, value, session.id) for name, value in labels.items()])

    def _save(
        self, session: Session, claimed_by: str | None = None, replaces: Session | None = None
    ) -> None:
        """Write a live session's record and the columns derived from it.

        Given the record it ``replaces``, a deadline that only moved later (activity) leaves the
        deadline column as it was: an index page less per write, and the column stays a lower
        bound, which the expiry claim corrects when it comes due (``_due_rows``).
        """
        deadline = _deadline(session)
        if replaces is not None and deadline is not None:
            earlier = _deadline(replaces)
            if earlier is not None and deadline >= earlier:
                self._db.execute(
                    "UPDATE sessions SET user_id = ?, parent_id = ?, state = ?, "
                    "claimed_by = coalesce(?, claimed_by), record = ? WHERE id = ?",
                    (
                        session.user_id,
                        session.parent_id,
                        session.state,
                        claimed_by,
                        _encode(session),
                        session.id,
                    ),
                )
                return
        self._db.execute(
            "UPDATE sessions SET user_id = ?, parent_id = ?, state = ?, deadline = ?, "
            "claimed_by = coalesce(?, claimed_by), record = ? WHERE id = ?",
            (
                session.user_id,
                session.parent_id,
                session.state,
                deadline,
                claimed_by,
                _encode(session),
                session.id,
            ),
        )

    # sessions

    async def create(self, session: Session, rules: CreateRules) -> Session:
        return await self._write(self._create, session, rules)

    def _create(self, session: Session, rules: CreateRules) -> Session:
        db, sid = self._db, session.id
        if db.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is not None:
            raise DuplicateSession(f"session id already exists: {sid}")
        if session.parent_id is not None:
            parent = self._live(session.parent_id)
            if parent.end_reason is not None:
                raise SessionNotFound(parent.id, f"parent session is ending: {parent.id}")
        if rules.max_sessions is not None:
            live = db.execute("SELECT coalesce(sum(n), 0) FROM census").fetchone()[0]
            if live >= rules.max_sessions:
                raise CapacityExceeded(
                    f"the hub holds its maximum of {rules.max_sessions} sessions"
                )
        if rules.max_sessions_per_user is not None and session.user_id is not None:
            owned = db.execute(
                "SELECT count(*) FROM sessions WHERE user_id = ?", (session.user_id,)
            ).fetchone()[0]
            if owned >= rules.max_sessions_per_user:
                raise QuotaExceeded(
                    f"user {session.user_id} already has {owned} live sessions "
                    f"(limit {rules.max_sessions_per_user})"
                )
        self._check_unique(session.namespace, session.labels, rules.unique_labels, sid)
        db.execute(
            "INSERT INTO sessions (id, namespace, user_id, parent_id, state, live, deadline, record)"
            " VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (
                sid,
                session.namespace,
                session.user_id,
                session.parent_id,
                session.state,
                _deadline(session),
                _encode(session),
            ),
        )
        self._index_labels(session, session.labels, add=True)
        self._hold_unique(session, rules.unique_labels)
        self._census_add(session.namespace, session.state, 1)
        self._emit(EventKind.CREATED, session.created_at, session)
        return session

    async def get(self, session_id: str) -> Session | None:
        return await self._submit(self._record, session_id)

    async def find(self, query: Query, *, limit: int, cursor: str | None) -> Page:
        sql, params = _select(query, "s.id, s.record", cursor)
        rows = await self._submit(self._fetch, f"{sql} LIMIT ?", (*params, limit + 1))
        more = len(rows) > limit
        items = self._listed(rows[:limit])
        # The cursor is the last id read, so a damaged record at the page's end is passed too.
        return Page(items=items, cursor=rows[limit - 1][0] if more else None)

    def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        return self._db.execute(sql, params).fetchall()

    async def count(self, query: Query) -> int:
        if (
            not query.include_ended
            and query.user_id is None
            and query.parent_id is None
            and not query.labels
        ):
            # Live sessions by namespace and state: the census has them without a scan.
            sql = "SELECT coalesce(sum(n), 0) FROM census WHERE 1"
            params: list[object] = []
            if query.namespace is not None:
                sql += " AND namespace = ?"
                params.append(query.namespace)
            if query.state is not None:
                sql += " AND state = ?"
                params.append(query.state)
        else:
            sql, params = _select(query, "count(*)", None, ordered=False)
        rows = await self._submit(self._fetch, sql, params)
        return int(rows[0][0])

    async def census(self) -> dict[tuple[str, str], int]:
        rows = await self._submit(
            self._fetch, "SELECT namespace, state, n FROM census WHERE n > 0", ()
        )
        return {(namespace, state): n for namespace, state, n in rows}

    async def modify(self, session_id: str, change: Change) -> Session:
        return await self._write(self._modify, session_id, change)

    def _modify(self, session_id: str, change: Change) -> Session:
        old = self._live(session_id)

        def check_unique(labels: Mapping[str, str]) -> None:
            self._check_unique(old.namespace, labels, change.unique_labels, session_id)

        new = apply_change(old, change, check_unique)
        self._save(new, replaces=old)
        if new.labels != old.labels:
            gone = {
                name: value for name, value in old.labels.items() if new.labels.get(name) != value
            }
            self._index_labels(old, gone, add=False)
            self._index_labels(new, new.labels, add=True)
            self._release_unique(old)
            self._hold_unique(new, change.unique_labels)
        if new.state != old.state:
            self._census_add(old.namespace, old.state, -1)
            self._census_add(new.namespace, new.state, 1)
        if change.emit is not None:
            self._emit(change.emit, change.now, new)
        return new

    def _claim(
        self, session: Session, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session:
        claimed = _replace(
            session,
            state=moves.get(session.state, session.state),
            end_reason=reason,
            updated_at=now,
            version=session.version + 1,
        )
        self._save(claimed, claimed_by=self._token)
        if claimed.state != session.state:
            self._census_add(session.namespace, session.state, -1)
            self._census_add(session.namespace, claimed.state, 1)
        self._emit(EventKind.TRANSITIONED, now, claimed)
        return claimed

    async def claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        return await self._write(
            self._claim_end, session_id, reason, now, moves, dropped=self._claimed_unseen
        )

    def _claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        session = self._record(session_id)
        if session is None or session.ended_at is not None or session.end_reason is not None:
            return None
        return self._claim(session, reason, now, moves)

    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        claimed = await self._submit(
            self._claim_expired, now, moves, limit, dropped=self._claimed_unseen
        )
        if self._unseen:  # after the await: a cancellation cannot lose them now
            claimed, self._unseen = [*self._unseen, *claimed], []
        return claimed

    def _claimed_unseen(self, claimed: Session | list[Session] | None) -> None:
        """Claims made for a caller that was cancelled meanwhile: this instance holds them and
        nobody would finish them while it lives (no other process takes over a live claimer's
        ends), so the next ``claim_expired`` hands them back."""
        if isinstance(claimed, Session):
            self._unseen.append(claimed)
        elif claimed:
            self._unseen.extend(claimed)

    def _claim_expired(self, now: float, moves: Mapping[str, str], limit: int) -> list[Session]:
        # Every hub process calls this on every pass: look before taking the write lock.
        db = self._db
        due = (
            db.execute("SELECT 1 FROM sessions WHERE deadline <= ? LIMIT 1", (now,)).fetchone()
            is not None
        )
        sweep = time.monotonic() >= self._next_sweep
        if not due and not sweep:
            return []
        return self._in_write_transaction(self._claim_due, now, moves, limit, sweep)

    def _claim_due(
        self, now: float, moves: Mapping[str, str], limit: int, sweep: bool
    ) -> list[Session]:
        db = self._db
        rows = self._due_rows(now, limit)
        due = self._listed(rows)
        if len(due) < len(rows):  # damaged records: off the deadline index, or every pass stalls
            kept = {session.id for session in due}
            db.executemany(
                "UPDATE sessions SET deadline = NULL WHERE id = ?",
                [(sid,) for sid, _ in rows if sid not in kept],
            )
        claimed = [self._claim(session, "expired", now, moves) for session in due]
        if sweep and len(claimed) < limit:
            self._next_sweep = time.monotonic() + self.claim_lease / 4
            claimed += self._take_over_orphans(limit - len(claimed))
        return claimed

    def _due_rows(self, now: float, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` ``(id, record)`` rows due at ``now``, earliest first.

        A deadline column that lags behind its record (activity moved the deadline later, see
        ``_save``) is set right and the rows read again: claims stay earliest-first, and a
        session is never claimed before its deadline.
        """
        db = self._db
        while True:
            rows = db.execute(
                "SELECT id, record, deadline FROM sessions WHERE deadline <= ? "
                "ORDER BY deadline, id LIMIT ?",
                (now, limit),
            ).fetchall()
            moved = []
            for sid, raw, column in rows:
                try:
                    deadline = _deadline(_decode_session(raw))
                except DECODE_ERRORS:
                    continue  # the caller takes damaged records off the deadline index
                if deadline != column:
                    moved.append((deadline, sid))
            if not moved:
                return [(sid, raw) for sid, raw, _ in rows]
            db.executemany("UPDATE sessions SET deadline = ? WHERE id = ?", moved)

    def _take_over_orphans(self, limit: int) -> list[Session]:
        """Claims whose claimer stopped its heartbeat: finish them here (their hooks may run a
        second time, if the claimer died in the middle of them)."""
        db = self._db
        db.execute("DELETE FROM claimers WHERE seen_at < ?", (time.time() - self.claim_lease,))
        rows = db.execute(
            "SELECT id, record FROM sessions WHERE claimed_by IS NOT NULL AND live = 1 "
            "AND claimed_by NOT IN (SELECT token FROM claimers) LIMIT ?",
            (limit,),
        ).fetchall()
        db.executemany(
            "UPDATE sessions SET claimed_by = ? WHERE id = ?",
            [(self._token, sid) for sid, _ in rows],
        )
        if rows:
            logger.warning("taking over %d ends left unfinished by a stopped process", len(rows))
        return self._listed(rows)

    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        return await self._write(self._finish_end, session_id, now, ended_state, retain_until)

    def _finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        session = self._record(session_id)
        if session is None or session.ended_at is not None or session.end_reason is None:
            return None
        ended = ended_record(session, now, ended_state, retain_until)
        self._index_labels(session, session.labels, add=False)
        self._release_unique(session)
        self._census_add(session.namespace, session.state, -1)
        self._emit(EventKind.ENDED, now, ended)
        if retain_until > now:
            self._db.execute(
                "UPDATE sessions SET user_id = NULL, parent_id = NULL, state = ?, live = 0, "
                "deadline = NULL, claimed_by = NULL, retain_until = ?, record = ? WHERE id = ?",
                (ended_state, retain_until, _encode(ended), session_id),
            )
        else:
            self._delete([session_id])
        return ended

    async def finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        # One write for the batch: one worker-thread hop and one transaction (one commit).
        return await self._write(self._finish_ends, ends, now, ended_state)

    def _finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        return [self._finish_end(sid, now, ended_state, until) for sid, until in ends]

    async def having_children(self, session_ids: Sequence[str]) -> set[str]:
        return await self._read(self._having_children, list(session_ids))

    def _having_children(self, session_ids: list[str]) -> set[str]:
        having: set[str] = set()
        for start in range(0, len(session_ids), 500):  # under any build's bound on parameters
            chunk = session_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT DISTINCT parent_id FROM sessions WHERE parent_id IN ({marks})", chunk
            )
            having.update(row[0] for row in rows)
        return having

    def _delete(self, session_ids: Sequence[str]) -> None:
        params = [(sid,) for sid in session_ids]
        for table, column in (
            ("data", "session_id"),
            ("history", "session_id"),
            ("sessions", "id"),
        ):
            self._db.executemany(f"DELETE FROM {table} WHERE {column} = ?", params)

    async def next_deadline(self) -> float | None:
        # Possibly early (a lagging column): the pass that wakes then sets the column right.
        rows = await self._submit(
            self._fetch,
            "SELECT deadline FROM sessions WHERE deadline IS NOT NULL ORDER BY deadline LIMIT 1",
            (),
        )
        return float(rows[0][0]) if rows else None

    async def purge(self, now: float) -> int:
        return await self._submit(self._purge, now)

    def _purge(self, now: float) -> int:
        db = self._db
        retained = db.execute(
            "SELECT 1 FROM sessions WHERE retain_until <= ? LIMIT 1", (now,)
        ).fetchone()
        # Two subqueries: min and max in one SELECT would scan the table instead of two seeks.
        oldest, newest = db.execute(
            "SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)"
        ).fetchone()
        trim = oldest is not None and newest - oldest >= self.event_retention
        if retained is None and not trim:
            return 0
        return self._in_write_transaction(self._purge_now, now)

    def _purge_now(self, now: float) -> int:
        db = self._db
        ids = [
            sid
            for (sid,) in db.execute(
                "SELECT id FROM sessions WHERE retain_until <= ?", (now,)
            ).fetchall()
        ]
        self._delete(ids)
        db.execute(
            "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
            (self.event_retention,),
        )
        return len(ids)

    # data

    async def data_get(self, session_id: str, key: str, now: float) -> DataEntry | None:
        return await self._read(self._data_get, session_id, key, now)

    def _data_get(self, session_id: str, key: str, now: float) -> DataEntry | None:
        self._readable(session_id, now)
        row = self._db.execute(
            "SELECT value, version FROM data WHERE session_id = ? AND key = ?", (session_id, key)
        ).fetchone()
        if row is None:
            return None
        try:
            return DataEntry(key=key, value=_decode_json(row[0]), version=row[1])
        except DECODE_ERRORS as exc:
            raise self.damaged(f"data value {key} of session {session_id}", exc) from None

    def _data_version(self, session_id: str, key: str, expected: int | None) -> int:
        """The key's current version (0 if absent), checked against ``expected``."""
        row = self._db.execute(
            "SELECT version FROM data WHERE session_id = ? AND key = ?", (session_id, key)
        ).fetchone()
        current = 0 if row is None else int(row[0])
        if expected is not None and expected != current:
            raise VersionConflict(
                f"data key {quoted(key)} of session {session_id} is at version {current}, not {expected}"
            )
        return current

    def _refresh(self, session: Session, now: float) -> None:
        """Data and history writes are activity: slide the idle deadline like a touch."""
        self._save(replaces=session, session=refreshed(session, now))

    async def data_set(
        self, session_id: str, key: str, value: bytes, expected_version: int | None, now: float
    ) -> DataEntry:
        return await self._write(self._data_set, session_id, key, value, expected_version, now)

    def _data_set(
        self, session_id: str, key: str, value: bytes, expected_version: int | None, now: float
    ) -> DataEntry:
        session = self._active(session_id)
        version = self._data_version(session_id, key, expected_version) + 1
        self._db.execute(
            "INSERT OR REPLACE INTO data (session_id, key, value, version) VALUES (?, ?, ?, ?)",
            (session_id, key, value, version),
        )
        self._refresh(session, now)
        return DataEntry(key=key, value=_decode_json(value), version=version)

    async def data_delete(
        self, session_id: str, key: str, expected_version: int | None, now: float
    ) -> bool:
        return await self._write(self._data_delete, session_id, key, expected_version, now)

    def _data_delete(
        self, session_id: str, key: str, expected_version: int | None, now: float
    ) -> bool:
        session = self._active(session_id)
        if not self._data_version(session_id, key, expected_version):
            return False
        self._db.execute("DELETE FROM data WHERE session_id = ? AND key = ?", (session_id, key))
        self._refresh(session, now)
        return True

    async def data_items(self, session_id: str, now: float) -> list[DataEntry]:
        return await self._read(self._data_items, session_id, now)

    def _data_items(self, session_id: str, now: float) -> list[DataEntry]:
        self._readable(session_id, now)
        rows = self._db.execute(
            "SELECT key, value, version FROM data WHERE session_id = ? ORDER BY key", (session_id,)
        )
        entries = []
        for key, raw, version in rows:
            try:
                entries.append(DataEntry(key=key, value=_decode_json(raw), version=version))
            except DECODE_ERRORS as exc:
                self.damaged(f"data value {key} of session {session_id}", exc)
        return entries

    # history

    async def history_append(
        self, session_id: str, kind: str, payload: bytes, now: float
    ) -> HistoryRecord:
        return await self._write(self._history_append, session_id, kind, payload, now)

    def _history_append(
        self, session_id: str, kind: str, payload: bytes, now: float
    ) -> HistoryRecord:
        db = self._db
        session = self._active(session_id)
        last = db.execute(
            "SELECT seq FROM history WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
        ).fetchone()
        seq = 1 if last is None else last[0] + 1
        db.execute(
            "INSERT INTO history (session_id, seq, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
            (session_id, seq, kind, now, payload),
        )
        counts = self._history_counts(session_id)
        counts[kind] = counts.get(kind, 0) + 1
        db.execute(
            "UPDATE sessions SET history_counts = ? WHERE id = ?", (_encode(counts), session_id)
        )
        self._refresh(session, now)  # the same row: the same page
        return HistoryRecord(seq=seq, kind=kind, at=now, payload=_decode_json(payload))

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
        # one statement (its own snapshot), no transaction around it: a third of a short read
        return await self._submit(
            self._history_read, session_id, after, limit, newest_first, kind, now
        )

    def _history_read(
        self,
        session_id: str,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
        now: float,
    ) -> list[HistoryRecord]:
        """The records, read with the session's retention check in the same statement; only an
        empty answer asks again whether the session is there (``SessionNotFound``) or has none."""
        sql = (
            "SELECT seq, kind, at, payload FROM history WHERE session_id = ? AND EXISTS ("
            "SELECT 1 FROM sessions WHERE id = ? AND (retain_until IS NULL OR retain_until > ?))"
        )
        params: list[object] = [session_id, session_id, now]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if newest_first:
            if after is not None:
                sql += " AND seq < ?"
                params.append(after)
            sql += " ORDER BY seq DESC LIMIT ?"
        else:
            sql += " AND seq > ? ORDER BY seq LIMIT ?"
            params.append(after or 0)
        rows = self._db.execute(sql, (*params, limit)).fetchall()
        if not rows:
            self._readable(session_id, now)
            return []
        records = []
        for seq, record_kind, at, raw in rows:
            try:
                payload = _decode_json(raw)
            except DECODE_ERRORS as exc:
                self.damaged(f"history record {seq} of session {session_id}", exc)
                continue
            records.append(HistoryRecord(seq=seq, kind=record_kind, at=at, payload=payload))
        return records

    async def history_stack(
        self, session_id: str, read: StackRead, now: float
    ) -> tuple[list[Any], int]:
        """``Store.history_stack`` in the worker thread: one hop, and one statement unless
        markers hide more than the first page holds."""
        return await self._submit(self._history_stack, session_id, read, now)

    def _history_stack(self, session_id: str, read: StackRead, now: float) -> tuple[list[Any], int]:
        db = self._db
        # (more than a page: the walk's pages, as reads of any length are)
        if read.wanted is not None and read.wanted <= PAGE and not read.hidden:
            items = self._newest_items(session_id, read.kind, read.wanted, now)
            if items is not None:
                return items, 0
        walk = self._stack_walk(session_id, read)
        # no `at`, no HistoryRecord: the columns the walk needs, with the retention check
        rows = db.execute(
            "SELECT seq, kind, payload FROM history WHERE session_id = ? AND EXISTS ("
            "SELECT 1 FROM sessions WHERE id = ? AND (retain_until IS NULL OR retain_until > ?)) "
            "ORDER BY seq DESC LIMIT ?",
            (session_id, session_id, now, walk.size),
        ).fetchall()
        if not rows:
            self._readable(session_id, now)
            return [], 0
        # Later pages read below the first: records never change once written (the session's
        # deletion only ends the walk early, as a read just after it would).
        while (cursor := walk.feed(rows)) is not None:
            rows = db.execute(
                "SELECT seq, kind, payload FROM history WHERE session_id = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?",
                (session_id, cursor, walk.size),
            ).fetchall()
            if not rows:
                break
        return walk.oldest_first(), walk.hidden

    def _newest_items(
        self, session_id: str, kind: str, wanted: int, now: float
    ) -> list[Any] | None:
        """The decoded payloads of the ``wanted`` newest records, oldest first, when all of them
        are ``kind`` records that decode: the usual read, with nothing popped or cleared among
        them (the caller expects none hidden). ``None`` when another record or a damaged one is
        among them: the walk reads them again, resolves the markers and reports the damage.

        One column, the payload of items and NULL for other records (payloads are never NULL):
        building the Python rows was most of the walk's statement, the seq column alone a fifth
        of it. Measured in the worker (get_items(50) of 200 items, 2-core machine): 35 us -> 22
        us; one ``json_group_array`` row would build no rows, but its order is not guaranteed.
        """
        rows = self._db.execute(
            "SELECT CASE kind WHEN ? THEN payload END FROM history WHERE session_id = ? AND "
            "EXISTS (SELECT 1 FROM sessions WHERE id = ? AND "
            "(retain_until IS NULL OR retain_until > ?)) ORDER BY seq DESC LIMIT ?",
            (kind, session_id, session_id, now, wanted),
        ).fetchall()
        if not rows:
            self._readable(session_id, now)
            return []
        if (None,) in rows:
            return None
        try:
            items = [_decode_json(payload) for (payload,) in rows]
        except DECODE_ERRORS:
            return None
        items.reverse()
        return items

    async def history_counts(self, session_id: str, now: float) -> dict[str, int]:
        return await self._read(self._readable_history_counts, session_id, now)

    def _readable_history_counts(self, session_id: str, now: float) -> dict[str, int]:
        self._readable(session_id, now)
        return self._history_counts(session_id)

    def _history_counts(self, session_id: str) -> dict[str, int]:
        row = self._db.execute(
            "SELECT history_counts FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        counts: dict[str, int] = {} if row[0] is None else _decode_json(row[0])
        return counts

    async def history_append_many(
        self, session_id: str, records: Sequence[tuple[str, bytes]], now: float
    ) -> list[HistoryRecord]:
        return await self._write(self._history_append_many, session_id, list(records), now)

    def _history_append_many(
        self, session_id: str, records: list[tuple[str, bytes]], now: float
    ) -> list[HistoryRecord]:
        """The records in one statement of the write transaction: all of them or none."""
        db = self._db
        session = self._active(session_id)
        if not records:
            return []
        last = db.execute(
            "SELECT seq FROM history WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
        ).fetchone()
        first = 1 if last is None else last[0] + 1
        db.executemany(
            "INSERT INTO history (session_id, seq, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
            [
                (session_id, first + i, kind, now, payload)
                for i, (kind, payload) in enumerate(records)
            ],
        )
        counts = self._history_counts(session_id)
        for kind, _ in records:
            counts[kind] = counts.get(kind, 0) + 1
        db.execute(
            "UPDATE sessions SET history_counts = ? WHERE id = ?", (_encode(counts), session_id)
        )
        self._refresh(session, now)
        return appended_records(first, records, now)

    async def history_pop(
        self, session_id: str, kind: str, marker: str, now: float
    ) -> HistoryRecord | None:
        return await self._write(self._history_pop, session_id, kind, marker, now)

    def _history_pop(
        self, session_id: str, kind: str, marker: str, now: float
    ) -> HistoryRecord | None:
        db = self._db
        session = self._active(session_id)
        last = db.execute(
            "SELECT seq FROM history WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
        ).fetchone()
        if last is None:
            return None

        def record_at(seq: int) -> tuple[str, bytes]:
            row = db.execute(
                "SELECT kind, payload FROM history WHERE session_id = ? AND seq = ?",
                (session_id, seq),
            ).fetchone()
            return ("", b"") if row is None else (row[0], row[1])

        top = stack_top(record_at, last[0], kind, marker)
        if not top:
            return None
        below = stack_top(record_at, top - 1, kind, marker)
        db.execute(
            "INSERT INTO history (session_id, seq, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
            (session_id, last[0] + 1, marker, now, pop_marker(top, below)),
        )
        counts = self._history_counts(session_id)
        counts[marker] = counts.get(marker, 0) + 1
        db.execute(
            "UPDATE sessions SET history_counts = ? WHERE id = ?", (_encode(counts), session_id)
        )
        self._refresh(session, now)
        at, raw = db.execute(
            "SELECT at, payload FROM history WHERE session_id = ? AND seq = ?", (session_id, top)
        ).fetchone()
        return HistoryRecord(seq=top, kind=kind, at=at, payload=_decode_json(raw))

    # events

    def subscribe(self, after: str | None = None) -> AsyncGenerator[SessionEvent, None]:
        last = self.events.last_id
        if after is not None and after.isdigit() and int(after) > int(last or 0):
            # Possibly an id another process gave out that the poll has not brought in yet: read
            # the log first. The position is still exact (it is after ``after``, not "now"), but
            # an id nobody gave out is refused at the first iteration instead of here.
            return self._subscribe_after_tail(after)
        return self.events.subscribe(after)

    async def _subscribe_after_tail(self, after: str) -> AsyncGenerator[SessionEvent, None]:
        with contextlib.suppress(StoreUnavailable):
            await self._submit(self._tail)
        events = self.events.subscribe(after)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()


def _select(
    query: Query, columns: str, cursor: str | None, *, ordered: bool = True
) -> tuple[str, list[object]]:
    """SQL listing what ``query`` matches in id order, walking one index from ``cursor`` on.

    The index is picked here, by a fixed order of likely selectivity (the user, the parent, the
    first label, the namespace), rather than left to the planner, which has no statistics and may
    prefer one that yields the id order without being selective. The other filters are written
    with a unary ``+``, which keeps SQLite from using their indexes instead. As in the memory
    store, the user, parent and label indexes hold live sessions only, so queries through them
    list no ended session even with ``include_ended``.
    """
    where: list[str] = []
    params: list[object] = []
    source, order = "sessions s", "s.id"
    labels = list((query.labels or {}).items())
    narrowed = query.user_id is not None or query.parent_id is not None or bool(labels)
    driver = True
    for column, value in (
        ("user_id", query.user_id),
        ("parent_id", query.parent_id),
    ):
        if value is not None:
            where.append(f"{'' if driver else '+'}s.{column} = ?")
            params.append(value)
            driver = False
    if driver and labels:
        # CROSS JOIN makes labels the outer loop: its primary key lists the ids in order.
        name, value = labels.pop(0)
        source, order = "labels l CROSS JOIN sessions s", "l.session_id"
        where += ["l.name = ?", "l.value = ?", "s.id = l.session_id"]
        params += [name, value]
        driver = False
    for name, value in labels:
        where.append(
            "EXISTS (SELECT 1 FROM labels WHERE name = ? AND value = ? AND session_id = s.id)"
        )
        params += [name, value]
    if query.namespace is not None:
        where.append(f"{'' if driver else '+'}s.namespace = ?")
        params.append(query.namespace)
    if query.state is not None:
        where.append("+s.state = ?")
        params.append(query.state)
    if narrowed or not query.include_ended:
        where.append("s.live = 1")
    if cursor is not None:
        where.append(f"{order} > ?")
        params.append(cursor)
    sql = f"SELECT {columns} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if ordered:
        sql += f" ORDER BY {order}"
    return sql, params
