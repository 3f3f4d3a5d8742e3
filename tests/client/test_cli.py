"""The client commands of the CLI against a real server: CliRunner, and one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import click
import pytest
from click.testing import CliRunner, Result

from sessionhub import Client
from sessionhub._cli_commands import register

from .conftest import sync_anchor

Invoke = Callable[..., Result]


@pytest.fixture
def run(server_url: str, server_token: str) -> Invoke:
    group = click.Group("sessionhub")
    register(group)
    runner = CliRunner()
    env = {"SESSIONHUB_URL": server_url, "SESSIONHUB_TOKEN": server_token}

    def invoke(*args: str) -> Result:
        return runner.invoke(group, list(args), env=env, catch_exceptions=False)

    return invoke


def lines(result: Result) -> list[list[str]]:
    return [line.split() for line in result.output.splitlines()]


def test_create_then_ls_and_get_show_the_session(run: Invoke, sync_client: Client) -> None:
    created = run("create", "--id", "cli/1", "--user", "ada", "-l", "role=auth", "--activate")
    assert created.exit_code == 0, created.output
    assert created.output.strip() == "cli/1"
    run("create", "--id", "cli-2", "--namespace", "other", "--ttl", "600", "-d", "note=hi")
    listed = lines(run("ls"))
    assert listed[0] == ["ID", "NAMESPACE", "STATE", "USER", "REQUESTS", "EXPIRES", "IN", "LABELS"]
    rows = {row[0]: row for row in listed[1:]}
    assert rows["cli/1"][1:5] == ["default", "ACTIVE", "ada", "0"]
    assert rows["cli/1"][-1] == "role=auth"
    assert rows["cli-2"][1:4] == ["other", "CREATED", "-"]
    assert [row[0] for row in lines(run("ls", "--namespace", "other"))[1:]] == ["cli-2"]
    assert [row[0] for row in lines(run("ls", "-l", "role:auth"))[1:]] == ["cli/1"]
    shown = {row[0]: row[1:] for row in lines(run("get", "cli-2"))}
    assert shown["namespace"] == ["other"]
    assert shown["details"] == ['{"note":"hi"}']
    assert shown["ttl"] == ["10m"]
    assert sync_client.get("cli-2").details == {"note": "hi"}


def test_ls_pages_with_a_cursor(run: Invoke) -> None:
    for n in range(3):
        run("create", "--id", f"page-{n}")
    first = run("ls", "--limit", "2")
    assert [row[0] for row in lines(first)[1:3]] == ["page-0", "page-1"]
    cursor = lines(first)[-1]
    assert cursor[:2] == ["more:", "--cursor"]
    second = run("ls", "--limit", "2", "--cursor", cursor[2])
    assert [row[0] for row in lines(second)[1:]] == ["page-2"]


def test_json_output_is_machine_readable(run: Invoke) -> None:
    made = json.loads(run("create", "--json", "--label", "k=v").output)
    assert made["labels"] == {"k": "v"}
    page = json.loads(run("ls", "--json").output)
    assert [s["id"] for s in page["items"]] == [made["id"]]
    assert page["cursor"] is None
    assert json.loads(run("get", made["id"], "--json").output)["id"] == made["id"]
    stats = json.loads(run("stats", "--json").output)
    assert stats["live_sessions"] == 1
    assert stats["sessions"] == [{"namespace": "default", "state": "CREATED", "count": 1}]
    assert json.loads(run("end", made["id"], "--json").output) == {"ended": {made["id"]: True}}


def test_end_reports_what_it_ended(run: Invoke, sync_client: Client) -> None:
    sync_client.create("to-end")
    sync_client.create("also")
    result = run("end", "to-end", "also", "--reason", "cli")
    assert result.exit_code == 0
    assert lines(result) == [["ended", "to-end"], ["ended", "also"]]
    assert not sync_client.exists("to-end")


def test_stats_table(run: Invoke, sync_client: Client) -> None:
    sync_client.create(namespace="n1", activate=True)
    sync_client.create(namespace="n1", activate=True)
    sync_client.create(namespace="n2")
    out = lines(run("stats"))
    assert out[0] == ["NAMESPACE", "STATE", "SESSIONS"]
    assert ["n1", "ACTIVE", "2"] in out
    assert ["n2", "CREATED", "1"] in out
    assert ["live", "sessions", "3"] in out


def test_watch_prints_live_events(run: Invoke, sync_client: Client) -> None:
    after = sync_anchor(sync_client)
    anchor = sync_client.create("anchor")
    first = json.loads(
        run("watch", "--json", "--count", "1", "--after", after, "--session", "anchor").output
    )
    assert first["kind"] == "created"
    assert first["session"]["id"] == anchor.id
    sync_client.update("anchor", details={"x": 1})
    sync_client.end("anchor", "bye")
    out = run(
        "watch",
        "--after",
        first["id"],
        "--count",
        "2",
        "--session",
        "anchor",
        "--kind",
        "updated",
        "--kind",
        "ended",
    ).output
    rows = [line.split() for line in out.splitlines()]
    assert [row[1:3] for row in rows] == [["updated", "anchor"], ["ended", "anchor"]]
    assert rows[1][-1] == "reason=bye"


def test_errors_are_one_line_with_status_1(run: Invoke) -> None:
    result = CliRunner().invoke(
        _group(), ["get", "nobody"], env={"SESSIONHUB_URL": "http://127.0.0.1:9"}
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: store_unavailable:")
    missing = run("get", "nobody")
    assert missing.exit_code == 1
    assert missing.output.strip() == "error: not_found: session not found: nobody"
    bad = run("create", "--label", "novalue")
    assert bad.exit_code == 2
    assert "KEY=VALUE" in bad.output


def test_wrong_token_is_reported(server_url: str) -> None:
    result = CliRunner().invoke(
        _group(), ["ls", "--url", server_url, "--token", "wrong"], env={"SESSIONHUB_TOKEN": ""}
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: unauthorized:")


def test_python_m_sessionhub_ls_in_a_real_process(
    server_url: str, server_token: str, sync_client: Client
) -> None:
    sync_client.create("proc/1", labels={"via": "subprocess"})
    env = {**os.environ, "SESSIONHUB_TOKEN": server_token}
    done = subprocess.run(
        [sys.executable, "-m", "sessionhub", "ls", "--url", server_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0][:3] == ["ID", "NAMESPACE", "STATE"]
    assert rows[1][0] == "proc/1"
    assert rows[1][-1] == "via=subprocess"


def _group() -> click.Group:
    group = click.Group("sessionhub")
    register(group)
    return group
