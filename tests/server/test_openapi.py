"""The OpenAPI document: version 3.1, one operation per route and nothing else, and a schemathesis
fuzz run against a real server over real HTTP: no 5xx, answers as documented, status codes
documented, what the document calls valid accepted and what it calls invalid refused.

The default run is short; ``SESSIONHUB_SOAK=1`` makes it long."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config._checks import (
    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
)
from schemathesis.specs.openapi.checks import negative_data_rejection

from sessionhub.http import openapi_document
from sessionhub.http._openapi import OPERATIONS
from sessionhub.http._routes import ROUTES
from tests.client.serving import ThreadedServer

from .conftest import WAIT

SOAK = os.environ.get("SESSIONHUB_SOAK") == "1"
EXAMPLES = 400 if SOAK else 25
TARGET = "fuzz-target"  # a session that exists, so that fuzzing reaches the success paths
EXTRA = {("GET", "/v1/events"), ("GET", "/metrics"), ("GET", "/openapi.json")}
PUBLIC = {"/healthz", "/openapi.json"}


def test_the_document_is_openapi_3_1_with_every_route_and_nothing_else() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    routes = {(method, route.template) for route in ROUTES for method in route.methods}
    assert set(OPERATIONS) == routes | EXTRA
    described = {
        (method.upper(), template)
        for template, item in document["paths"].items()
        for method in item
    }
    assert described == set(OPERATIONS)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for template, item in document["paths"].items():
        names = re.findall(r"{(\w+)}", template)
        for op in item.values():
            path_params = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert path_params == names
            assert ("security" in op) == (template not in PUBLIC)


def test_the_server_serves_the_document_of_its_hub(server: ThreadedServer) -> None:
    served = httpx.get(server.url + "/openapi.json", timeout=WAIT)  # no token needed
    assert served.status_code == 200
    assert served.json() == openapi_document(server.hub.lifecycle)
    event = served.json()["components"]["schemas"]["TransitionBody"]["properties"]["event"]
    assert event["examples"] == ["ACTIVATE", "CLEAN", "SPAWN", "TERMINATE"]


@pytest.mark.parametrize("event", ["SPAWN", "spawn", "Spawn"])
def test_the_document_and_the_server_agree_on_event_case(
    server: ThreadedServer, event: str
) -> None:
    """The server takes lifecycle events in any case: the document's rule must say so."""
    schema = openapi_document()["components"]["schemas"]["TransitionBody"]["properties"]["event"]
    assert "enum" not in schema
    assert re.fullmatch(schema["pattern"].strip("^$"), event)
    assert not re.fullmatch(schema["pattern"].strip("^$"), "SPAWNX")
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=WAIT) as http:
        assert http.post("/v1/sessions", json={"id": "case"}).status_code == 201
        moved = http.post("/v1/sessions/case/transitions", json={"event": event})
        assert moved.status_code == 200, moved.text
        assert moved.json()["state"] == "SPAWNING"


# the fuzz run

ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _cases() -> list[Any]:
    params = []
    for method, template in sorted(OPERATIONS):
        if template == "/v1/events":
            continue  # a stream never ends: test_sse checks it, and its refusals
        op = openapi_document()["paths"][template][method.lower()]
        modes = [GenerationMode.POSITIVE]
        # schemathesis negates no path parameter, and the token is fixed (test_http checks it):
        # a negative case needs a query parameter or a body to spoil.
        if "requestBody" in op or any(p["in"] == "query" for p in op["parameters"]):
            modes.append(GenerationMode.NEGATIVE)
        params += [
            pytest.param(method, template, mode, id=f"{method} {template} {mode.value}")
            for mode in modes
        ]
    return params


@pytest.mark.timeout(600 if SOAK else 120)
@pytest.mark.parametrize(("method", "template", "mode"), _cases())
def test_fuzz(server: ThreadedServer, method: str, template: str, mode: GenerationMode) -> None:
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                # 413 refuses too much input as well as 400 does (label filters past the limits)
                "negative_data_rejection": {
                    "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
                },
                "positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "413"]
                },
            }
        }
    )
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)

    @schema.hook
    def filter_path_parameters(context: schemathesis.HookContext, parameters: Any) -> bool:
        """schemathesis decodes a path parameter before encoding it, so a literal "%41" would
        reach the server as "A": such ids are checked in test_http instead."""
        values = (parameters or {}).values()
        return not any(isinstance(v, str) and ESCAPE.search(v) for v in values)

    if mode is GenerationMode.POSITIVE:

        @schema.hook
        def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
            """A pop's marker kind must differ from the popped kind, a rule between two fields
            that JSON Schema cannot state (the document says it in words): test_history_batch
            checks its refusal."""
            return not (
                isinstance(body, dict) and "marker" in body and body["marker"] == body.get("kind")
            )

    operation = schema[template][method]
    headers = {"Authorization": f"Bearer {server.token}"}
    # Data keys may hold any printable characters, which no pattern spells: the document
    # gives the ASCII ones, so a "negative" key may well be a good one.
    excluded: list[schemathesis.CheckFunction] = (
        [negative_data_rejection] if "{key}" in template else []
    )
    # The token is a fixed part of each case (not added behind schemathesis' back), so that a
    # negative case is never one whose only fault was a missing token that got added anyway.
    fixed = headers if template not in PUBLIC else None
    free = operation.as_strategy(generation_mode=mode, headers=fixed)
    strategy = (
        st.one_of(
            free,
            operation.as_strategy(
                generation_mode=mode, path_parameters={"id": TARGET}, headers=fixed
            ),
        )
        if "{id}" in template
        else free
    )

    with httpx.Client(base_url=server.url, headers=headers, timeout=WAIT) as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: schemathesis.Case[Any]) -> None:
            made = http.post("/v1/sessions", json={"id": TARGET, "activate": True})
            assert made.status_code in (201, 409), made.text  # (re)made if a case ended it
            case.call_and_validate(base_url=server.url, excluded_checks=excluded)

        check()
