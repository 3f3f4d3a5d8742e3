"""``sessionhub_remote_session`` in a real pytest run under xdist: each test binds to its own
session on one shared mock service (``examples/header_sessions.py``, GripMock's pattern) whose
sessions live in a real sessionhub server, and verifies its call counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhub import Client
from tests.client.serving import ThreadedServer, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "header_sessions.py"
HEADER = "x-mock-session"  # the example service's header

SUITE = textwrap.dedent(
    """
    import json, os

    import httpx
    import pytest

    SERVICE = os.environ["MOCK_SERVICE_URL"]
    METHOD = "Greeter.SayHello"


    def record(session, **fields):
        fields.update(id=session.id, header=session.header, ttl=session.ttl,
                      worker=os.environ.get("PYTEST_XDIST_WORKER", "main"))
        with open(os.environ["SESSIONHUB_TEST_LOG"], "a") as log:
            log.write(json.dumps(fields) + "\\n")


    @pytest.mark.parametrize("n", range(4))
    def test_calls_are_counted_per_test(n, sessionhub_remote_session):
        session = sessionhub_remote_session
        session.verify.assert_called(f"call:{METHOD}", 0)
        with httpx.Client(base_url=SERVICE, headers=session.headers) as http:
            stub = http.post(f"/stubs/{METHOD}", json={"reply": {"message": f"hi {n}"}})
            assert stub.status_code == 201
            for _ in range(n + 1):  # other tests' stubs and calls are invisible here
                reply = http.post(f"/call/{METHOD}", json={"name": "ada"})
                assert reply.json() == {"message": f"hi {n}"}
        session.verify.assert_called(f"call:{METHOD}", n + 1)
        session.verify.assert_called("call:Greeter.Other", 0)
        record(session, test=n)


    def test_a_wrong_count_fails_with_a_clear_message(sessionhub_remote_session):
        session = sessionhub_remote_session
        with httpx.Client(base_url=SERVICE, headers=session.headers) as http:
            http.post(f"/call/{METHOD}", json={})  # no stub: 404, still recorded
        with pytest.raises(AssertionError) as failure:
            session.verify.assert_called(f"call:{METHOD}", 2)
        assert str(failure.value) == (
            f"session {session.id}: expected call:{METHOD} to be called 2 time(s), "
            "it was called 1 time(s)"
        )
        record(session, test="wrong")
    """
)


@pytest.fixture
def service(server: ThreadedServer, tmp_path: Path) -> Iterator[str]:
    """The example mock service, a process of its own, over the test's sessionhub server."""
    port = free_port()
    env = {**os.environ, "SESSIONHUB_URL": server.url, "SESSIONHUB_TOKEN": server.token}
    with (tmp_path / "service.log").open("w+") as log:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_serving(url, process, log)
            yield url
        finally:
            process.terminate()
            process.wait(30)


def wait_serving(url: str, process: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/verify/x", headers={HEADER: "probe"}, timeout=1)
            return
        except httpx.TransportError:
            log.seek(0)
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the mock service did not start: {log.read()[-2000:]}")
            time.sleep(0.1)


# The server fixtures come before ``pytester``: see test_plugin.py.
def test_parallel_tests_each_bind_to_their_own_session_on_a_shared_service(
    server: ThreadedServer, service: str, sync_client: Client, pytester: pytest.Pytester
) -> None:
    sync_client.end("probe")  # the service's readiness probe made it
    pytester.makepyfile(test_suite=SUITE)
    log = pytester.path / "log.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SESSIONHUB_TEST_LOG", str(log))
        patch.setenv("MOCK_SERVICE_URL", service)
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "-q",
            "-n",
            "2",
            f"--sessionhub-url={server.url}",
            f"--sessionhub-token={server.token}",
            f"--sessionhub-header={HEADER}",
            "--sessionhub-ttl=45",
        )
    result.assert_outcomes(passed=5)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert {(r["header"], r["ttl"]) for r in records} == {(HEADER, 45.0)}
    ids = [r["id"] for r in records]
    assert len(set(ids)) == 5
    for r in records:  # named after the test
        name = "test_suite.py::test_" + (
            f"calls_are_counted_per_test[{r['test']}]"
            if r["test"] != "wrong"
            else "a_wrong_count_fails_with_a_clear_message"
        )
        assert r["id"].startswith(name + "-")
    # every test's session ended at its teardown; the service made them with the test's TTL
    assert sync_client.count() == 0
    ended = {s.id: s for s in sync_client.find(include_ended=True).items}
    for session_id in ids:
        assert ended[session_id].end_reason == "ended"
        assert ended[session_id].idle_timeout == 45.0
