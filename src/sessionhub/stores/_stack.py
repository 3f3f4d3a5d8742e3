"""Reading a history as the stack ``history_pop`` pops: the newest records still on it.

The Agents SDK adapter keeps a conversation as ``item`` records with ``pop`` and ``clear``
markers appended (``integrations.openai_agents``). Its ``get_items`` is the hot read, so the SQLite
and Redis stores resolve the markers next to the read itself (``history_stack``): in the SQLite
worker thread (one thread hop, one statement usually) or on the loop right after the Redis reply
(one round trip usually), decoding only the payloads the caller gets, straight to plain values,
without a ``HistoryRecord`` per record.

Measured on the 2-core machine (get_items(50) of 200 items, loaded): in the SQLite worker the walk
costs 180 us against 230 us for ``_history_read`` of 51 records (no ``at`` column, no
``HistoryRecord``s) and 390 us for the SDK's own query and ``json.loads``; on Redis the adapter's
loop-side CPU per read falls by about a third. The adapter's module docstring has the ratios
beside the SDK. Redis still spends ~40 us of server time more than a bare ``LRANGE``: the Lua
call turns the 51 records into a table and back (a ``MULTI`` of ``HMGET``/``LLEN``/``LRANGE``
would not; the client has no pipelined call yet).

Before walking, a read that expects nothing hidden (``StackRead.hidden`` 0) takes the newest
records as plain items when they are (``SQLiteStore._newest_items``, ``redis._plain_items``):
the walk's rows, one tuple per record with its seq and kind, were most of what the read cost
beside the decoding (SQLite: 35 -> 22 us in the worker for get_items(50) of 200).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ._base import DECODE_ERRORS, StackRead

__all__ = ["PAGE", "StackWalk"]

PAGE = 1000  # the most records one read of the walk takes
_decode = msgspec.json.decode


class StackWalk:
    """One walk back through a history, fed pages of ``(seq, kind, payload)`` rows, newest first.

    A ``kind`` record is an item; a ``marker`` record written by ``history_pop`` (payload
    ``{"popped", "below"}``) jumps to the item it left on top (``below``, 0: none), a bare one
    removes the next item not removed yet; a ``stop`` record (a clear) ends the walk; records of
    any other kind are passed over. The items are decoded as they are taken; a damaged one is
    reported through ``damaged(seq, error)`` and skipped, as ``history_read`` skips it.
    """

    __slots__ = (
        "_damaged",
        "_decode",
        "_kind",
        "_marker",
        "_pops",
        "_stop",
        "_top",
        "_walked_to",
        "items",
        "size",
        "wanted",
    )

    def __init__(
        self,
        read: StackRead,
        damaged: Callable[[int, Exception], None],
        decode: Callable[[Any], Any] = _decode,
    ) -> None:
        self._kind, self._marker, self._stop = read.kind, read.marker, read.stop
        wanted, hidden = read.wanted, read.hidden
        self._damaged = damaged
        self._decode = decode  # of the rows' payloads: JSON text, or as they are when decoded
        self._pops = 0
        self.wanted = wanted
        self.items: list[Any] = []  # newest first
        self._top = self._walked_to = 0  # the newest record's seq, the last one walked
        #: how many records the next read should take: one more than wanted, so that a walk of
        #: items only knows it has reached the bottom without reading again, and ``hidden``
        #: more, the records the caller expects markers to hide (what the last walk found) when
        #: they are few: past that, a marker's jump and a second short read cost less than
        #: reading every record it jumps over
        extra = hidden if 0 < hidden <= 3 * (wanted or 0) else 0
        self.size = PAGE if wanted is None else min(PAGE, wanted + 1 + extra)

    def feed(self, rows: Sequence[tuple[int, str, Any]]) -> int | None:
        """Walk a page (the answer to a read of ``self.size`` records); the ``seq`` to read on
        below (exclusive), or ``None`` when the walk is over."""
        kind, marker, stop, items, wanted, decode = (
            self._kind,
            self._marker,
            self._stop,
            self.items,
            self.wanted,
            self._decode,
        )
        if wanted == 0:
            return None  # none wanted: nothing to walk
        i, n = 0, len(rows)
        if n and not self._top:
            self._top = rows[0][0]
        while i < n:
            seq, record_kind, payload = rows[i]
            self._walked_to = seq
            if record_kind == kind:
                if self._pops:
                    self._pops -= 1
                else:
                    try:
                        items.append(decode(payload))
                    except DECODE_ERRORS as exc:
                        self._damaged(seq, exc)
                    else:
                        if len(items) == wanted:
                            return None
            elif record_kind == marker:
                try:
                    below = _below(decode(payload), seq)
                except DECODE_ERRORS:
                    below = None
                if below is None:
                    self._pops += 1
                elif below == 0:
                    return None
                else:
                    # the item it left on top: usually further down this very page
                    j = i + seq - below
                    if j < n and rows[j][0] == below:
                        i = j
                        continue
                    return below + 1
            elif record_kind == stop:
                return None
            i += 1
        if n < self.size:
            return None
        self.size = min(PAGE, self.size * 4)  # markers hid some: read further, in growing pages
        return int(rows[-1][0])

    def oldest_first(self) -> list[Any]:
        self.items.reverse()
        return self.items

    @property
    def hidden(self) -> int:
        """How many records the walk passed over (markers, the items they removed, others):
        what the next walk of this history may ask for beyond what it wants."""
        walked = self._top - self._walked_to + 1 if self._top else 0
        return max(walked - len(self.items), 0)


def _below(marker: Any, seq: int) -> int | None:
    """The item a ``history_pop`` marker left on top (0: none); ``None`` for a bare marker."""
    below = marker.get("below") if isinstance(marker, dict) else None
    return below if type(below) is int and 0 <= below < seq else None
