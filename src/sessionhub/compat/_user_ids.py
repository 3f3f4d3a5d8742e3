"""Morgan's user ids (any string) as hub user ids (1-200 printable ASCII without whitespace).

The mapping is one-to-one, so ``find(user_id=...)`` finds exactly one Morgan user's sessions:

- a valid hub id that does not start with ``~`` is kept as it is (``"user-123"``);
- any other string is ``~`` followed by its UTF-8 percent-encoding (``"user 123"`` is
  ``"~user%20123"``, ``"ü"`` is ``"~%C3%BC"``, ``""`` is ``"~"``), which decodes back;
- when that is longer than 200 characters, it is ``~sha256:`` and the SHA-256 of the UTF-8 bytes;
  that form cannot be decoded, so the original is also kept in the session's data, under
  ``ORIGINAL_KEY`` (as it is; one that UTF-8, and so JSON, cannot hold, such as a lone surrogate,
  as ``{"percent_encoded": ...}``).

No kept id starts with ``~``; no percent-encoding starts with ``sha256:`` followed by 64 hex digits
(such a string is a valid id, kept as it is), so ``is_hashed`` tells the two forms apart.
"""

from __future__ import annotations

import hashlib
import string
from urllib.parse import quote, unquote

from .._errors import ValidationError
from .._limits import check_id

__all__ = ["ORIGINAL_KEY", "from_hub", "from_kept", "is_hashed", "kept", "to_hub"]

#: The session data key that holds the original of a hashed user id.
ORIGINAL_KEY = "morgan.user_id"

_PREFIX = "~"
_HASHED = _PREFIX + "sha256:"
_MAX_ID = 200
# Printable ASCII punctuation stays readable; "%" (the escape), whitespace and the rest are escaped.
_SAFE = string.punctuation.replace("%", "")


def _valid(value: str) -> bool:
    try:
        check_id(value, "user_id")
    except ValidationError:
        return False
    return True


def to_hub(user_id: str) -> str:
    """The hub user id of a Morgan user id."""
    if type(user_id) is not str:
        raise ValidationError(f"user_id must be a string or None, got {user_id!r}")
    if _valid(user_id) and not user_id.startswith(_PREFIX):
        return user_id
    encoded = _PREFIX + quote(user_id, safe=_SAFE, errors="surrogatepass")
    if len(encoded) <= _MAX_ID:
        return encoded
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASHED + digest


def is_hashed(hub_user_id: str) -> bool:
    """Whether ``hub_user_id`` is a hash, whose original is kept under ``ORIGINAL_KEY``."""
    digest = hub_user_id[len(_HASHED) :]
    return (
        hub_user_id.startswith(_HASHED)
        and len(digest) == 64
        and all(c in string.hexdigits for c in digest)
    )


def from_hub(hub_user_id: str) -> str:
    """The Morgan user id of a hub user id that is not hashed."""
    if not hub_user_id.startswith(_PREFIX):
        return hub_user_id
    return unquote(hub_user_id[len(_PREFIX) :], errors="surrogatepass")


def kept(user_id: str) -> str | dict[str, str]:
    """The original of a hashed user id as session data keeps it (JSON)."""
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return {"percent_encoded": quote(user_id, safe=_SAFE, errors="surrogatepass")}
    return user_id


def from_kept(value: object) -> str | None:
    """The user id ``kept`` made ``value`` of; None if it is not such a value."""
    if type(value) is str:
        return value
    if type(value) is dict and type(encoded := value.get("percent_encoded")) is str:
        return unquote(encoded, errors="surrogatepass")
    return None
