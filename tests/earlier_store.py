"""The Redis store of an earlier commit, loaded from git beside today's (benchmarks compare with
it, tests check that the two share one Redis during a rolling upgrade)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from sessionhub.stores.redis import RedisStore

ROOT = Path(__file__).resolve().parent.parent


def redis_store_at(commit: str) -> type[RedisStore] | None:
    """``RedisStore`` as of ``commit``: its ``redis.py`` and ``_redis_lua.py`` from git, imported
    as modules of ``sessionhub.stores`` under other names (the rest of the package is today's);
    None without git or that commit. Its functions' library carries a hash of its code, so it
    loads beside today's on one server."""

    def source(name: str) -> str | None:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:src/sessionhub/stores/{name}"],
            capture_output=True,
            text=True,
        )
        return shown.stdout if shown.returncode == 0 else None

    def module(name: str, code: str) -> ModuleType:
        spec = importlib.util.spec_from_loader(f"sessionhub.stores.{name}", loader=None)
        assert spec is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded
        exec(compile(code, f"{commit}:{name}.py", "exec"), loaded.__dict__)
        return loaded

    lua, store = source("_redis_lua.py"), source("redis.py")
    if lua is None or store is None:
        return None
    tag = f"_at_{commit}"
    module(f"_redis_lua{tag}", lua)
    old = module(f"redis{tag}", store.replace("from ._redis_lua ", f"from ._redis_lua{tag} "))
    cls: type[RedisStore] = old.RedisStore
    return cls
