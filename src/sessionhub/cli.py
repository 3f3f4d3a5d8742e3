"""The ``sessionhub`` command: ``serve``, and the client commands of ``_cli_commands``.

Every ``serve`` option also reads a ``SESSIONHUB_*`` environment variable (``--store`` from
``SESSIONHUB_STORE``, ``--max-sessions`` from ``SESSIONHUB_MAX_SESSIONS``, ...), so a container or a
service unit configures the server without a command line. The token is best given that way: a
command line is visible to every user of the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import click

from . import __version__
from ._cli_commands import register
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


def _env(name: str) -> str:
    return "SESSIONHUB_" + name


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sessionhub")
def cli() -> None:
    """sessionhub: sessions with a lifecycle, expiry, limits, hooks and events.

    `sessionhub serve` runs the server; the other commands talk to one (--url, SESSIONHUB_URL).
    """


@cli.command("serve")
@click.option(
    "--store",
    envvar=_env("STORE"),
    default="memory://",
    show_default=True,
    help="Store URL: memory://, sqlite:///path.db, redis://host:6379/0.",
)
@click.option("--host", envvar=_env("HOST"), default="127.0.0.1", show_default=True)
@click.option(
    "--port", envvar=_env("PORT"), type=click.IntRange(0, 65535), default=7480, show_default=True
)
@click.option(
    "--token",
    envvar=_env("TOKEN"),
    default=None,
    help="Require `Authorization: Bearer <token>` (prefer the env SESSIONHUB_TOKEN).",
)
@click.option(
    "--insecure",
    envvar=_env("INSECURE"),
    is_flag=True,
    help="Allow a non-loopback --host without a token.",
)
@click.option(
    "--idle-timeout",
    envvar=_env("IDLE_TIMEOUT"),
    type=SECONDS,
    default=1800.0,
    show_default=True,
    help="Default idle timeout of new sessions; slides with activity.",
)
@click.option(
    "--ttl",
    envvar=_env("TTL"),
    type=SECONDS,
    default=None,
    help="Default hard cap on a session's whole life.  [default: none]",
)
@click.option(
    "--retention",
    envvar=_env("RETENTION"),
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds an ended session stays readable.",
)
@click.option(
    "--hook-timeout",
    envvar=_env("HOOK_TIMEOUT"),
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Time limit of each cleanup hook.",
)
@click.option(
    "--unique-label",
    "unique_labels",
    envvar=_env("UNIQUE_LABELS"),
    multiple=True,
    help="A label whose value at most one live session per namespace may hold (repeatable; "
    "the env variable takes a space-separated list).",
)
@click.option("--max-sessions", envvar=_env("MAX_SESSIONS"), type=_COUNT, default=None)
@click.option(
    "--max-sessions-per-user", envvar=_env("MAX_SESSIONS_PER_USER"), type=_COUNT, default=None
)
@click.option(
    "--quota-policy",
    envvar=_env("QUOTA_POLICY"),
    type=click.Choice(["reject", "evict_oldest"]),
    default="reject",
    show_default=True,
    help="What a create past --max-sessions-per-user does.",
)
@click.option(
    "--max-requests-per-session",
    envvar=_env("MAX_REQUESTS_PER_SESSION"),
    type=_COUNT,
    default=None,
)
@click.option(
    "--max-body-bytes",
    envvar=_env("MAX_BODY_BYTES"),
    type=_COUNT,
    default=2 * 1024 * 1024,
    show_default=True,
)
@click.option(
    "--grpc-port",
    envvar=_env("GRPC_PORT"),
    type=click.IntRange(0, 65535),
    default=7481,
    show_default=True,
    help="Port of the gRPC services (native sessionhub.v1 and the Stream API); 0 disables gRPC.",
)
@click.option("--no-grpc", envvar=_env("NO_GRPC"), is_flag=True, help="Do not serve gRPC.")
@click.option(
    "--stream-api/--no-stream-api",
    envvar=_env("STREAM_API"),
    default=True,
    show_default=True,
    help="Serve the Stream API's SessionManagementService on the gRPC port (when off, its "
    "calls answer success = false).",
)
@click.option(
    "--stream-api-retention",
    envvar=_env("STREAM_API_RETENTION"),
    type=click.FloatRange(min=0),
    default=86400.0,
    show_default=True,
    help="Seconds a session ended through the Stream API stays queryable, marked complete.",
)
@click.option(
    "--no-ui", envvar=_env("NO_UI"), is_flag=True, help="Do not serve the dashboard at /ui."
)
@click.option(
    "--log-level",
    envvar=_env("LOG_LEVEL"),
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

    Binds to loopback by default; another address needs --token (or --insecure). SIGTERM or
    SIGINT stops it gracefully: requests in flight finish, and with the memory store every live
    session ends with reason `shutdown`, its cleanup hooks run.
    """
    from .http import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if not token and not insecure and not _is_loopback(host):
        raise click.UsageError(
            f"--host {host} is not a loopback address: give --token (SESSIONHUB_TOKEN) or, "
            "to serve it to anyone who can reach it, --insecure"
        )
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
    app = create_app(hub, token=token or None, max_body_bytes=max_body_bytes, ui=not no_ui)
    _check_free(host, port)
    if grpc_port and not no_grpc:
        app = _beside_grpc(
            app, host, port, grpc_port, token, stream_api, stream_api_retention, max_body_bytes
        )
    logger.info(
        "sessionhub %s serving http://%s:%d (store %s%s)",
        __version__,
        f"[{host}]" if ":" in host else host,
        port,
        store.split("@")[-1],  # never a password from a store URL
        ", token required" if token else "",
    )
    asyncio.run(run_server(app, host, port))
    logger.info("sessionhub stopped")
    # Everything is closed. granian's embedded server can leave runtime threads that still reach
    # into Python while the interpreter finalizes, which aborts the process ("panic in a function
    # that cannot unwind") in a few percent of stops: leave now, with status 0, instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _beside_grpc(
    app: Any,
    host: str,
    port: int,
    grpc_port: int,
    token: str | None,
    stream_api: bool,
    stream_api_retention: float,
    max_body_bytes: int,
) -> Any:
    """``app`` with the gRPC server beside it (same hub, host and token), or ``app`` alone when
    the default gRPC port is taken: only a port asked for explicitly must be free."""
    try:
        from .grpc import GrpcServer, serve_beside
    except ImportError as exc:
        raise click.ClickException(
            f"gRPC needs the grpc extra (pip install 'sessionhub[grpc]'), or --no-grpc: {exc}"
        ) from None
    source = click.get_current_context().get_parameter_source("grpc_port")
    explicit = source not in (click.core.ParameterSource.DEFAULT, None)
    try:
        if grpc_port == port:
            raise click.UsageError(f"--grpc-port {grpc_port} is the HTTP --port too")
        _check_free(host, grpc_port)
    except click.ClickException as exc:
        if explicit:
            raise
        logger.warning("not serving gRPC: %s (give --grpc-port, or --no-grpc)", exc.message)
        return app
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
    logger.info(
        "serving gRPC on %s (sessionhub.v1%s)",
        server.address,
        ", Stream API" if stream_api else "; Stream API turned off",
    )
    return serve_beside(app, server)


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
