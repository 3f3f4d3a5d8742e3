"""sessionhub as the session layer of a promptfoo evaluation suite (promptfoo 0.118, seed 004).

promptfoo runs every Python hook and every Python provider call in a process of its own, so
nothing here keeps state in memory between calls: each call opens the hub, does its work and
closes it. The sessions live where ``SESSIONHUB_URL`` says (a server, ``http://`` or ``grpc://``,
or any store URL); with nothing set, in an SQLite file in the per-user cache folder
(``$XDG_CACHE_HOME/sessionhub/promptfoo.db``, else ``~/.cache/...``), which every process of every
eval on the machine shares with no server running.

    # promptfooconfig.yaml                 # hooks.py: from sessionhub.integrations.promptfoo
    extensions:                            #           import extension_hook
      - file://hooks.py:extension_hook
    providers:
      - file://provider.py                 # its call_api decorated with @session_aware

- ``beforeAll`` creates the suite session (namespace ``promptfoo``, labels ``promptfoo=suite``,
  ``suite`` and ``run``, a ttl as safety net) and hands its id to every test in the vars
  ``sessionhub_suite`` and ``sessionhub_session``; with ``SESSIONHUB_PROMPTFOO_POOL=N`` it also
  creates N pool sessions (``sessionhub_pool``) that provider calls lease one at a time.
- ``beforeEach`` / ``afterEach``, with ``SESSIONHUB_PROMPTFOO_PER_TEST=1``: a child session per
  test, ended with the test's outcome (``passed``, ``failed`` or ``error``) as its end reason.
- ``afterAll`` writes the statistics into the suite session's details, prints them and ends it
  (its children with it).
- ``@session_aware`` over a provider's ``call_api`` records each call in the session's history
  (kind ``call``) and counters, or answers promptfoo's error when the session is gone.

A hook never fails the eval because sessionhub is away: it writes one line to stderr (promptfoo
shows a Python hook's stderr, and logs its stdout only with ``--verbose``) and the eval goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from .._connect import connect
from .._errors import SessionHubError, SessionNotFound, StoreUnavailable, VersionConflict

if TYPE_CHECKING:
    from .._hub import SessionHub
    from ..client import AsyncClient
    from ..grpc import GrpcClient

    Hub: TypeAlias = SessionHub | AsyncClient | GrpcClient

__all__ = [
    "NAMESPACE",
    "NO_SESSION",
    "POOL_VAR",
    "SESSION_VAR",
    "SUITE_VAR",
    "ExtensionHook",
    "Lease",
    "SessionPool",
    "Settings",
    "default_db_path",
    "extension_hook",
    "hub_url",
    "open_hub",
    "session_aware",
]

NAMESPACE = "promptfoo"
SUITE_VAR = "sessionhub_suite"
SESSION_VAR = "sessionhub_session"
POOL_VAR = "sessionhub_pool"
RUN_VAR = "sessionhub_run"
NO_SESSION = "No active session found. Make sure the beforeAll hook ran successfully."
_TEXT_LIMIT = 8000  # characters of prompt and output kept per call (history records are bounded)

Context: TypeAlias = dict[str, Any]
Response: TypeAlias = dict[str, Any]
CallApi: TypeAlias = Callable[[str, Any, Any], "Response | Awaitable[Response]"]


# where the sessions live


def default_db_path(env: Mapping[str, str] = os.environ) -> Path:
    """The per-user SQLite file used when ``SESSIONHUB_URL`` is not set."""
    base = env.get("XDG_CACHE_HOME") or env.get("LOCALAPPDATA")
    return Path(base or Path.home() / ".cache") / "sessionhub" / "promptfoo.db"


def hub_url(env: Mapping[str, str] = os.environ) -> str:
    """``SESSIONHUB_URL``, or the per-user SQLite file's store URL."""
    return env.get("SESSIONHUB_URL") or f"sqlite:///{default_db_path(env).absolute()}"


