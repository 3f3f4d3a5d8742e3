"""The promptfoo integration called as promptfoo calls it (hook name and JSON context in, JSON
out), in this process, over a real SQLite file; the real promptfoo runs are in
test_promptfoo_eval.py."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sessionhub
from sessionhub import Session
from sessionhub.integrations.promptfoo import (
    NAMESPACE,
    NO_SESSION,
    POOL_VAR,
    SESSION_VAR,
    SUITE_VAR,
    ExtensionHook,
    SessionPool,
    Settings,
    default_db_path,
    extension_hook,
    hub_url,
    open_hub,
    session_aware,
)
from tests.client.serving import free_port


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sessions in a fresh SQLite file, as promptfoo's processes would share it."""
    for name in ("SESSIONHUB_URL", "SESSIONHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("TTL", "PER_TEST", "POOL", "LEASE_WAIT", "LEASE_TTL", "RETENTION"):
        monkeypatch.delenv(f"SESSIONHUB_PROMPTFOO_{name}", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return hub_url()


def read(url: str, session_id: str) -> tuple[Session, list[dict[str, Any]]]:
    """The session (live or ended) and its `call` records."""

    async def go() -> tuple[Session, list[dict[str, Any]]]:
        async with open_hub(url) as hub:
            calls = await hub.history(session_id).read(kind="call", limit=1000)
            return await hub.get(session_id), [record.payload for record in calls]

    return asyncio.run(go())


def suite_context(tests: int = 2) -> dict[str, Any]:
    """What promptfoo 0.118 hands beforeAll (the parts the hook reads or must keep)."""
    return {
        "suite": {
            "description": "unit suite",
            "prompts": [{"raw": "Say {{word}}", "label": "p"}],
            "defaultTest": {"vars": {"shared": "yes"}},
            "tests": [{"description": f"t{n}", "vars": {"word": f"w{n}"}} for n in range(tests)],
        }
    }


@session_aware
def echo(prompt: str, options: Any, context: Any) -> dict[str, Any]:
    """A provider: answers the prompt in upper case, and the session it ran in."""
    if prompt == "boom":
        raise RuntimeError("provider failed")
    return {
        "output": f"{context['vars'][SESSION_VAR]}:{prompt.upper()}",
        "tokenUsage": {"total": 5},
    }


def call(test: dict[str, Any], prompt: str = "hello") -> dict[str, Any]:
    return echo(prompt, {"config": {}}, {"vars": dict(test["vars"]), "prompt": {"raw": prompt}})


def test_default_location_is_a_file_in_the_per_user_cache_folder(tmp_path: Path) -> None:
    assert default_db_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "sessionhub" / "promptfoo.db"
    )
    assert default_db_path({}) == Path.home() / ".cache" / "sessionhub" / "promptfoo.db"
    assert hub_url({"XDG_CACHE_HOME": "/x"}) == "sqlite:////x/sessionhub/promptfoo.db"
    assert hub_url({"SESSIONHUB_URL": "grpc://h:1", "XDG_CACHE_HOME": "/x"}) == "grpc://h:1"


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"SESSIONHUB_PROMPTFOO_PER_TEST": "yes", "SESSIONHUB_PROMPTFOO_POOL": "3"}
    )
    assert settings == Settings(per_test=True, pool_size=3)
    for bad in ("many", "-1", "nan"):
        with pytest.raises(ValueError, match="SESSIONHUB_PROMPTFOO_POOL must be a positive"):
            Settings.from_env({"SESSIONHUB_PROMPTFOO_POOL": bad})
    with pytest.raises(ValueError, match="SESSIONHUB_PROMPTFOO_TTL must be a positive"):
        Settings.from_env({"SESSIONHUB_PROMPTFOO_TTL": "0"})


