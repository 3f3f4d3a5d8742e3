"""The CLI commands that talk to a running server: ``ls``, ``get``, ``create``, ``end``, ``watch``,
``stats``. Each is a thin use of the client ``sessionhub.connect`` gives for ``--url`` (HTTP or
gRPC); ``--json`` prints machine-readable output, otherwise plain aligned tables. ``cli.py`` adds
them to the ``sessionhub`` group with ``register``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from click.core import ParameterSource

from ._connect import connect
from ._errors import SessionHubError
from ._hub import DEFAULT, SessionHub
from ._metrics import MetricsSnapshot
from ._models import EventKind, Page, Session, SessionEvent
from .client import AsyncClient
from .client._calls import DEFAULT_URL

if TYPE_CHECKING:
    from .grpc import GrpcClient

__all__ = [
    "COMMANDS",
    "client_options",
    "env_name",
    "option",
    "register",
    "remember_client_options",
]

P = ParamSpec("P")
R = TypeVar("R")
FC = TypeVar("FC", bound=Callable[..., Any])

_SERVER_SCHEMES = ("http://", "https://", "grpc://", "grpcs://")


def env_name(option: str) -> str:
    """The rule for every option: ``--max-sessions`` reads ``SESSIONHUB_MAX_SESSIONS``."""
    return "SESSIONHUB_" + option.lstrip("-").split("/")[0].replace("-", "_").upper()


def option(*decls: str, also_env: Sequence[str] = (), **attrs: Any) -> Callable[[FC], FC]:
    """``click.option`` whose environment variable follows ``env_name`` and shows in --help;
    ``also_env`` are further names it answers to (the first one set wins)."""
    long = next(d for d in decls if d.startswith("--"))
    envvar = [env_name(long), *also_env] if also_env else env_name(long)
    return click.option(*decls, envvar=envvar, show_envvar=True, **attrs)


# shared options and output

_CLIENT_OPTIONS = ("url", "token", "timeout", "as_json")


def _server_options(command: Callable[P, R]) -> Callable[P, R]:
    """``--url``, ``--token``, ``--timeout`` and ``--json``, for every command."""
    for decorator in reversed(
        (
            option(
                "--url",
                default=DEFAULT_URL,
                show_default=True,
                help="Server URL: http(s)://host:port, or grpc(s)://host:port for gRPC.",
            ),
            option("--token", default=None, help="Bearer token."),
            option(
                "--timeout", type=float, default=10.0, show_default=True, help="Seconds per call."
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables."),
        )
    ):
        command = decorator(command)
    return _after_group_options(command)


def client_options(group: FC) -> FC:
    """The same options on the ``sessionhub`` group, so that they may come before the command
    (``sessionhub --url URL ls``); the command's own, when given, win."""
    for decorator in reversed(
        (
            click.option("--url", default=None, help="As the commands' --url."),
            click.option("--token", default=None, help="As the commands' --token."),
            click.option("--timeout", type=float, default=None, help="As the commands' --timeout."),
            click.option("--json", "as_json", is_flag=True, help="As the commands' --json."),
        )
    ):
        group = decorator(group)
    return group


def remember_client_options(ctx: click.Context, given: dict[str, Any]) -> None:
    """Keep what the group was given for its command (see ``client_options``)."""
    ctx.obj = {name: value for name, value in given.items() if value not in (None, False)}


