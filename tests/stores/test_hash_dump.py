"""The RESTORE payloads a create writes its record with: byte for byte what Redis's own DUMP gives
for the hash that HSET of the same fields makes, restored under Redis's deep validation of dump
payloads, and declined for hashes Redis would not keep as a listpack."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub.stores._hash_dump import hash_payload

from ..redis_server import RedisServer

EXAMPLES = 2000 if os.environ.get("SESSIONHUB_SOAK") == "1" else 200

# Values around every edge of Redis's integer entries (7, 13, 16, 24, 32 and 64 bits) and the
# texts that look like integers but are kept as strings.
EDGES = [
    str(n)
    for bound in (0, 127, 4095, 32767, 2**23 - 1, 2**31 - 1, 2**63 - 1)
    for n in (bound - 1, bound, bound + 1, -bound - 1, -bound, -bound - 2)
] + [
    "",
    "-",
    "-0",
    "00",
    "01",
    "+1",
    " 1",
    "1 ",
    "1_0",
    "١٢",
    "1e3",
    "0x1",
    "9" * 20,
    "-" + "9" * 19,
]
TEXT = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-(2**64), 2**64).map(str),
    st.text(max_size=70),
    st.text(alphabet="ab", min_size=60, max_size=66),  # around the 64-byte limit
)
FIELDS = st.dictionaries(TEXT, TEXT, max_size=130) | st.dictionaries(TEXT, TEXT, max_size=8)


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    client.config_set("sanitize-dump-payload", "yes")  # RESTORE checks every entry, and duplicates
    client.config_set("rdbcompression", "no")  # DUMP then gives the listpack as it is, not LZF
    yield client
    client.config_set("sanitize-dump-payload", "no")
    client.config_set("rdbcompression", "yes")
    client.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=FIELDS)
def test_a_payload_is_what_dump_gives_for_the_same_hash(
    server: redis.Redis, fields: dict[str, str]
) -> None:
    server.delete("made", "restored")
    flat = [text for pair in fields.items() for text in pair]
    payload = hash_payload(flat)
    if fields:
        server.hset("made", mapping=fields)  # type: ignore[arg-type]
    listpack = bool(fields) and server.object("encoding", "made") == b"listpack"
    if payload is None:
        assert not listpack  # declined only where HSET makes no listpack (or no hash: empty)
        return
    assert listpack
    assert server.dump("made") == payload
    server.restore("restored", 0, payload)
    stored: dict[bytes, bytes] = server.hgetall("restored")  # type: ignore[assignment]
    assert {k.decode(): v.decode() for k, v in stored.items()} == fields
    assert server.object("encoding", "restored") == b"listpack"


def test_every_edge_of_redis_integer_entries(server: redis.Redis) -> None:
    for fields in ({f"k{i}": text for i, text in enumerate(EDGES)}, dict.fromkeys(EDGES, "v")):
        server.delete("made")
        server.hset("made", mapping=fields)  # type: ignore[arg-type]
        assert server.dump("made") == hash_payload([t for pair in fields.items() for t in pair])


def test_a_restored_record_is_read_and_written_like_one_made_by_hset(server: redis.Redis) -> None:
    server.delete("made", "restored")
    flat = ["v", "1", "n", "-4096", "big", "9223372036854775807", "text", "x" * 64, "empty", ""]
    server.hset("made", mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
    payload = hash_payload(flat)
    assert payload is not None
    server.restore("restored", 0, payload)
    for key in ("made", "restored"):
        assert server.hincrby(key, "v", 1) == 2
        assert server.hincrby(key, "n", -1) == -4097
        server.hset(key, "added", "y")
        server.hdel(key, "text")
    assert server.hgetall("restored") == server.hgetall("made")
    assert server.dump("restored") == server.dump("made")


def test_records_redis_would_not_keep_as_a_listpack_are_declined() -> None:
    assert hash_payload(["f", "x" * 65]) is None
    assert hash_payload(["f" * 65, "x"]) is None
    assert hash_payload([str(i) for i in range(258)]) is None  # 129 fields
    assert hash_payload([str(i) for i in range(256)]) is not None  # 128
    assert hash_payload(["é" * 32, "x"]) is not None  # 64 bytes
    assert hash_payload(["é" * 33, "x"]) is None  # 66 bytes


def test_restore_refuses_a_key_that_exists(server: redis.Redis) -> None:
    """What makes the restore a create's duplicate check: nothing is overwritten."""
    server.delete("taken")
    server.hset("taken", "v", "7")
    payload = hash_payload(["v", "1"])
    assert payload is not None
    with pytest.raises(redis.ResponseError, match="BUSYKEY"):
        server.restore("taken", 0, payload)
    assert server.hgetall("taken") == {b"v": b"7"}