def test_a_provider_call_without_a_live_session_answers_promptfoos_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    @session_aware
    def provider(prompt: str, options: Any, context: Any) -> dict[str, Any]:
        ran.append(prompt)
        return {"output": prompt}

    assert provider("p", {}, {"vars": {}}) == {"error": NO_SESSION}  # beforeAll never ran
    assert provider("p", {}, None) == {"error": NO_SESSION}
    given = extension_hook("beforeAll", suite_context())
    assert given is not None
    test = given["suite"]["tests"][0]
    extension_hook("afterAll", {**given, "prompts": []})  # the suite session is gone
    assert provider("p", {}, {"vars": test["vars"]}) == {"error": NO_SESSION}
    assert ran == []
    capsys.readouterr()
    assert extension_hook("afterAll", {**given, "prompts": []}) is None  # twice: told, no error
    suite_id = test["vars"][SUITE_VAR]
    assert capsys.readouterr().err == (
        f"sessionhub: promptfoo afterAll hook: the suite session {suite_id} had already ended\n"
    )


def test_a_whole_suite_in_one_session(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    given = extension_hook("beforeAll", suite_context())
    assert given is not None
    suite = given["suite"]
    suite_id = suite["defaultTest"]["vars"][SUITE_VAR]
    assert suite["defaultTest"]["vars"]["shared"] == "yes"  # the user's vars stay
    assert suite["prompts"] == suite_context()["suite"]["prompts"]
    for n, test in enumerate(suite["tests"]):
        assert test["vars"] == {"word": f"w{n}", SUITE_VAR: suite_id, SESSION_VAR: suite_id,
                                "sessionhub_run": test["vars"]["sessionhub_run"]}  # fmt: skip
        assert extension_hook("beforeEach", {"test": test}) is None  # not per test: unchanged
    first, second = suite["tests"]
    assert call(first) == {"output": f"{suite_id}:HELLO", "tokenUsage": {"total": 5}}
    with pytest.raises(RuntimeError, match="provider failed"):
        call(second, "boom")
    extension_hook("afterEach", {"test": first, "result": {"success": True}})
    metrics = {"testPassCount": 1, "testFailCount": 0, "testErrorCount": 1}
    assert extension_hook("afterAll", {**given, "prompts": [{"metrics": metrics}]}) is None

    session, calls = read(url, suite_id)
    assert session.namespace == NAMESPACE
    assert session.labels["suite"] == "unit suite"
    assert session.end_reason == "ended"
    assert session.counters == {"calls": 2, "call_errors": 1, "tokens": 5}
    statistics = session.details["statistics"]
    assert statistics["tests"] == 2
    assert (statistics["passes"], statistics["failures"], statistics["errors"]) == (1, 0, 1)
    assert (statistics["provider_calls"], statistics["provider_errors"]) == (2, 1)
    assert [c["vars"] for c in calls] == [{"word": "w0"}, {"word": "w1"}]
    assert [c["error"] for c in calls] == [None, "RuntimeError: provider failed"]
    assert calls[0]["output"] == f"{suite_id}:HELLO"
    assert calls[0]["token_usage"] == {"total": 5}
    printed = capsys.readouterr().err
    assert f"✓ Session: {suite_id}" in printed
    assert "Tests: 2 (passed 1, failed 0, errors 1)" in printed


def test_a_session_per_test_ends_with_the_tests_outcome(url: str) -> None:
    hook = ExtensionHook(Settings(per_test=True))
    given = hook("beforeAll", suite_context(tests=3))
    assert given is not None
    suite_id = given["suite"]["defaultTest"]["vars"][SUITE_VAR]
    outcomes = [
        {"success": True},
        {"success": False, "failureReason": 1},
        {"success": False, "failureReason": 2},
    ]
    children = []
    for test, result in zip(given["suite"]["tests"], outcomes, strict=True):
        started = hook("beforeEach", {"test": test})
        assert started is not None
        child = started["test"]["vars"][SESSION_VAR]
        assert child != suite_id
        call(started["test"])
        hook("afterEach", {"test": started["test"], "result": result})
        children.append(child)
    for child, reason in zip(children, ["passed", "failed", "error"], strict=True):
        session, calls = read(url, child)
        assert session.parent_id == suite_id
        assert session.end_reason == reason
        assert session.details["outcome"] == reason
        assert len(calls) == 1
        assert calls[0]["output"] == f"{child}:HELLO"
    suite, suite_calls = read(url, suite_id)
    assert suite.live
    assert suite.counters["calls"] == 3  # counted on the suite too, recorded in the tests'
    assert suite_calls == []


def test_hooks_go_on_with_one_line_when_sessionhub_is_away(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://user:secret@127.0.0.1:{free_port()}"
    monkeypatch.setenv("SESSIONHUB_URL", dead)
    context = suite_context()
    assert extension_hook("beforeAll", context) is None  # promptfoo keeps its own context
    vars_ = {SUITE_VAR: "s1", SESSION_VAR: "s1"}
    assert extension_hook("afterAll", {"suite": {"defaultTest": {"vars": vars_}}}) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("sessionhub: promptfoo beforeAll hook: sessionhub at http://***@")
    assert lines[1].startswith("sessionhub: promptfoo afterAll hook: sessionhub at http://***@")
    assert all("the eval goes on without it" in line and "secret" not in line for line in lines)
    answer = echo("p", {}, {"vars": vars_})
    assert answer["error"].startswith("sessionhub at http://***@127.0.0.1:")


@pytest.fixture
def pool(url: str) -> tuple[str, list[str]]:
    """A parent session with two pool members, in the SQLite file."""

    async def make() -> tuple[str, list[str]]:
        async with open_hub(url) as hub:
            parent = await hub.create(namespace=NAMESPACE, activate=True)
            return parent.id, await SessionPool.create(hub, parent.id, 2)

    return asyncio.run(make())


def test_pool_leases_go_to_one_holder_at_a_time(url: str, pool: tuple[str, list[str]]) -> None:
    """Eight threads, each with its own hub (its own SQLite connection), lease the two members
    of a pool five times each: no member is ever held by two at once."""
    parent_id, members = pool
    spans: list[tuple[str, float, float]] = []

    def worker() -> None:
        async def go() -> None:
            async with open_hub(url) as hub:
                for _ in range(5):
                    async with SessionPool(hub, parent_id, wait=60).lease() as lease:
                        started = time.monotonic()
                        await asyncio.sleep(0.005)
                        spans.append((lease.session_id, started, time.monotonic()))

        asyncio.run(go())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(spans) == 40
    assert {member for member, _, _ in spans} == set(members)
    for member in members:
        held = sorted((start, end) for name, start, end in spans if name == member)
        for (_, end), (start, _) in itertools.pairwise(held):
            assert end <= start, "a pool session was leased to two holders at once"


def test_a_dead_holders_lease_is_taken_over(url: str, pool: tuple[str, list[str]]) -> None:
    parent_id, _ = pool

    async def go() -> None:
        async with open_hub(url) as hub:
            held = SessionPool(hub, parent_id, lease_ttl=60)
            first, second = await held.acquire(), await held.acquire()
            assert first.session_id != second.session_id
            with pytest.raises(TimeoutError, match="no free session in pool"):
                await SessionPool(hub, parent_id, wait=0.1).acquire()
            assert await held.release(first)
            again = await held.acquire()
            assert again.session_id == first.session_id  # the only free one
            assert await held.release(again)
            assert await held.release(second)
            # holders that died: after lease_ttl another caller takes their sessions over
            short = SessionPool(hub, parent_id, lease_ttl=0.05)
            dead = {lease.session_id: lease for lease in [await short.acquire() for _ in "ab"]}
            await asyncio.sleep(0.1)
            taken = await short.acquire()
            assert not await short.release(dead[taken.session_id])  # it had been taken over
            assert await short.release(taken)
            await hub.end(parent_id)  # the pool ends with its parent
            with pytest.raises(sessionhub.SessionNotFound):
                await held.acquire()

    asyncio.run(go())


def test_a_provider_in_a_pool_runs_in_a_leased_session(
    url: str, pool: tuple[str, list[str]]
) -> None:
    parent_id, members = pool
    given = {SUITE_VAR: parent_id, SESSION_VAR: parent_id, POOL_VAR: parent_id}
    answer = echo("hi", {}, {"vars": given})
    member, _, text = answer["output"].partition(":")
    assert member in members
    assert text == "HI"
    session, calls = read(url, member)
    assert session.counters["calls"] == 1
    assert len(calls) == 1

    async def lease_of(member: str) -> Any:
        async with open_hub(url) as hub:
            return await hub.data(member).get("lease")

    assert asyncio.run(lease_of(member)) == {"holder": None}  # released after the call
