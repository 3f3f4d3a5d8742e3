"""The ADK adapter's event cache: its copies equal ADK's deep copies and share nothing mutable with
the cached event; its bound holds."""

from __future__ import annotations

import copy
import enum
from typing import Any

from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.genai import types
from pydantic import BaseModel

from sessionhub.integrations._adk_cache import EventCache, copier, parse


def rich_event() -> Event:
    """An event with text, a function call and response, inline bytes, nested state."""
    return Event(
        author="agent",
        invocation_id="inv",
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="hello"),
                types.Part(function_call=types.FunctionCall(name="f", args={"a": [1, {"b": 2}]})),
                types.Part(
                    function_response=types.FunctionResponse(name="f", response={"ok": True})
                ),
                types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG")),
            ],
        ),
        actions=EventActions(state_delta={"k": {"deep": [1, 2]}, "user:n": 3}),
    )


def mutable_parts(value: Any) -> list[Any]:
    """Every dict, list and model inside ``value`` (with ``value``)."""
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(value)
        for item in value.values():
            found += mutable_parts(item)
    elif isinstance(value, list):
        found.append(value)
        for item in value:
            found += mutable_parts(item)
    elif isinstance(value, BaseModel):
        found.append(value)
        for item in value.__dict__.values():
            found += mutable_parts(item)
    return found


def test_copies_equal_adk_deep_copies_and_share_nothing() -> None:
    event = Event.model_validate_json(rich_event().model_dump_json(exclude_none=True))
    made = copier(event)
    first, second = made(), made()
    for copied in (first, second):
        assert copied == event
        assert copied == copy.deepcopy(event)
        assert copied.model_dump() == event.model_dump()
        assert copied.model_fields_set == event.model_fields_set
    originals = {id(part) for part in mutable_parts(event)}
    assert not originals & {id(part) for part in mutable_parts(first)}
    assert not {id(p) for p in mutable_parts(first)} & {id(p) for p in mutable_parts(second)}
    assert first.content is not None
    assert first.content.parts
    first.content.parts[0].text = "changed"
    first.actions.state_delta["k"]["deep"].append(3)
    assert made() == event


class Colour(enum.Enum):
    RED = "red"


def test_values_other_than_json_trees_are_deep_copied() -> None:
    shared = [1]
    pair, listed, numbers = (1, "a"), ([1],), {1, 2}
    value: dict[str, Any] = {
        "t": pair,
        "e": Colour.RED,
        "s": numbers,
        "tl": listed,
        "k": {(1, 2): shared},
    }
    copied: dict[str, Any] = copier(value)()
    assert copied == value
    assert copied["t"] is pair  # immutable: shared, as deepcopy shares it
    assert copied["e"] is Colour.RED
    assert copied["s"] is not numbers
    assert copied["tl"][0] is not listed[0]
    assert copied["k"][(1, 2)] is not shared


def test_cache_keeps_at_most_its_limit() -> None:
    cache = EventCache(limit=5)
    raw = rich_event().model_dump_json()
    for rev in range(1, 4):
        cache.record("a", "g1", rev, raw)
    for rev in range(1, 4):
        cache.record("b", "g1", rev, raw)
    assert dict(cache.revisions("a", "g1")) == {}  # the session used least recently went first
    assert sorted(cache.revisions("b", "g1")) == [1, 2, 3]
    for rev in range(4, 9):
        cache.record("b", "g1", rev, raw)
    assert sorted(cache.revisions("b", "g1")) == [4, 5, 6, 7, 8]  # alone: its oldest went
    assert dict(cache.revisions("b", "g2")) == {}  # another incarnation of the same key


def test_one_session_past_the_limit_drops_its_oldest_tenth_at_once() -> None:
    # a long session's every append used to sort all its cached revisions to drop one (50 us,
    # four appends' worth): it drops a tenth of the limit at a time instead
    cache = EventCache(limit=20)
    for rev in range(1, 22):
        cache.record("a", "g", rev, "{}")
    assert sorted(cache.revisions("a", "g")) == list(range(4, 22))
    for rev in range(22, 24):
        cache.record("a", "g", rev, "{}")
    assert sorted(cache.revisions("a", "g")) == list(range(4, 24))  # within the limit again
    cache.record("b", "g", 1, "{}")  # another session: the long one, used least recently, goes
    assert dict(cache.revisions("a", "g")) == {}
    assert sorted(cache.revisions("b", "g")) == [1]


def test_a_revision_recorded_again_with_other_json_is_replaced() -> None:
    cache = EventCache(limit=10)
    first = Event(author="one").model_dump_json()
    second = Event(author="two").model_dump_json()
    assert cache.record("a", None, 1, first).copy().author == "one"
    assert cache.record("a", None, 1, second).copy().author == "two"


def test_parse_makes_what_event_validation_makes() -> None:
    # every event shape the adapter stores: parsed without the convenience-keyword routing, the
    # result is ADK's own parse (class, values, fields set, nested types)
    events = [
        rich_event(),
        Event(author="x"),
        Event(author="x", partial=False, turn_complete=True, long_running_tool_ids={"b", "a"}),
        Event(author="x", actions=EventActions(state_delta={"a": None}, skip_summarization=True)),
    ]
    for event in events:
        raw = event.model_dump_json(exclude_none=True)
        ours, theirs = parse(raw), Event.model_validate_json(raw)
        assert type(ours) is Event
        assert ours == theirs == event
        assert ours.model_fields_set == theirs.model_fields_set
        assert ours.model_dump_json() == theirs.model_dump_json()
        assert [type(v) for v in ours.__dict__.values()] == [
            type(v) for v in theirs.__dict__.values()
        ]


def test_each_copy_of_a_cached_event_is_the_callers_own() -> None:
    # the first copy is parsed for its caller, the second from the event the cache keeps, the
    # third compiled: all equal, none sharing anything mutable with another or the cache
    event = rich_event()
    cached = EventCache(10).record("s", "g", 1, event.model_dump_json(exclude_none=True))
    copies = [cached.copy() for _ in range(3)]
    assert copies == [event] * 3
    kept = {id(part) for part in mutable_parts(cached.event())}
    for i, one in enumerate(copies):
        mine = {id(part) for part in mutable_parts(one)}
        assert not mine & kept
        for other in copies[i + 1 :]:
            assert not mine & {id(part) for part in mutable_parts(other)}
