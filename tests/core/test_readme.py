"""The README's Python examples run as written and do what their comments say.

Each example is taken from README.md by a line it contains (not by its place, so the README can be
edited freely) and run as a user would paste it: the five-line program in a fresh interpreter, the
fragments with top-level ``await`` over a hub and session made the way the README makes them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sessionhub import SessionHub, TransitionError

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS: list[str] = re.findall(
    r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S
)


def example(containing: str) -> str:
    found = [block for block in BLOCKS if containing in block]
    assert len(found) == 1, f"the README has {len(found)} Python examples with {containing!r}"
    return found[0]


async def run(code: str, **names: Any) -> dict[str, Any]:
    """Run ``code`` (top-level ``await`` allowed) with ``names`` defined; its variables after."""
    scope: dict[str, Any] = {"__name__": "readme", **names}
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, scope)  # a coroutine when the code awaits
    if result is not None:
        await result
    return scope


def test_the_five_line_program_runs() -> None:
    code = example("asyncio.run(main())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


async def test_the_data_and_history_example_does_what_it_says() -> None:
    async with SessionHub() as hub:
        session = await hub.create()
        after = await run(example("hub.data(session.id)"), hub=hub, session=session)
        assert await after["data"].get("stub:SayHello") == {"reply": "yo"}
        assert await after["data"].get("lock") is True
        assert [record.payload for record in after["last"]] == [
            {"n": 2},
            {"n": 1},
            {"method": "Greeter/SayHello"},
        ]
        assert after["calls"] == 3
        assert after["top"].payload == {"n": 2}  # the newest call, now undone
        newest = await after["log"].read(limit=1, newest_first=True)
        assert newest[0].kind == "undo"


async def test_the_transition_example_fails_where_it_says() -> None:
    code = example('hub.transition(sid, "SPAWN")')
    *steps, failing, said = code.strip().splitlines()
    async with SessionHub() as hub:
        sid = (await hub.create()).id
        await run("\n".join(steps), hub=hub, sid=sid)
        assert (await hub.get(sid)).state == "ACTIVE"
        with pytest.raises(TransitionError) as raised:
            await run(failing, hub=hub, sid=sid)
        assert str(raised.value) == said.removeprefix("# ")


async def test_the_morgan_example_runs() -> None:
    after = await run(example("initialize_session_manager"))
    manager = after["manager"]
    try:
        assert after["session"].metadata == {"client_type": "web", "messages": 1}
        metrics = manager.get_metrics()
        assert metrics["active_sessions"] == 1
        assert metrics["total_sessions_created"] == 1
    finally:
        await manager.stop()


def test_every_example_is_valid_python() -> None:
    """The fragments not run above (hooks, subscriptions, framework runners) at least parse."""
    assert len(BLOCKS) >= 9
    for block in BLOCKS:
        compile(
            block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST
        )