def _after_group_options(command: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = click.get_current_context()
        before = ctx.parent.obj if ctx.parent is not None else None
        for name, value in (before or {}).items():
            if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
                kwargs[name] = value
        return command(*args, **kwargs)

    return run


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A sessionhub error becomes one line, ``error: <code>: <message>``, on stderr and exit
    status 1; an answer that is not sessionhub's says so in one line too."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SessionHubError as exc:
            _exit_with(_error_line(exc), 1)
        except (msgspec.DecodeError, msgspec.ValidationError):
            url = click.get_current_context().params.get("url")
            _exit_with(f"error: the server at {url} does not answer as a sessionhub server", 1)

    return run


def _exit_with(line: str, status: int) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(status)


def _error_line(exc: SessionHubError) -> str:
    if type(exc) is not SessionHubError:  # a sessionhub error the server (or client) named
        return f"error: {exc.code}: {_first_line(exc.message)}"
    # an answer that was no sessionhub error: "HTTP 404 from <url>: <whatever it sent>"
    status, sep, _ = exc.message.partition(": ")
    if exc.message.startswith("HTTP ") and sep:
        return f"error: not a sessionhub server? {status}"
    return f"error: {_first_line(exc.message)}"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[:limit] + "..."


def _connect(url: str, token: str | None, timeout: float) -> AsyncClient | GrpcClient:
    """The client of ``url``: HTTP(S), or gRPC with the grpc extra."""
    if not url.startswith(_SERVER_SCHEMES):
        raise click.BadParameter(
            f"{url!r} is not a server URL (http://, https://, grpc:// or grpcs://)",
            param_hint="'--url'",
        )
    try:
        client = connect(url, token=token, timeout=timeout)
    except ImportError:
        _exit_with("error: grpc:// URLs need the grpc extra: pip install 'sessionhub[grpc]'", 2)
    assert not isinstance(client, SessionHub)  # a server URL gives a client
    return client


def _call(url: str, token: str | None, timeout: float, work: Callable[[Any], Awaitable[R]]) -> R:
    """Run ``work(client)`` with a client of the server at ``url``; its result."""

    async def main() -> R:
        async with _connect(url, token, timeout) as client:
            return await work(client)

    return asyncio.run(main())


def _echo_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain text columns, left aligned, two spaces apart."""
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _pairs(mapping: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def _parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=what)
        pairs[key] = item
    return pairs


def _parse_filters(values: Sequence[str]) -> dict[str, str]:
    """Label filters are ``KEY:VALUE``, as over HTTP (``?label=role:auth``)."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition(":")
        if not sep or not key:
            hint = " (label filters are KEY:VALUE, as over HTTP)" if "=" in value else ""
            raise click.BadParameter(f"{value!r} is not KEY:VALUE{hint}", param_hint="'--label'")
        pairs[key] = item
    return pairs


def _session_rows(sessions: Sequence[Session], now: float) -> list[list[str]]:
    return [
        [
            s.id,
            s.namespace,
            s.state,
            s.user_id or "-",
            str(s.active_requests),
            _duration(None if s.expires_at is None else s.expires_at - now),
            _pairs(s.labels),
        ]
        for s in sessions
    ]


_SESSION_HEADERS = ("ID", "NAMESPACE", "STATE", "USER", "REQUESTS", "EXPIRES IN", "LABELS")


def _show_session(session: Session) -> str:
    rows = [
        ("id", session.id),
        ("namespace", session.namespace),
        ("state", session.state),
        ("user_id", session.user_id or "-"),
        ("parent_id", session.parent_id or "-"),
        ("labels", _pairs(session.labels)),
        ("details", msgspec.json.encode(session.details).decode()),
        ("counters", _pairs(session.counters)),
        ("active_requests", str(session.active_requests)),
        ("created_at", _when(session.created_at)),
        ("last_activity_at", _when(session.last_activity_at)),
        ("expires_at", _when(session.expires_at)),
        ("idle_timeout", _duration(session.idle_timeout)),
        ("ttl", _duration(session.ttl)),
        ("ended_at", _when(session.ended_at)),
        ("end_reason", session.end_reason or "-"),
        ("version", str(session.version)),
    ]
    return table(("FIELD", "VALUE"), rows)


# commands


@click.command("ls")
@_server_options
@click.option("--namespace", "-n", default=None, help="Only this namespace.")
@click.option("--user", "user_id", default=None, help="Only this user's sessions.")
@click.option("--parent", "parent_id", default=None, help="Only children of this session.")
@click.option("--state", default=None, help="Only sessions in this state.")
@click.option(
    "--label", "-l", "labels", multiple=True, help="KEY:VALUE; repeat to require several."
)
@click.option("--all", "include_ended", is_flag=True, help="Include ended sessions still retained.")
@click.option("--limit", default=50, show_default=True, help="Sessions per page.")
@click.option("--cursor", default=None, help="Continue a listing (printed after a full page).")
@_reports_errors
def ls_command(
    url: str,
    token: str | None,
    timeout: float,
    as_json: bool,
    namespace: str | None,
    user_id: str | None,
    parent_id: str | None,
    state: str | None,
    labels: tuple[str, ...],
    include_ended: bool,
    limit: int,
    cursor: str | None,
) -> None:
    """List sessions (live ones unless --all), one page at a time."""
    filters = _parse_filters(labels) or None
    page: Page = _call(
        url,
        token,
        timeout,
        lambda client: client.find(
            namespace=namespace,
            user_id=user_id,
            parent_id=parent_id,
            state=state,
            labels=filters,
            include_ended=include_ended,
            limit=limit,
            cursor=cursor,
        ),
    )
    if as_json:
        _echo_json(page)
        return
    click.echo(table(_SESSION_HEADERS, _session_rows(page.items, time.time())))
    if page.cursor is not None:
        click.echo(f"more: --cursor {page.cursor}")


@click.command("get")
@_server_options
@click.argument("session_id")
@_reports_errors
def get_command(
    url: str, token: str | None, timeout: float, as_json: bool, session_id: str
) -> None:
    """Show one session."""
    session: Session = _call(url, token, timeout, lambda client: client.get(session_id))
    click.echo(msgspec.json.encode(session).decode() if as_json else _show_session(session))


@click.command("create")
@_server_options
@click.option("--id", "session_id", default=None, help="Choose the id (allocated otherwise).")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.option("--user", "user_id", default=None, help="Owner.")
@click.option("--parent", "parent_id", default=None, help="Parent session.")
@click.option("--label", "-l", "labels", multiple=True, help="KEY=VALUE; repeatable.")
@click.option("--detail", "-d", "details", multiple=True, help="KEY=VALUE (a string); repeatable.")
@click.option("--idle-timeout", type=float, default=None, help="Seconds (server default if unset).")
@click.option("--ttl", type=float, default=None, help="Seconds of whole life (server default).")
@click.option("--activate", is_flag=True, help="Walk the lifecycle to its active state.")
@_reports_errors
def create_command(
    url: str,
    token: str | None,
    timeout: float,
    as_json: bool,
    session_id: str | None,
    namespace: str,
    user_id: str | None,
    parent_id: str | None,
    labels: tuple[str, ...],
    details: tuple[str, ...],
    idle_timeout: float | None,
    ttl: float | None,
    activate: bool,
) -> None:
    """Create a session and print its id (or the whole session with --json)."""
    label_pairs = _parse_pairs(labels, "--label") or None
    detail_pairs = _parse_pairs(details, "--detail") or None
    session: Session = _call(
        url,
        token,
        timeout,
        lambda client: client.create(
            session_id,
            namespace=namespace,
            user_id=user_id,
            parent_id=parent_id,
            labels=label_pairs,
            details=detail_pairs,
            idle_timeout=DEFAULT if idle_timeout is None else idle_timeout,
            ttl=DEFAULT if ttl is None else ttl,
            activate=activate,
        ),
    )
    click.echo(msgspec.json.encode(session).decode() if as_json else session.id)


@click.command("end")
@_server_options
@click.argument("session_ids", nargs=-1, required=True)
@click.option("--reason", default="ended", show_default=True, help="Why (shown as end_reason).")
@_reports_errors
def end_command(
    url: str,
    token: str | None,
    timeout: float,
    as_json: bool,
    session_ids: tuple[str, ...],
    reason: str,
) -> None:
    """End sessions (their cleanup hooks run once). A session that was not live (unknown, or
    ended already) is reported on stderr, and the exit status is then 1."""

    async def end_each(client: Any) -> dict[str, bool]:
        return {sid: await client.end(sid, reason) for sid in session_ids}

    results: dict[str, bool] = _call(url, token, timeout, end_each)
    if as_json:
        _echo_json({"ended": results})
    else:
        for sid in (sid for sid, ended in results.items() if ended):
            click.echo(f"ended  {sid}")
    missing = [sid for sid, ended in results.items() if not ended]
    for sid in missing:
        click.echo(f"error: not_found: session not live: {sid}", err=True)
    if missing:
        sys.exit(1)


def _event_line(event: SessionEvent) -> str:
    when = datetime.fromtimestamp(event.at, UTC).strftime("%H:%M:%S.%f")[:-3]
    session = event.session
    if session is None:
        return f"{when}  {event.kind:<12}  {event.missed} events missed"
    extra = f"  reason={session.end_reason}" if session.end_reason else ""
    return f"{when}  {event.kind:<12}  {session.id}  {session.namespace}  {session.state}{extra}"


@click.command("watch")
@_server_options
@click.option("--namespace", "-n", default=None, help="Only this namespace.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(EventKind.ALL)),
    help="Only events of this kind; repeatable (every kind if none).",
)
@click.option("--session", "session_id", default=None, help="Only this session.")
@click.option("--after", default=None, help="Resume after this event id.")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
@_reports_errors
def watch_command(
    url: str,
    token: str | None,
    timeout: float,
    as_json: bool,
    namespace: str | None,
    kinds: tuple[str, ...],
    session_id: str | None,
    after: str | None,
    count: int | None,
) -> None:
    """Print live events as they happen (Ctrl-C to stop); reconnects and resumes by itself."""

    async def follow(client: Any) -> None:
        seen = 0
        events = client.subscribe(
            namespace=namespace, kinds=kinds or None, session_id=session_id, after=after
        )
        async for event in events:
            click.echo(msgspec.json.encode(event).decode() if as_json else _event_line(event))
            seen += 1
            if count is not None and seen >= count:
                break
        await events.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        _call(url, token, timeout, follow)


def _stats_json(snapshot: MetricsSnapshot) -> dict[str, Any]:
    data = dataclasses.asdict(snapshot)
    data["sessions"] = [
        {"namespace": ns, "state": state, "count": n}
        for (ns, state), n in snapshot.sessions.items()
    ]
    return data


@click.command("stats")
@_server_options
@_reports_errors
def stats_command(url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Live sessions by namespace and state, and what the server has done since it started."""
    snapshot: MetricsSnapshot = _call(url, token, timeout, lambda client: client.metrics())
    if as_json:
        _echo_json(_stats_json(snapshot))
        return
    rows = [[ns, state, str(n)] for (ns, state), n in sorted(snapshot.sessions.items())]
    click.echo(table(("NAMESPACE", "STATE", "SESSIONS"), rows))
    ended = _pairs(snapshot.ended_total) if snapshot.ended_total else "0"
    click.echo(
        "\n"
        + table(
            ("TOTAL", "VALUE"),
            [
                ["live sessions", str(snapshot.live_sessions)],
                ["created", str(snapshot.created_total)],
                ["ended", ended],
                ["cleanup hooks run", str(snapshot.hook_calls_total)],
                ["cleanup hooks failed", str(snapshot.hook_failures_total)],
                ["subscribers", str(snapshot.subscribers)],
            ],
        )
    )


COMMANDS: tuple[click.Command, ...] = (
    ls_command,
    get_command,
    create_command,
    end_command,
    watch_command,
    stats_command,
)


def register(group: click.Group) -> None:
    """Add the client commands to the ``sessionhub`` group."""
    for command in COMMANDS:
        group.add_command(command)
