"""The ``sessionhub`` command: ``serve``, and the client commands of ``_cli_commands``.

Every option also reads the environment variable ``SESSIONHUB_`` + its name (``--store`` from
``SESSIONHUB_STORE``, ``--unique-label`` from ``SESSIONHUB_UNIQUE_LABEL``, ...; ``--help`` shows
each), so a container or a service unit configures the server without a command line. The token is
best given that way: a command line is visible to every user of the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from . import __version__
from ._cli_commands import client_options, env_name, option, register, remember_client_options
from ._errors import SessionHubError
from ._hub import SessionHub
from ._limits import Limits

__all__ = ["cli", "main", "run_server"]

logger = logging.getLogger("sessionhub.serve")


class Seconds(click.ParamType[float | None, Any]):
    """A positive number of seconds, or ``none`` for no limit at all."""

    name = "SECONDS|none"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off"):
            return None
        try:
            seconds = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of seconds nor 'none'", param, ctx)
        if not seconds > 0 or seconds == float("inf"):
            self.fail(f"{value!r} must be a positive number of seconds, or 'none'", param, ctx)
        return seconds


SECONDS = Seconds()
_COUNT = click.IntRange(min=1)


class Names(click.ParamType[str, Any]):
    """A repeatable option's value; its environment variable takes a list, split on commas or
    whitespace (``SESSIONHUB_ALLOW_ORIGIN="http://a.example, http://b.example"``)."""

    name = "TEXT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [part for part in re.split(r"[\s,]+", rv) if part]


NAMES = Names()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sessionhub")
@client_options
@click.pass_context
def cli(ctx: click.Context, /, **given: Any) -> None:
    """sessionhub: sessions with a lifecycle, expiry, limits, hooks and events.

    `sessionhub serve` runs the server; the other commands talk to one (--url, SESSIONHUB_URL).
    The options of those commands may come before the command too: `sessionhub --url URL ls`.
    """
    remember_client_options(ctx, given)


@cli.command("serve")
@option(
    "--store",
    default="memory://",
    show_default=True,
    help="Store URL: memory://, sqlite:///path.db, redis://host:6379/0.",
)
@option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address or host name to listen on (a name is resolved).",
)
@option("--port", type=click.IntRange(0, 65535), default=7480, show_default=True)
@option(
    "--token",
    default=None,
    help="Require `Authorization: Bearer <token>`, at least 16 characters (prefer the "
    "environment variable: a command line is visible to every user of the machine).",
)
@option("--insecure", is_flag=True, help="Allow a non-loopback --host without a token.")
@option(
    "--allow-host",
    "allow_hosts",
    also_env=("SESSIONHUB_ALLOW_HOSTS",),
    type=NAMES,
    multiple=True,
    help="Also accept requests whose Host header names this (besides loopback names and the "
    "address served); repeatable; * accepts any (turns off DNS-rebinding protection).",
)
@option(
    "--allow-origin",
    "allow_origins",
    also_env=("SESSIONHUB_ALLOW_ORIGINS",),
    type=NAMES,
    multiple=True,
    help="Accept cross-origin browser requests from this origin (e.g. http://localhost:3000) "
    "and answer their CORS preflights; repeatable; * accepts any.",
)
@option(
    "--idle-timeout",
    type=SECONDS,
    default=1800.0,
    show_default=True,
    help="Default idle timeout of new sessions; slides with activity.",
)
@option(
    "--ttl",
    type=SECONDS,
    default=None,
    help="Default hard cap on a session's whole life.  [default: none]",
)
@option(
    "--retention",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds an ended session stays readable.",
)
@option(
    "--hook-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Time limit of each cleanup hook.",
)
@option(
    "--unique-label",
    "unique_labels",
    type=NAMES,
    multiple=True,
    help="A label whose value at most one live session per namespace may hold (repeatable).",
)
@option("--max-sessions", type=_COUNT, default=None)
@option("--max-sessions-per-user", type=_COUNT, default=None)
@option(
    "--quota-policy",
    type=click.Choice(["reject", "evict_oldest"]),
    default="reject",
    show_default=True,
    help="What a create past --max-sessions-per-user does.",
)
@option("--max-requests-per-session", type=_COUNT, default=None)
@option("--max-body-bytes", type=_COUNT, default=2 * 1024 * 1024, show_default=True)
@option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=7481,
    show_default=True,
    help="Port of the gRPC services (native sessionhub.v1 and the Stream API); 0 disables gRPC.",
)
@option("--no-grpc", is_flag=True, help="Do not serve gRPC.")
@option(
    "--stream-api/--no-stream-api",
    default=True,
    show_default=True,
    help="Serve the Stream API's SessionManagementService on the gRPC port (when off, its "
    "calls answer success = false).",
)
@option(
    "--stream-api-retention",
    type=click.FloatRange(min=0),
    default=86400.0,
    show_default=True,
    help="Seconds a session ended through the Stream API stays queryable, marked complete.",
)
@option("--no-ui", is_flag=True, help="Do not serve the dashboard at /ui.")
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    store: str,
    host: str,
    port: int,
    token: str | None,
    insecure: bool,
    allow_hosts: Sequence[str],
    allow_origins: Sequence[str],
    idle_timeout: float | None,
    ttl: float | None,
    retention: float,
    hook_timeout: float,
    unique_labels: Sequence[str],
    max_sessions: int | None,
    max_sessions_per_user: int | None,
    quota_policy: str,
    max_requests_per_session: int | None,
    max_body_bytes: int,
    grpc_port: int,
    no_grpc: bool,
    stream_api: bool,
    stream_api_retention: float,
    no_ui: bool,
    log_level: str,
) -> None:
    """Serve HTTP/JSON, server-sent events, gRPC and Prometheus metrics.

    gRPC (--grpc-port, 7481 by default) serves the native sessionhub.v1 service and the Stream
    API's SessionManagementService over the same hub, with the same token, on the same host.

    Binds to loopback by default; another address needs --token (or --insecure). Requests must
    name this server in their Host header and come from no other web origin, unless allowed
    (--allow-host, --allow-origin). SIGTERM or SIGINT stops it gracefully: requests in flight
    finish, and with the memory store every live session ends with reason `shutdown`, its
    cleanup hooks run.
    """
    from .http import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    token = token or None
    if token is not None and len(token) < MIN_TOKEN:
        _fail(f"--token (SESSIONHUB_TOKEN) must be at least {MIN_TOKEN} characters", 2)
    address = _resolve(host)
    if not token and not insecure and not ipaddress.ip_address(address).is_loopback:
        raise click.UsageError(
            f"--host {host} is not a loopback address: give --token (SESSIONHUB_TOKEN) or, "
            "to serve it to anyone who can reach it, --insecure"
        )
    _warn_unknown_variables()
    try:
        hub = SessionHub(
            store,
            idle_timeout=idle_timeout,
            ttl=ttl,
            retention=retention,
            hook_timeout=hook_timeout,
            unique_labels=unique_labels,
            limits=Limits(
                max_sessions=max_sessions,
                max_sessions_per_user=max_sessions_per_user,
                quota_policy="evict_oldest" if quota_policy == "evict_oldest" else "reject",
                max_requests_per_session=max_requests_per_session,
            ),
        )
    except SessionHubError as exc:
        raise click.UsageError(exc.message) from None
    app = create_app(
        hub,
        token=token,
        max_body_bytes=max_body_bytes,
        allow_hosts=(host, *allow_hosts),
        allow_origins=allow_origins,
        ui=not no_ui,
    )
    _check_free(address, port)
    also = ""
    if grpc_port and not no_grpc:
        app, also = _beside_grpc(
            app, address, port, grpc_port, token, stream_api, stream_api_retention, max_body_bytes
        )
    status = asyncio.run(_open_and_serve(app, hub, store, address, port, bool(token), also))
    if status:
        sys.exit(status)
    logger.info("sessionhub stopped")
    # Everything is closed. granian's embedded server can leave runtime threads that still reach
    # into Python while the interpreter finalizes, which aborts the process ("panic in a function
    # that cannot unwind") in a few percent of stops: leave now, with status 0, instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


MIN_TOKEN = 16


def _fail(message: str, status: int) -> NoReturn:
    """One line on stderr, then exit: what an operator reads in a service log."""
    click.echo(f"sessionhub: error: {message}", err=True)
    sys.exit(status)


def _public(store: str) -> str:
    return store.split("@")[-1]  # never a password from a store URL


async def _open_and_serve(
    app: Any, hub: SessionHub, store: str, address: str, port: int, token: bool, also: str
) -> int:
    """Open the store before saying "serving": a dead one is one line and status 1."""
    try:
        await hub.start()
    except Exception as exc:
        reason = exc.message if isinstance(exc, SessionHubError) else str(exc) or repr(exc)
        click.echo(f"sessionhub: error: cannot open the store {_public(store)}: {reason}", err=True)
        return 1
    logger.info(
        "sessionhub %s serving http://%s:%d (store %s%s)",
        __version__,
        f"[{address}]" if ":" in address else address,
        port,
        _public(store),
        ", token required" if token else "",
    )
    if also:
        logger.info("serving %s", also)
    await run_server(app, address, port)
    return 0


async def run_server(app: Any, host: str, port: int) -> None:
    """Serve the ASGI ``app`` on granian in this event loop until SIGINT or SIGTERM."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        backlog=1024,
        # granian caps requests in flight per worker (128 by default); every open event stream
        # is one, so a low cap would make the 129th subscriber stall every other request.
        backpressure=65_536,
        log_enabled=True,
        log_level=LogLevels.error,  # granian's own chatter; sessionhub logs what matters
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Future[Any]] = []

    def stop() -> None:
        # granian waits for open connections before the ASGI lifespan shutdown, and event
        # streams stay open: the app ends its sessions and streams first (SessionHubApp.shutdown).
        if not stopping:
            server.stop()  # type: ignore[no-untyped-call]
            shutdown = getattr(app, "shutdown", None)
            stopping.append(asyncio.ensure_future(shutdown() if shutdown else asyncio.sleep(0)))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    await server.serve()
    for pending in stopping:
        await pending


