"""Bad input: every verb answers a clear ``SessionHubError`` subclass, and nothing changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sessionhub import (
    DuplicateSession,
    Limits,
    ManualClock,
    PayloadTooLarge,
    SessionHub,
    SessionHubError,
    SessionNotFound,
    TransitionError,
    ValidationError,
    VersionConflict,
)
from sessionhub.stores import Store

from .helpers import MakeHub, next_event

BAD_IDS: list[Any] = ["", "a b", "tab\there", "x" * 201, "é", "new\nline", 5, None, b"bytes", ["a"]]
UNKNOWN = "no-such-session"


class NotJson:
    """A value JSON cannot encode (with a repr stable across processes, for test ids)."""

    def __repr__(self) -> str:
        return "NotJson()"


class Snapshot:
    """Everything observable about a hub, to assert that a refused call changed nothing."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        self.state: tuple[Any, ...] = ()

    async def take(self) -> tuple[Any, ...]:
        hub = self.hub
        sessions = (await hub.find(include_ended=True, limit=1000)).items
        contents = []
        for session in sessions:
            contents.append(
                (await hub.data(session.id).items(), await hub.history(session.id).counts())
            )
        snap = await hub.metrics()
        return (sessions, contents, snap.created_total, snap.ended_total, snap.hook_calls_total)

    async def __aenter__(self) -> Snapshot:
        self.state = await self.take()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert await self.take() == self.state, "a refused call changed the hub"


async def _prepared(hub: SessionHub) -> str:
    session = await hub.create("sid", user_id="ada", labels={"role": "auth"}, details={"a": 1})
    await hub.data(session.id).set("k", "v")
    await hub.history(session.id).append("call", 1)
    return session.id


Call = Callable[[SessionHub, Any], Awaitable[Any]]


async def _track(hub: SessionHub, sid: Any) -> None:
    async with hub.track_request(sid):
        pytest.fail("a refused request must not enter its block")


ID_CALLS: dict[str, Call] = {
    "get": lambda hub, sid: hub.get(sid),
    "exists": lambda hub, sid: hub.exists(sid),
    "touch": lambda hub, sid: hub.touch(sid),
    "incr": lambda hub, sid: hub.incr(sid, "n"),
    "update": lambda hub, sid: hub.update(sid, details={"b": 2}),
    "transition": lambda hub, sid: hub.transition(sid, "SPAWN"),
    "clean": lambda hub, sid: hub.transition(sid, "CLEAN"),
    "end": lambda hub, sid: hub.end(sid),
    "link-child": lambda hub, sid: hub.link("sid", sid),
    "link-parent": lambda hub, sid: hub.link(sid, "sid"),
    "track_request": _track,
    "data.get": lambda hub, sid: hub.data(sid).get("k"),
    "data.set": lambda hub, sid: hub.data(sid).set("k", 1),
    "data.delete": lambda hub, sid: hub.data(sid).delete("k"),
    "history.append": lambda hub, sid: hub.history(sid).append("call"),
    "history.read": lambda hub, sid: hub.history(sid).read(),
    "create": lambda hub, sid: hub.create(sid),
    "create-parent": lambda hub, sid: hub.create(parent_id=sid),
    "find-cursor": lambda hub, sid: hub.find(cursor=sid),
    "find-user": lambda hub, sid: hub.find(user_id=sid),
}


#: None is the default of create's id and parent and of find's cursor and filters: not bad there.
ID_CASES = [
    pytest.param(call, bad, id=f"{call}-{bad!r}")
    for call in ID_CALLS
    for bad in BAD_IDS
    if not (bad is None and call.startswith(("create", "find")))
]


@pytest.mark.parametrize(("call", "bad"), ID_CASES)
async def test_invalid_ids_are_refused(hub: SessionHub, call: str, bad: Any) -> None:
    await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError) as info:
            await ID_CALLS[call](hub, bad)
    assert isinstance(info.value, ValueError)
    assert (info.value.code, info.value.http_status) == ("invalid", 400)


NOT_FOUND_CALLS = [c for c in ID_CALLS if not c.startswith(("create", "find", "exists", "end"))]


@pytest.mark.parametrize("call", NOT_FOUND_CALLS)
async def test_unknown_ids_are_not_found(hub: SessionHub, call: str) -> None:
    await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(SessionNotFound) as info:
            await ID_CALLS[call](hub, UNKNOWN)
    assert info.value.http_status == 404


async def test_unknown_ids_where_that_is_an_answer(hub: SessionHub) -> None:
    await _prepared(hub)
    async with Snapshot(hub):
        assert await hub.exists(UNKNOWN) is False
        assert await hub.end(UNKNOWN) is False
        assert (await hub.find(user_id=UNKNOWN)).items == []
        assert await hub.count(parent_id=UNKNOWN) == 0
        with pytest.raises(SessionNotFound):
            await hub.create(parent_id=UNKNOWN)


