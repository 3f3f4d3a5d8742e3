"""Limits, and the checks every argument passes before it reaches a store."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import msgspec

from ._errors import PayloadTooLarge, ValidationError, quoted
from ._models import EMPTY, json_encoder

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_HISTORY_BATCH",
    "MAX_JSON_DEPTH",
    "MAX_REASON_LENGTH",
    "REASON_PATTERN",
    "Limits",
]

#: How deeply JSON containers (objects, arrays) may nest in any value a caller stores: details,
#: data values, history payloads. Fixed, so that every store and face can always decode and encode
#: what was stored (msgspec and protobuf recurse; about 1,000 levels break them).
MAX_JSON_DEPTH: Final = 64
#: ``Limits.max_history_batch``'s default: one ``append_many`` (one store operation, one Lua call
#: on Redis) stays about as short as a history read's page of at most 1000 records.
MAX_HISTORY_BATCH: Final = 1000
#: Counters are signed 64-bit integers on every store.
INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)
#: End reasons are free text of at most this many characters.
MAX_REASON_LENGTH: Final = 200
#: An end reason, as a regular expression faces can publish (OpenAPI): any characters but control
#: characters (C0, DEL, C1) and line and paragraph separators. (Lone surrogates, which no UTF-8
#: request can carry, are refused too, outside the pattern: validators reject them in a class.)
REASON_PATTERN: Final = rf"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{{1,{MAX_REASON_LENGTH}}}"
_REASON = re.compile(REASON_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")

_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII without whitespace, as GripMock's ids
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a hub allows. Count limits are off (``None``) by default; size limits are on, so that
    every stored field is bounded, and can be raised or switched off with ``None``.

    ``max_json_depth`` (64, fixed) bounds the nesting of every JSON value a caller stores (details,
    data values, history payloads): deeper values are refused with ``ValidationError``.

    ``max_history_batch`` (1000 by default) is the most records one ``history.append_many`` may
    write: a larger batch is refused whole with ``ValidationError`` (HTTP 400, gRPC
    ``INVALID_ARGUMENT``) and nothing is written; ``None`` lifts the bound (a batch is one store
    operation, which holds a Redis server for as long as it runs). Remote clients do not know the
    server's limit: the server refuses.
    """

    max_json_depth: ClassVar[int] = MAX_JSON_DEPTH

    max_sessions: int | None = None
    max_sessions_per_user: int | None = None
    quota_policy: Literal["reject", "evict_oldest"] = "reject"
    max_requests_per_session: int | None = None
    max_details_bytes: int | None = 64 * 1024
    max_labels: int | None = 64
    max_label_length: int | None = 256
    max_data_value_bytes: int | None = 1024 * 1024
    max_history_record_bytes: int | None = 64 * 1024
    max_history_batch: int | None = MAX_HISTORY_BATCH

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "quota_policy":
                if value not in ("reject", "evict_oldest"):
                    raise ValidationError("quota_policy must be 'reject' or 'evict_oldest'")
            elif value is not None and (type(value) is not int or value < 1):
                raise ValidationError(
                    f"{name} must be a positive integer or None, got {quoted(value)}"
                )


def check_id(value: object, what: str = "session id") -> str:
    if type(value) is not str or not _ID.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-200 printable ASCII characters without whitespace, "
            f"got {quoted(value)}"
        )
    return value


def check_name(value: object, what: str) -> str:
    """Counter names, data keys' kinds, history kinds: short identifiers."""
    if type(value) is not str or not _NAME.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 characters of letters, digits and _.:/-, got {quoted(value)}"
        )
    return value


def check_reason(value: object) -> str:
    """End reasons: free text in any language, without control characters (``REASON_PATTERN``)."""
    if type(value) is not str or not _REASON.fullmatch(value) or _SURROGATE.search(value):
        raise ValidationError(
            f"reason must be 1-{MAX_REASON_LENGTH} characters without control characters, "
            f"got {quoted(value)}"
        )
    return value


def check_int64(value: object, what: str) -> int:
    if type(value) is not int:
        raise ValidationError(f"{what} must be an integer, got {quoted(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError(f"{what} must be a signed 64-bit integer, got {quoted(value)}")
    return value


def check_key(value: object) -> str:
    if type(value) is not str or not 1 <= len(value) <= 512 or not value.isprintable():
        raise ValidationError(f"data key must be 1-512 printable characters, got {quoted(value)}")
    return value


# Longer than any deployment lives, short enough that a deadline stays a finite, exact float.
MAX_SECONDS: Final = 1e12


def check_timeout(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
        or value >= MAX_SECONDS
    ):
        raise ValidationError(
            f"{what} must be a positive number of seconds below {MAX_SECONDS:.0e} or None, "
            f"got {quoted(value)}"
        )
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
            raise ValidationError(
                f"labels must map non-empty str to str, got {quoted(key)}: {quoted(item)}"
            )
        if longest is not None and (len(key) > longest or len(item) > longest):
            raise PayloadTooLarge(f"label {quoted(key)} is longer than {longest} characters")
    return dict(value) if value else EMPTY


def encode_json(value: object, what: str, limit: int | None) -> bytes:
    """JSON bytes of ``value``; ``ValidationError`` if it is not JSON, ``PayloadTooLarge`` past
    ``limit``. Stores keep the bytes, so a caller mutating its object later changes nothing."""
    try:
        raw = json_encoder.encode(value)
    except RecursionError:
        raise _too_deep(what) from None
    except (TypeError, ValueError, msgspec.EncodeError, OverflowError) as exc:
        # ValueError: strings with lone surrogates, which UTF-8 cannot encode.
        raise ValidationError(f"{what} must be JSON-serializable: {quoted(str(exc))}") from None
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"{what} is {len(raw)} bytes, more than the limit of {limit}")
    if nests_too_deep(raw):
        raise _too_deep(what)
    return raw


def _too_deep(what: str) -> ValidationError:
    return ValidationError(f"{what} nests JSON objects and arrays more than {MAX_JSON_DEPTH} deep")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def nests_too_deep(raw: bytes) -> bool:
    """Whether containers nest more than ``MAX_JSON_DEPTH`` deep in the JSON text ``raw``, found
    without recursion: drop the strings and all but the brackets, then peel innermost pairs."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # the common case, at C speed
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(MAX_JSON_DEPTH):
        brackets = _INNERMOST.sub(b"", brackets)
        if not brackets:
            return False
    return True


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
        raise ValidationError(f"{what} must be a list of keys, got {quoted(value)}")
    for name in value:
        if type(name) is not str:
            raise ValidationError(f"{what} must hold strings, got {quoted(name)}")
    return tuple(value)


def check_limit(value: object, maximum: int = 1000) -> int:
    if type(value) is not int or not 1 <= value <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}, got {quoted(value)}")
    return value
