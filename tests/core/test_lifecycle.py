"""The lifecycle: the default table cell by cell, the pure ``next_state``, custom tables, and how a
hub walks sessions through them (``transition``, ``create(activate=True)``, ``end``)."""

from __future__ import annotations

import pytest

from sessionhub import (
    DEFAULT_LIFECYCLE,
    Lifecycle,
    ManualClock,
    SessionHub,
    SessionHubError,
    SessionNotFound,
    TransitionError,
    ValidationError,
    next_state,
)

from .helpers import HookLog, MakeHub, next_event

STATES = ["CREATED", "SPAWNING", "ACTIVE", "TERMINATING", "CLEANED"]
EVENTS = ["SPAWN", "ACTIVATE", "TERMINATE", "CLEAN"]
#: PRODUCT.md §2, exactly: every other cell of STATES x EVENTS is invalid.
VALID = {
    ("CREATED", "SPAWN"): "SPAWNING",
    ("CREATED", "TERMINATE"): "TERMINATING",
    ("SPAWNING", "ACTIVATE"): "ACTIVE",
    ("SPAWNING", "TERMINATE"): "TERMINATING",
    ("ACTIVE", "TERMINATE"): "TERMINATING",
    ("TERMINATING", "TERMINATE"): "TERMINATING",
    ("TERMINATING", "CLEAN"): "CLEANED",
}
CELLS = [(state, event) for state in STATES for event in EVENTS]
INVALID = [cell for cell in CELLS if cell not in VALID]


# the pure function


@pytest.mark.parametrize(("state", "event"), list(VALID))
def test_valid_cell(state: str, event: str) -> None:
    assert next_state(state, event) == VALID[state, event]


@pytest.mark.parametrize(("state", "event"), INVALID)
def test_invalid_cell(state: str, event: str) -> None:
    with pytest.raises(TransitionError) as info:
        next_state(state, event)
    err = info.value
    assert (err.state, err.event) == (state, event)
    assert str(err) == f"invalid transition: state={state} event={event} reason={err.reason}"
    assert err.reason  # a reason is always given


def test_the_table_has_exactly_the_documented_cells() -> None:
    assert dict(DEFAULT_LIFECYCLE.transitions) == VALID
    assert len(VALID) + len(INVALID) == 20


def test_error_message_format() -> None:
    with pytest.raises(TransitionError) as info:
        next_state("ACTIVE", "SPAWN")
    assert (
        str(info.value) == "invalid transition: state=ACTIVE event=SPAWN reason=no such transition"
    )
    assert info.value.message == str(info.value)
    assert (info.value.state, info.value.event) == ("ACTIVE", "SPAWN")
    assert isinstance(info.value, SessionHubError)
    assert (info.value.code, info.value.http_status) == ("invalid_transition", 409)


def test_cleaned_is_terminal_and_says_so() -> None:
    for event in EVENTS:
        with pytest.raises(TransitionError, match="reason=session has ended"):
            next_state("CLEANED", event)


def test_names_are_case_insensitive() -> None:
    assert next_state("created", "spawn") == "SPAWNING"
    assert next_state(" Spawning ", "Activate") == "ACTIVE"


def test_unknown_state_or_event_is_an_invalid_transition() -> None:
    with pytest.raises(TransitionError) as info:
        next_state("FLYING", "SPAWN")
    assert (info.value.state, info.value.event) == ("FLYING", "SPAWN")
    with pytest.raises(TransitionError):
        next_state("CREATED", "EXPLODE")


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_or_non_string_names_are_invalid(bad: object) -> None:
    with pytest.raises(ValidationError):
        next_state(bad, "SPAWN")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        next_state("CREATED", bad)  # type: ignore[arg-type]


