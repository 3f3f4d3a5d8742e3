"""The small ASGI vocabulary the HTTP face needs: a request view and a JSON reply.

The face is bare ASGI rather than a framework: routing must see the raw path (session ids may hold
``/``, ``%``, ``?`` and ``#``, sent percent-encoded), and a bare app is what keeps
``GET /v1/sessions/{id}`` fast (``benchmarks/bench_http.py`` measures it beside a bare Starlette
route).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple, TypeVar, overload
from urllib.parse import parse_qsl

import msgspec
import msgspec.inspect

from .._errors import PayloadTooLarge, ValidationError
from .._models import json_encoder
from ._guard import is_json, quoted

__all__ = [
    "JSON",
    "HttpRefusal",
    "Receive",
    "Reply",
    "Request",
    "Scope",
    "Send",
    "header_map",
    "json_reply",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

JSON = b"application/json"


class HttpRefusal(Exception):
    """A refusal of the HTTP face itself (no hub error says it): wrong media type, host, origin."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Reply(NamedTuple):
    """A complete answer: status, body and content type."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, json_encoder.encode(value))


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Each header's first value by (lower-case) name: built in one C-level pass, then every
    header the request path needs is one dict lookup instead of one scan of the list each."""
    headers = scope["headers"]
    if not isinstance(headers, list):
        headers = list(headers)
    return dict(reversed(headers))  # a repeated header: its first value is written last


# Set in a request's scope once its whole body was read (see body_left).
BODY_READ = "sessionhub.body_read"


def body_left(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """Whether the request came with a body that was not read to its end (a reply refused it
    first): the server will not read past it, so the connection cannot carry another request."""
    if scope.get(BODY_READ):
        return False
    length = headers.get(b"content-length")
    return headers.get(b"transfer-encoding") is not None or (length is not None and length != b"0")


class Request:
    """One HTTP request: path parameters from the router, query and headers decoded on demand."""

    __slots__ = ("_query", "headers", "max_body", "params", "receive", "scope")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        params: list[str],
        max_body: int,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params
        self.max_body = max_body
        self.headers = header_map(scope) if headers is None else headers
        self._query: list[tuple[str, str]] | None = None

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    def header(self, name: bytes) -> str | None:
        """The first value of a header; ``name`` in lower case."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def query(self) -> list[tuple[str, str]]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = parse_qsl(raw, keep_blank_values=True)
        return self._query

    def arg(self, name: str) -> str | None:
        """The last value of a query parameter (``None`` if absent)."""
        found = None
        for key, value in self.query:
            if key == name:
                found = value
        return found

    def args(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    @overload
    def int_arg(self, name: str) -> int | None: ...
    @overload
    def int_arg(self, name: str, default: int) -> int: ...
    def int_arg(self, name: str, default: int | None = None) -> int | None:
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not -(2**63) <= value < 2**63:  # what every store can hold
            raise ValidationError(
                f"query parameter {name} must be a 64-bit integer, got {quoted(raw)}"
            )
        return value

    def bool_arg(self, name: str) -> bool:
        raw = self.arg(name)
        if raw is None or raw == "false":
            return False
        if raw == "true":
            return True
        raise ValidationError(f"query parameter {name} must be true or false, got {quoted(raw)}")

    async def body(self) -> bytes:
        """The whole body, refused with 413 past ``max_body`` bytes (checked while it arrives),
        and with 415 unless it is declared ``application/json`` (a web page cannot send that
        cross-origin without a CORS preflight)."""
        headers = self.headers
        declared_type = headers.get(b"content-type")
        content_type = None if declared_type is None else declared_type.decode("latin-1")
        if content_type is not None and not is_json(content_type):
            raise _not_json(content_type)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            if not message.get("more_body", False):
                chunks.append(chunk)
                break
            chunks.append(chunk)
        self.scope[BODY_READ] = True
        # The usual whole body in one message: nothing to join.
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if raw and content_type is None:
            raise _not_json(None)
        return raw

    async def json(self, kind: type[T]) -> T:
        """The body decoded into ``kind``; an empty body is an empty object."""
        raw = await self.body()
        try:
            return _decode(raw or b"{}", kind)
        except UnicodeDecodeError:
            raise ValidationError("request body is not valid UTF-8") from None
        except RecursionError:  # msgspec's own bound, deeper than the hub's
            raise ValidationError("request body is nested too deeply") from None


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decode(raw: bytes, kind: type[T]) -> T:
    decoder = _DECODERS.get(kind)
    if decoder is None:  # one per body type: a decode with type= looks the type up each call
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        value: T = decoder.decode(raw)
        return value
    except msgspec.ValidationError as exc:
        whole = _with_whole_numbers(raw, kind)
        if whole is not None:
            return whole
        raise ValidationError(f"invalid request body: {_short(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"request body is not valid JSON: {_short(str(exc))}") from None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_INTEGER_FIELDS: dict[type[Any], frozenset[str]] = {}


def _integer_fields(kind: type[Any]) -> frozenset[str]:
    names = _INTEGER_FIELDS.get(kind)
    if names is None:
        info = msgspec.inspect.type_info(kind)
        found = set()
        if isinstance(info, msgspec.inspect.StructType):
            for field in info.fields:
                types = (
                    field.type.types
                    if isinstance(field.type, msgspec.inspect.UnionType)
                    else (field.type,)
                )
                if any(isinstance(t, msgspec.inspect.IntType) for t in types):
                    found.add(field.encode_name)
        names = _INTEGER_FIELDS[kind] = frozenset(found)
    return names


def _with_whole_numbers(raw: bytes, kind: type[T]) -> T | None:
    """``raw`` decoded into ``kind`` once whole numbers written as floats (``3.0``) are taken as
    the integers they are for JSON and the OpenAPI document; ``None`` if that changes nothing."""
    names = _integer_fields(kind)
    if not names:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:  # a typed decode can stop at a wrong type before bad JSON
        return None
    if not isinstance(value, dict):
        return None
    whole = {
        name: int(item)
        for name, item in value.items()
        if name in names and type(item) is float and item.is_integer()
    }
    if not whole:
        return None
    try:
        return msgspec.convert({**value, **whole}, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {_short(str(exc))}") from None


def _not_json(content_type: str | None) -> HttpRefusal:
    got = "none" if content_type is None else quoted(content_type)
    return HttpRefusal(
        415, "unsupported_media_type", f"request bodies must be application/json, got {got}"
    )


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes")
