"""The CLI as a newcomer meets it, against real servers: options before the command, one clean
line for every failure (a server that is not sessionhub, a session that is not live, a filter in
the wrong form), and the same meaning as the HTTP API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner, Result

from sessionhub import Client
from sessionhub.cli import cli

from .serving import ThreadedServer, free_port

Invoke = Callable[..., Result]


@pytest.fixture
def run(server: ThreadedServer) -> Invoke:
    """The whole `sessionhub` group, with the server's URL and token in the environment."""
    env = {"SESSIONHUB_URL": server.url, "SESSIONHUB_TOKEN": server.token}

    def invoke(*args: str, **extra_env: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={**env, **extra_env})

    return invoke


@pytest.fixture
def not_sessionhub() -> Iterator[str]:
    """A real HTTP server that is not sessionhub (Python's http.server)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    pytest.fail("http.server did not start")
                subprocess.run(["sleep", "0.05"], check=True)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_options_may_come_before_the_command(server: ThreadedServer, sync_client: Client) -> None:
    sync_client.create("early")
    result = CliRunner().invoke(
        cli,
        ["--url", server.url, "--token", server.token, "ls"],
        env={"SESSIONHUB_URL": "", "SESSIONHUB_TOKEN": ""},
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == ["early"]
    in_json = CliRunner().invoke(
        cli, ["--json", "--url", server.url, "--token", server.token, "get", "early"]
    )
    assert in_json.exit_code == 0, in_json.output
    assert '"id":"early"' in in_json.output


def test_the_commands_own_option_wins(server: ThreadedServer) -> None:
    result = CliRunner().invoke(
        cli,
        ["--url", "http://127.0.0.1:9", "stats", "--url", server.url, "--token", server.token],
    )
    assert result.exit_code == 0, result.output


def test_options_before_the_command_in_a_real_process(
    server: ThreadedServer, sync_client: Client
) -> None:
    sync_client.create("proc-early")
    done = subprocess.run(
        [sys.executable, "-m", "sessionhub", "--url", server.url, "--token", server.token, "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[0] == "proc-early"


@pytest.mark.parametrize("args", [["get", "x"], ["ls"], ["stats"], ["end", "x"]])
def test_a_server_that_is_not_sessionhub_is_one_clean_line(
    not_sessionhub: str, args: list[str]
) -> None:
    result = CliRunner().invoke(cli, [*args, "--url", not_sessionhub])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "error: error:" not in line
    assert "<" not in line  # no HTML
    assert "not a sessionhub server" in line


def test_ending_an_unknown_session_exits_1_in_one_line(run: Invoke, sync_client: Client) -> None:
    sync_client.create("real")
    result = run("end", "real", "never-was")
    assert result.exit_code == 1
    assert result.stdout.split() == ["ended", "real"]
    assert result.stderr.strip() == "error: not_found: session not live: never-was"


def test_label_filters_have_the_http_form(run: Invoke, sync_client: Client) -> None:
    sync_client.create("auth", labels={"role": "auth"})
    sync_client.create("other", labels={"role": "other"})
    found = run("ls", "--label", "role:auth")
    assert found.exit_code == 0, found.output
    assert [line.split()[0] for line in found.output.splitlines()[1:]] == ["auth"]
    wrong = run("ls", "--label", "role=auth")
    assert wrong.exit_code == 2
    assert (
        "'role=auth' is not KEY:VALUE (label filters are KEY:VALUE, as over HTTP)" in wrong.output
    )


def test_an_unknown_state_filter_is_refused(run: Invoke, server: ThreadedServer) -> None:
    result = run("ls", "--state", "SLEEPING")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: invalid: ")
    assert "SLEEPING" in lines[0]
    headers = {"Authorization": f"Bearer {server.token}"}
    answer = httpx.get(server.url + "/v1/sessions", params={"state": "SLEEPING"}, headers=headers)
    assert answer.status_code == 400


def test_a_store_url_is_no_server_url(run: Invoke) -> None:
    result = run("ls", "--url", "memory://")
    assert result.exit_code == 2
    assert "is not a server URL" in result.output


def test_an_unknown_event_kind_is_a_usage_error(run: Invoke) -> None:
    result = run("watch", "--kind", "exploded", "--count", "1")
    assert result.exit_code == 2
    assert "'exploded' is not one of" in result.output