@pytest.mark.parametrize("event", ["FLY", "", "  ", 3, None])
async def test_unknown_lifecycle_events(hub: SessionHub, event: Any) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.transition(sid, event)


async def test_invalid_transitions_change_nothing(hub: SessionHub) -> None:
    sid = await _prepared(hub)
    await hub.transition(sid, "SPAWN")
    await hub.transition(sid, "ACTIVATE")
    for event in ("SPAWN", "ACTIVATE", "CLEAN"):
        async with Snapshot(hub):
            with pytest.raises(TransitionError):
                await hub.transition(sid, event)


async def test_stale_versions_change_nothing(hub: SessionHub) -> None:
    sid = await _prepared(hub)
    await hub.touch(sid)
    async with Snapshot(hub):
        with pytest.raises(VersionConflict):
            await hub.update(sid, details={"b": 2}, expected_version=1)
        with pytest.raises(VersionConflict):
            await hub.transition(sid, "SPAWN", expected_version=1)
        with pytest.raises(VersionConflict):
            await hub.data(sid).set("k", "w", expected_version=5)
        with pytest.raises(VersionConflict):
            await hub.data(sid).delete("k", expected_version=5)


BAD_TIMEOUTS: list[Any] = [0, -1, -0.5, float("nan"), float("inf"), "10", True, [1]]


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize("field", ["idle_timeout", "ttl"])
async def test_bad_timeouts(hub: SessionHub, field: str, value: Any) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.create(**{field: value})
        with pytest.raises(ValidationError):
            await hub.update(sid, **{field: value})


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize("field", ["idle_timeout", "ttl", "hook_timeout", "poll_interval"])
def test_bad_hub_timeouts(make_store: Callable[[], Store], field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        SessionHub(make_store(), clock=ManualClock(), **{field: value})


@pytest.mark.parametrize("value", [-1, float("nan"), "1", True, None])
async def test_bad_retention(hub: SessionHub, make_store: Callable[[], Store], value: Any) -> None:
    with pytest.raises(ValidationError):
        SessionHub(make_store(), clock=ManualClock(), retention=value)
    if value is not None:  # create(retention=None) means the hub's default
        async with Snapshot(hub):
            with pytest.raises(ValidationError):
                await hub.create(retention=value)


BAD_CREATES: list[dict[str, Any]] = [
    {"namespace": ""},
    {"namespace": "a b"},
    {"namespace": None},
    {"user_id": ""},
    {"user_id": 7},
    {"labels": ["role", "auth"]},
    {"labels": {"role": 1}},
    {"labels": {1: "a"}},
    {"labels": {"": "a"}},
    {"details": [1, 2]},
    {"details": "text"},
    {"details": {1: "a"}},
    {"details": {"a": NotJson()}},
    {"activate": "yes"},
    {"activate": 1},
    {"activate": None},
]


@pytest.mark.parametrize("options", BAD_CREATES, ids=repr)
async def test_bad_create_arguments(hub: SessionHub, options: dict[str, Any]) -> None:
    await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.create(**options)


BAD_UPDATES: list[dict[str, Any]] = [
    {"details": [1]},
    {"details": {"a": NotJson()}},
    {"labels": {"a": 1}},
    {"remove_details": "a"},
    {"remove_details": [1]},
    {"remove_labels": "role"},
    {"expected_version": 0},
    {"expected_version": -1},
    {"expected_version": "1"},
    {"expected_version": True},
    {"expected_version": 1.0},
]


@pytest.mark.parametrize("options", BAD_UPDATES, ids=repr)
async def test_bad_update_arguments(hub: SessionHub, options: dict[str, Any]) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.update(sid, **options)


@pytest.mark.parametrize(
    ("counter", "by"),
    [
        ("", 1),
        ("has space", 1),
        (5, 1),
        ("x" * 129, 1),
        ("n", 1.5),
        ("n", "1"),
        ("n", True),
        ("n", 2**63),
        ("n", -(2**63) - 1),
    ],
    ids=repr,
)
async def test_bad_increments(hub: SessionHub, counter: Any, by: Any) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.incr(sid, counter, by)


@pytest.mark.parametrize(
    "reason",
    [
        "",
        5,
        None,
        "x" * 201,
        "new\nline",
        "nul\x00",
        "\x1b[31mred",
        "tab\there",
        "\u2028",
        "\ud800",
    ],
)
async def test_bad_end_reasons(hub: SessionHub, reason: Any) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.end(sid, reason)
    assert await hub.exists(sid)


BAD_PAGES: list[dict[str, Any]] = [
    {"limit": 0},
    {"limit": -1},
    {"limit": 1001},
    {"limit": "10"},
    {"limit": 2.0},
    {"state": ""},
    {"state": "NOPE"},
    {"state": "running"},
    {"namespace": "a b"},
    {"labels": {"a": 1}},
    {"parent_id": 3},
]


@pytest.mark.parametrize("options", BAD_PAGES, ids=repr)
async def test_bad_find_arguments(hub: SessionHub, options: dict[str, Any]) -> None:
    await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await hub.find(**options)
        if "limit" not in options:
            with pytest.raises(ValidationError):
                await hub.count(**options)


BAD_DATA: list[tuple[str, Callable[[SessionHub, str], Awaitable[Any]]]] = [
    ("empty key", lambda hub, sid: hub.data(sid).set("", 1)),
    ("long key", lambda hub, sid: hub.data(sid).set("k" * 513, 1)),
    ("key type", lambda hub, sid: hub.data(sid).set(5, 1)),  # type: ignore[arg-type]
    ("value", lambda hub, sid: hub.data(sid).set("k", NotJson())),
    ("version -1", lambda hub, sid: hub.data(sid).set("k", 1, expected_version=-1)),
    ("version str", lambda hub, sid: hub.data(sid).set("k", 1, expected_version="1")),  # type: ignore[arg-type]
    ("get key", lambda hub, sid: hub.data(sid).get("")),
    ("delete key", lambda hub, sid: hub.data(sid).delete("")),
    ("delete version", lambda hub, sid: hub.data(sid).delete("k", expected_version=-2)),
    ("history kind", lambda hub, sid: hub.history(sid).append("two words")),
    ("history kind type", lambda hub, sid: hub.history(sid).append(3)),  # type: ignore[arg-type]
    ("history payload", lambda hub, sid: hub.history(sid).append("call", NotJson())),
    ("read after", lambda hub, sid: hub.history(sid).read(after=-1)),
    ("read after type", lambda hub, sid: hub.history(sid).read(after="1")),  # type: ignore[arg-type]
    ("read limit", lambda hub, sid: hub.history(sid).read(limit=0)),
    ("read kind", lambda hub, sid: hub.history(sid).read(kind="")),
    ("count kind", lambda hub, sid: hub.history(sid).count("a b")),
]


@pytest.mark.parametrize(("what", "call"), BAD_DATA, ids=[what for what, _ in BAD_DATA])
async def test_bad_container_arguments(
    hub: SessionHub, what: str, call: Callable[[SessionHub, str], Awaitable[Any]]
) -> None:
    sid = await _prepared(hub)
    async with Snapshot(hub):
        with pytest.raises(ValidationError):
            await call(hub, sid)


async def test_oversized_input_changes_nothing(make_hub: MakeHub) -> None:
    hub = await make_hub(
        limits=Limits(
            max_details_bytes=64,
            max_labels=2,
            max_label_length=10,
            max_data_value_bytes=64,
            max_history_record_bytes=64,
        )
    )
    sid = await _prepared(hub)
    big = "x" * 100
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: hub.create(details={"a": big}),
        lambda: hub.create(labels={"a": big}),
        lambda: hub.create(labels={"a": "1", "b": "2", "c": "3"}),
        lambda: hub.update(sid, details={"b": big}),
        lambda: hub.update(sid, labels={"x": "1", "y": "2"}),
        lambda: hub.data(sid).set("k", big),
        lambda: hub.history(sid).append("call", big),
    ]
    for call in calls:
        async with Snapshot(hub):
            with pytest.raises(PayloadTooLarge):
                await call()


async def test_refused_calls_emit_no_event(make_hub: MakeHub) -> None:
    hub = await make_hub(unique_labels=["role"])
    sid = await _prepared(hub)
    events = hub.subscribe()
    with pytest.raises(DuplicateSession):
        await hub.create(labels={"role": "auth"})
    with pytest.raises(DuplicateSession):
        await hub.create("sid")
    with pytest.raises(TransitionError):
        await hub.transition(sid, "ACTIVATE")
    with pytest.raises(VersionConflict):
        await hub.update(sid, details={"b": 1}, expected_version=99)
    with pytest.raises(ValidationError):
        await hub.update(sid, idle_timeout=-1)
    marker = await hub.update(sid, details={"marker": 1})
    event = await next_event(events)
    assert (event.kind, event.session) == ("updated", marker)
    await events.aclose()


def test_every_error_is_a_sessionhub_error() -> None:
    from sessionhub import _errors

    for name in _errors.__all__:
        cls = getattr(_errors, name)
        if isinstance(cls, type) and cls is not SessionHubError:
            assert issubclass(cls, SessionHubError), name
            assert cls.code != SessionHubError.code, name
            assert 400 <= cls.http_status < 600, name
