"""The Lua of the Redis Cluster store: the single-node library's functions, reused, plus one.

Every bucket of the cluster store (see ``sessionhub.stores.redis_cluster``) is laid out exactly like
a single-node store whose key prefix carries the bucket's hash tag (``sessionhub:{b7.12}:``), so
every key a function of ``_redis_lua`` derives from the prefix (the session's own keys and the
bucket's indexes, census, deadlines, claims and event stream) falls in the bucket's one slot, and
those functions run on a Cluster unchanged. This module imports their bodies rather than copying
them, and adds:

- ``create_checked_unparented``: ``create_checked`` without its parent check. A parent in another bucket lives in
  another slot, which a function cannot read; the store checks such a parent before and after the
  create instead (the order and repair are in the store's docstring);
- ``unique_take``/``unique_release``: compare-and-set of a unique label's reservation key.

The library is named ``sessionhub_cluster_<hash>`` so it can sit beside the single-node library.
"""

from __future__ import annotations

from ._redis_lua import _BODIES, build_library

__all__ = ["CLUSTER_FUNCTIONS", "CLUSTER_LIBRARY"]

_PARENT_CHECK = "if p ~= '' then\n  local parent = fields(skey(p)"


def _unparented(create: str) -> str:
    if _PARENT_CHECK not in create:
        raise RuntimeError("create_checked changed: update _cluster_lua._unparented")
    return create.replace(_PARENT_CHECK, "if false then\n  local parent = fields(skey(p)", 1)


# keys: reservation. args: prefix, the value read, the new value. Takes over a stale reservation
# only if nobody changed it since it was read.
_UNIQUE_TAKE = r"""
if call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
call('SET', KEYS[1], ARGV[3])
return 1
"""

# keys: reservation. args: prefix, session id. Deletes it only if that session holds it.
_UNIQUE_RELEASE = r"""
local held = call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. '\t' then
  call('DEL', KEYS[1])
  return 1
end
return 0
"""

_CLUSTER_BODIES = {
    **_BODIES,
    "create_checked_unparented": _unparented(_BODIES["create_checked"]),
    "unique_take": _UNIQUE_TAKE,
    "unique_release": _UNIQUE_RELEASE,
}


CLUSTER_LIBRARY, _, CLUSTER_FUNCTIONS = build_library(_CLUSTER_BODIES, "sessionhub_cluster", "shc")
"""The library's code for ``FUNCTION LOAD`` on every primary, and each operation's function name."""
