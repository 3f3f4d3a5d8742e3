"""The pytest plugin in real pytest runs (pytester, in subprocesses), embedded and remote, with
and without pytest-xdist."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from sessionhub import Client, StoreUnavailable

SUITE = textwrap.dedent(
    """
    import json, os

    import pytest

    import sessionhub

    LOG = os.environ["SESSIONHUB_TEST_LOG"]
    seen = []


    def record(**fields):
        fields["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(LOG, "a") as log:
            log.write(json.dumps(fields) + "\\n")


    @pytest.mark.parametrize("n", range(4))
    def test_sync(n, sessionhub_hub, sessionhub_session, sessionhub_suite_session, sessionhub_url):
        assert isinstance(sessionhub_hub, sessionhub.Client)
        assert sessionhub_session.state == "ACTIVE"
        assert sessionhub_session.details == {"test": f"test_suite.py::test_sync[{n}]"}
        assert sessionhub_hub.exists(sessionhub_session.id)
        for earlier in seen:  # the sessions of earlier tests ended at their teardown
            assert not sessionhub_hub.exists(earlier)
        seen.append(sessionhub_session.id)
        suite = sessionhub_hub.get(sessionhub_suite_session.id)
        assert suite.live
        sessionhub_hub.incr(suite.id, "tests")
        record(test=n, session=sessionhub_session.id, ttl=sessionhub_session.ttl,
               suite=suite.id, url=sessionhub_url)


    @pytest.mark.asyncio
    async def test_async(sessionhub_async_hub, sessionhub_session, sessionhub_suite_session):
        assert isinstance(sessionhub_async_hub, sessionhub.AsyncClient)
        record_ = await sessionhub_async_hub.history(sessionhub_session.id).append("step", {"n": 1})
        assert record_.seq == 1
        assert await sessionhub_async_hub.exists(sessionhub_suite_session.id)
        record(test="async", session=sessionhub_session.id, ttl=sessionhub_session.ttl,
               suite=sessionhub_suite_session.id)
    """
)


def run_suite(
    pytester: pytest.Pytester, *args: str
) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    pytester.makepyfile(test_suite=SUITE)
    log = pytester.path / "log.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SESSIONHUB_TEST_LOG", str(log))
        patch.delenv("SESSIONHUB_URL", raising=False)
        patch.delenv("SESSIONHUB_TOKEN", raising=False)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, records


def test_embedded_run(pytester: pytest.Pytester) -> None:
    result, records = run_suite(pytester, "--sessionhub-ttl", "7")
    result.assert_outcomes(passed=5)
    assert len({r["session"] for r in records}) == 5  # a fresh session per test
    assert {r["suite"] for r in records} == {records[0]["suite"]}  # one suite session
    assert {r["ttl"] for r in records} == {7.0}
    url = records[0]["url"]
    with pytest.raises(StoreUnavailable), Client(url, timeout=1):
        pass  # entering probes the server: the private one is gone with the run


def test_embedded_run_under_xdist(pytester: pytest.Pytester) -> None:
    result, records = run_suite(pytester, "-n", "2")
    result.assert_outcomes(passed=5)
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    for worker in ("gw0", "gw1"):  # each worker: its own private server, one suite session
        mine = [r for r in records if r["worker"] == worker]
        assert len({r["suite"] for r in mine}) == 1


# The server fixtures come before ``pytester`` in these signatures: pytester restores sys.modules
# at teardown, and modules a server imported after its snapshot would be imported twice later
# (httpx then fails to translate httpcore's exceptions).
def test_remote_run_under_xdist_shares_one_suite_session(
    server_url: str, server_token: str, sync_client: Client, pytester: pytest.Pytester
) -> None:
    sync_client.create("bystander")
    result, records = run_suite(
        pytester,
        "-n",
        "2",
        f"--sessionhub-url={server_url}",
        f"--sessionhub-token={server_token}",
    )
    result.assert_outcomes(passed=5)
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    suites = {r["suite"] for r in records}
    assert len(suites) == 1
    assert {r["url"] for r in records if "url" in r} == {server_url}
    (suite_id,) = suites
    assert suite_id.startswith("pytest-suite-")
    # everything the run made has ended; the session that was there before is untouched
    assert [s.id for s in sync_client.find().items] == ["bystander"]
    ended = {s.id: s for s in sync_client.find(include_ended=True).items}
    assert ended[suite_id].end_reason == "ended"
    assert ended[suite_id].counters == {"tests": 4}  # every worker counted into the one session
    assert all(not ended[r["session"]].live for r in records)


def test_remote_run_without_xdist(
    server_url: str, server_token: str, sync_client: Client, pytester: pytest.Pytester
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SESSIONHUB_URL", server_url)
        patch.setenv("SESSIONHUB_TOKEN", server_token)
        pytester.makepyfile(test_suite=SUITE)
        log = pytester.path / "log.jsonl"
        patch.setenv("SESSIONHUB_TEST_LOG", str(log))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["url"] for r in records if "url" in r} == {server_url}
    assert sync_client.count() == 0
    suite = sync_client.get(records[0]["suite"])
    assert not suite.live


def test_a_bad_ttl_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--sessionhub-ttl", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sessionhub-ttl must be a positive number*"])


def test_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(
        [
            "*sessionhub_url*",
            "*sessionhub_hub*",
            "*sessionhub_async_hub*",
            "*sessionhub_session*",
            "*sessionhub_suite_session*",
            "*sessionhub_remote_session*",
        ]
    )
