"""Morgan accepts any string as a ``user_id``; the hub's user ids are 1-200 printable ASCII characters
without whitespace. Every Morgan user id must create, be found by ``get_session_by_user`` and come
back unchanged, on every store and through another manager over the same hub.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub import SessionHub
from sessionhub.compat.morgan import SessionManager

ODD_USER_IDS = [
    "user 123",  # a space
    "ü",
    "日本語のユーザー",
    "tab\tand\nnewline",
    "x" * 10_000,  # far past the hub's 200 characters
    "ü" * 40,  # past 200 characters once percent-encoded
    "%20",  # looks encoded already
    "~tilde",  # the encoding's own prefix
    "~user%20123",  # what "user 123" is encoded to
    "sha256:" + "0" * 64,  # what a hashed id looks like without its prefix
    "~sha256:" + "0" * 64,  # ... and with it
    "\ud800",  # a lone surrogate: still a Python str
    "\x00",
]


@pytest.mark.parametrize("user_id", ODD_USER_IDS, ids=range(len(ODD_USER_IDS)))
async def test_any_string_is_a_user_id(
    manager: SessionManager, hub: SessionHub, user_id: str
) -> None:
    session = await manager.create_session(user_id=user_id, metadata={"client_type": "web"})
    assert session.user_id == user_id
    assert await manager.get_session_by_user(user_id) is session
    assert await manager.get_session(session.session_id) is session
    assert session.user_id == user_id
    # Another manager over the same hub (nothing cached) sees the original.
    other = SessionManager(hub=hub)
    theirs = await other.get_session_by_user(user_id)
    assert theirs is not None
    assert theirs.session_id == session.session_id
    assert theirs.user_id == user_id


async def test_valid_hub_ids_are_kept_as_they_are(manager: SessionManager) -> None:
    session = await manager.create_session(user_id="user-123")
    assert (await manager.hub.get(session.session_id)).user_id == "user-123"
    found = await manager.hub.find(namespace="morgan", user_id="user-123")
    assert [s.id for s in found.items] == [session.session_id]


async def test_odd_user_ids_do_not_meet(manager: SessionManager) -> None:
    sessions = {u: await manager.create_session(user_id=u) for u in [*ODD_USER_IDS, "user-123"]}
    for user_id, session in sessions.items():
        assert await manager.get_session_by_user(user_id) is session
    hub_ids = {(await manager.hub.get(s.session_id)).user_id for s in sessions.values()}
    assert len(hub_ids) == len(sessions)


async def test_an_empty_user_id_is_kept_but_never_found(manager: SessionManager) -> None:
    """As in Morgan: the session has ``user_id == ""``; lookups by a falsy id find nothing."""
    session = await manager.create_session(user_id="")
    assert session.user_id == ""
    assert await manager.get_session_by_user("") is None
    other = SessionManager(hub=manager.hub)
    theirs = await other.get_session(session.session_id)
    assert theirs is not None
    assert theirs.user_id == ""


async def test_a_user_id_that_is_not_a_string_is_refused(manager: SessionManager) -> None:
    with pytest.raises(ValueError, match="user_id"):
        await manager.create_session(user_id=42)  # type: ignore[arg-type]
    assert await manager.get_session_by_user(42) is None  # type: ignore[arg-type]
    assert manager.get_metrics()["total_sessions_created"] == 0


async def test_a_long_user_id_with_a_lone_surrogate_round_trips(manager: SessionManager) -> None:
    """Hashed (its encoding is too long for a hub id), so its original is kept in the session's
    data, which is JSON: UTF-8 cannot hold a lone surrogate, so it is kept percent-encoded."""
    user_id = "x" * 100 + "\ud800" + "\U00010000" * 40
    session = await manager.create_session(user_id=user_id)
    assert session.user_id == user_id
    assert await manager.get_session_by_user(user_id) is session
    theirs = await SessionManager(hub=manager.hub).get_session(session.session_id)
    assert theirs is not None
    assert theirs.user_id == user_id


any_text = st.text(st.characters(exclude_categories=()), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_ids=st.lists(any_text, min_size=1, max_size=6, unique=True))
def test_every_string_round_trips(user_ids: list[str]) -> None:
    """Generated user ids (any code point, empty to 300 characters): each finds its own session
    only, and comes back unchanged through a second manager."""

    async def check() -> None:
        async with SessionHub() as hub:
            manager = SessionManager(hub=hub)
            sessions = {u: await manager.create_session(user_id=u) for u in user_ids}
            other = SessionManager(hub=hub)
            for user_id, session in sessions.items():
                if not user_id:
                    continue  # never found, as in Morgan (see above)
                assert await manager.get_session_by_user(user_id) is session
                theirs = await other.get_session_by_user(user_id)
                assert theirs is not None
                assert (theirs.session_id, theirs.user_id) == (session.session_id, user_id)

    asyncio.run(check())
