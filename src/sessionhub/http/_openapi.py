"""The OpenAPI 3.1 document served at ``/openapi.json``.

Schemas come from the very msgspec types the server decodes requests with and encodes answers
from (``_wire``, ``_models``), so the document cannot drift from what the server does; the table
below adds what types cannot say (query parameters, statuses). A test checks that every route of
``_routes.ROUTES`` is described here and nothing else is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from .. import _wire as wire
from .._lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from .._limits import MAX_SECONDS, REASON_PATTERN, Limits
from .._models import DataEntry, EventKind, HistoryRecord, Page, Session

__all__ = ["OPERATIONS", "Operation", "Param", "openapi_document"]


class Param(msgspec.Struct, frozen=True):
    """A query (or header) parameter and its JSON schema."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    summary: str
    status: int = 200
    answer: type[Any] | None = None
    body: type[Any] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (400, 404)
    content_type: str = "application/json"


# The constraints the hub checks (``_limits``), so that what the document calls valid is accepted
# and what it calls invalid is refused. Data keys are the one looser rule: any printable characters
# (``str.isprintable``), which a JSON-schema pattern cannot spell; the pattern gives the ASCII part.
_STR: Final = {"type": "string"}
_ID_PATTERN: Final = r"^[\x21-\x7e]{1,200}$"
_ID: Final = {"type": "string", "pattern": _ID_PATTERN}
_NAME: Final = {"type": "string", "pattern": r"^[A-Za-z0-9_.:/\-]{1,128}$"}
_REASON: Final = {"type": "string", "pattern": f"^{REASON_PATTERN}$"}
_KEY: Final = {
    "type": "string",
    "pattern": r"^[\x20-\x7e]{1,512}$",
    "description": "1-512 printable characters (other printable Unicode characters too).",
}
_INT64_MAX: Final = 2**63 - 1
_POSITIVE: Final = {"exclusiveMinimum": 0, "exclusiveMaximum": MAX_SECONDS}
_LABELS: Final = {
    "maxProperties": 64,
    "propertyNames": {"minLength": 1, "maxLength": 256},
    "additionalProperties": {"type": "string", "maxLength": 256},
}
_FILTERS: Final = (
    Param("namespace", _ID, "Only sessions of this namespace."),
    Param("user_id", _ID, "Only sessions of this user."),
    Param("parent_id", _ID, "Only children of this session."),
    Param(
        "state",
        {"type": "string", "enum": sorted(DEFAULT_LIFECYCLE.states)},
        "Only sessions in this lifecycle state (case-insensitive; others are a 400).",
    ),
    Param(
        "label",
        {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[^:]{1,256}:[\s\S]{0,256}$"},
        },
        "Label filters `key:value`; repeat for several (all must match; more than 64 keys is "
        "a 413).",
    ),
    Param(
        "include_ended",
        {"type": "boolean"},
        "Also list ended sessions still retained (alone or with `namespace` and `state`; with "
        "`user_id`, `parent_id` or `label` only live sessions are listed).",
    ),
)
_LIMIT: Final = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 100)."
)
_EXPECTED: Final = Param(
    "expected_version",
    {"type": "integer", "minimum": 0, "maximum": _INT64_MAX},
    "Delete only at this version (0: only if absent).",
)

S: Final = "/v1/sessions/{id}"

OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("POST", "/v1/sessions"): Operation(
        summary="Create a session",
        status=201,
        body=wire.CreateBody,
        answer=Session,
        errors=(400, 404, 409, 413, 429, 503),
    ),
    ("GET", "/v1/sessions"): Operation(
        summary="List sessions, one page at a time",
        answer=Page,
        params=(*_FILTERS, _LIMIT, Param("cursor", _ID, "The `cursor` of the previous page.")),
        errors=(400, 413),  # 413: more or longer label filters than labels may be
    ),
    ("DELETE", "/v1/users/{user_id}/sessions"): Operation(
        summary="End every live session of a user (children with their parents); `count` is "
        "how many this call ended",
        answer=wire.Count,
        params=(
            Param("namespace", _ID, "Only sessions of this namespace."),
            Param("reason", _NAME, "The end reason (default `ended`)."),
        ),
        errors=(400,),
    ),
    ("GET", "/v1/count"): Operation(
        summary="Count the sessions a listing would give",
        answer=wire.Count,
        params=_FILTERS,
        errors=(400, 413),
    ),
    ("GET", S): Operation(summary="Get a session", answer=Session),
    ("PATCH", S): Operation(
        summary="Merge details and labels, remove keys, change timeouts",
        body=wire.UpdateBody,
        answer=Session,
        errors=(400, 404, 409, 413),
    ),
    ("DELETE", S): Operation(
        summary="End a session (hooks run once); `ended` is false if it had already ended",
        answer=wire.Ended,
        params=(Param("reason", _REASON, "The end reason (default `ended`)."),),
        errors=(400,),
    ),
    ("POST", S + "/touch"): Operation(summary="Heartbeat: refresh activity", answer=Session),
    ("POST", S + "/requests"): Operation(
        summary="Start a request in flight (a lease): counted in `active_requests`, the session "
        "is not idle until it is released or the lease expires",
        status=201,
        body=wire.LeaseBody,
        answer=wire.Lease,
        errors=(400, 404, 429),
    ),
    ("PUT", S + "/requests/{lease_id}"): Operation(
        summary="Renew a request lease: held until released or `lease` seconds from now (the "
        "request in flight stays the same one); 404 if it was released, expired or never given, "
        "or the session ended",
        body=wire.LeaseBody,
        answer=wire.Lease,
    ),
    ("DELETE", S + "/requests/{lease_id}"): Operation(
        summary="Release a request lease; 404 if it was released, expired or never given",
        answer=wire.Released,
    ),
    ("POST", S + "/transitions"): Operation(
        summary="Apply a lifecycle event",
        body=wire.TransitionBody,
        answer=Session,
        errors=(400, 404, 409),
    ),
    ("POST", S + "/counters/{name}"): Operation(
        summary="Add to a counter atomically", body=wire.IncrBody, answer=wire.Value
    ),
    ("POST", S + "/children"): Operation(
        summary="Make another session a child of this one", body=wire.LinkBody, answer=Session
    ),
    ("GET", S + "/data"): Operation(summary="Every data entry", answer=wire.DataItems),
    ("GET", S + "/data/{key}"): Operation(summary="One data entry", answer=DataEntry),
    ("PUT", S + "/data/{key}"): Operation(
        summary="Write a data entry (compare-and-set with `expected_version`)",
        body=wire.DataBody,
        answer=DataEntry,
        errors=(400, 404, 409, 413),
    ),
    ("DELETE", S + "/data/{key}"): Operation(
        summary="Delete a data entry",
        answer=wire.Deleted,
        params=(_EXPECTED,),
        errors=(400, 404, 409),
    ),
    ("GET", S + "/history"): Operation(
        summary="Read history records, one page at a time",
        answer=wire.HistoryItems,
        params=(
            Param(
                "after",
                {"type": "integer", "minimum": 0, "maximum": _INT64_MAX},
                "The last `seq` already read.",
            ),
            _LIMIT,
            Param("order", {"enum": ["oldest", "newest"]}, "Reading order (default oldest)."),
            Param("kind", _NAME, "Only records of this kind."),
        ),
    ),
    ("POST", S + "/history"): Operation(
        summary="Append a history record",
        status=201,
        body=wire.HistoryBody,
        answer=HistoryRecord,
        errors=(400, 404, 413),
    ),
    ("POST", S + "/history/batch"): Operation(
        summary="Append history records together: consecutive `seq`s, all or none",
        status=201,
        body=wire.HistoryBatchBody,
        answer=wire.HistoryItems,
        errors=(400, 404, 413),
    ),
    ("POST", S + "/history/pop"): Operation(
        summary="Pop the newest record of a kind (the history read as a stack), appending a "
        "marker record; `record` is null when there is none",
        body=wire.HistoryPopBody,
        answer=wire.Popped,
    ),
    ("GET", S + "/history/counts"): Operation(
        summary="Count history records by kind", answer=wire.HistoryCounts
    ),
    ("GET", "/v1/stats"): Operation(summary="The hub's metrics", answer=wire.Stats, errors=()),
    ("GET", "/v1/events"): Operation(
        summary="Live events as server-sent events (`id`, `event`, `data` = the event as JSON)",
        content_type="text/event-stream",
        params=(
            Param("namespace", _ID, "Only events of this namespace."),
            Param(
                "kinds",
                {
                    "type": "string",
                    "pattern": f"^,*(({'|'.join(sorted(EventKind.ALL))})(,+|$))*$",
                },
                "Comma-separated kinds: created, updated, transitioned, ended.",
            ),
            Param("session_id", _ID, "Only events of this session."),
            Param("after", _STR, "Resume after this event id."),
            Param("Last-Event-ID", _STR, "Resume after this event id (SSE).", where="header"),
        ),
        errors=(400,),
    ),
    ("GET", "/healthz"): Operation(summary="Liveness", answer=wire.Health, errors=()),
    ("GET", "/metrics"): Operation(
        summary="Prometheus metrics", content_type="text/plain", errors=()
    ),
    ("GET", "/openapi.json"): Operation(summary="This document", answer=dict, errors=()),
}

_PUBLIC: Final = frozenset({"/healthz", "/openapi.json"})

_ERRORS: Final = {
    400: "Invalid input",
    401: "Missing or wrong bearer token",
    403: "A Host that does not name this server, or a cross-origin request from an origin not "
    "allowed",
    404: "No such session (or data key)",
    405: "Method not allowed",
    409: "Invalid transition, duplicate, or version conflict",
    413: "Payload too large",
    415: "A request body that is not declared application/json",
    429: "Quota or in-flight request limit reached",
    503: "Capacity reached, or the store is unavailable",
}


