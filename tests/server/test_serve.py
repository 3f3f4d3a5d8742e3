"""``sessionhub serve`` as a real process: its help, options from ``SESSIONHUB_*`` variables, the
loopback rule, clear errors for a taken port and bad values, and a graceful SIGTERM/SIGINT that
ends every live session for the subscribers listening, without ever printing the token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from sessionhub.cli import cli
from tests.client.serving import free_port

from .conftest import WAIT, SSEReader, assert_error, wait_until

TOKEN = "tok-3n8QvY2kLr-never-printed"


class Served:
    """One ``python -m sessionhub serve`` process, its output going to a file."""

    def __init__(self, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sessionhub", "serve", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, url: str) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                return True
            try:
                return httpx.get(url + "/healthz", timeout=WAIT).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, f"the server at {url}")
        assert self.process.poll() is None, f"serve exited early:\n{self.output}"

    def wait_exit(self) -> int:
        try:
            return self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit:\n{self.output}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.wait_exit()


Serve = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start ``serve`` with ``args`` and the environment variables in ``env`` (none of the
    caller's ``SESSIONHUB_*``; gRPC on a free port so that parallel runs never collide)."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")}
        clean.update(PYTHONUNBUFFERED="1", SESSIONHUB_GRPC_PORT=str(free_port()))
        clean.update(env or {})
        served = Served(tmp_path / f"serve-{len(started)}.log", list(args), clean)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(WAIT)


def client(port: int, token: str | None = TOKEN) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=WAIT)


def test_help_documents_the_options(serve: Serve) -> None:
    served = serve("--help")
    assert served.wait_exit() == 0
    text = served.output
    for option in (
        "--store",
        "--host",
        "--port",
        "--token",
        "--insecure",
        "--idle-timeout",
        "--ttl",
        "--retention",
        "--max-sessions",
        "--max-sessions-per-user",
        "--max-requests-per-session",
        "--max-body-bytes",
        "--unique-label",
        "SESSIONHUB_TOKEN",
    ):
        assert option in text, option
    assert "memory://" in text
    assert "127.0.0.1" in text  # the default host


def test_options_come_from_sessionhub_environment_variables(serve: Serve) -> None:
    port = free_port()
    served = serve(
        env={
            "SESSIONHUB_PORT": str(port),
            "SESSIONHUB_TOKEN": TOKEN,
            "SESSIONHUB_MAX_SESSIONS": "2",
            "SESSIONHUB_IDLE_TIMEOUT": "42",
            "SESSIONHUB_MAX_BODY_BYTES": "2000",
        }
    )
    served.wait_ready(f"http://127.0.0.1:{port}")
    with client(port) as http:
        first = http.post("/v1/sessions", json={})
        assert first.status_code == 201
        assert first.json()["idle_timeout"] == 42.0
        assert http.post("/v1/sessions", json={}).status_code == 201
        assert_error(http.post("/v1/sessions", json={}), 503, "capacity_exceeded")
        big = http.post(
            "/v1/sessions", content=b" " * 3000, headers={"Content-Type": "application/json"}
        )
        assert_error(big, 413, "payload_too_large")
        assert http.get("/v1/count").json() == {"count": 2}
    with client(port, token=None) as anon:
        assert_error(anon.get("/v1/count"), 401, "unauthorized")
    assert served.stop() == 0


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_non_loopback_host_without_a_token_is_refused(serve: Serve, how: str) -> None:
    port = free_port()
    if how == "option":
        served = serve("--host", "0.0.0.0", "--port", str(port))
    else:
        served = serve(env={"SESSIONHUB_HOST": "0.0.0.0", "SESSIONHUB_PORT": str(port)})
    assert served.wait_exit() == 2
    text = served.output
    assert "0.0.0.0 is not a loopback address" in text
    assert "--token" in text
    assert "--insecure" in text
    assert "serving" not in text
    assert "Traceback" not in text
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there


def test_insecure_serves_a_non_loopback_host_without_a_token(serve: Serve) -> None:
    port = free_port()
    served = serve("--host", "0.0.0.0", "--port", str(port), "--insecure")
    served.wait_ready(f"http://127.0.0.1:{port}")
    with client(port, token=None) as anon:
        assert anon.post("/v1/sessions", json={"id": "open"}).status_code == 201
        assert anon.get("/v1/sessions/open").json()["id"] == "open"
        # bound to every interface: any address of the machine is its own (a rebinding page
        # sends a name, never an address)
        assert anon.get("/v1/count", headers={"Host": f"192.0.2.10:{port}"}).status_code == 200
        refused = anon.get("/v1/count", headers={"Host": f"rebound.example:{port}"})
        assert_error(refused, 403, "forbidden")
    assert served.stop() == 0
    assert f"http://0.0.0.0:{port}" in served.output


def test_a_taken_port_is_a_clear_error(serve: Serve) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        served = serve("--port", str(port))
        assert served.wait_exit() == 1
    text = served.output
    assert f"cannot listen on 127.0.0.1:{port}" in text
    assert "in use" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--idle-timeout", "-1"],
            "'--idle-timeout' (env var: 'SESSIONHUB_IDLE_TIMEOUT'): '-1' must be a positive "
            "number of seconds",
        ),
        (
            ["--ttl", "soon"],
            "'--ttl' (env var: 'SESSIONHUB_TTL'): 'soon' is neither a number of seconds nor 'none'",
        ),
        (["--store", "bogus://"], "unknown store scheme 'bogus'"),
        (["--port", "70000"], "'--port'"),
        (["--max-sessions", "0"], "'--max-sessions'"),
        (["--quota-policy", "shrug"], "'--quota-policy'"),
    ],
)
def test_bad_option_values_are_usage_errors(serve: Serve, args: list[str], says: str) -> None:
    served = serve(*args)
    assert served.wait_exit() == 2
    text = served.output
    assert "Usage: sessionhub serve" in text
    assert says in text
    assert "Traceback" not in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_live_sessions_for_the_subscribers_then_exits_0(
    serve: Serve, signum: int
) -> None:
    port = free_port()
    served = serve("--port", str(port), "--log-level", "debug", env={"SESSIONHUB_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{port}"
    served.wait_ready(url)
    reader = SSEReader(url, TOKEN)
    try:
        reader.wait_live()
        with client(port) as http:
            live = [
                http.post("/v1/sessions", json={"id": f"live{n}"}).json()["id"] for n in range(3)
            ]
            http.post("/v1/sessions", json={"id": "active", "activate": True})
            live.append("active")
            http.post("/v1/sessions", json={"id": "gone"})
            assert http.delete("/v1/sessions/gone").json() == {"ended": True}
            with client(port, token="wrong") as wrong:
                assert wrong.get("/v1/count").status_code == 401
        reader.wait_for(lambda events: any(e["event"] == "ended" for e in events), "the first end")
        assert served.stop(signum) == 0
        wait_until(lambda: reader.closed, "the stream to close")
    finally:
        reader.close()
    assert reader.error is None, reader.error  # closed properly, not cut
    ended = {
        e["data"]["session"]["id"]: e["data"]["session"]["end_reason"]
        for e in reader.events()
        if e["event"] == "ended"
    }
    assert ended == {"gone": "ended", **dict.fromkeys(live, "shutdown")}
    text = served.output
    assert "stopped" in text
    assert "Traceback" not in text
    assert "panicked" not in text
    assert TOKEN not in text


# starting: what fails, fails before "serving", in one line


def one_line_error(served: Served, status: int) -> str:
    assert served.wait_exit() == status
    text = served.output
    assert "serving" not in text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, text
    return errors[0]


def test_a_host_name_is_resolved_and_localhost_is_loopback(serve: Serve) -> None:
    port = free_port()
    served = serve("--host", "localhost", "--port", str(port))  # no token: loopback
    served.wait_ready(f"http://127.0.0.1:{port}")
    with httpx.Client(base_url=f"http://localhost:{port}", timeout=WAIT) as http:
        assert http.post("/v1/sessions", json={"id": "named"}).status_code == 201
    assert served.stop() == 0


def test_a_short_token_is_refused_at_start(serve: Serve) -> None:
    served = serve(env={"SESSIONHUB_TOKEN": "short-token"})  # 11 characters
    line = one_line_error(served, 2)
    assert "at least 16 characters" in line
    assert "short-token" not in served.output


@pytest.mark.parametrize(
    "store",
    ["redis://127.0.0.1:1/0", "sqlite:///no/such/directory/sessions.db"],
    ids=["redis-nobody-listens", "sqlite-unopenable"],
)
def test_a_dead_store_fails_before_serving_in_one_line(serve: Serve, store: str) -> None:
    served = serve("--store", store, "--port", str(free_port()))
    line = one_line_error(served, 1)
    assert store in line
    assert "cannot open the store" in line


def test_a_taken_grpc_port_fails_at_start_unless_grpc_is_off(serve: Serve) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        grpc_port = holder.getsockname()[1]
        served = serve("--port", str(free_port()), "--grpc-port", str(grpc_port))
        line = one_line_error(served, 1)
        assert f"127.0.0.1:{grpc_port}" in line
        assert "--no-grpc" in line
        port = free_port()
        served = serve(
            "--port",
            str(port),
            env={"SESSIONHUB_GRPC_PORT": str(grpc_port), "SESSIONHUB_NO_GRPC": "1"},
        )
        served.wait_ready(f"http://127.0.0.1:{port}")
        assert served.stop() == 0


def test_every_option_reads_its_sessionhub_variable_shown_in_help(serve: Serve) -> None:
    from sessionhub.cli import serve as command

    served = serve("--help")
    assert served.wait_exit() == 0
    text = " ".join(served.output.split())  # help wraps lines
    for param in command.params:
        long = next(name for name in param.opts if name.startswith("--"))
        variable = "SESSIONHUB_" + long[2:].replace("-", "_").upper()
        names = list(param.envvar) if isinstance(param.envvar, list) else [str(param.envvar)]
        assert names[0] == variable, long  # the rule first; a documented alias may follow
        for name in names:
            assert name in text, name


def test_repeatable_options_take_a_list_from_their_variable(serve: Serve) -> None:
    port = free_port()
    served = serve(
        env={
            "SESSIONHUB_PORT": str(port),
            "SESSIONHUB_UNIQUE_LABEL": "role, seat",
            "SESSIONHUB_ALLOW_ORIGIN": "http://a.example http://b.example",
            "SESSIONHUB_UNIQUE_LABELS": "misspelt",
        }
    )
    served.wait_ready(f"http://127.0.0.1:{port}")
    with client(port, token=None) as http:
        for label in ("role", "seat"):
            assert http.post("/v1/sessions", json={"labels": {label: "x"}}).status_code == 201
            assert http.post("/v1/sessions", json={"labels": {label: "x"}}).status_code == 409
        for origin in ("http://a.example", "http://b.example"):
            answer = http.get("/v1/count", headers={"Origin": origin})
            assert answer.headers["access-control-allow-origin"] == origin
        assert http.get("/v1/count", headers={"Origin": "http://c.example"}).status_code == 403
    assert served.stop() == 0
    assert "SESSIONHUB_UNIQUE_LABELS is not a sessionhub variable" in served.output


def test_a_bare_install_says_which_extra_to_install() -> None:
    """Without the server extra, `import click` fails: one line, status 2, no traceback."""
    blocked = "import sys; sys.modules['click'] = None; from sessionhub.__main__ import main; "
    done = subprocess.run(
        [sys.executable, "-c", blocked + "sys.exit(main(['ls']))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "sessionhub: the command needs the server extra (click is not installed): "
        "pip install 'sessionhub[server]'"
    ]


def sessionhub_command(*args: str) -> Result:
    """The `sessionhub` command, in this process (click's runner), without SESSIONHUB_*."""
    clean = {k: None for k in os.environ if k.startswith("SESSIONHUB_")}
    return CliRunner().invoke(cli, list(args), env=clean)


def test_the_cli_speaks_grpc_to_a_served_hub(serve: Serve) -> None:
    port, grpc_port = free_port(), free_port()
    served = serve(
        "--port", str(port), env={"SESSIONHUB_TOKEN": TOKEN, "SESSIONHUB_GRPC_PORT": str(grpc_port)}
    )
    served.wait_ready(f"http://127.0.0.1:{port}")
    grpc_url = f"grpc://127.0.0.1:{grpc_port}"
    wait_until(
        lambda: sessionhub_command("stats", "--url", grpc_url, "--token", TOKEN).exit_code == 0,
        "the gRPC port",
    )
    made = sessionhub_command("--url", grpc_url, "--token", TOKEN, "create", "--id", "via-grpc")
    assert made.exit_code == 0, made.output
    assert made.stdout.strip() == "via-grpc"
    listed = sessionhub_command("ls", "--url", grpc_url, "--token", TOKEN)
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["via-grpc"]
    gone = sessionhub_command("end", "via-grpc", "--url", grpc_url, "--token", TOKEN)
    assert (gone.exit_code, gone.stdout.split()) == (0, ["ended", "via-grpc"])
    again = sessionhub_command("end", "via-grpc", "--url", grpc_url, "--token", TOKEN)
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: not_found: session not live: via-grpc"
    assert served.stop() == 0


def test_allowed_hosts_and_origins_come_from_the_environment_too(serve: Serve) -> None:
    # The plural names are the documented ones; the singular follow SESSIONHUB_<OPTION>.
    port = free_port()
    served = serve(
        "--port",
        str(port),
        "--no-grpc",
        env={
            "SESSIONHUB_ALLOW_HOSTS": "hub.internal,hub.example",
            "SESSIONHUB_ALLOW_ORIGINS": "http://friend.example",
        },
    )
    url = f"http://127.0.0.1:{port}"
    served.wait_ready(url)
    with httpx.Client(base_url=url, timeout=WAIT) as http:
        assert http.get("/v1/count", headers={"Host": "hub.internal"}).status_code == 200
        assert http.get("/v1/count", headers={"Host": "hub.example"}).status_code == 200
        assert http.get("/v1/count", headers={"Host": "evil.example"}).status_code == 403
        friend = http.get("/v1/count", headers={"Origin": "http://friend.example"})
        assert friend.status_code == 200
        assert friend.headers["access-control-allow-origin"] == "http://friend.example"
        assert http.get("/v1/count", headers={"Origin": "http://evil.example"}).status_code == 403
