"""A small hash as ``RESTORE`` takes it, so that a create writes its record with one command.

Why: a create's record went to Redis as ``HSET`` arguments (``v``, ``ce``, ``ca``, ... a dozen
fields), and each argument cost the server three conversions (a Lua string of ``ARGV``, an object
for ``redis.call``, a listpack entry appended a ``realloc`` at a time): about 27,000 instructions
of a create's 115,000 inside ``FCALL``. ``RESTORE`` of the same hash, encoded here, costs about
3,400 and one argument (measured with callgrind on Redis 7.0; issue 12). It also refuses a key that
exists (``BUSYKEY``), which is the create's duplicate check.

The payload is what ``DUMP`` returns for a hash that Redis keeps as a listpack (RDB type 16, RDB
version 10: Redis 7.0 and later, and Valkey, read it): the listpack's bytes as an RDB string, the
version, and the CRC-64 Redis checks (anycrc: a C implementation of any CRC model, the "Jones"
one Redis uses among them; 1 µs for a record, where Python's own loop took 28 µs). Entries are
encoded exactly as Redis encodes them (integers in canonical form as integers, the rest as
strings), so the restored hash is the one ``HSET`` of the same fields would have made:
tests/stores/test_hash_dump.py compares the bytes with ``DUMP`` of such a hash.

Only hashes that ``HSET`` would keep as a listpack under Redis's default limits (128 fields, 64
bytes a field or value), and not empty, are encoded; for others :func:`hash_payload` returns None and the caller
writes the fields. A server with lower limits then keeps such a restored hash as a listpack where
``HSET`` would have converted it: the same hash, read and written alike.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import anycrc

__all__ = ["hash_payload"]

_crc64: Callable[[bytes], int] = anycrc.Model("CRC64-REDIS").calc

_MAX_FIELDS = 128  # hash-max-listpack-entries
_MAX_BYTES = 64  # hash-max-listpack-value
_HASH_LISTPACK = b"\x10"  # RDB_TYPE_HASH_LISTPACK
_RDB_VERSION = b"\x0a\x00"  # 10, little-endian: Redis 7.0's
_END = b"\xff"

# A string of n < 64 bytes: its header (0b10xxxxxx) and its "back length" (the entry's size, read
# when the listpack is walked backwards); 64 bytes take the 12-bit header.
_STR_HEAD = [bytes([0x80 | n]) for n in range(64)] + [b"\xe0\x40"]
_STR_BACK = [bytes([n + 1]) for n in range(64)] + [b"\x42"]


def _integer(raw: bytes) -> int | None:
    """``raw``, digits with an optional minus sign, as Redis reads it into an integer entry
    (string2ll: canonical and within 64 bits), or None: '01', '-0' and the like stay strings."""
    value = int(raw)
    if b"%d" % value != raw or not -(2**63) <= value < 2**63:
        return None
    return value


def _integer_entry(value: int) -> bytes:
    if 0 <= value <= 127:
        return bytes((value, 1))
    if -4096 <= value <= 4095:
        value &= 0x1FFF
        return bytes((0xC0 | value >> 8, value & 0xFF, 2))
    if -32768 <= value <= 32767:
        return b"\xf1" + struct.pack("<h", value) + b"\x03"
    if -(2**23) <= value < 2**23:
        return b"\xf2" + struct.pack("<i", value)[:3] + b"\x04"
    if -(2**31) <= value < 2**31:
        return b"\xf3" + struct.pack("<i", value) + b"\x05"
    return b"\xf4" + struct.pack("<q", value) + b"\x09"


def _rdb_length(n: int) -> bytes:
    if n < 64:
        return bytes((n,))
    if n < 16384:
        return bytes((0x40 | n >> 8, n & 0xFF))
    return b"\x80" + struct.pack(">I", n)


def _entry(raw: bytes) -> bytes | None:
    """One listpack entry (its header, its bytes, its back length), or None past the limit."""
    size = len(raw)
    if size > _MAX_BYTES:
        return None
    if size <= 20 and (raw.isdigit() or (raw.startswith(b"-") and raw[1:].isdigit())):
        number = _integer(raw)
        if number is not None:
            return _integer_entry(number)
    return _STR_HEAD[size] + raw + _STR_BACK[size]


def _raw(text: str | bytes | int | float) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode()


# The entries of field names seen: a record's names are mostly the same few.
_names: dict[str | bytes | int | float, bytes | None] = {}


def hash_payload(flat: Sequence[str | bytes | int | float]) -> bytes | None:
    """The ``RESTORE`` payload of the hash whose fields and values ``flat`` lists in turn (each
    field once), or None when Redis would not keep it as a listpack (see the module's docstring)."""
    if not flat or len(flat) > 2 * _MAX_FIELDS:
        return None  # (Redis refuses an empty hash)
    parts: list[bytes | None] = []
    add = parts.append
    names = _names
    head, back = _STR_HEAD, _STR_BACK
    for i in range(0, len(flat), 2):
        name = flat[i]
        if name in names:
            add(names[name])
        else:
            entry = _entry(_raw(name))
            if len(names) < 4096:
                names[name] = entry
            add(entry)
        value = flat[i + 1]
        raw = value.encode() if type(value) is str else _raw(value)
        size = len(raw)
        if size > _MAX_BYTES or raw.isdigit() or raw.startswith(b"-"):
            add(_entry(raw))  # (too long: None) or an integer, maybe
        else:
            add(head[size])
            add(raw)
            add(back[size])
    if None in parts:
        return None
    body = b"".join(parts)  # type: ignore[arg-type]
    # The listpack: its total size and number of entries, the entries, the end mark.
    listpack = struct.pack("<IH", 7 + len(body), len(flat)) + body + _END
    payload = _HASH_LISTPACK + _rdb_length(len(listpack)) + listpack + _RDB_VERSION
    return payload + struct.pack("<Q", _crc64(payload))
