"""The blocking Client: the same verbs as AsyncClient, from plain sync code."""

from __future__ import annotations

import pytest

import sessionhub
from sessionhub import Client


def test_every_verb(sync_client: Client) -> None:
    parent = sync_client.create("sync/parent", user_id="ada", labels={"r": "1"}, activate=True)
    assert sync_client.get("sync/parent") == parent
    assert sync_client.exists("sync/parent")
    child = sync_client.create(details={"a": 1})
    assert sync_client.link(parent.id, child.id).parent_id == parent.id
    assert sync_client.update(child.id, details={"b": 2}, remove_details=["a"]).details == {"b": 2}
    assert sync_client.transition(child.id, "spawn").state == "SPAWNING"
    assert sync_client.touch(child.id).id == child.id
    assert sync_client.incr(child.id, "n", 2) == 2
    with sync_client.track_request(child.id) as inside:
        assert inside.id == child.id
    data = sync_client.data(child.id)
    assert data.set("k", [1, 2]).version == 1
    assert data.get("k") == [1, 2]
    assert data.entry("none") is None
    assert data.items() == {"k": [1, 2]}
    assert data.delete("k", expected_version=1)
    history = sync_client.history(child.id)
    assert history.append("call", {"x": 1}).seq == 1
    assert [r.payload for r in history.read()] == [{"x": 1}]
    assert history.counts() == {"call": 1}
    assert history.count("call") == 1
    page = sync_client.find(user_id="ada")
    assert [s.id for s in page.items] == ["sync/parent"]
    assert sync_client.count() == 2
    assert sync_client.metrics().live_sessions == 2
    assert sync_client.end(parent.id)
    assert not sync_client.exists(child.id)  # ended with its parent
    assert sync_client.count() == 0


def test_errors_are_the_hubs(sync_client: Client) -> None:
    with pytest.raises(sessionhub.SessionNotFound):
        sync_client.get("nobody")
    with pytest.raises(sessionhub.ValidationError):
        sync_client.get("not an id")
    session = sync_client.create()
    with pytest.raises(sessionhub.TransitionError):
        sync_client.transition(session.id, "clean")
    with pytest.raises(sessionhub.SessionNotFound), sync_client.track_request("nobody"):
        pytest.fail("the block must not run")


def test_repr_never_shows_the_token(server_url: str) -> None:
    client = Client(server_url, token="very-secret-token")
    assert "very-secret" not in repr(client)
    assert repr(client) == f"Client({server_url!r})"
    client.close()
