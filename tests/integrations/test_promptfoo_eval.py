"""The real promptfoo (0.118 on Node 20) running ``examples/promptfoo`` with sessionhub as its
session layer: against a real ``sessionhub serve`` (HTTP and gRPC), against the default SQLite
file, two evals at once, pooling, and with sessionhub down."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sessionhub
from sessionhub import HistoryRecord, Session
from sessionhub.integrations.promptfoo import NAMESPACE
from sessionhub.pytest_plugin import LocalServer
from tests.client.serving import free_port

from .promptfoo_eval import INSTALL, EvalRun, Evaluation, install_promptfoo

# Five evals run at once: ~30-40 s on an idle 2-core machine, minutes on a crowded one.
pytestmark = pytest.mark.timeout(900)

TOPICS = ["the weather", "sessions", "history"]  # the example's three tests


@pytest.fixture(scope="module")
def promptfoo() -> Path:
    return install_promptfoo()


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    """A real ``sessionhub serve`` that keeps ended sessions readable, HTTP and gRPC."""
    served = LocalServer("--retention", "600", grpc=True)
    served.wait_ready()
    yield served
    served.stop()


class Evals:
    """The evals the tests look at, each started on first use; ``start_all`` starts them at once
    (each takes 10-40 s, mostly waiting on its Python processes)."""

    def __init__(self, promptfoo: Path, server: LocalServer, root: Path) -> None:
        assert server.grpc_url is not None
        on_server = {"SESSIONHUB_URL": server.url, "SESSIONHUB_TOKEN": server.token}
        self.settings: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
            "first": (on_server, ("--var", "eval=first")),
            "second": (on_server, ("--var", "eval=second")),
            "sqlite": ({"SESSIONHUB_PROMPTFOO_PER_TEST": "1"}, ()),
            "pool": (
                {
                    **on_server,
                    "SESSIONHUB_URL": server.grpc_url,
                    "SESSIONHUB_PROMPTFOO_POOL": "2",
                    "PROVIDER_DELAY": "1",  # calls hold their lease long enough to overlap
                },
                (),
            ),
            "down": ({"SESSIONHUB_URL": f"http://127.0.0.1:{free_port()}"}, ()),
        }
        self.promptfoo = promptfoo
        self.root = root
        self.started: dict[str, Evaluation] = {}

    def __getitem__(self, name: str) -> Evaluation:
        if name not in self.started:
            env, args = self.settings[name]
            self.started[name] = Evaluation(self.promptfoo, self.root / name, env, "-j", "4", *args)
        return self.started[name]

    def start_all(self) -> None:
        for name in self.settings:
            self[name]


@pytest.fixture(scope="module")
def evals(
    promptfoo: Path, server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Evals]:
    started = Evals(promptfoo, server, tmp_path_factory.mktemp("evals"))
    if "PYTEST_XDIST_WORKER" not in os.environ:  # this process runs them all: start them at once
        started.start_all()
    yield started
    for evaluation in started.started.values():
        evaluation.stop()


@dataclass
class Observed:
    """What the hub holds about one eval, read after it finished."""

    suite: Session
    children: list[Session]
    calls: dict[str, list[HistoryRecord]]  # session id -> its `call` records
    live: int  # sessions of the eval's run still live

    def all_calls(self) -> list[dict[str, Any]]:
        return [record.payload for records in self.calls.values() for record in records]


def observe(url: str, suite_id: str, token: str | None = None) -> Observed:
    async def read() -> Observed:
        options = {"token": token} if token else {}
        async with sessionhub.connect(url, **options) as hub:
            suite = await hub.get(suite_id)
            run = {"run": suite.labels["run"]}
            # by namespace: find(parent_id=...) and find(labels=...) omit ended sessions even
            # with include_ended=True
            page = await hub.find(namespace=NAMESPACE, include_ended=True, limit=1000)
            children = [session for session in page.items if session.parent_id == suite_id]
            calls = {
                session.id: await hub.history(session.id).read(kind="call", limit=1000)
                for session in [suite, *children]
            }
            live = await hub.count(namespace=NAMESPACE, labels=run)
            return Observed(suite, children, calls, live)

    return asyncio.run(read())


def assert_completed(run: EvalRun, *, passes: int = 3) -> str:
    """The eval passed every test and made one suite session; its id."""
    assert run.returncode == 0, run.output[-3000:]
    stats = run.summary["results"]["stats"]
    assert (stats["successes"], stats["failures"], stats["errors"]) == (passes, 0, 0)
    [suite_id] = run.suite_ids
    assert f"✓ Session: {suite_id}" in run.output  # afterAll printed the statistics
    assert f"Provider calls: {passes}" in run.output
    return suite_id


def assert_statistics(observed: Observed, *, calls: int = 3) -> None:
    suite = observed.suite
    assert suite.namespace == NAMESPACE
    assert suite.labels[NAMESPACE] == "suite"
    assert suite.labels["suite"] == "sessionhub session lifecycle"
    assert suite.details["description"] == "sessionhub session lifecycle"
    assert suite.details["tests"] == 3
    assert suite.end_reason == "ended"
    assert suite.ttl == 3600.0
    statistics = suite.details["statistics"]
    assert {key: statistics[key] for key in ("tests", "passes", "failures", "errors")} == {
        "tests": 3,
        "passes": 3,
        "failures": 0,
        "errors": 0,
    }
    assert statistics["provider_calls"] == calls == suite.counters["calls"]
    assert statistics["duration_ms"] > 0
    assert observed.live == 0  # nothing of the eval is live after it


def test_two_evals_at_once_on_a_server_each_record_their_own_calls(
    evals: Evals, server: LocalServer
) -> None:
    both = [evals["first"], evals["second"]]  # started together
    runs = dict(zip(("first", "second"), (evaluation.wait() for evaluation in both), strict=True))
    suites = {name: assert_completed(run) for name, run in runs.items()}
    assert suites["first"] != suites["second"]
    for name, suite_id in suites.items():
        observed = observe(server.url, suite_id, server.token)
        assert_statistics(observed)
        assert observed.children == []  # no pool, no per-test sessions
        calls = observed.all_calls()
        # every provider call of this eval recorded once, in this eval's session only
        assert sorted(call["vars"]["topic"] for call in calls) == sorted(TOPICS)
        assert {call["vars"]["eval"] for call in calls} == {name}
        assert all(call["error"] is None and call["latency_ms"] >= 0 for call in calls)
        assert all(call["output"].endswith(call["prompt"].upper()) for call in calls)
        words = sum(len(call["prompt"].split()) for call in calls)
        assert observed.suite.counters["tokens"] == 2 * words


def test_default_sqlite_file_with_a_session_per_test(evals: Evals) -> None:
    run = evals["sqlite"].wait()
    suite_id = assert_completed(run)
    database = (
        evals["sqlite"].workdir / "cache" / "sessionhub" / "promptfoo.db"
    )  # XDG_CACHE_HOME of the eval
    assert database.is_file()
    observed = observe(f"sqlite:///{database}", suite_id)
    assert_statistics(observed)
    assert len(observed.children) == 3
    for child in observed.children:  # each test's session, ended with the test's outcome
        assert child.labels == {NAMESPACE: "test", "run": observed.suite.labels["run"]}
        assert child.end_reason == "passed"
        assert child.details["outcome"] == "passed"
        [call] = observed.calls[child.id]
        assert call.payload["vars"]["topic"] in TOPICS
    assert observed.calls[suite_id] == []  # the calls went to the tests' sessions
    assert sorted(call["vars"]["topic"] for call in observed.all_calls()) == sorted(TOPICS)


def test_pooled_sessions_are_leased_to_one_call_at_a_time(
    evals: Evals, server: LocalServer
) -> None:
    run = evals["pool"].wait()
    suite_id = assert_completed(run)
    observed = observe(server.url, suite_id, server.token)
    assert_statistics(observed)
    assert len(observed.children) == 2
    assert {child.end_reason for child in observed.children} == {"parent_ended"}
    assert sum(len(calls) for calls in observed.calls.values()) == 3
    for records in observed.calls.values():
        spans = sorted((r.payload["started_at"], r.payload["ended_at"]) for r in records)
        for (_, ended), (started, _) in itertools.pairwise(spans):
            assert ended <= started, f"two calls held one pool session at once: {spans}"
    # three calls, two sessions: one of them served two calls, one after the other
    assert max(len(records) for records in observed.calls.values()) == 2


def test_an_eval_whose_sessionhub_is_down_completes_with_a_warning(
    evals: Evals,
) -> None:
    run = evals["down"].wait()
    assert "Evaluation complete" in run.output, run.output[-3000:]
    warnings = [line for line in run.output.splitlines() if "is unavailable" in line]
    assert len(warnings) == 1, warnings  # one clear line, from beforeAll
    assert "promptfoo beforeAll hook: sessionhub at http://127.0.0.1:" in warnings[0]
    assert "the eval goes on without it" in warnings[0]
    assert run.suite_ids == []
    stats = run.summary["results"]["stats"]
    # every provider call answered promptfoo's error (NO_SESSION) and the eval went on
    assert (stats["successes"], stats["errors"]) == (0, 3)


def test_the_install_script_fails_without_node(tmp_path: Path) -> None:
    """The tests fail (install_promptfoo calls pytest.fail) rather than skip when the script
    cannot find node or npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):  # everything the script needs before it looks for node
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(INSTALL)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "promptfoo-install: node is not installed\n"
