"""ADK events built from the JSON the adapter stored, without pydantic's validation when it has
nothing to check: the first read of an event (a cold ``get_session``) is mostly its parse.

``Event.model_validate_json`` costs about 5 us for any event, even one of three fields: most of it
is the walk of ``Event``'s forty-field schema, its default factories and its validators, not the
values. JSON this adapter stored was written by ``Event.model_dump_json``, so its keys are field
names and its values have the field's types already. ``build`` decodes it (msgspec) and makes
the instance validation would make (same class, field values and types, field order, fields set,
``model_post_init`` run) wherever each value's type can be checked cheaply: a scalar, a JSON value
for ``Any``, a dict or list of those, a nested model of such fields. Anything else (bytes, which
JSON holds as base64; enums; unions; constrained fields; a validator that is not known to leave
stored JSON alone) sends the whole event to ``Event.model_validate_json``, so an event is either
built here exactly or validated as before.

The plan of each model is made once from its fields (``_plan``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec
from pydantic import BaseModel

__all__ = ["Plan", "Unsupported", "decode", "plan"]

Convert = Callable[[Any], Any]
Plan = Callable[[Any], BaseModel]


class Unsupported(Exception):
    """A value the plan cannot vouch for: the caller validates the whole event instead."""


# validators known to do nothing to JSON written by model_dump_json:
# - Event's routes the keywords message/state/route/node_path, never field names, which are
#   the only keys a plan accepts;
# - genai's models' warns when a field holds a model instance of another class, never a dict.
_HARMLESS_MODEL_VALIDATORS = frozenset(
    {
        "google.adk.events.event.Event._accept_convenience_kwargs",
        "google.genai._common.BaseModel._check_field_type_mismatches",
    }
)
# after-validators of a field known to return an empty value as it is
_HARMLESS_WHEN_EMPTY = frozenset(
    {"google.adk.events.event_actions.EventActions._parse_auth_configs"}
)
# configuration that does not change how valid JSON of the field types is read
_NEUTRAL_CONFIG = frozenset(
    {
        "extra",
        "alias_generator",
        "populate_by_name",
        "validate_by_name",
        "validate_by_alias",
        "serialize_by_alias",
        "ser_json_bytes",
        "val_json_bytes",
        "from_attributes",
        "protected_namespaces",
        "arbitrary_types_allowed",
        "ignored_types",
        "defer_build",
        "title",
        "json_schema_extra",
        "use_attribute_docstrings",
    }
)
_set = object.__setattr__
_plans: dict[type[BaseModel], Plan | None] = {}


def plan(kind: type[BaseModel]) -> Plan | None:
    """A function making a ``kind`` from its decoded JSON as ``kind.model_validate_json`` makes
    it, raising ``Unsupported`` for a value it cannot vouch for; ``None`` if ``kind`` itself
    cannot be planned (a validator, private attributes, extra fields kept, ...)."""
    if kind not in _plans:
        _plans[kind] = None  # a model holding itself is not planned (no recursion)
        _plans[kind] = _plan(kind)
    return _plans[kind]


def _plan(kind: type[BaseModel]) -> Plan | None:
    config = kind.model_config
    if set(config) - _NEUTRAL_CONFIG or config.get("extra") == "allow":
        return None
    if kind.__private_attributes__ or kind.__pydantic_root_model__:
        return None
    decorators = kind.__pydantic_decorators__
    if decorators.root_validators or decorators.validators:  # pydantic v1 style
        return None
    for found in decorators.model_validators.values():
        if _name(found.func) not in _HARMLESS_MODEL_VALIDATORS:
            return None
    guarded: set[str] = set()
    for checker in decorators.field_validators.values():
        if _name(checker.func) not in _HARMLESS_WHEN_EMPTY or checker.info.mode != "after":
            return None
        guarded.update(checker.info.fields)
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    converters: dict[str, Convert] = {}
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    required: set[str] = set()
    for name, field in kind.model_fields.items():
        if field.default_factory is not None:
            if field.default_factory_takes_validated_data:
                return None
            factories.append((name, typing.cast("Callable[[], Any]", field.default_factory)))
            template[name] = None
        elif field.is_required():
            required.add(name)
            template[name] = None  # its place in the order: a value given always replaces it
        else:
            template[name] = field.default
        # the stored JSON names fields by name: read so while aliases are plain names
        aliases = {field.alias, field.validation_alias} - {None, name}
        usable = not field.metadata and (
            not aliases or (by_name and all(type(alias) is str for alias in aliases))
        )
        converter = _converter(field.annotation) if usable else None
        if converter is not None and name in guarded:
            converter = _empty_only(converter)
        if converter is not None:
            converters[name] = converter
    post_init = kind.model_post_init if _has_post_init(kind) else None
    new = kind.__new__

    def build(value: Any) -> BaseModel:
        if type(value) is not dict:
            raise Unsupported
        fields = template.copy()  # every field in its order; the given values replace defaults
        for key, item in value.items():
            convert = converters.get(key)
            if convert is None:  # an alias, an unknown key, a field this plan cannot check
                raise Unsupported
            fields[key] = convert(item)
        if required and not required <= value.keys():
            raise Unsupported  # pydantic reports what is missing
        for name, factory in factories:
            if name not in value:
                fields[name] = factory()
        model = new(kind)
        _set(model, "__dict__", fields)
        _set(model, "__pydantic_fields_set__", set(value))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        if post_init is not None:
            model.model_post_init(None)
        return model

    return build


def _has_post_init(kind: type[BaseModel]) -> bool:
    return kind.model_post_init is not BaseModel.model_post_init


def _name(func: Any) -> str:
    func = getattr(func, "__func__", func)
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}"


def _converter(annotation: Any) -> Convert | None:
    """The check (and conversion) of a decoded JSON value to ``annotation``, or ``None`` when the
    type is not one a plan checks."""
    if annotation is Any or annotation is object:
        return _any
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in arguments if a is not type(None)]
        if len(others) != 1 or len(arguments) != 2:
            return None  # a union of several types: pydantic's smart mode picks, not this
        inner = _converter(others[0])
        return None if inner is None else _optional(inner)
    if origin is dict and len(arguments) == 2 and arguments[0] is str:
        inner = _converter(arguments[1])
        return None if inner is None else _dict_of(inner)
    if origin is list and len(arguments) == 1:
        inner = _converter(arguments[0])
        return None if inner is None else _list_of(inner)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return plan(annotation)
    return None


def _any(value: Any) -> Any:
    return value


def _exactly(kind: type) -> Convert:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise Unsupported
        return value

    return check


def _to_float(value: Any) -> Any:
    if type(value) is not float:  # an int would be converted, a bool refused: pydantic's call
        raise Unsupported
    return value


_SCALARS: dict[Any, Convert] = {
    str: _exactly(str),
    bool: _exactly(bool),
    int: _exactly(int),
    float: _to_float,
}


def _optional(inner: Convert) -> Convert:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _dict_of(inner: Convert) -> Convert:
    if inner is _any:

        def check_any(value: Any) -> Any:
            if type(value) is not dict:
                raise Unsupported
            return value  # decoded for this event: its own

        return check_any

    def check(value: Any) -> Any:
        if type(value) is not dict:
            raise Unsupported
        return {key: inner(item) for key, item in value.items()}

    return check


def _list_of(inner: Convert) -> Convert:
    def check(value: Any) -> Any:
        if type(value) is not list:
            raise Unsupported
        return value if inner is _any else [inner(item) for item in value]

    return check


def _empty_only(inner: Convert) -> Convert:
    def check(value: Any) -> Any:
        if value:
            raise Unsupported
        return inner(value)

    return check


_decode = msgspec.json.decode


def decode(raw: str | bytes) -> Any:
    """The JSON decoded, or ``Unsupported`` for text msgspec refuses (left to pydantic)."""
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        raise Unsupported from None