def test_walk_and_moves() -> None:
    assert DEFAULT_LIFECYCLE.walk("CREATED", ["SPAWN", "ACTIVATE", "TERMINATE"]) == "TERMINATING"
    assert DEFAULT_LIFECYCLE.moves("TERMINATE") == {
        "CREATED": "TERMINATING",
        "SPAWNING": "TERMINATING",
        "ACTIVE": "TERMINATING",
        "TERMINATING": "TERMINATING",
    }
    assert DEFAULT_LIFECYCLE.activate_path == ("SPAWN", "ACTIVATE")


# custom tables

CUSTOM = {
    ("NEW", "START"): "RUNNING",
    ("NEW", "STOP"): "STOPPING",
    ("RUNNING", "PAUSE"): "PAUSED",
    ("PAUSED", "START"): "RUNNING",
    ("RUNNING", "STOP"): "STOPPING",
    ("PAUSED", "STOP"): "STOPPING",
    ("STOPPING", "STOP"): "STOPPING",
    ("STOPPING", "FINISH"): "DONE",
}


def custom_lifecycle(table: dict[tuple[str, str], str] | None = None) -> Lifecycle:
    return Lifecycle(
        CUSTOM if table is None else table,
        initial="NEW",
        active="RUNNING",
        ending="STOPPING",
        ended="DONE",
        terminate="STOP",
        clean="FINISH",
    )


def test_custom_table_as_a_pure_function() -> None:
    lifecycle = custom_lifecycle()
    assert lifecycle.next_state("RUNNING", "PAUSE") == "PAUSED"
    assert lifecycle.activate_path == ("START",)
    with pytest.raises(TransitionError) as info:
        lifecycle.next_state("NEW", "PAUSE")
    assert (info.value.state, info.value.event) == ("NEW", "PAUSE")


def test_a_table_that_cannot_end_a_live_state_is_refused() -> None:
    table = dict(CUSTOM)
    del table["PAUSED", "STOP"]  # PAUSED could never be ended
    with pytest.raises(ValidationError, match="PAUSED"):
        custom_lifecycle(table)


def test_a_table_whose_ending_state_cannot_clean_is_refused() -> None:
    table = dict(CUSTOM)
    del table["STOPPING", "FINISH"]
    with pytest.raises(ValidationError):
        custom_lifecycle(table)


def test_a_table_leaving_the_ended_state_is_refused() -> None:
    with pytest.raises(ValidationError):
        custom_lifecycle({**CUSTOM, ("DONE", "START"): "RUNNING"})


