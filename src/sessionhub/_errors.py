"""The exceptions every face of sessionhub raises or translates.

Each error carries a stable ``code`` (used in HTTP bodies and gRPC details), the HTTP status it maps to
and the gRPC status name, so that every face answers the same failure the same way.
"""

from __future__ import annotations

import reprlib
from typing import Any, ClassVar, Final

__all__ = [
    "CapacityExceeded",
    "ClientClosed",
    "DamagedRecord",
    "DuplicateSession",
    "PayloadTooLarge",
    "QuotaExceeded",
    "SessionHubError",
    "SessionNotFound",
    "StoreUnavailable",
    "TooManyRequests",
    "TransitionError",
    "Unauthorized",
    "ValidationError",
    "VersionConflict",
    "error_for_code",
    "quoted",
    "shortened",
]

#: How much of a caller's value an error message quotes (ids, names, reasons, label values, ...).
QUOTE_LIMIT: Final = 64

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = QUOTE_LIMIT + 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def quoted(value: object) -> str:
    """A caller's value for an error message: its repr, cut to a short prefix, so that a 1.5 MB
    id makes a short error, not a 1.5 MB one."""
    if isinstance(value, (str, bytes)) and len(value) > QUOTE_LIMIT:
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:QUOTE_LIMIT]!r}…({len(value)} {unit})"
    return _SHORT.repr(value)


def shortened(text: str) -> str:
    """Caller-given text shown as it is in an error message, cut to a short prefix."""
    if len(text) <= QUOTE_LIMIT:
        return text
    return f"{text[:QUOTE_LIMIT]}…({len(text)} chars)"


class SessionHubError(Exception):
    """Base class of every error sessionhub raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class ValidationError(SessionHubError, ValueError):
    """An argument is malformed: a bad id, a wrong type, a non-positive timeout, ..."""

    code = "invalid"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class SessionNotFound(SessionHubError, LookupError):
    """No live session has that id (it never existed, ended, or is not visible here)."""

    code = "not_found"
    http_status = 404
    grpc_status = "NOT_FOUND"

    def __init__(self, session_id: str, message: str | None = None) -> None:
        super().__init__(message or f"session not found: {shortened(session_id)}")
        self.session_id = session_id


class TransitionError(SessionHubError):
    """The lifecycle table has no transition for this state and event."""

    code = "invalid_transition"
    http_status = 409
    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, state: str, event: str, reason: str = "no such transition") -> None:
        super().__init__(f"invalid transition: state={state} event={event} reason={reason}")
        self.state = state
        self.event = event
        self.reason = reason


class DuplicateSession(SessionHubError):
    """The id, or a unique label, is already held by another session."""

    code = "duplicate"
    http_status = 409
    grpc_status = "ALREADY_EXISTS"


class VersionConflict(SessionHubError):
    """An update demanded a version that is no longer current."""

    code = "version_conflict"
    http_status = 409
    grpc_status = "ABORTED"


class CapacityExceeded(SessionHubError):
    """The hub holds as many live sessions as it is allowed to."""

    code = "capacity_exceeded"
    http_status = 503
    grpc_status = "RESOURCE_EXHAUSTED"


class QuotaExceeded(SessionHubError):
    """The user already owns as many live sessions as allowed."""

    code = "quota_exceeded"
    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"


class TooManyRequests(SessionHubError):
    """The session already has as many requests in flight as allowed."""

    code = "too_many_requests"
    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"


class PayloadTooLarge(SessionHubError):
    """A field, data value or history record is larger than its limit."""

    code = "payload_too_large"
    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class Unauthorized(SessionHubError):
    """A server refused the request's credentials."""

    code = "unauthorized"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"


class StoreUnavailable(SessionHubError):
    """The store cannot be reached or refused to work; retry when it is back."""

    code = "store_unavailable"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class DamagedRecord(SessionHubError):
    """A stored record cannot be decoded (written before a limit existed, or damaged): reading it
    fails, while listings and event streams skip it and go on."""

    code = "damaged_record"
    http_status = 500
    grpc_status = "DATA_LOSS"


class ClientClosed(SessionHubError, RuntimeError):
    """A client was used after its ``close()`` (``AsyncClient``, ``Client``, ``GrpcClient``):
    open a new one. A ``RuntimeError`` too, as the transports' own errors for it were."""

    code = "client_closed"  # raised by the client itself: no server sends it


_BY_CODE: dict[str, type[SessionHubError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        SessionNotFound,
        TransitionError,
        DuplicateSession,
        VersionConflict,
        CapacityExceeded,
        QuotaExceeded,
        TooManyRequests,
        PayloadTooLarge,
        Unauthorized,
        StoreUnavailable,
        DamagedRecord,
    )
}


def error_for_code(code: str, message: str) -> SessionHubError:
    """Rebuild the exception a remote face reported (clients raise what the hub raised)."""
    cls = _BY_CODE.get(code, SessionHubError)
    err = cls.__new__(cls)
    SessionHubError.__init__(err, message)
    return err
