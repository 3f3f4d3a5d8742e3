"""What only the SQLite store promises: restarts lose nothing, several processes share one file
(each session ends exactly once, every process sees every event), an acknowledged write survives
``kill -9``, and files it must not use are refused untouched.

The store-agnostic behaviour is in tests/core (``SESSIONHUB_TEST_STORES=sqlite``). The multi-process
test runs about a thousand sessions; ``SESSIONHUB_SOAK=1`` makes it ten thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sessionhub import (
    DuplicateSession,
    EventKind,
    ManualClock,
    SessionEvent,
    SessionHub,
    StoreUnavailable,
    ValidationError,
)
from sessionhub.stores import store_from_url
from sessionhub.stores.sqlite import SCHEMA_VERSION, SQLiteStore

from .damaged import assert_the_others_still_work
from .workers import run_together

WORKER = Path(__file__).with_name("sqlite_worker.py")
SOAK = os.environ.get("SESSIONHUB_SOAK") == "1"
WAIT = 10.0  # a safety net for events that must come, not an assertion about speed


async def next_event(events: AsyncIterator[SessionEvent]) -> SessionEvent:
    return await asyncio.wait_for(anext(events), WAIT)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


# URLs


def test_urls_name_relative_and_absolute_files(tmp_path: Path) -> None:
    relative = store_from_url("sqlite:///some/dir/s.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path.cwd() / "some/dir/s.db"
    absolute = SQLiteStore.from_url(
        f"sqlite:///{tmp_path}/s.db?synchronous=FULL&busy_timeout=2&poll_interval=0.5"
    )
    assert absolute.path == tmp_path / "s.db"
    assert (absolute.synchronous, absolute.busy_timeout, absolute.poll_interval) == ("full", 2, 0.5)
    assert absolute.ephemeral is False


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/s.db",
        "sqlite:///s.db?synchronous=sometimes",
        "sqlite:///s.db?busy_timeout=soon",
        "sqlite:///s.db?colour=blue",
        "sqlite:///:memory:",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        store_from_url(url)


async def test_a_store_that_is_not_open_says_so(db: Path) -> None:
    with pytest.raises(StoreUnavailable, match="not open"):
        await SQLiteStore(db).get("x")


# restarts


async def test_a_restart_keeps_sessions_data_history_and_events(db: Path) -> None:
    clock = ManualClock()

    def hub_on_the_file() -> SessionHub:
        return SessionHub(
            SQLiteStore(db),
            idle_timeout=60,
            clock=clock,
            poll_interval=3600.0,
            unique_labels=["role"],
        )

    async with hub_on_the_file() as hub:
        events = hub.subscribe()
        parent = await hub.create("parent", namespace="ns", user_id="ada", activate=True)
        child = await hub.create(
            "child", namespace="ns", parent_id="parent", labels={"role": "auth"}, details={"a": 1}
        )
        await hub.incr("child", "calls", 3)
        await hub.data("child").set("stub", {"x": [1, 2]})
        for i in range(5):
            await hub.history("child").append("call" if i % 2 else "reply", {"i": i})
        await hub.create("kept", retention=3600)
        await hub.end("kept", "bye")
        seen = [await next_event(events) for _ in range(5)]
        parent, child = await hub.get("parent"), await hub.get("child")
        ended = await hub.get("kept")
        await events.aclose()
    assert [(e.kind, e.session.id if e.session else None) for e in seen] == [
        ("created", "parent"),
        ("created", "child"),
        ("created", "kept"),
        ("transitioned", "kept"),
        ("ended", "kept"),
    ]

    async with hub_on_the_file() as hub:
        assert await hub.get("parent") == parent
        assert await hub.get("child") == child
        assert await hub.get("kept") == ended
        assert [s.id for s in (await hub.find(namespace="ns")).items] == ["child", "parent"]
        assert [s.id for s in (await hub.find(user_id="ada")).items] == ["parent"]
        assert [s.id for s in (await hub.find(parent_id="parent")).items] == ["child"]
        assert [s.id for s in (await hub.find(labels={"role": "auth"})).items] == ["child"]
        assert await hub.count() == 2
        assert (await hub.metrics()).live_sessions == 2
        assert await hub.data("child").items() == {"stub": {"x": [1, 2]}}
        assert await hub.history("child").counts() == {"reply": 3, "call": 2}
        assert [r.seq for r in await hub.history("child").read(newest_first=True, limit=2)] == [
            5,
            4,
        ]
        with pytest.raises(DuplicateSession):  # the unique label is still held
            await hub.create(namespace="ns", labels={"role": "auth"})

        # A subscriber resumes after an event id given out before the restart ...
        resumed = hub.subscribe(after=seen[1].id)
        assert [await next_event(resumed) for _ in range(3)] == seen[2:]
        # ... and new events continue the numbering.
        await hub.touch("child")  # no event
        clock.advance(61)  # the idle timeout, counted from before the restart
        await hub.expire_due()  # (or the hub's own expiry pass, if it got there first)
        later = [await next_event(resumed) for _ in range(4)]
        assert {(e.kind, e.session.id) for e in later if e.session} == {
            (EventKind.TRANSITIONED, "parent"),
            (EventKind.TRANSITIONED, "child"),
            (EventKind.ENDED, "parent"),
            (EventKind.ENDED, "child"),
        }
        ids = [int(e.id) for e in seen + later]
        assert ids == sorted(set(ids))
        await resumed.aclose()


async def test_events_resume_after_an_id_that_left_the_table(db: Path) -> None:
    store = SQLiteStore(db, event_buffer=4, event_retention=4)
    async with SessionHub(store, idle_timeout=None) as hub:
        first = hub.subscribe()
        await hub.create("s0")
        oldest_id = (await next_event(first)).id
        for i in range(1, 10):
            await hub.create(f"s{i}")
        await store.purge(0.0)  # trims the table to the newest 4 events
        await first.aclose()
    async with SessionHub(
        SQLiteStore(db, event_buffer=8, event_retention=8), idle_timeout=None
    ) as hub:
        events = hub.subscribe(after=oldest_id)
        got = [await next_event(events) for _ in range(9)]
        await events.aclose()
    # 5 events are gone: told as one count for those before this ring's window, and one each for
    # those inside it, then the 4 still stored
    assert sum(e.missed for e in got if e.kind == EventKind.MISSED) == 5
    assert [e.session.id for e in got if e.session] == ["s6", "s7", "s8", "s9"]


async def test_two_stores_on_one_file_share_events_and_resume_ids(db: Path) -> None:
    async with (
        SessionHub(SQLiteStore(db, poll_interval=0.01)) as one,
        SessionHub(SQLiteStore(db, poll_interval=0.01)) as two,
        SessionHub(SQLiteStore(db, poll_interval=3600.0)) as late,  # does not poll in this test
    ):
        on_two = two.subscribe()
        created = await one.create("a")
        event = await next_event(on_two)
        assert (event.kind, event.session) == (EventKind.CREATED, created)
        await one.update("a", details={"n": 1})
        last = one.store.events.last_id
        assert last is not None
        assert (await next_event(on_two)).id == last

        # an id another process gave out resumes even where the poll has not read it yet
        assert late.store.events.last_id is None
        resumed = late.subscribe(after=event.id)
        assert (await next_event(resumed)).id == last
        with pytest.raises(ValidationError, match="unknown event id"):
            await anext(late.subscribe(after=str(int(last) + 1000)))
        await resumed.aclose()
        await on_two.aclose()


async def test_stores_opening_a_new_file_together_all_open_it(tmp_path: Path) -> None:
    # One of them creates the schema while the others check the file: each check reads the file
    # in one snapshot, so none sees the schema's version from before its commit and its tables
    # from after (which read as another application's database; found by the three-process test).
    # And two switching a new file to WAL together: SQLite refuses one of them at once ("database
    # is locked", without waiting, as waiting would deadlock); it tries again.
    for attempt in range(100):
        path = tmp_path / f"fresh{attempt}.db"
        stores = [SQLiteStore(path) for _ in range(6)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
        finally:
            await asyncio.gather(*(store.close() for store in stores))


async def test_an_end_left_unfinished_is_taken_over(db: Path) -> None:
    crashed = SQLiteStore(db)
    await crashed.open()
    async with SessionHub(SQLiteStore(db), clock=ManualClock(), poll_interval=3600.0) as hub:
        ended: list[tuple[str, str]] = []
        hub.on_end(lambda session, reason: ended.append((session.id, reason)))
        await hub.create("orphan", idle_timeout=None)
        assert await crashed.claim_end("orphan", "bye", 0.0, {"CREATED": "TERMINATING"})
        assert await hub.end("orphan") is False  # claimed by a live process: not ours to end
        assert await hub.expire_due() == 0
        await crashed.close()  # it stops without finishing: its claims are free at once
        hub.store._next_sweep = 0.0  # type: ignore[attr-defined]  # sweep now, not in a while
        assert await hub.expire_due() == 1
        assert ended == [("orphan", "bye")]
        assert await hub.exists("orphan") is False


# several processes


def test_three_processes_end_each_session_exactly_once(tmp_path: Path) -> None:
    per_process = 3334 if SOAK else 334
    total, slots, timeout = 3 * per_process, 20, 300.0 if SOAK else 90.0
    db = tmp_path / "shared.db"
    results = [tmp_path / f"result{i}.json" for i in range(3)]
    commands = [
        [
            *(sys.executable, str(WORKER), "expire", str(db), str(results[i])),
            *(str(i), str(per_process), str(total), str(slots), str(timeout)),
        ]
        for i in range(3)
    ]
    run_together(commands, tmp_path, timeout + 60)
    seen = [json.loads(path.read_text()) for path in results]

    expiring = {f"expiring-{i}-{j}" for i in range(3) for j in range(per_process)}
    hooked = Counter(line.split()[0] for result in seen for line in result["hooked"])
    assert set(hooked) == expiring  # every session's hooks ran ...
    assert max(hooked.values()) == 1  # ... in exactly one process
    assert {line.split()[1] for result in seen for line in result["hooked"]} == {"expired"}
    assert [len(result["hooked"]) for result in seen] != [0, 0, 0]
    for result in seen:  # every process was told of every end, once
        assert result["missed"] == 0
        assert len(result["ended"]) == total
        assert set(result["ended"]) == expiring
    assert sorted(slot for result in seen for slot in result["won"]) == list(range(slots))
    with sqlite3.connect(db) as conn:
        held = conn.execute(
            "SELECT value, count(*) FROM unique_labels WHERE name = 'slot' GROUP BY value"
        ).fetchall()
        live = conn.execute("SELECT count(*) FROM sessions WHERE live = 1").fetchone()[0]
    conn.close()
    assert sorted(int(value) for value, _ in held) == list(range(slots))
    assert {n for _, n in held} == {1}
    assert live == slots


def test_kill_9_loses_no_acknowledged_write(db: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), "create", str(db)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 300:
            line = worker.stdout.readline()
            assert line, f"the worker stopped early (exit {worker.poll()})"
            acknowledged.append(line.strip())
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    acknowledged += worker.stdout.read().split()  # printed before the kill, not yet read
    worker.stdout.close()
    assert worker.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()

    async def check() -> None:
        async with SessionHub(SQLiteStore(db), idle_timeout=None) as hub:
            for sid in acknowledged:
                n = int(sid.removeprefix("acked-"))
                session = await hub.get(sid)
                assert session.labels == {"n": str(n)}
                assert await hub.data(sid).get("n") == n
                assert [r.payload for r in await hub.history(sid).read()] == [{"n": n}]
            assert await hub.count() >= len(acknowledged)

    asyncio.run(check())


# files it must not use


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _snapshot(path: Path) -> tuple[bytes | None, list[str]]:
    """The file's bytes and what its directory holds."""
    content = path.read_bytes() if path.is_file() else None
    return content, _names(path.parent)


