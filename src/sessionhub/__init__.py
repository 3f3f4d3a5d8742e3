"""sessionhub: a session lifecycle service for Python, embedded or served.

async with sessionhub.SessionHub() as hub:
    session = await hub.create(user_id="ada", labels={"role": "auth"}, activate=True)
    async with hub.track_request(session.id):
        ...
    await hub.end(session.id)
"""

from ._clock import Clock, IdFactory, ManualClock, new_session_id
from ._connect import connect
from ._containers import SessionData, SessionHistory
from ._errors import (
    CapacityExceeded,
    ClientClosed,
    DamagedRecord,
    DuplicateSession,
    PayloadTooLarge,
    QuotaExceeded,
    SessionHubError,
    SessionNotFound,
    StoreUnavailable,
    TooManyRequests,
    TransitionError,
    Unauthorized,
    ValidationError,
    VersionConflict,
)
from ._hub import DEFAULT, EndHook, SessionHub
from ._lifecycle import DEFAULT_LIFECYCLE, Event, Lifecycle, State, next_state
from ._limits import Limits
from ._metrics import MetricsSnapshot
from ._models import DataEntry, EventKind, HistoryRecord, Page, Session, SessionEvent
from .client import AsyncClient, Client

__version__ = "0.1.0"

__all__ = [
    "DEFAULT",
    "DEFAULT_LIFECYCLE",
    "AsyncClient",
    "CapacityExceeded",
    "Client",
    "ClientClosed",
    "Clock",
    "DamagedRecord",
    "DataEntry",
    "DuplicateSession",
    "EndHook",
    "Event",
    "EventKind",
    "HistoryRecord",
    "IdFactory",
    "Lifecycle",
    "Limits",
    "ManualClock",
    "MetricsSnapshot",
    "Page",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Session",
    "SessionData",
    "SessionEvent",
    "SessionHistory",
    "SessionHub",
    "SessionHubError",
    "SessionNotFound",
    "State",
    "StoreUnavailable",
    "TooManyRequests",
    "TransitionError",
    "Unauthorized",
    "ValidationError",
    "VersionConflict",
    "__version__",
    "connect",
    "new_session_id",
    "next_state",
]
