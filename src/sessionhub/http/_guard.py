"""What keeps the server safe beside a browser, as Jupyter Server and Redis's protected mode do.

A web page the user visits can send requests to a server on the user's machine. Three rules stop
it: the ``Host`` header must name this server (a DNS-rebinding page sends its own name), a
cross-origin request (an ``Origin`` that is not the server's own) is refused unless the operator
allowed that origin, and bodies must be ``application/json`` (which a page cannot send without a
CORS preflight, answered only for allowed origins).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._request import Scope

__all__ = ["ALLOWED_HEADERS", "BrowserGuard", "Headers", "is_json", "quoted"]

Headers = tuple[tuple[bytes, bytes], ...]

ALLOWED_HEADERS = b"Authorization, Content-Type, Last-Event-ID"
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_VERDICTS_KEPT = 256


def quoted(text: str, limit: int = 60) -> str:
    """``text`` as a repr, cut to its first ``limit`` characters: an error message never echoes
    a whole (maybe huge) input."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def _hostname(host: str) -> str:
    """The host part of a ``Host`` header value, without the port or IPv6 brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class BrowserGuard:
    """Decides whether a request's ``Host`` and ``Origin`` are acceptable, and the CORS headers
    of an allowed cross-origin request. ``*`` in either list allows anything."""

    def __init__(self, allow_hosts: Collection[str], allow_origins: Collection[str]) -> None:
        self._any_host = "*" in allow_hosts
        self._hosts = frozenset(_hostname(h.strip()).lower() for h in allow_hosts) | {"localhost"}
        self._any_origin = "*" in allow_origins
        self._origins = frozenset(o.strip().rstrip("/").lower() for o in allow_origins)
        self._verdicts: dict[tuple[str, str], str | None] = {}  # (Host, address served) → refusal

    def host_refusal(self, scope: Scope, host: str | None) -> str | None:
        """Why ``host`` (the ``Host`` header) is refused, or ``None`` if it names this server:
        a loopback address or ``localhost``, the address served, an allowed name, or, for a
        server bound to every interface, any IP address (a rebinding page sends a name)."""
        if host is None or self._any_host:
            return None
        served = (scope.get("server") or ("",))[0] or ""
        key = (host, served)
        if key in self._verdicts:  # parsing an address on every request cost a fifth of a create
            return self._verdicts[key]
        verdict = self._host_verdict(host, served)
        if len(self._verdicts) < _VERDICTS_KEPT:  # a scanner's made-up hosts do not grow it
            self._verdicts[key] = verdict
        return verdict

    def _host_verdict(self, host: str, served: str) -> str | None:
        name = _hostname(host).lower()
        address = _ip(name)
        if name in self._hosts or (address is not None and address.is_loopback):
            return None
        if address is not None and (served in _WILDCARD_BINDS or _ip(served) == address):
            return None
        return (
            f"Host {quoted(host)} does not name this server (serve with --allow-host to accept it)"
        )

    def origin_allowed(self, origin: str) -> bool:
        return self._any_origin or origin.rstrip("/").lower() in self._origins

    def origin_refusal(self, scope: Scope, origin: str | None, host: str | None) -> str | None:
        """Why a request with this ``Origin`` is refused, or ``None``: no ``Origin`` (not a
        browser's cross-origin request), the server's own origin, or an allowed one."""
        if origin is None or self.same_origin(scope, origin, host) or self.origin_allowed(origin):
            return None
        return (
            f"cross-origin request from {quoted(origin)} refused "
            "(serve with --allow-origin to accept it)"
        )

    @staticmethod
    def same_origin(scope: Scope, origin: str, host: str | None) -> bool:
        scheme = scope.get("scheme", "http")
        return host is not None and origin.lower() == f"{scheme}://{host}".lower()

    @staticmethod
    def cors_headers(origin: str) -> Headers:
        """What an answer to an allowed cross-origin request carries."""
        return (
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", b"WWW-Authenticate, Allow"),
            (b"vary", b"Origin"),
        )

    @staticmethod
    def preflight_headers(methods: str) -> Headers:
        """What an allowed origin's preflight (``OPTIONS``) answer adds to ``cors_headers``."""
        return (
            (b"access-control-allow-methods", methods.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", b"600"),
        )


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` names JSON (``application/json``, parameters allowed)."""
    if content_type == "application/json":  # what nearly every client sends: nothing to parse
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/json"