_LEASE_ID: Final = {"type": "string", "pattern": r"^[A-Za-z0-9_\-]{1,64}$"}
_PATH_PARAMS: Final = {
    "id": _ID,
    "user_id": _ID,
    "name": _NAME,
    "key": _KEY,
    "lease_id": _LEASE_ID,
}


def _body_rules(events: Iterable[str], limits: Limits) -> dict[str, dict[str, dict[str, Any]]]:
    """What the hub checks of each body field, beyond the JSON types of ``_wire``."""
    names = sorted(set(events))
    event = {
        "type": "string",
        "pattern": "^(" + "|".join(_any_case(name) for name in names) + ")$",
        "description": f"A lifecycle event, in any case: {', '.join(names)}.",
        "examples": names,
    }
    retention = {"minimum": 0, "exclusiveMaximum": 1e12}
    batch: dict[str, Any] = {"minItems": 1}
    if limits.max_history_batch is not None:
        batch["maxItems"] = limits.max_history_batch
    return {
        "CreateBody": {
            "id": _ID,
            "namespace": _ID,
            "user_id": _ID,
            "parent_id": _ID,
            "labels": _LABELS,
            "idle_timeout": _POSITIVE,
            "ttl": _POSITIVE,
            "retention": retention,
        },
        "UpdateBody": {"labels": _LABELS, "idle_timeout": _POSITIVE, "ttl": _POSITIVE},
        "TransitionBody": {"event": event},
        "LinkBody": {"child_id": _ID},
        "HistoryBody": {"kind": _NAME},
        "HistoryBatchBody": {"records": batch},
        "HistoryPopBody": {
            "kind": _NAME,
            "marker": {**_NAME, "description": "The marker's kind: not the popped `kind`."},
        },
    }


def _any_case(name: str) -> str:
    """A pattern matching ``name`` in any case (JSON-schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in name)


def _constrain(components: dict[str, Any], rules: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, fields in rules.items():
        properties = components[name]["properties"]
        for field, rule in fields.items():
            schema = properties[field]
            for member in schema.get("anyOf", [schema]):  # `T | None`: constrain the T
                if member.get("type") != "null":
                    member.update(rule)


def _path_params(template: str) -> list[dict[str, Any]]:
    params = []
    for part in template.split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            schema = _PATH_PARAMS.get(name, _STR)
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _operation(
    method: str, template: str, op: Operation, schemas: dict[type[Any], Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{template.strip('/').replace('/', '_')}".translate(
            str.maketrans("", "", "{}.")
        ),
        "summary": op.summary,
        "parameters": _path_params(template)
        + [
            {"name": p.name, "in": p.where, "schema": p.schema, "description": p.description}
            for p in op.params
        ],
    }
    if op.body is not None:
        fields = msgspec.structs.fields(op.body)
        out["requestBody"] = {  # an empty body is an empty object
            "required": any(field.required for field in fields),
            "content": {"application/json": {"schema": schemas[op.body]}},
        }
    content = (
        {op.content_type: {"schema": schemas[op.answer]}}
        if op.answer is not None and op.answer is not dict
        else {op.content_type: {}}
    )
    responses: dict[str, Any] = {str(op.status): {"description": "OK", "content": content}}
    errors = set(op.errors) | {400, 403, 500}  # 400: also an unknown query parameter
    if template not in _PUBLIC:
        errors.add(401)
    if op.body is not None:
        errors |= {413, 415}  # a body past the server's size limit, or not JSON
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    out["responses"] = responses
    if template not in _PUBLIC:
        out["security"] = [{"bearer": []}]
    return out


def openapi_document(
    lifecycle: Lifecycle = DEFAULT_LIFECYCLE, limits: Limits | None = None
) -> dict[str, Any]:
    """The document as a JSON-ready dict, for a hub with ``lifecycle`` and ``limits`` (the
    defaults when ``None``: they bound a history batch's size)."""
    types = sorted(
        {t for op in OPERATIONS.values() for t in (op.body, op.answer) if t not in (None, dict)}
        | {wire.ErrorAnswer},
        key=lambda t: t.__name__,
    )
    refs, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schemas = dict(zip(types, refs, strict=True))
    rules = _body_rules((event for _, event in lifecycle.transitions), limits or Limits())
    _constrain(components, rules)
    error_content = {"application/json": {"schema": schemas[wire.ErrorAnswer]}}
    responses = {
        f"E{status}": {"description": text, "content": error_content}
        for status, text in {**_ERRORS, 500: "Internal error"}.items()
    }
    paths: dict[str, dict[str, Any]] = {}
    for (method, template), op in OPERATIONS.items():
        paths.setdefault(template, {})[method.lower()] = _operation(method, template, op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessionhub",
            "version": "1",
            "description": "Sessions with a lifecycle, expiry, limits, hooks and events. Errors "
            'answer `{"error": {"code", "message"}}`; the codes are those of the Python '
            "exceptions.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
