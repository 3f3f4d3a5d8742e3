"""Limits, and the checks every argument passes before it reaches a store."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from ._errors import PayloadTooLarge, ValidationError
from ._models import EMPTY, json_encoder

__all__ = ["Limits"]

_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII without whitespace, as GripMock's ids
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a hub allows. Count limits are off (``None``) by default; size limits are on, so that
    every stored field is bounded, and can be raised or switched off with ``None``."""

    max_sessions: int | None = None
    max_sessions_per_user: int | None = None
    quota_policy: Literal["reject", "evict_oldest"] = "reject"
    max_requests_per_session: int | None = None
    max_details_bytes: int | None = 64 * 1024
    max_labels: int | None = 64
    max_label_length: int | None = 256
    max_data_value_bytes: int | None = 1024 * 1024
    max_history_record_bytes: int | None = 64 * 1024

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "quota_policy":
                if value not in ("reject", "evict_oldest"):
                    raise ValidationError("quota_policy must be 'reject' or 'evict_oldest'")
            elif value is not None and (type(value) is not int or value < 1):
                raise ValidationError(f"{name} must be a positive integer or None, got {value!r}")


def check_id(value: object, what: str = "session id") -> str:
    if type(value) is not str or not _ID.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-200 printable ASCII characters without whitespace, got {value!r}"
        )
    return value


def check_name(value: object, what: str) -> str:
    """Counter names, data keys' kinds, history kinds, end reasons: short identifiers."""
    if type(value) is not str or not _NAME.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 characters of letters, digits and _.:/-, got {value!r}"
        )
    return value


def check_key(value: object) -> str:
    if type(value) is not str or not 1 <= len(value) <= 512 or not value.isprintable():
        raise ValidationError(f"data key must be 1-512 printable characters, got {value!r}")
    return value


def check_timeout(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(f"{what} must be a positive number of seconds or None, got {value!r}")
    return float(value)


def check_labels(value: object, limits: Limits) -> Mapping[str, str]:
    if value is None:
        return EMPTY
    if not isinstance(value, Mapping):
        raise ValidationError(f"labels must be a mapping of str to str, got {type(value).__name__}")
    if limits.max_labels is not None and len(value) > limits.max_labels:
        raise PayloadTooLarge(f"{len(value)} labels is more than the limit of {limits.max_labels}")
    longest = limits.max_label_length
    for key, item in value.items():
        if type(key) is not str or type(item) is not str or not key:
            raise ValidationError(f"labels must map non-empty str to str, got {key!r}: {item!r}")
        if longest is not None and (len(key) > longest or len(item) > longest):
            raise PayloadTooLarge(f"label {key[:40]!r} is longer than {longest} characters")
    return dict(value) if value else EMPTY


def encode_json(value: object, what: str, limit: int | None) -> bytes:
    """JSON bytes of ``value``; ``ValidationError`` if it is not JSON, ``PayloadTooLarge`` past
    ``limit``. Stores keep the bytes, so a caller mutating its object later changes nothing."""
    try:
        raw = json_encoder.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise ValidationError(f"{what} must be JSON-serializable: {exc}") from None
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"{what} is {len(raw)} bytes, more than the limit of {limit}")
    return raw


def check_details(value: object, limits: Limits) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if not isinstance(value, Mapping) or not all(type(k) is str for k in value):
        raise ValidationError("details must be a JSON object (a mapping with str keys)")
    raw = encode_json(value, "details", limits.max_details_bytes)
    decoded: dict[str, Any] = msgspec.json.decode(raw)  # a private copy the caller cannot mutate
    return decoded or EMPTY


def check_names(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValidationError(f"{what} must be a list of keys, got {value!r}")
    for name in value:
        if type(name) is not str:
            raise ValidationError(f"{what} must hold strings, got {name!r}")
    return tuple(value)


def check_limit(value: object, maximum: int = 1000) -> int:
    if type(value) is not int or not 1 <= value <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}, got {value!r}")
    return value
