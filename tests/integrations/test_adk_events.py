"""Events read back from stored JSON: ``parse`` makes exactly what ``Event.model_validate_json``
makes (class, values and their types, field order, fields set, nested models), whether it builds
the event itself or leaves it to pydantic, and raises what pydantic raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.openapi.models import APIKey
from google.adk.auth.auth_tool import AuthConfig
from google.adk.events.event import Event, NodeInfo
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.tools.tool_confirmation import ToolConfirmation
from google.genai import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from sessionhub.integrations._adk_cache import parse

from .test_adk_cache import mutable_parts


def assert_same(ours: Any, theirs: Any, where: str = "event") -> None:
    """``ours`` is the very value ``theirs`` is: same types all the way down, same models (field
    order, fields set, extra, private), same containers and scalars."""
    assert type(ours) is type(theirs), where
    if isinstance(theirs, BaseModel):
        assert list(ours.__dict__) == list(theirs.__dict__), where
        assert ours.model_fields_set == theirs.model_fields_set, where
        assert ours.__pydantic_extra__ == theirs.__pydantic_extra__, where
        assert ours.__pydantic_private__ == theirs.__pydantic_private__, where
        for name, value in theirs.__dict__.items():
            assert_same(ours.__dict__[name], value, f"{where}.{name}")
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key, value in theirs.items():
            assert_same(ours[key], value, f"{where}[{key!r}]")
    elif isinstance(theirs, list | tuple):
        assert len(ours) == len(theirs), where
        for i, (mine, value) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mine, value, f"{where}[{i}]")
    else:
        assert ours == theirs, where


def check(raw: str) -> Event:
    ours, theirs = parse(raw), Event.model_validate_json(raw)
    assert_same(ours, theirs)
    assert ours == theirs
    assert ours.model_dump_json() == theirs.model_dump_json()
    assert ours.model_dump_json(exclude_unset=True) == theirs.model_dump_json(exclude_unset=True)
    again = parse(raw)  # each parse is the caller's own: nothing mutable shared
    assert not {id(p) for p in mutable_parts(ours)} & {id(p) for p in mutable_parts(again)}
    return ours


def text(words: str, role: str = "model") -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=words)])


EVENTS = [
    Event(author="agent", invocation_id="i", actions=EventActions(state_delta={"turn": 1})),
    Event(author="user", content=text("hello", "user")),
    Event(
        author="model",
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="thinking", thought=True),
                types.Part(function_call=types.FunctionCall(id="c", name="f", args={"a": [1]})),
                types.Part(
                    function_response=types.FunctionResponse(
                        id="c", name="f", response={"r": {"deep": [None, 1.5, "x"]}}
                    )
                ),
            ],
        ),
        branch="a.b",
        custom_metadata={"k": [1, {"n": None}]},
        output={"any": ["json", 2]},
    ),
    Event(
        author="a",
        actions=EventActions(
            skip_summarization=True,
            transfer_to_agent="b",
            escalate=False,
            artifact_delta={"f.txt": 2},
            agent_state={"s": 1},
            end_of_agent=True,
            rewind_before_invocation_id="r",
            requested_tool_confirmations={"c": ToolConfirmation(hint="ok?", payload={"p": 1})},
            compaction=EventCompaction(
                start_timestamp=1.0, end_timestamp=2.0, compacted_content=text("sum")
            ),
        ),
        node_info=NodeInfo(path="wf/a@1", output_for=["wf"], message_as_output=True),
    ),
    Event(
        author="a",
        actions=EventActions(
            requested_auth_configs={
                "c": AuthConfig(auth_scheme=APIKey.model_validate({"in": "header", "name": "k"}))
            }
        ),
    ),
    # values the builder leaves to pydantic: bytes (base64 in JSON), enums, sets, unions
    Event(
        author="m",
        content=types.Content(
            role="model", parts=[types.Part(inline_data=types.Blob(mime_type="a/b", data=b"\0"))]
        ),
    ),
    Event(author="m", finish_reason=types.FinishReason.STOP, turn_complete=True),
    Event(author="m", long_running_tool_ids={"b", "a"}),
    Event(author="m", actions=EventActions(route=["x", 1])),
    Event(
        author="m", usage_metadata=types.GenerateContentResponseUsageMetadata(total_token_count=3)
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=range(len(EVENTS)))
def test_stored_events_parse_as_pydantic_parses_them(event: Event) -> None:
    for raw in (event.model_dump_json(exclude_none=True), event.model_dump_json()):
        check(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"author":"a","id":"x","timestamp":5}',  # an int for a float: converted to 5.0
        '{"author":"a","id":"x","timestamp":1.5,"unknown":1}',  # ignored by Event
        '{"invocationId":"i","author":"a","id":"x","timestamp":1.5}',  # by alias
        '{"author":"a","id":"x","timestamp":1.5,"partial":null,"branch":null}',  # explicit nulls
        '{"author":"a","id":"x","timestamp":1.5,"actions":{"requested_auth_configs":{}}}',
        '{"author":"a","id":"x","timestamp":1.5,"node_info":{"output_for":[]}}',
        '{"author":"a","id":"x","timestamp":1.5,"content":{"parts":[]}}',
    ],
)
def test_json_beside_the_usual_shape_parses_as_pydantic_parses_it(raw: str) -> None:
    check(raw)


def test_an_event_without_id_gets_a_new_one_as_validation_gives_it() -> None:
    ours = parse('{"author":"a","timestamp":1.5}')
    theirs = Event.model_validate_json('{"author":"a","timestamp":1.5}')
    assert ours.id
    assert theirs.id
    assert ours.id != theirs.id
    assert ours.model_fields_set == theirs.model_fields_set == {"author", "timestamp", "id"}


@pytest.mark.parametrize(
    "raw",
    [
        '{"author":"a","actions":{"unknown":1}}',  # EventActions forbids extra keys
        '{"author":1}',
        '{"author":"a","timestamp":null}',
        '{"author":"a","actions":{"artifact_delta":{"f":"x"}}}',
        '{"author":"a","content":{"parts":[{"text":1}]}}',
        '{"author":"a","actions":{"compaction":{"start_timestamp":1.0}}}',  # fields missing
        '{"author":"a"',
        "[]",
    ],
)
def test_invalid_json_fails_as_pydantic_fails(raw: str) -> None:
    with pytest.raises(ValidationError) as theirs:
        Event.model_validate_json(raw)
    with pytest.raises(ValidationError) as ours:
        parse(raw)
    assert ours.value.errors() == theirs.value.errors()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    metadata=st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    output=json_values,
    words=st.none() | st.text(max_size=20),
    args=st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)
def test_any_json_values_parse_as_pydantic_parses_them(
    state: dict[str, Any],
    metadata: dict[str, Any] | None,
    output: Any,
    words: str | None,
    args: dict[str, Any],
) -> None:
    parts = [types.Part(function_call=types.FunctionCall(name="f", args=args))]
    if words is not None:
        parts.append(types.Part(text=words))
    event = Event(
        author="a",
        content=types.Content(role="model", parts=parts),
        actions=EventActions(state_delta=state),
        custom_metadata=metadata,
        output=output,
    )
    raw = event.model_dump_json(exclude_none=True)
    check(raw)
    # the same values as JSON written by another writer (key order, spacing, escapes)
    check(json.dumps(json.loads(raw), indent=1, ensure_ascii=True))