def _resolve(host: str) -> str:
    """The IP address to listen on: ``host`` itself, or what the name resolves to (granian
    takes addresses only)."""
    bare = host.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        _fail(f"cannot resolve --host {host}: {exc.strerror or exc}", 2)
    # a name such as localhost may resolve to ::1 and 127.0.0.1: prefer IPv4, as browsers do
    addresses = sorted({str(info[4][0]) for info in found}, key=lambda a: ":" in a)
    return addresses[0]


def _warn_unknown_variables() -> None:
    """A misspelt ``SESSIONHUB_*`` variable would otherwise be silently ignored."""
    known = {env_name(name) for p in serve.params for name in p.opts if name.startswith("--")}
    known |= {name for p in serve.params if isinstance(p.envvar, list) for name in p.envvar}
    known |= {"SESSIONHUB_URL", "SESSIONHUB_TIMEOUT", "SESSIONHUB_GRPC_URL"}
    for name in sorted(os.environ):
        if name.startswith("SESSIONHUB_") and name not in known:
            logger.warning("%s is not a sessionhub variable: ignored (see --help)", name)


def _beside_grpc(
    app: Any,
    host: str,
    port: int,
    grpc_port: int,
    token: str | None,
    stream_api: bool,
    stream_api_retention: float,
    max_body_bytes: int,
) -> tuple[Any, str]:
    """``app`` with the gRPC server beside it (same hub, host and token), and what to log."""
    try:
        from .grpc import GrpcServer, serve_beside
    except ImportError as exc:
        _fail(f"gRPC needs the grpc extra (pip install 'sessionhub[grpc]'), or --no-grpc: {exc}", 2)
    if grpc_port == port:
        raise click.UsageError(f"--grpc-port {grpc_port} is the HTTP --port too")
    try:
        _check_free(host, grpc_port)
    except click.ClickException as exc:
        _fail(f"{exc.message} (for gRPC: give another --grpc-port, or --no-grpc)", 1)
    server = GrpcServer(
        app.hub,
        host=host,
        port=grpc_port,
        token=token or None,
        stream_api=stream_api,
        stream_api_retention=stream_api_retention,
        metrics=app.metrics,
        max_message_bytes=max_body_bytes,
    )
    services = "sessionhub.v1, Stream API" if stream_api else "sessionhub.v1; Stream API turned off"
    return serve_beside(app, server), f"gRPC on {server.address} ({services})"


def _check_free(host: str, port: int) -> None:
    """Fail with a clear message, before any session exists, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="sessionhub")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0