async def test_custom_lifecycle_in_a_hub(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(lifecycle=custom_lifecycle(), retention=60)
    hub.on_end(hook_log)
    session = await hub.create()
    assert session.state == "NEW"
    assert (await hub.transition(session.id, "start")).state == "RUNNING"
    assert (await hub.transition(session.id, "PAUSE")).state == "PAUSED"
    with pytest.raises(TransitionError) as info:
        await hub.transition(session.id, "PAUSE")
    assert (info.value.state, info.value.event) == ("PAUSED", "PAUSE")
    with pytest.raises(ValidationError):  # an event of the default table, unknown to this one
        await hub.transition(session.id, "SPAWN")
    assert (await hub.get(session.id)).state == "PAUSED"

    assert await hub.end(session.id) is True
    [(seen, reason)] = hook_log.calls
    assert (seen.state, reason) == ("STOPPING", "ended")
    ended = await hub.get(session.id)
    assert (ended.state, ended.live) == ("DONE", False)

    active = await hub.create(activate=True)
    assert active.state == "RUNNING"


async def test_activate_needs_a_path_to_the_active_state(make_hub: MakeHub) -> None:
    table = {k: v for k, v in CUSTOM.items() if v != "RUNNING"}
    table = {k: v for k, v in table.items() if "RUNNING" not in k and "PAUSED" not in k}
    hub = await make_hub(lifecycle=custom_lifecycle(table))
    with pytest.raises(ValidationError):
        await hub.create(activate=True)
    assert await hub.count() == 0
    assert (await hub.create()).state == "NEW"


# the default lifecycle in a hub


async def test_walk_the_whole_lifecycle(make_hub: MakeHub, hook_log: HookLog) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    session = await hub.create()
    assert (session.state, session.version) == ("CREATED", 1)
    spawning = await hub.transition(session.id, "SPAWN")
    assert (spawning.state, spawning.version) == ("SPAWNING", 2)
    active = await hub.transition(session.id, "ACTIVATE")
    assert (active.state, active.version) == ("ACTIVE", 3)
    terminating = await hub.transition(session.id, "TERMINATE")
    assert (terminating.state, terminating.version) == ("TERMINATING", 4)
    assert terminating.live
    assert await hub.count() == 1  # still live until cleaned
    again = await hub.transition(session.id, "TERMINATE")  # idempotent, still a change
    assert (again.state, again.version) == ("TERMINATING", 5)
    assert hook_log.calls == []

    cleaned = await hub.transition(session.id, "CLEAN")
    assert cleaned.state == "CLEANED"
    assert not cleaned.live
    assert hook_log.reasons == {session.id: "ended"}
    assert await hub.count() == 0
    with pytest.raises(SessionNotFound):
        await hub.get(session.id)


@pytest.mark.parametrize(("path", "state"), [((), "CREATED"), (("SPAWN",), "SPAWNING")])
async def test_invalid_transition_in_a_hub_changes_nothing(
    hub: SessionHub, path: tuple[str, ...], state: str
) -> None:
    session = await hub.create()
    for event in path:
        session = await hub.transition(session.id, event)
    for event in EVENTS:
        if (state, event) in VALID:
            continue
        with pytest.raises(TransitionError) as info:
            await hub.transition(session.id, event)
        assert (info.value.state, info.value.event) == (state, event)
        assert str(info.value).startswith(
            f"invalid transition: state={state} event={event} reason="
        )
        assert await hub.get(session.id) == session


async def test_spawn_on_active_is_refused_with_the_documented_message(hub: SessionHub) -> None:
    session = await hub.create(activate=True)
    with pytest.raises(TransitionError) as info:
        await hub.transition(session.id, "SPAWN")
    assert (
        str(info.value) == "invalid transition: state=ACTIVE event=SPAWN reason=no such transition"
    )
    assert await hub.get(session.id) == session


async def test_create_activate_walks_to_active_in_one_step(hub: SessionHub) -> None:
    events = hub.subscribe()
    session = await hub.create(activate=True)
    assert (session.state, session.version) == ("ACTIVE", 1)
    assert await hub.count(state="ACTIVE") == 1
    event = await next_event(events)
    assert (event.kind, event.session) == ("created", session)
    await events.aclose()


@pytest.mark.parametrize("path", [(), ("SPAWN",), ("SPAWN", "ACTIVATE"), ("TERMINATE",)])
async def test_end_works_from_every_live_state(
    make_hub: MakeHub, hook_log: HookLog, path: tuple[str, ...]
) -> None:
    hub = await make_hub(retention=30)
    hub.on_end(hook_log)
    session = await hub.create()
    for event in path:
        await hub.transition(session.id, event)
    assert await hub.end(session.id, "done") is True
    [(seen, reason)] = hook_log.calls
    assert (seen.id, seen.state, reason) == (session.id, "TERMINATING", "done")
    ended = await hub.get(session.id)
    assert (ended.state, ended.end_reason) == ("CLEANED", "done")
    assert ended.ended_at is not None
    with pytest.raises(SessionNotFound):
        await hub.transition(session.id, "TERMINATE")


async def test_clean_is_refused_before_terminate(hub: SessionHub) -> None:
    session = await hub.create(activate=True)
    with pytest.raises(TransitionError) as info:
        await hub.transition(session.id, "CLEAN")
    assert (info.value.state, info.value.event) == ("ACTIVE", "CLEAN")
    assert await hub.get(session.id) == session
