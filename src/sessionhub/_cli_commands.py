"""The CLI commands that talk to a running server: ``ls``, ``get``, ``create``, ``end``, ``watch``,
``stats``. Each is a thin use of ``sessionhub.Client``; ``--json`` prints machine-readable output,
otherwise plain aligned tables. ``cli.py`` adds them to the ``sessionhub`` group with ``register``."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import click
import msgspec

from ._errors import SessionHubError
from ._hub import DEFAULT
from ._metrics import MetricsSnapshot
from ._models import Session, SessionEvent
from .client import Client
from .client._calls import DEFAULT_URL

__all__ = ["COMMANDS", "register"]

P = ParamSpec("P")
R = TypeVar("R")


# shared options and output


def _server_options(command: Callable[P, R]) -> Callable[P, R]:
    """``--url``, ``--token``, ``--timeout`` and ``--json``, for every command."""
    for option in reversed(
        (
            click.option(
                "--url",
                envvar="SESSIONHUB_URL",
                default=DEFAULT_URL,
                show_default=True,
                help="Server URL (env SESSIONHUB_URL).",
            ),
            click.option(
                "--token",
                envvar="SESSIONHUB_TOKEN",
                default=None,
                help="Bearer token (env SESSIONHUB_TOKEN).",
            ),
            click.option(
                "--timeout", type=float, default=10.0, show_default=True, help="Seconds per call."
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables."),
        )
    ):
        command = option(command)
    return command


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A sessionhub error becomes ``error: <code>: <message>`` on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SessionHubError as exc:
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            sys.exit(1)

    return run


def _client(url: str, token: str | None, timeout: float) -> Client:
    return Client(url, token=token, timeout=timeout)


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
    "--label", "-l", "labels", multiple=True, help="KEY=VALUE; repeat to require several."
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
    with _client(url, token, timeout) as client:
        page = client.find(
            namespace=namespace,
            user_id=user_id,
            parent_id=parent_id,
            state=state,
            labels=_parse_pairs(labels, "--label") or None,
            include_ended=include_ended,
            limit=limit,
            cursor=cursor,
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
    with _client(url, token, timeout) as client:
        session = client.get(session_id)
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
    with _client(url, token, timeout) as client:
        session = client.create(
            session_id,
            namespace=namespace,
            user_id=user_id,
            parent_id=parent_id,
            labels=_parse_pairs(labels, "--label") or None,
            details=_parse_pairs(details, "--detail") or None,
            idle_timeout=DEFAULT if idle_timeout is None else idle_timeout,
            ttl=DEFAULT if ttl is None else ttl,
            activate=activate,
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
    """End sessions (their cleanup hooks run once). Ending an ended session does nothing."""
    with _client(url, token, timeout) as client:
        results = {sid: client.end(sid, reason) for sid in session_ids}
    if as_json:
        _echo_json({"ended": results})
        return
    for sid, ended in results.items():
        click.echo(f"{'ended' if ended else 'not live'}  {sid}")


def _event_line(event: SessionEvent) -> str:
    when = datetime.fromtimestamp(event.at, UTC).strftime("%H:%M:%S.%f")[:-3]
    session = event.session
    if session is None:
        return f"{when}  {event.kind:<12}  {event.missed} events missed"
    extra = f"  reason={session.end_reason}" if session.end_reason else ""
    return f"{when}  {event.kind:<12}  {session.id}  {session.namespace}  {session.state}{extra}"


def _limited(events: Iterator[SessionEvent], count: int | None) -> Iterator[SessionEvent]:
    for seen, event in enumerate(events, start=1):
        yield event
        if count is not None and seen >= count:
            return


@click.command("watch")
@_server_options
@click.option("--namespace", "-n", default=None, help="Only this namespace.")
@click.option("--kind", "kinds", multiple=True, help="created, updated, transitioned, ended.")
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
    with _client(url, token, timeout) as client:
        events = client.subscribe(
            namespace=namespace, kinds=kinds or None, session_id=session_id, after=after
        )
        try:
            for event in _limited(events, count):
                click.echo(msgspec.json.encode(event).decode() if as_json else _event_line(event))
        except KeyboardInterrupt:
            pass


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
    with _client(url, token, timeout) as client:
        snapshot = client.metrics()
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
