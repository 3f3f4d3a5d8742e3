"""examples/header_sessions.py, served for real, answers input it cannot use with a 400 (never a
500 and a traceback), and changes nothing."""

from __future__ import annotations

import httpx
import pytest
from examples.header_sessions import HEADER, create_app

from sessionhub import SessionHub
from tests.middleware.conftest import serving


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/stubs/Greeter.SayHello", b'{"reply": '),
        ("/stubs/Greeter.SayHello", b"\xff\xfe"),
        ("/stubs/Greeter.SayHello", b"[1, 2]"),
        ("/stubs/Greeter.SayHello", b'{"answer": 1}'),
        ("/call/Greeter.SayHello", b"not json"),
    ],
)
async def test_bad_input_is_a_400(path: str, body: bytes) -> None:
    async with serving(create_app(SessionHub())) as url, httpx.AsyncClient(base_url=url) as http:
        headers = {HEADER: "t1", "Content-Type": "application/json"}
        answer = await http.post(path, content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"}
        verified = await http.get("/verify/Greeter.SayHello", headers={HEADER: "t1"})
        assert verified.json()["calls"] == 0
        missing = await http.post("/call/Greeter.SayHello", json={}, headers={HEADER: "t1"})
        assert missing.status_code == 404  # no stub was stored
