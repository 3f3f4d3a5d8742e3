"""The sessionhub pytest plugin (entry point ``sessionhub``): sessions as test fixtures.

Fixtures (all prefixed ``sessionhub_`` so they cannot collide with other plugins):

- ``sessionhub_url``: the server the run uses: ``--sessionhub-url`` / ``SESSIONHUB_URL``, or else a
  private ``sessionhub serve`` that the plugin starts on a free loopback port (memory store, random
  token) the first time a fixture needs it, and stops at the end of the run;
- ``sessionhub_hub``: a ``sessionhub.Client`` of that server (blocking, so it serves plain sync tests
  and async tests alike, whatever their event loop);
- ``sessionhub_async_hub``: an ``AsyncClient`` of it, per test, for async tests (pytest-asyncio);
- ``sessionhub_session``: a fresh session per test, ended at teardown; its ``ttl``
  (``--sessionhub-ttl``, default 60 s) ends it anyway if the run dies before teardown;
- ``sessionhub_suite_session``: one session for the whole run (promptfoo's beforeAll/afterAll),
  kept alive by each test's setup (idle timeout ``--sessionhub-ttl``) and ended after the last test;
- ``sessionhub_remote_session``: GripMock's ``WithSession(t.Name())`` for a remote service that
  binds requests to sessions by header (``HeaderSessionMiddleware``) over the run's server: a
  ``RemoteSession`` named after the test (unique under xdist), with the ``header`` to send
  (``--sessionhub-header``), its idle ``ttl`` (``--sessionhub-ttl``, refreshed by every request),
  ended at teardown, and ``verify.assert_called(kind, times)`` over its history.

Why sync fixtures: an embedded hub belongs to one event loop, while pytest-asyncio gives each test
its own loop and sync tests have none. A server reached over HTTP has neither problem, so the
run-wide fixtures are blocking clients of a server, and only ``sessionhub_async_hub`` is async.

pytest-xdist: workers given one server (``--sessionhub-url``) share ONE suite session. The controller
names it (``pytest-suite-<uuid>``) and hands the id to every worker; each worker creates it if it
is absent (the first wins, the others get ``DuplicateSession`` and read it), never ends it, and the
controller ends it once every worker has finished. That ordering is what makes it safe: a worker
that starts late can never find it already ended. Without a shared URL each worker has its own
private server, and so its own suite session, ended by that worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ._errors import DuplicateSession, SessionHubError, SessionNotFound, StoreUnavailable
from ._models import Session
from .client import AsyncClient, Client
from .middleware import DEFAULT_HEADER

__all__ = ["LocalServer", "RemoteSession", "Verify"]

_SUITE_ID = "sessionhub_suite_id"
_URL = "sessionhub_url"
_TOKEN = "sessionhub_token"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sessionhub", "sessionhub fixtures")
    group.addoption(
        "--sessionhub-url",
        default=os.environ.get("SESSIONHUB_URL") or None,
        help="sessionhub server for the fixtures (env SESSIONHUB_URL); a private one otherwise.",
    )
    group.addoption(
        "--sessionhub-token",
        default=os.environ.get("SESSIONHUB_TOKEN") or None,
        help="bearer token of that server (env SESSIONHUB_TOKEN).",
    )
    group.addoption(
        "--sessionhub-header",
        default=DEFAULT_HEADER,
        help=f"header that binds a request to its test's session (default {DEFAULT_HEADER}).",
    )
    group.addoption(
        "--sessionhub-ttl",
        type=float,
        default=60.0,
        help="seconds after which a test's session ends even if teardown never ran (default 60).",
    )


class LocalServer:
    """A private ``sessionhub serve`` on a free loopback port, for runs without a server URL.

    ``options`` go to ``sessionhub serve`` (``--retention``, ``--store``, ...); ``grpc=True`` also
    serves gRPC, on another free port (``grpc_url``).
    """

    def __init__(self, *options: str, grpc: bool = False) -> None:
        self.token = secrets.token_urlsafe(24)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_url = f"grpc://127.0.0.1:{_free_port()}" if grpc else None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        command = [sys.executable, "-m", "sessionhub", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *options]
        if self.grpc_url is None:
            command.append("--no-grpc")  # HTTP is all the plugin needs
        else:
            command += ["--grpc-port", self.grpc_url.rpartition(":")[2]]
        env = {**os.environ, "SESSIONHUB_TOKEN": self.token}  # not argv: other users see that
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        client = Client(self.url, token=self.token, timeout=1.0)  # not entered: that probes once
        with contextlib.closing(client):
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"sessionhub serve exited: {self._output()}")
                try:
                    client.health()
                    return
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        output = self._output()
                        self.stop()
                        raise RuntimeError(f"sessionhub serve did not start: {output}") from None
                    time.sleep(0.05)

    def _output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _RunState:
    """What one pytest process knows about the run's server and suite session."""

    url: str | None
    token: str | None
    ttl: float
    suite_id: str
    shared_suite: bool  # an xdist worker on a shared server: the controller ends the suite session
    has_workers: bool = False  # an xdist controller
    server: LocalServer | None = None
    suite_created: bool = False
    clients: list[Client] = field(default_factory=list)

    def target(self) -> tuple[str, str | None]:
        if self.url is None:
            self.server = LocalServer()
            self.server.wait_ready()
            self.url, self.token = self.server.url, self.server.token
        return self.url, self.token


_STATE = pytest.StashKey[_RunState]()


