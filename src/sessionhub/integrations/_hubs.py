"""What the framework adapters need of a hub, and how they name things in it.

An adapter takes a ``SessionHub``, an ``AsyncClient`` (or ``GrpcClient``), or a URL as
``sessionhub.connect`` takes it; ``Hub`` is the part of their common surface the adapters use, so
the same adapter code runs embedded, on every store, and against a server.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

from .._connect import connect
from .._models import DataEntry, HistoryRecord, Page, Session

__all__ = ["Hub", "HubLink", "hub_name", "hub_name_under"]


class DataLike(Protocol):
    async def entry(self, key: str) -> DataEntry | None: ...

    async def set(
        self, key: str, value: Any, *, expected_version: int | None = None
    ) -> DataEntry: ...

    async def entries(self) -> list[DataEntry]: ...


class HistoryLike(Protocol):
    async def append(self, kind: str, payload: Any = None) -> HistoryRecord: ...

    async def read(
        self,
        *,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        kind: str | None = None,
    ) -> list[HistoryRecord]: ...


class Hub(Protocol):
    """The verbs of ``SessionHub`` and ``AsyncClient`` the adapters call."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(
        self,
        session_id: str | None = None,
        *,
        namespace: str = "default",
        user_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        idle_timeout: float | None = ...,
        ttl: float | None = ...,
    ) -> Session: ...

    async def find(
        self,
        *,
        namespace: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page: ...

    async def end(self, session_id: str, reason: str = "ended") -> bool: ...

    def data(self, session_id: str) -> DataLike: ...

    def history(self, session_id: str) -> HistoryLike: ...


class HubLink:
    """The hub an adapter works on: given (the caller starts and closes it), or made from a URL
    (started on first use, closed by ``close()``)."""

    def __init__(self, hub: Hub | str) -> None:
        self.owned = isinstance(hub, str)
        self.hub: Hub = connect(hub) if isinstance(hub, str) else hub
        self._started = not self.owned
        self._starting = asyncio.Lock()

    async def ready(self) -> Hub:
        if not self._started:
            async with self._starting:
                if not self._started:
                    await self.hub.start()
                    self._started = True
        return self.hub

    async def close(self) -> None:
        if self.owned and self._started:
            self._started = False
            await self.hub.close()


# Printable ASCII without whitespace, as sessionhub ids are, less "%" (the escape) and "/" (the
# separator of composite ids): such text names itself, anything else is percent-encoded (UTF-8).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%/")
_MAX_ID = 200
_SAFE_TEXT = re.compile(f"[{re.escape(_SAFE)}]+")


def _part(text: str) -> str:
    # safe text (a uuid, most names) names itself: a match is a tenth of what quote() costs
    if _SAFE_TEXT.fullmatch(text):
        return text
    return quote(text, safe=_SAFE, errors="surrogatepass") or "%"


@functools.lru_cache(maxsize=65_536)  # quote() is the costly part of a call, names recur
def hub_name(*parts: str) -> str:
    """A sessionhub id (or namespace, or user id) for framework names, which may hold any text.

    Reversible while it fits the 200 characters an id may have (``%`` stands for the empty text);
    past that, a digest of the parts. The adapters keep the original names in the session's
    details, so they never need to reverse it.
    """
    return _fitted(_joined(*parts), parts)


@functools.lru_cache(maxsize=4096)
def _joined(*parts: str) -> str:
    """The parts' names joined, before any digest (cached for ``hub_name_under``'s parents)."""
    return "/".join([_part(part) for part in parts])


def _fitted(name: str, parts: tuple[str, ...]) -> str:
    if len(name) <= _MAX_ID:
        return name
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"#{digest}"


def hub_name_under(parent: tuple[str, ...], last: str) -> str:
    """``hub_name(*parent, last)`` for a name made once (a new session's random id), without
    filling ``hub_name``'s cache with it: the parent's part is cached, ``last`` named alone."""
    return _fitted(f"{_joined(*parent)}/{_part(last)}", (*parent, last))
