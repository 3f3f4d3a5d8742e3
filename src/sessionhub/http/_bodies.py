"""The JSON bodies of the HTTP face's own routes (request leases), beside the shared ``_wire``."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from .._leases import DEFAULT_LEASE, MAX_LEASE
from .._models import Session

__all__ = ["Lease", "LeaseBody", "NoBody", "Released"]


class NoBody(msgspec.Struct, forbid_unknown_fields=True):
    """A route that takes no input: nothing, or ``{}``."""


class LeaseBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/sessions/{id}/requests``: how long the request may stay in flight unreleased."""

    lease: Annotated[float, Meta(gt=0, le=MAX_LEASE)] = DEFAULT_LEASE


class Lease(msgspec.Struct):
    """A request in flight: release it with ``DELETE .../requests/{lease_id}``; if it is not
    released within ``expires_in`` seconds, it is released then."""

    lease_id: str
    expires_in: float
    session: Session


class Released(msgspec.Struct):
    """``DELETE /v1/sessions/{id}/requests/{lease_id}``: the session once released."""

    session: Session