def pytest_configure(config: pytest.Config) -> None:
    worker: dict[str, Any] | None = getattr(config, "workerinput", None)
    url = config.getoption("--sessionhub-url")
    token = config.getoption("--sessionhub-token")
    ttl = config.getoption("--sessionhub-ttl")
    if not isinstance(ttl, float) or not ttl > 0:
        raise pytest.UsageError(f"--sessionhub-ttl must be a positive number, got {ttl!r}")
    suite_id = f"pytest-suite-{uuid.uuid4().hex}"
    if worker is not None and _SUITE_ID in worker:
        suite_id = worker[_SUITE_ID]
    config.stash[_STATE] = _RunState(
        url=url,
        token=token,
        ttl=ttl,
        suite_id=suite_id,
        shared_suite=worker is not None and url is not None,
    )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker gets the same suite session id."""
    state = node.config.stash[_STATE]
    state.has_workers = True
    node.workerinput[_SUITE_ID] = state.suite_id


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test keeps the suite session from idling out, once it exists in this process."""
    state = item.config.stash[_STATE]
    if state.suite_created and state.clients:
        with contextlib.suppress(SessionNotFound):
            state.clients[0].touch(state.suite_id)


@pytest.hookimpl(trylast=True)  # after the session-scoped fixtures' teardown, which use the clients
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    if state.has_workers and state.url is not None:
        with contextlib.suppress(SessionHubError), _client(state.url, state.token) as client:
            client.end(state.suite_id)  # False if no worker ever created it
    for client in state.clients:
        client.close()
    if state.server is not None:
        state.server.stop()


def _client(url: str, token: str | None) -> Client:
    return Client(url, token=token)


@pytest.fixture(scope="session")
def sessionhub_url(pytestconfig: pytest.Config) -> str:
    """The URL of the sessionhub server this run uses."""
    url, _ = pytestconfig.stash[_STATE].target()
    return url


@pytest.fixture(scope="session")
def sessionhub_hub(pytestconfig: pytest.Config, sessionhub_url: str) -> Client:
    """A blocking ``sessionhub.Client`` of the run's server (the hub's verbs, same exceptions)."""
    state = pytestconfig.stash[_STATE]
    client = _client(sessionhub_url, state.token)
    state.clients.append(client)
    return client


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - without pytest-asyncio there are no async tests to serve
    pass
else:

    @pytest_asyncio.fixture
    async def sessionhub_async_hub(
        pytestconfig: pytest.Config, sessionhub_url: str
    ) -> AsyncIterator[AsyncClient]:
        """An ``AsyncClient`` of the run's server, for this test's event loop."""
        async with AsyncClient(sessionhub_url, token=pytestconfig.stash[_STATE].token) as client:
            yield client


@pytest.fixture
def sessionhub_session(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, sessionhub_hub: Client
) -> Iterator[Session]:
    """A fresh, active session for this test only, ended at teardown (``ttl`` as safety net)."""
    session = sessionhub_hub.create(
        labels={"pytest": "test"},
        details={"test": request.node.nodeid},
        ttl=pytestconfig.stash[_STATE].ttl,
        activate=True,
    )
    yield session
    sessionhub_hub.end(session.id)


@pytest.fixture(scope="session")
def sessionhub_suite_session(
    pytestconfig: pytest.Config, sessionhub_hub: Client
) -> Iterator[Session]:
    """One active session shared by every test of the run (and every xdist worker on one server)."""
    state = pytestconfig.stash[_STATE]
    try:
        session = sessionhub_hub.create(
            state.suite_id,
            labels={"pytest": "suite"},
            idle_timeout=state.ttl,
            activate=True,
        )
    except DuplicateSession:  # another worker created it first
        session = sessionhub_hub.get(state.suite_id)
    state.suite_created = True
    yield session
    if not state.shared_suite:
        sessionhub_hub.end(state.suite_id)


class Verify:
    """Call counts of one session, from its history (GripMock's ``Verify().Method(...)``)."""

    def __init__(self, hub: Client, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id

    def calls(self, kind: str) -> int:
        """How many history records of ``kind`` the session holds."""
        return self.hub.history(self.session_id).count(kind)

    def assert_called(self, kind: str, times: int) -> None:
        """Fail the test unless the session recorded exactly ``times`` records of ``kind``."""
        calls = self.calls(kind)
        if calls != times:
            raise AssertionError(
                f"session {self.session_id}: expected {kind} to be called {times} time(s), "
                f"it was called {calls} time(s)"
            )


@dataclass(frozen=True)
class RemoteSession:
    """A test's session on a shared remote service: send ``headers`` (or ``metadata`` over gRPC)
    with every request; the service's ``HeaderSessionMiddleware`` binds them to it."""

    id: str
    header: str
    ttl: float
    hub: Client

    @property
    def headers(self) -> dict[str, str]:
        return {self.header: self.id}

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return ((self.header.lower(), self.id),)  # gRPC metadata keys are lowercase

    @property
    def verify(self) -> Verify:
        return Verify(self.hub, self.id)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\[\]=@+-]")


def remote_session_id(nodeid: str) -> str:
    """The test's name, made a valid session id, and a random suffix: two runs (or two xdist
    workers, or a rerun) never share one."""
    return f"{_UNSAFE.sub('_', nodeid)[:180]}-{secrets.token_hex(6)}"


@pytest.fixture
def sessionhub_remote_session(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, sessionhub_hub: Client
) -> Iterator[RemoteSession]:
    """This test's session for a remote service shared by the run, ended at teardown."""
    ttl = pytestconfig.stash[_STATE].ttl
    session = sessionhub_hub.create(
        remote_session_id(request.node.nodeid),
        labels={"pytest": "remote"},
        details={"test": request.node.nodeid},
        idle_timeout=ttl,  # GripMock's idle TTL: every request bound to it refreshes it
        activate=True,
    )
    header = pytestconfig.getoption("--sessionhub-header")
    yield RemoteSession(session.id, header, ttl, sessionhub_hub)
    sessionhub_hub.end(session.id)
