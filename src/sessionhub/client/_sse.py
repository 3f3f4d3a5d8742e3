"""Reading ``text/event-stream`` lines into ``SessionEvent`` objects (the WHATWG SSE rules).

The stream is small and fixed (``id``, ``event``, ``data`` fields and keep-alive comments), so a line
parser fed by either client's ``iter_lines``/``aiter_lines`` is all that is needed.
"""

from __future__ import annotations

import msgspec

from .._models import SessionEvent

__all__ = ["EventStreamParser", "backoff"]

_decode_event = msgspec.json.Decoder(SessionEvent).decode


class EventStreamParser:
    """Feed lines one at a time; a blank line completes an event. ``last_event_id`` is what to send
    as ``Last-Event-ID`` to resume (events without an ``id:`` line, like ``missed``, keep it)."""

    __slots__ = ("_data", "last_event_id")

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self._data: list[str] = []

    def feed(self, line: str) -> SessionEvent | None:
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return _decode_event(data)
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        return None  # "event" repeats the JSON's kind; "retry" and unknown fields are ignored


def backoff(failures: int) -> float:
    """Seconds to wait before reconnecting after ``failures`` failed attempts in a row."""
    return float(min(0.1 * 2 ** max(failures - 1, 0), 5.0))