def _set_mode(path: Path, mode: int) -> None:
    path.chmod(mode)


async def _make_database(path: Path) -> None:
    async with SessionHub(SQLiteStore(path)) as hub:
        for i in range(50):
            await hub.create(f"s{i}", labels={"i": str(i)}, details={"pad": "x" * 500})


def _newer_schema(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def _other_application(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    conn.close()


def _overwrite(offset: int, size: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with path.open("r+b") as f:
            f.seek(offset)
            f.write(bytes(range(256)) * (size // 256))

    return damage


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _text(path: Path) -> None:
    path.write_text("this is not a database\n" * 100)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_newer_schema, "newer than this sessionhub"),
        (_other_application, "another application"),
        (_overwrite(4096 * 2, 4096 * 4), "corrupt|damaged"),
        (_truncate, "corrupt|damaged"),
        (_overwrite(0, 512), "not an SQLite database"),
        (_text, "not an SQLite database"),
    ],
    ids=["newer-schema", "other-app", "corrupt-pages", "truncated", "corrupt-header", "text"],
)
async def test_a_file_it_must_not_use_is_refused_untouched(
    db: Path, damage: Callable[[Path], None], message: str
) -> None:
    await _make_database(db)
    damage(db)
    before = _snapshot(db)
    with pytest.raises(StoreUnavailable, match=message) as info:
        await SQLiteStore(db).open()
    assert str(db) in str(info.value)
    assert _snapshot(db) == before


async def test_a_read_only_file_is_refused_untouched_until_it_is_writable(db: Path) -> None:
    await _make_database(db)
    _set_mode(db, 0o444)
    before = _snapshot(db)
    try:
        with pytest.raises(StoreUnavailable, match="read-only"):
            await SessionHub(SQLiteStore(db)).start()
        assert _snapshot(db) == before
    finally:
        _set_mode(db, 0o644)
    async with SessionHub(SQLiteStore(db)) as hub:  # the same call works once the file is fixed
        assert await hub.count() == 50


async def test_a_directory_or_a_missing_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(StoreUnavailable, match="directory"):
        await SQLiteStore(folder).open()
    assert _names(folder) == []
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await SQLiteStore(tmp_path / "nowhere" / "s.db").open()
    assert _names(tmp_path) == ["folder"]


async def test_durability_setting_is_applied(db: Path) -> None:
    for name, level in (("normal", 1), ("full", 2)):
        store = SQLiteStore(db, synchronous=name)  # type: ignore[arg-type]
        await store.open()
        try:
            assert await store._submit(store._fetch, "PRAGMA synchronous", ()) == [(level,)]
            assert await store._submit(store._fetch, "PRAGMA journal_mode", ()) == [("wal",)]
        finally:
            await store.close()


# records written before the JSON nesting bound existed

DEEP = b"[" * 5000 + b"]" * 5000  # msgspec (like any recursive decoder) cannot decode this


def _poison(db: Path, session_id: str) -> None:
    """Give a session details nested 5,000 deep, add an event carrying it, and give session
    ``a`` such a data value and history record, as a sessionhub without the nesting bound could
    have written them."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn, conn:
        (record,) = conn.execute(
            "SELECT record FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        poisoned = bytes(record).replace(b'"details":{}', b'"details":{"v":' + DEEP + b"}")
        assert poisoned != record
        conn.execute(
            "UPDATE sessions SET record = ?, deadline = 0 WHERE id = ?", (poisoned, session_id)
        )
        conn.execute("INSERT INTO events (kind, at, session) VALUES ('updated', 0, ?)", (poisoned,))
        # and a data value and a history record of another session
        conn.execute(
            "INSERT INTO data (session_id, key, value, version) VALUES ('a', 'deep', ?, 1)", (DEEP,)
        )
        conn.execute(
            "INSERT INTO history (session_id, seq, kind, at, payload) VALUES ('a', 2, 'call', 0, ?)",
            (DEEP,),
        )


async def test_a_record_that_cannot_be_decoded_breaks_nothing_else(db: Path) -> None:
    clock = ManualClock()
    store = SQLiteStore(db, poll_interval=0.01)
    async with SessionHub(store, clock=clock, auto_expire=False, idle_timeout=60) as hub:
        for sid in ("a", "poisoned", "z"):
            await hub.create(sid)
        await hub.data("a").set("k", 1)
        await hub.history("a").append("call", 1)
        events = hub.subscribe()
        _poison(db, "poisoned")

        # the stream goes on past the poisoned event: a one-event gap, then the next event
        await hub.create("b")
        got = [await next_event(events), await next_event(events)]
        assert [(e.kind, e.missed) for e in got] == [(EventKind.MISSED, 1), (EventKind.CREATED, 0)]
        assert got[1].session is not None
        assert got[1].session.id == "b"

        await assert_the_others_still_work(hub, clock, damaged_at_least=3)
    async with SessionHub(SQLiteStore(db), clock=clock, auto_expire=False) as hub:
        resumed = hub.subscribe(after="1")  # a restart reads the poisoned event again: skipped
        kinds = [(await next_event(resumed)).kind for _ in range(4)]
        assert EventKind.MISSED in kinds
        await resumed.aclose()
    await events.aclose()
