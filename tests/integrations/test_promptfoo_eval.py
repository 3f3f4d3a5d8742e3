"""The real promptfoo (0.118 on Node 20) running ``examples/promptfoo`` with sessionhub as its
session layer: against a real ``sessionhub serve`` (HTTP and gRPC), against the default SQLite
file, two evals at once, pooling, with sessionhub down, and ``sessionhub watch``/``ls`` showing
the evals while they run."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
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


class Watch:
    """``sessionhub watch --namespace promptfoo`` (the real CLI) following the server while the
    evals run. At each ``created`` event it prints, a ``sessionhub ls --namespace promptfoo`` is
    taken too: what ``ls`` shows at that moment, while an eval runs."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.lines: list[str] = []
        self.listings: list[list[dict[str, Any]]] = []  # each `ls --json` taken, its sessions
        self._process = subprocess.Popen(
            self._command("watch"), stdout=subprocess.PIPE, text=True, env=self._env()
        )
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()
        self._wait_subscribed()

    def _command(self, *args: str) -> list[str]:
        cli = Path(sys.executable).with_name("sessionhub")  # the command a user types
        return [str(cli), *args, "--namespace", NAMESPACE, "--url", self.server.url]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")}
        return {**env, "SESSIONHUB_TOKEN": self.server.token}  # not argv: others see that

    def _wait_subscribed(self, timeout: float = 60.0) -> None:
        """Until the server counts the watch's subscription: no eval may start before it."""
        deadline = time.monotonic() + timeout
        with sessionhub.Client(self.server.url, token=self.server.token) as client:
            while client.metrics().subscribers < 1:
                assert self._process.poll() is None, "sessionhub watch exited"
                assert time.monotonic() < deadline, "sessionhub watch never subscribed"
                time.sleep(0.05)

    def _follow(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.split()[1:2] == ["created"]:
                self.listings.append(self._ls())

    def _ls(self) -> list[dict[str, Any]]:
        done = subprocess.run(
            self._command("ls", "--json", "--limit", "1000"),
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        return items

    def events(self, session_id: str) -> list[list[str]]:
        """The lines about one session, split: [time, kind, id, namespace, state, reason?]."""
        return [line.split() for line in self.lines if f"  {session_id}  " in line]

    def wait_ended(self, session_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Until the watch printed every one's ``ended`` (it may lag the eval a little)."""
        deadline = time.monotonic() + timeout
        while not all(["ended"] in (event[1:2] for event in self.events(s)) for s in session_ids):
            assert time.monotonic() < deadline, "\n".join(self.lines[-50:])
            time.sleep(0.1)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(15)
        self._reader.join(60)


@pytest.fixture(scope="module")
def watch(server: LocalServer) -> Iterator[Watch]:
    watching = Watch(server)
    yield watching
    watching.stop()


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
    promptfoo: Path, server: LocalServer, watch: Watch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Evals]:
    """The evals, with ``watch`` following the server before any starts."""
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


def test_watch_and_ls_show_the_evals_on_the_server_while_they_run(
    evals: Evals, server: LocalServer, watch: Watch
) -> None:
    """`sessionhub watch` followed the three evals on the server from before they started; an
    `ls` was taken at each session it saw created."""
    names = ("first", "second", "pool")
    running = [evals[name] for name in names]  # all started before any is waited for
    suites = dict(zip(names, (assert_completed(e.wait()) for e in running), strict=True))
    members = [child.id for child in observe(server.url, suites["pool"], server.token).children]
    assert len(members) == 2
    # every session of the three evals, and the reason the watch shows it ended with
    reasons = dict.fromkeys(suites.values(), "ended") | dict.fromkeys(members, "parent_ended")
    watch.wait_ended(reasons)
    for session_id, reason in reasons.items():
        events = watch.events(session_id)
        assert events[0][1:] == ["created", session_id, NAMESPACE, "ACTIVE"], events
        assert events[-1][1:] == ["ended", session_id, NAMESPACE, "CLEANED", f"reason={reason}"]
    # an `ls` taken while an eval ran listed its suite session, live, with its labels
    for suite_id in suites.values():
        listed = [item for items in watch.listings for item in items if item["id"] == suite_id]
        assert listed, f"no sessionhub ls listed {suite_id} while its eval ran"
        assert {item["state"] for item in listed} == {"ACTIVE"}
        assert listed[0]["labels"][NAMESPACE] == "suite"
        assert listed[0]["labels"]["suite"] == "sessionhub session lifecycle"


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
