"""An ended session's record states the retention it is kept for (its own, else the hub's default
when it ended), on every store: ``get``, the ``ended`` event, data and history reads and
``find(include_ended=True)`` agree on when it goes, whatever default a hub has later."""

from __future__ import annotations

import pytest

from sessionhub import ManualClock, SessionNotFound

from .helpers import MakeHub, next_events


@pytest.mark.parametrize("own", [None, 30.0])
async def test_an_ended_record_states_how_long_it_is_kept(
    make_hub: MakeHub, clock: ManualClock, own: float | None
) -> None:
    hub = await make_hub(retention=100, idle_timeout=None)
    events = hub.subscribe()
    await hub.create("s", retention=own)
    await hub.data("s").set("k", 1)
    await hub.end("s")
    kept = 100.0 if own is None else own
    ended = await hub.get("s")
    assert ended.retention == kept
    *_, done = await next_events(events, 3)
    await events.aclose()
    assert (done.kind, done.session) == ("ended", ended)
    clock.advance(kept - 0.5)
    assert await hub.get("s") == ended
    assert await hub.data("s").get("k") == 1
    assert [s.id for s in (await hub.find(include_ended=True)).items] == ["s"]
    clock.advance(0.5)  # exactly ended_at + retention: gone everywhere at once
    with pytest.raises(SessionNotFound):
        await hub.get("s")
    with pytest.raises(SessionNotFound):
        await hub.data("s").get("k")
    assert (await hub.find(include_ended=True)).items == []


async def test_a_session_ended_without_retention_keeps_none(make_hub: MakeHub) -> None:
    hub = await make_hub(idle_timeout=None)  # retention 0: deleted at its end
    events = hub.subscribe()
    await hub.create("s")
    await hub.end("s")
    *_, done = await next_events(events, 3)
    await events.aclose()
    assert done.kind == "ended"
    assert done.session is not None
    assert done.session.retention is None
    with pytest.raises(SessionNotFound):
        await hub.get("s")
