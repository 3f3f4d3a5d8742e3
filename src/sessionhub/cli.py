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

__all__ = ["cli", "main"]

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
    log_level: str,
) -> None:
    """Serve HTTP/JSON, server-sent events and Prometheus metrics.

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
    app = create_app(hub, token=token or None, max_body_bytes=max_body_bytes)
    _check_free(host, port)
    logger.info(
        "sessionhub %s serving http://%s:%d (store %s%s)",
        __version__,
        f"[{host}]" if ":" in host else host,
        port,
        store.split("@")[-1],  # never a password from a store URL
        ", token required" if token else "",
    )
    asyncio.run(_run(app, host, port))
    logger.info("sessionhub stopped")


async def _run(app: Any, host: str, port: int) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        log_enabled=True,
        log_level=LogLevels.error,  # granian's own chatter; sessionhub logs what matters
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
