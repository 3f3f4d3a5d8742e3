"""Every error the server reports is raised as the class the embedded hub raises, and changes
nothing; errors a server cannot produce over HTTP are checked through a scripted transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

import sessionhub
from sessionhub import AsyncClient, Client, Limits
from sessionhub._errors import _BY_CODE

MakeClient = Callable[..., Awaitable[AsyncClient]]


async def test_not_found(client: AsyncClient) -> None:
    with pytest.raises(sessionhub.SessionNotFound) as caught:
        await client.get("missing/one")
    assert caught.value.session_id == "missing/one"
    assert "missing/one" in caught.value.message
    for call in (
        client.touch("missing"),
        client.update("missing", details={"a": 1}),
        client.transition("missing", "spawn"),
        client.incr("missing", "n"),
        client.data("missing").set("k", 1),
        client.history("missing").append("k"),
        client.history("missing").read(),
        client.link("missing", "also-missing"),
    ):
        with pytest.raises(sessionhub.SessionNotFound):
            await call
    assert await client.count() == 0


async def test_invalid_input_is_refused_before_or_by_the_server(client: AsyncClient) -> None:
    for bad in ("", "has space", "x" * 201):
        with pytest.raises(sessionhub.ValidationError):
            await client.get(bad)
        with pytest.raises(sessionhub.ValidationError):
            await client.create(bad)
    with pytest.raises(sessionhub.ValidationError):
        await client.create(idle_timeout=-1)
    with pytest.raises(sessionhub.ValidationError):
        await client.create(details={"x": object()})
    with pytest.raises(sessionhub.ValidationError):
        await client.find(limit=0)
    session = await client.create()
    with pytest.raises(sessionhub.ValidationError):
        await client.incr(session.id, "n", by=1.5)  # type: ignore[arg-type]
    with pytest.raises(sessionhub.ValidationError):
        await client.history(session.id).append("bad kind!")
    with pytest.raises(sessionhub.ValidationError):
        await client.link(session.id, session.id)  # a cycle
    assert await client.count() == 1
    assert (await client.get(session.id)).version == session.version


async def test_transition_error(client: AsyncClient) -> None:
    session = await client.create()
    with pytest.raises(sessionhub.TransitionError) as caught:
        await client.transition(session.id, "activate")
    assert "state=CREATED" in caught.value.message
    assert (await client.get(session.id)) == session


async def test_duplicate_and_version_conflict(make_client: MakeClient) -> None:
    client = await make_client(unique_labels=["role"])
    await client.create("taken", labels={"role": "auth"})
    with pytest.raises(sessionhub.DuplicateSession):
        await client.create("taken")
    with pytest.raises(sessionhub.DuplicateSession):
        await client.create("other", labels={"role": "auth"})
    with pytest.raises(sessionhub.VersionConflict):
        await client.update("taken", details={"a": 1}, expected_version=99)
    assert await client.count() == 1
    assert (await client.get("taken")).details == {}


async def test_capacity_quota_and_size_limits(make_client: MakeClient) -> None:
    client = await make_client(
        limits=Limits(max_sessions=2, max_sessions_per_user=1, max_details_bytes=100)
    )
    await client.create(user_id="ada")
    with pytest.raises(sessionhub.QuotaExceeded):
        await client.create(user_id="ada")
    with pytest.raises(sessionhub.PayloadTooLarge):
        await client.create(details={"big": "x" * 200})
    await client.create()
    with pytest.raises(sessionhub.CapacityExceeded):
        await client.create()
    assert await client.count() == 2


async def test_a_wrong_or_missing_token_is_unauthorized(server_url: str, server_token: str) -> None:
    async with AsyncClient(server_url, token=server_token) as good:
        await good.create("kept")
    for token in ("wrong", None):
        async with AsyncClient(server_url, token=token) as client:  # /healthz needs no token
            with pytest.raises(sessionhub.Unauthorized):
                await client.create()
            with pytest.raises(sessionhub.Unauthorized):
                await client.end("kept")
    async with AsyncClient(server_url, token=server_token) as good:
        assert [s.id for s in (await good.find()).items] == ["kept"]


async def test_an_unreachable_server_is_store_unavailable(dead_url: str) -> None:
    client = AsyncClient(dead_url, timeout=2)
    with pytest.raises(sessionhub.StoreUnavailable):
        await client.get("x")
    with pytest.raises(sessionhub.StoreUnavailable):
        await client.start()
    await client.close()
    with pytest.raises(sessionhub.StoreUnavailable), Client(dead_url, timeout=2):
        pytest.fail("entering checks that the server answers")
    sync_client = Client(dead_url, timeout=2)
    with pytest.raises(sessionhub.StoreUnavailable):
        sync_client.create()
    sync_client.close()


async def test_store_unavailable_never_shows_the_urls_credentials_or_the_token(
    dead_url: str,
) -> None:
    host = dead_url.removeprefix("http://")
    url = f"http://ada:pa55word@{host}"
    secrets = ("ada", "pa55word", "t0ken-secret")
    client = AsyncClient(url, token="t0ken-secret", timeout=2)
    with pytest.raises(sessionhub.StoreUnavailable) as async_error:
        await client.get("x")
    await client.close()
    sync_client = Client(url + "/", token="t0ken-secret", timeout=2)
    with pytest.raises(sessionhub.StoreUnavailable) as sync_error:
        sync_client.create()
    sync_client.close()
    failures = [str(async_error.value), repr(client), str(sync_error.value), repr(sync_client)]
    for shown in failures:
        assert f"http://{host}" in shown, shown
        assert not any(secret in shown for secret in secrets), shown


@pytest.mark.parametrize("code", sorted(_BY_CODE))
async def test_every_error_code_becomes_its_class(code: str) -> None:
    """Codes no HTTP endpoint can trigger here (too_many_requests comes from request tracking,
    store_unavailable from a failing store) are translated by the same path."""
    cls = _BY_CODE[code]

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": code, "message": f"it is {code}"}}
        return httpx.Response(cls.http_status, json=body)

    client = AsyncClient("http://hub.test", transport=httpx.MockTransport(answer))
    with pytest.raises(cls) as caught:
        await client.get("s")
    await client.close()
    assert type(caught.value) is cls
    assert caught.value.message == f"it is {code}"


async def test_a_non_json_error_is_a_sessionhub_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    client = AsyncClient("http://hub.test", transport=httpx.MockTransport(answer))
    with pytest.raises(sessionhub.SessionHubError, match="HTTP 502"):
        await client.get("s")
    await client.close()


def test_a_server_url_must_be_http() -> None:
    for bad in ("ftp://x", "localhost:7480", ""):
        with pytest.raises(sessionhub.ValidationError):
            AsyncClient(bad)
        with pytest.raises(sessionhub.ValidationError):
            Client(bad)
