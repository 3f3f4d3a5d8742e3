"""redis-py's lost-connection race is a clear ``StoreUnavailable``; nothing else is taken for it."""

from __future__ import annotations

import os

import pytest

from sessionhub.stores.redis_cluster import _closed_writer_race


def raised_in(filename: str, code: str) -> BaseException:
    with pytest.raises((AttributeError, TypeError)) as info:
        exec(compile(code, filename, "exec"), {})
    return info.value


def test_a_write_on_a_closed_writer_inside_redis_py_is_a_lost_connection() -> None:
    # what redis-py 8.1's Connection._send_packed_command raises once the peer closed the socket
    where = os.path.join("site-packages", "redis", "asyncio", "connection.py")
    assert _closed_writer_race(raised_in(where, "None.writelines([b'PING'])"))
    stdlib = os.path.join("lib", "python3.11", "asyncio", "selector_events.py")
    assert _closed_writer_race(raised_in(stdlib, "_write_ready = None\n_write_ready()"))


def test_the_same_errors_anywhere_else_stay_bugs() -> None:
    ours = os.path.join("src", "sessionhub", "stores", "redis_cluster.py")
    assert not _closed_writer_race(raised_in(ours, "None.writelines([b'PING'])"))
    assert not _closed_writer_race(raised_in("<string>", "len(None)"))