@contextlib.asynccontextmanager
async def open_hub(url: str | None = None) -> AsyncIterator[Hub]:
    """The hub at ``url`` (default ``hub_url()``), opened for one call and closed after it."""
    url = url or hub_url()
    if url.startswith("sqlite:"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    async with connect(url) as hub:
        yield hub


def _shown(url: str) -> str:
    """The URL without its credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


# settings


@dataclass(frozen=True)
class Settings:
    """How the hooks and providers use sessions; ``from_env`` reads them in each process.

    ``ttl``: seconds after which every session of the eval ends even if ``afterAll`` never runs
    (``SESSIONHUB_PROMPTFOO_TTL``, default 3600). ``per_test``: a child session per test
    (``SESSIONHUB_PROMPTFOO_PER_TEST=1``). ``pool_size``: sessions leased to provider calls one
    at a time (``SESSIONHUB_PROMPTFOO_POOL``, default 0: no pool). ``lease_wait``: seconds a call
    waits for a free pool session (``SESSIONHUB_PROMPTFOO_LEASE_WAIT``, default 60).
    ``lease_ttl``: seconds after which a lease whose holder died may be taken (default 600).
    ``retention``: seconds the eval's sessions stay readable after they end, with their
    statistics, history and outcome (``SESSIONHUB_PROMPTFOO_RETENTION``, default 86400).
    """

    ttl: float = 3600.0
    retention: float = 86400.0
    per_test: bool = False
    pool_size: int = 0
    lease_wait: float = 60.0
    lease_ttl: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def number(name: str, default: float) -> float:
            raw = env.get(f"SESSIONHUB_PROMPTFOO_{name}")
            try:
                value = default if not raw else float(raw)
            except ValueError:
                value = -1.0
            if not (value > 0 or (value == 0 and name == "POOL")):  # no pool: 0
                raise ValueError(
                    f"SESSIONHUB_PROMPTFOO_{name} must be a positive number, got {raw!r}"
                )
            return value

        per_test = env.get("SESSIONHUB_PROMPTFOO_PER_TEST", "").lower() in ("1", "true", "yes")
        return cls(
            ttl=number("TTL", cls.ttl),
            per_test=per_test,
            pool_size=int(number("POOL", cls.pool_size)),
            lease_wait=number("LEASE_WAIT", cls.lease_wait),
            lease_ttl=number("LEASE_TTL", cls.lease_ttl),
            retention=number("RETENTION", cls.retention),
        )


# session pooling


@dataclass(frozen=True)
class Lease:
    """One pool session held by one call: ``version`` is the lease entry this call wrote."""

    session_id: str
    holder: str
    version: int


class SessionPool:
    """N sessions made up front and leased one call at a time (seed 004's ``SessionPool``).

    Each member holds its lease in its own data key ``lease``; taking it is a compare-and-set on
    that entry's version, so two processes can never both take one member, whatever store or
    server the hub is. A lease whose holder died is taken over after ``lease_ttl`` seconds.
    """

    KEY = "lease"
    LABEL = "pool"

    def __init__(
        self, hub: Hub, pool_id: str, *, wait: float = 60.0, lease_ttl: float = 600.0
    ) -> None:
        self.hub = hub
        self.pool_id = pool_id
        self.wait = wait
        self.lease_ttl = lease_ttl

    @classmethod
    async def create(
        cls,
        hub: Hub,
        pool_id: str,
        size: int,
        *,
        labels: Mapping[str, str] | None = None,
        ttl: float | None = None,
        retention: float | None = None,
    ) -> list[str]:
        """Make ``size`` free members under the session ``pool_id``; their ids."""
        members = []
        for index in range(size):
            member = await hub.create(
                namespace=NAMESPACE,
                parent_id=pool_id,
                labels={**(labels or {}), NAMESPACE: cls.LABEL},
                details={"pool_member": index},
                idle_timeout=None,
                ttl=ttl,
                retention=retention,
                activate=True,
            )
            await hub.data(member.id).set(cls.KEY, {"holder": None})
            members.append(member.id)
        return members

    async def members(self) -> list[str]:
        page = await self.hub.find(parent_id=self.pool_id, labels={NAMESPACE: self.LABEL})
        return [member.id for member in page.items]

    async def acquire(self) -> Lease:
        """Take a free member, waiting up to ``wait`` seconds; ``TimeoutError`` after that, and
        ``SessionNotFound`` when the pool has no live member (it ended)."""
        holder = secrets.token_hex(8)
        deadline = time.monotonic() + self.wait
        while True:
            members = await self.members()
            if not members:
                raise SessionNotFound(self.pool_id)
            start = secrets.randbelow(len(members))  # spread concurrent callers over the pool
            for member in members[start:] + members[:start]:
                lease = await self._take(member, holder)
                if lease is not None:
                    return lease
            if time.monotonic() > deadline:
                raise TimeoutError(f"no free session in pool {self.pool_id} after {self.wait} s")
            await asyncio.sleep(0.02 + secrets.randbelow(50) / 1000)

    async def _take(self, member: str, holder: str) -> Lease | None:
        data = self.hub.data(member)
        try:
            entry = await data.entry(self.KEY)
        except SessionNotFound:
            return None  # ended meanwhile
        if entry is None:
            return None
        value = entry.value if isinstance(entry.value, dict) else {}
        if value.get("holder") is not None and value.get("until", 0) > time.time():
            return None
        claim = {"holder": holder, "until": time.time() + self.lease_ttl}
        try:
            taken = await data.set(self.KEY, claim, expected_version=entry.version)
        except (VersionConflict, SessionNotFound):
            return None  # another call took it first
        return Lease(member, holder, taken.version)

    async def release(self, lease: Lease) -> bool:
        """Free the member; ``False`` if the lease had been taken over (or the pool ended)."""
        try:
            await self.hub.data(lease.session_id).set(
                self.KEY, {"holder": None}, expected_version=lease.version
            )
        except (VersionConflict, SessionNotFound):
            return False
        return True

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        lease = await self.acquire()
        try:
            yield lease
        finally:
            await self.release(lease)


# the extension hook


class ExtensionHook:
    """promptfoo's ``extensions:`` entry point; ``extension_hook`` is one with ``from_env``
    settings. Make your own for other settings: ``hook = ExtensionHook(Settings(per_test=True))``.
    """

    def __init__(self, settings: Settings | None = None, *, url: str | None = None) -> None:
        self.settings = settings
        self.url = url

    def __call__(self, hook_name: str, context: Context) -> Context | None:
        handler = {
            "beforeAll": self._before_all,
            "beforeEach": self._before_each,
            "afterEach": self._after_each,
            "afterAll": self._after_all,
        }.get(hook_name)
        if handler is None:
            return None
        url = self.url or hub_url()
        try:
            return asyncio.run(handler(url, context or {}))
        except (SessionHubError, OSError) as exc:
            what = "is unavailable" if isinstance(exc, (StoreUnavailable, OSError)) else "refused"
            _say(
                f"promptfoo {hook_name} hook: sessionhub at {_shown(url)} {what} "
                f"({type(exc).__name__}: {_scrubbed(exc, url)}); the eval goes on without it"
            )
            return None

    def _settings(self) -> Settings:
        return self.settings or Settings.from_env()

    async def _before_all(self, url: str, context: Context) -> Context:
        settings = self._settings()
        suite: dict[str, Any] = dict(context.get("suite") or {})
        description = str(suite.get("description") or "promptfoo eval")
        tests = suite.get("tests")
        tests = tests if isinstance(tests, list) else []
        run = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        labels = {NAMESPACE: "suite", "suite": description[:256], "run": run}
        async with open_hub(url) as hub:
            session = await hub.create(
                namespace=NAMESPACE,
                labels=labels,
                details={"description": description, "tests": len(tests)},
                idle_timeout=None,
                ttl=settings.ttl,
                retention=settings.retention,
                activate=True,
            )
            given = {SUITE_VAR: session.id, SESSION_VAR: session.id, RUN_VAR: run}
            if settings.pool_size > 0:
                await SessionPool.create(
                    hub,
                    session.id,
                    settings.pool_size,
                    labels={"run": run},
                    ttl=settings.ttl,
                    retention=settings.retention,
                )
                given[POOL_VAR] = session.id
        _say(f"suite session {session.id} created in {_shown(url)} (run {run}, {len(tests)} tests)")
        default = suite.get("defaultTest")
        if default is None or isinstance(default, dict):
            suite["defaultTest"] = _with_vars(default or {}, given)
        suite["tests"] = [_with_vars(test, given) for test in tests]
        return {**context, "suite": suite}

    async def _before_each(self, url: str, context: Context) -> Context | None:
        settings = self._settings()
        if not settings.per_test:
            return None
        test: dict[str, Any] = dict(context.get("test") or {})
        given = test.get("vars") or {}
        suite_id = given.get(SUITE_VAR)
        if not isinstance(suite_id, str):
            return None  # beforeAll did not make a session: the provider says so
        labels = {NAMESPACE: "test"}
        if isinstance(given.get(RUN_VAR), str):
            labels["run"] = given[RUN_VAR]
        async with open_hub(url) as hub:
            child = await hub.create(
                namespace=NAMESPACE,
                parent_id=suite_id,
                labels=labels,
                details={"description": str(test.get("description") or "")},
                idle_timeout=None,
                ttl=settings.ttl,
                retention=settings.retention,
                activate=True,
            )
        return {**context, "test": _with_vars(test, {SESSION_VAR: child.id})}

    async def _after_each(self, url: str, context: Context) -> None:
        given = (context.get("test") or {}).get("vars") or {}
        session_id, suite_id = given.get(SESSION_VAR), given.get(SUITE_VAR)
        if not isinstance(session_id, str) or session_id == suite_id:
            return  # no per-test session
        outcome = _outcome(context.get("result") or {})
        async with open_hub(url) as hub:
            with contextlib.suppress(SessionNotFound):
                await hub.update(session_id, details={"outcome": outcome})
            await hub.end(session_id, outcome)

    async def _after_all(self, url: str, context: Context) -> None:
        suite_id = _suite_id(context.get("suite") or {})
        if suite_id is None:
            return
        async with open_hub(url) as hub:
            try:
                session = await hub.get(suite_id)
            except SessionNotFound:
                session = None
            if session is None or not session.live:  # its ttl ran out, or someone ended it
                _say(f"promptfoo afterAll hook: the suite session {suite_id} had already ended")
                return
            stats = _statistics(context, session.counters, time.time() - session.created_at)
            await hub.update(suite_id, details={"statistics": stats})
            await hub.end(suite_id)
        _say_statistics(suite_id, stats)


extension_hook = ExtensionHook()


def _with_vars(test: Any, given: Mapping[str, str]) -> Any:
    if not isinstance(test, dict):
        return test  # a file:// reference: its vars come from defaultTest
    current = test.get("vars")
    if current is not None and not isinstance(current, dict):
        return test
    return {**test, "vars": {**(current or {}), **given}}


def _suite_id(suite: Mapping[str, Any]) -> str | None:
    candidates = [suite.get("defaultTest"), *(suite.get("tests") or [])]
    for test in candidates:
        if isinstance(test, dict) and isinstance(test.get("vars"), dict):
            found = test["vars"].get(SUITE_VAR)
            if isinstance(found, str):
                return found
    return None


def _outcome(result: Mapping[str, Any]) -> str:
    if result.get("success"):
        return "passed"
    return "error" if result.get("failureReason") == 2 else "failed"  # 2: ResultFailureReason.ERROR


def _statistics(context: Context, counters: Mapping[str, int], seconds: float) -> dict[str, Any]:
    """Outcomes from the prompts' metrics (present whether or not promptfoo writes the eval to its
    database), provider calls from the suite session's counters."""
    totals = {"testPassCount": 0, "testFailCount": 0, "testErrorCount": 0}
    for prompt in context.get("prompts") or []:
        metrics = prompt.get("metrics") or {} if isinstance(prompt, dict) else {}
        for name in totals:
            totals[name] += int(metrics.get(name) or 0)
    passes, failures, errors = totals.values()
    return {
        "tests": passes + failures + errors,
        "passes": passes,
        "failures": failures,
        "errors": errors,
        "provider_calls": counters.get("calls", 0),
        "provider_errors": counters.get("call_errors", 0),
        "duration_ms": round(seconds * 1000),
    }


def _scrubbed(error: BaseException, url: str) -> str:
    """The error's message, without the credentials of ``url`` if it repeats it."""
    return str(error).replace(url, _shown(url))


def _say(line: str) -> None:
    print(f"sessionhub: {line}", file=sys.stderr, flush=True)


def _say_statistics(suite_id: str, stats: Mapping[str, Any]) -> None:
    lines = [
        "=== sessionhub: promptfoo suite session closed ===",
        f"✓ Session: {suite_id}",
        f"  Tests: {stats['tests']} (passed {stats['passes']}, failed {stats['failures']}, "
        f"errors {stats['errors']})",
        f"  Provider calls: {stats['provider_calls']}",
        f"  Duration: {stats['duration_ms']}ms",
        "==================================================",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


# the session-aware provider


def session_aware(call_api: CallApi) -> Callable[[str, Any, Any], Response]:
    """Make a promptfoo Python provider's ``call_api`` session-aware: ``@session_aware``.

    Each call runs inside the session the hooks put in its vars (or a leased pool session), with
    that session's id in ``context["vars"]["sessionhub_session"]``; it is tracked as a request,
    recorded as one history record of kind ``call`` (prompt, output, token usage, latency, error)
    and counted (``calls``, ``call_errors``, ``tokens``, on the session and on the suite session).
    Without a live session the call does not run and promptfoo gets ``{"error": NO_SESSION}``.
    ``call_api`` may be sync or async.
    """

    @functools.wraps(call_api)
    def wrapper(prompt: str, options: Any, context: Any) -> Response:
        return asyncio.run(_call(call_api, prompt, options, context if context else {}))

    return wrapper


async def _call(call_api: CallApi, prompt: str, options: Any, context: Context) -> Response:
    given = context.get("vars")
    if not isinstance(given, dict) or not isinstance(given.get(SESSION_VAR), str):
        return {"error": NO_SESSION}
    url = hub_url()
    try:
        async with open_hub(url) as hub:
            pool_id = given.get(POOL_VAR)
            if not isinstance(pool_id, str):
                return await _recorded(hub, given[SESSION_VAR], call_api, prompt, options, context)
            settings = Settings.from_env()
            pool = SessionPool(hub, pool_id, wait=settings.lease_wait, lease_ttl=settings.lease_ttl)
            async with pool.lease() as lease:
                return await _recorded(hub, lease.session_id, call_api, prompt, options, context)
    except SessionNotFound:
        return {"error": NO_SESSION}
    except TimeoutError as exc:
        return {"error": str(exc)}
    except (SessionHubError, OSError) as exc:
        return {"error": f"sessionhub at {_shown(url)} is unavailable: {_scrubbed(exc, url)}"}


async def _recorded(
    hub: Hub, session_id: str, call_api: CallApi, prompt: str, options: Any, context: Context
) -> Response:
    given: dict[str, Any] = context["vars"]
    given[SESSION_VAR] = session_id
    async with hub.track_request(session_id):
        started = time.time()
        clock = time.perf_counter()
        try:
            response = await _invoke(call_api, prompt, options, context)
        except Exception as exc:
            response = {"error": f"{type(exc).__name__}: {exc}"}
            raised: Exception | None = exc
        else:
            raised = None
        latency_ms = round((time.perf_counter() - clock) * 1000, 3)
        await _record(hub, session_id, context, prompt, response, started, latency_ms)
    if raised is not None:
        raise raised
    return response


async def _invoke(call_api: CallApi, prompt: str, options: Any, context: Context) -> Response:
    if inspect.iscoroutinefunction(call_api):
        result: Any = await call_api(prompt, options, context)
    else:
        result = await asyncio.to_thread(call_api, prompt, options, context)
    if inspect.isawaitable(result):
        result = await result
    return result if isinstance(result, dict) else {"output": result}


async def _record(
    hub: Hub,
    session_id: str,
    context: Context,
    prompt: str,
    response: Response,
    started: float,
    latency_ms: float,
) -> None:
    error = response.get("error")
    usage = response.get("tokenUsage")
    output = response.get("output")
    await hub.history(session_id).append(
        "call",
        {
            "vars": _small(_user_vars(context)),
            "prompt": _bounded(prompt),
            "output": _bounded(output if isinstance(output, str) else _json_text(output)),
            "error": None if error in (None, "") else _bounded(str(error)),
            "token_usage": usage if isinstance(usage, dict) else None,
            "latency_ms": latency_ms,
            "started_at": started,
            "ended_at": started + latency_ms / 1000,
        },
    )
    tokens = usage.get("total") if isinstance(usage, dict) else None
    suite_id = context["vars"].get(SUITE_VAR)
    for target in {session_id, suite_id if isinstance(suite_id, str) else session_id}:
        with contextlib.suppress(SessionNotFound):
            await hub.incr(target, "calls")
            if error not in (None, ""):
                await hub.incr(target, "call_errors")
            if isinstance(tokens, int) and tokens > 0:
                await hub.incr(target, "tokens", tokens)


def _user_vars(context: Context) -> dict[str, Any]:
    """The test's own vars, without the ones the hooks added."""
    ours = (SUITE_VAR, SESSION_VAR, POOL_VAR, RUN_VAR)
    return {key: value for key, value in context["vars"].items() if key not in ours}


def _small(value: dict[str, Any]) -> dict[str, Any] | str | None:
    """``value`` itself when its JSON is short, else that JSON cut short."""
    text = _json_text(value)
    return value if text is None or len(text) <= _TEXT_LIMIT else _bounded(text)


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= _TEXT_LIMIT:
        return text
    return text[:_TEXT_LIMIT] + f"… ({len(text) - _TEXT_LIMIT} more characters)"


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)
