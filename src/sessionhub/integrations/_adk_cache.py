"""The ADK adapter's per-process cache of parsed events, and the copies it hands out.

A stored ADK event never changes: revision ``rev`` of the session incarnation ``gen`` is one event
for good (appends are a compare-and-set of the head, and the head's ``gen`` is new each time an id
is created), so a process may keep the parsed event and, for every read, return a copy of it
instead of parsing the JSON again. Copying is then most of a ``get_session``; ``copier`` compiles,
once per cached event, a copy that does what ADK's own deep copier does for that event (same
values, nothing shared with the cache) but visits only the parts that are not immutable scalars.

A process's first read of an event (a cold ``get_session``) is one parse, handed to the caller
as it is (no deep copy after it), by ``parse``: built by ``_adk_events`` from the decoded JSON
when it can vouch for every value (about 4 us instead of 5 for a state-only event, half the cost
of an event with text or a function call), else ``Event``'s JSON validation without its
before-validator, which routes convenience keywords that JSON written by ``model_dump_json``
never holds and costs a third of a parse. Measured (memory store, last 50 of 200 events, loaded
2-core machine): the cold read went from 0.2-0.5x to 0.8x of ADK's in-memory deep copies with
the validation shortcut, 0.9-1.0x with the builder; building an event is still about what ADK's
deep copy of it costs.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from google.adk.events.event import Event
from google.adk.utils._model_copy import deep_copy_model
from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import PydanticUndefined

from ._adk_events import Unsupported, decode, plan

__all__ = ["Cached", "EventCache", "copier", "parse"]

_ATOMIC = frozenset({type(None), bool, int, float, str, bytes})
_PYDANTIC_COPIERS = (BaseModel.__deepcopy__, deep_copy_model)
_set = object.__setattr__
# A model's four slots, set through their descriptors: a quarter of a copy cheaper than
# ``object.__setattr__``, which looks each name up first.
_SLOTS = BaseModel.__dict__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields_set = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__

Copy = Callable[[], Any]
_NONE: Mapping[int, Any] = MappingProxyType({})


def copier(value: Any) -> Copy:
    """A function returning a deep copy of ``value`` as it is now (``value`` must not change
    afterwards: the cache never hands it out under a deep-copy policy).

    Equal to ``copy.deepcopy(value)`` for a tree of models, dicts and lists, which is what a
    parsed event is (JSON has no shared objects); anything else is left to ``copy.deepcopy``.
    """
    kind = type(value)
    if kind in _ATOMIC:
        return lambda: value
    if kind is dict:
        return _dict_copier(value)
    if kind is list:
        return _list_copier(value)
    if isinstance(value, BaseModel) and getattr(kind, "__deepcopy__", None) in _PYDANTIC_COPIERS:
        return _model_copier(value)
    if copy.deepcopy(value) is value:  # immutable (an enum, a tuple of scalars): share it
        return lambda: value
    return lambda: copy.deepcopy(value)


def _dict_copier(value: dict[Any, Any]) -> Copy:
    if any(type(key) not in _ATOMIC for key in value):
        return lambda: copy.deepcopy(value)
    nested = tuple((key, copier(item)) for key, item in value.items() if type(item) not in _ATOMIC)
    if not nested:
        return value.copy

    def copy_dict() -> dict[Any, Any]:
        copied = value.copy()
        for key, copy_item in nested:
            copied[key] = copy_item()
        return copied

    return copy_dict


def _list_copier(value: list[Any]) -> Copy:
    nested = tuple((i, copier(item)) for i, item in enumerate(value) if type(item) not in _ATOMIC)
    if not nested:
        return value.copy

    def copy_list() -> list[Any]:
        copied = value.copy()
        for i, copy_item in nested:
            copied[i] = copy_item()
        return copied

    return copy_list


def _model_copier(model: BaseModel) -> Copy:
    """What ``BaseModel.__deepcopy__`` (and ADK's faster equal) make of ``model``."""
    kind = type(model)
    fields = model.__dict__
    nested = tuple(
        (name, copier(item))
        for name, item in fields.items()
        if item is not None and type(item) not in _ATOMIC
    )
    fields_set = model.__pydantic_fields_set__
    extra = model.__pydantic_extra__
    copy_extra = None if extra is None else copier(extra)
    private = getattr(model, "__pydantic_private__", None)
    copy_private = (
        None
        if private is None
        else copier({k: v for k, v in private.items() if v is not PydanticUndefined})
    )

    new = kind.__new__
    if copy_extra is None and copy_private is None:  # the usual model: a shorter copy
        return _plain_model_copier(kind, new, fields, nested, fields_set)

    def copy_model() -> BaseModel:
        clone = new(kind)
        copied = fields.copy()
        for name, copy_item in nested:
            copied[name] = copy_item()
        _set_dict(clone, copied)
        _set_extra(clone, None if copy_extra is None else copy_extra())
        _set_fields_set(clone, fields_set.copy())
        _set_private(clone, None if copy_private is None else copy_private())
        return clone

    return copy_model


def _plain_model_copier(
    kind: type[BaseModel],
    new: Callable[[type[BaseModel]], BaseModel],
    fields: dict[str, Any],
    nested: tuple[tuple[str, Copy], ...],
    fields_set: set[str],
) -> Copy:
    """``_model_copier`` for a model without extra fields or private attributes."""
    if not nested:

        def copy_flat() -> BaseModel:
            clone = new(kind)
            _set_dict(clone, fields.copy())
            _set_extra(clone, None)
            _set_fields_set(clone, fields_set.copy())
            _set_private(clone, None)
            return clone

        return copy_flat

    def copy_nested() -> BaseModel:
        clone = new(kind)
        copied = fields.copy()
        for name, copy_item in nested:
            copied[name] = copy_item()
        _set_dict(clone, copied)
        _set_extra(clone, None)
        _set_fields_set(clone, fields_set.copy())
        _set_private(clone, None)
        return clone

    return copy_nested


class _Stored(Event):
    """``Event`` parsed from JSON this adapter stored, which ``Event.model_dump_json`` wrote:
    it has none of the convenience keywords (``message``, ``state``, ``route``, ``node_path``)
    that ``Event``'s before-validator routes, so that validator (a third of a parse: it rebuilds
    the set of field names at each call) has nothing to do and is left out."""

    @model_validator(mode="before")
    @classmethod
    def _accept_convenience_kwargs(cls, data: Any) -> Any:
        return data


def parse(raw: str | bytes) -> Event:
    """``Event.model_validate_json(raw)`` for JSON of a stored event: the same instance (class,
    fields, fields set), built from the decoded JSON where ``_adk_events`` can vouch for every
    value, else parsed without the convenience-keyword routing it cannot need."""
    if _BUILD is not None:
        try:
            return cast("Event", _BUILD(decode(raw)))
        except Unsupported:
            pass
    if not _PLAIN_EVENT:
        return Event.model_validate_json(raw)
    try:
        event = _Stored.model_validate_json(raw)
    except ValidationError:
        return Event.model_validate_json(raw)  # raises ADK's own errors (naming Event)
    _set(event, "__class__", Event)  # same layout: _Stored adds no field, slot or attribute
    return event


_BUILD = plan(Event)
# the shortcut holds while Event keeps the validator by that name and no field of those names
_PLAIN_EVENT = (
    "_accept_convenience_kwargs" in Event.__pydantic_decorators__.model_validators
    and not {"message", "state", "route", "node_path"} & set(Event.model_fields)
    and set(_Stored.model_fields) == set(Event.model_fields)
)


class Cached:
    """One recorded event: its JSON, and once read twice, the event parsed and its compiled
    copier. The first read parses an event for the caller alone (a process's first, cold read
    of an event costs one parse, no copy); the second parses the one kept and compiles its
    copier (worth it only for an event read again, as a long-running process reads its
    sessions)."""

    __slots__ = ("_copied", "_copy", "_event", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._event: Event | None = None
        self._copy: Copy | None = None
        self._copied = False

    def event(self) -> Event:
        """The cache's own parsed event (shared with callers under ADK's light-copy feature)."""
        if self._event is None:
            self._event = parse(self.raw)
        return self._event

    def copy(self) -> Event:
        """An event the caller may change."""
        if self._copy is None:
            if not self._copied and self._event is None:
                self._copied = True
                return parse(self.raw)  # made for this caller: nothing else holds it
            self._copy = copier(self.event())
        event: Event = self._copy()
        return event


class EventCache:
    """The events this process has seen recorded in sessions' histories, by (session key,
    incarnation) and revision; the sessions used least recently go first past ``limit`` events,
    and a session alone past it keeps its newest nine tenths of ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sessions: OrderedDict[tuple[str, str | None], dict[int, Cached]] = OrderedDict()
        self._size = 0

    def revisions(self, key: str, gen: str | None) -> Mapping[int, Cached]:
        """The cached revisions of a session (a live view: ``record`` adds to it)."""
        slot = (key, gen)
        found = self._sessions.get(slot)
        if found is None:
            return _NONE  # nothing made for a mere lookup: reads of many sessions cost no memory
        self._sessions.move_to_end(slot)
        return found

    def record(self, key: str, gen: str | None, rev: int, raw: str) -> Cached:
        """Note that revision ``rev`` is recorded as ``raw`` (kept if already known as such)."""
        slot = (key, gen)
        revisions = self._sessions.get(slot)
        if revisions is None:
            revisions = self._sessions[slot] = {}
        else:
            self._sessions.move_to_end(slot)
        cached = revisions.get(rev)
        if cached is None or cached.raw != raw:
            if cached is None:
                self._size += 1
            cached = revisions[rev] = Cached(raw)
            self._trim()
        return cached

    def _trim(self) -> None:
        while self._size > self.limit and len(self._sessions) > 1:
            _, dropped = self._sessions.popitem(last=False)
            self._size -= len(dropped)
        if self._size > self.limit:
            # one session longer than the limit: its oldest events go, a tenth of the limit at a
            # time (its revisions are sorted once per tenth, not at each append past the limit)
            (only,) = self._sessions.values()
            keep = self.limit - self.limit // 10
            for rev in sorted(only)[: len(only) - keep]:
                del only[rev]
            self._size = len(only)
