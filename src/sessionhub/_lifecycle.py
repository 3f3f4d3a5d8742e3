"""The lifecycle: a transition table and the pure function over it.

The default table is ourocodus's relay lifecycle (CREATED → SPAWNING → ACTIVE → TERMINATING →
CLEANED). A hub can be given another table; ``Lifecycle`` checks that the table still lets every live
session be ended, because ``SessionHub.end`` must work from every live state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from enum import StrEnum

from ._errors import TransitionError, ValidationError, quoted

__all__ = ["DEFAULT_LIFECYCLE", "Event", "Lifecycle", "State", "next_state"]


class State(StrEnum):
    CREATED = "CREATED"
    SPAWNING = "SPAWNING"
    ACTIVE = "ACTIVE"
    TERMINATING = "TERMINATING"
    CLEANED = "CLEANED"


class Event(StrEnum):
    SPAWN = "SPAWN"
    ACTIVATE = "ACTIVATE"
    TERMINATE = "TERMINATE"
    CLEAN = "CLEAN"


def _name(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            f"state and event names must be non-empty strings, got {quoted(value)}"
        )
    return value.strip().upper()


class Lifecycle:
    """A transition table plus the states that give it meaning to the hub.

    ``transitions`` maps ``(state, event)`` to the next state. ``initial`` is where sessions start,
    ``active`` is where ``create(activate=True)`` walks to, ``ending`` is the state a session waits in
    while its cleanup hooks run, and ``ended`` is the terminal state. ``terminate`` must lead every
    live state (except ``ending``) to ``ending``; ``clean`` must lead ``ending`` to ``ended``.
    """

    __slots__ = (
        "activate_path",
        "active",
        "clean",
        "ended",
        "ending",
        "initial",
        "states",
        "terminate",
        "transitions",
    )

    def __init__(
        self,
        transitions: Mapping[tuple[str, str], str],
        *,
        initial: str = State.CREATED,
        active: str = State.ACTIVE,
        ending: str = State.TERMINATING,
        ended: str = State.CLEANED,
        terminate: str = Event.TERMINATE,
        clean: str = Event.CLEAN,
    ) -> None:
        table = {(_name(s), _name(e)): _name(t) for (s, e), t in transitions.items()}
        self.transitions: Mapping[tuple[str, str], str] = table
        self.initial = _name(initial)
        self.active = _name(active)
        self.ending = _name(ending)
        self.ended = _name(ended)
        self.terminate = _name(terminate)
        self.clean = _name(clean)
        self.states = frozenset({s for s, _ in table} | set(table.values()) | {self.initial})
        self._check()
        self.activate_path: tuple[str, ...] = self._shortest_path(self.initial, self.active)

    def _check(self) -> None:
        if any(s == self.ended for s, _ in self.transitions):
            raise ValidationError(f"the ended state {self.ended} must have no transitions out")
        if self.transitions.get((self.ending, self.clean)) != self.ended:
            raise ValidationError(f"{self.ending} + {self.clean} must lead to {self.ended}")
        for state in self.states - {self.ended, self.ending}:
            if self.transitions.get((state, self.terminate)) != self.ending:
                raise ValidationError(f"{state} + {self.terminate} must lead to {self.ending}")

    def _shortest_path(self, start: str, goal: str) -> tuple[str, ...]:
        """The events that walk ``start`` to ``goal`` (breadth first, so the shortest)."""
        paths: dict[str, tuple[str, ...]] = {start: ()}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            if state == goal:
                return paths[state]
            for (src, event), dst in self.transitions.items():
                if src == state and dst not in paths:
                    paths[dst] = (*paths[state], event)
                    queue.append(dst)
        return ()  # unreachable goal: create(activate=True) will say so

    def next_state(self, state: str, event: str) -> str:
        """The state after ``event``; raises ``TransitionError`` when the table has no such cell."""
        try:
            return self.transitions[state, event]
        except KeyError:
            reason = "session has ended" if state == self.ended else "no such transition"
            raise TransitionError(state, event, reason) from None

    def moves(self, event: str) -> dict[str, str]:
        """Every ``from → to`` the event allows: what a store needs to apply it atomically."""
        return {src: dst for (src, ev), dst in self.transitions.items() if ev == event}

    def event_name(self, event: str) -> str:
        name = _name(event)
        if not any(ev == name for _, ev in self.transitions):
            raise ValidationError(f"unknown lifecycle event: {quoted(event)}")
        return name

    def is_live(self, state: str) -> bool:
        return state != self.ended

    def walk(self, state: str, events: Iterable[str]) -> str:
        for event in events:
            state = self.next_state(state, event)
        return state


DEFAULT_LIFECYCLE = Lifecycle(
    {
        (State.CREATED, Event.SPAWN): State.SPAWNING,
        (State.CREATED, Event.TERMINATE): State.TERMINATING,
        (State.SPAWNING, Event.ACTIVATE): State.ACTIVE,
        (State.SPAWNING, Event.TERMINATE): State.TERMINATING,
        (State.ACTIVE, Event.TERMINATE): State.TERMINATING,
        (State.TERMINATING, Event.TERMINATE): State.TERMINATING,
        (State.TERMINATING, Event.CLEAN): State.CLEANED,
    }
)


def next_state(state: str, event: str) -> str:
    """The default lifecycle as a pure function: ``next_state("CREATED", "SPAWN") == "SPAWNING"``."""
    return DEFAULT_LIFECYCLE.next_state(_name(state), _name(event))
