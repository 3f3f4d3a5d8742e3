"""What every shared store must still do after records were damaged behind its back.

The stores' tests write, straight into the file or the keys, a session record ``poisoned`` (beside
live sessions ``a``, ``b`` and ``z``) and a data value ``deep`` of ``a`` that cannot be decoded, as
data written before the nesting bound was; then they call this.
"""

from __future__ import annotations

import pytest

from sessionhub import DamagedRecord, ManualClock, SessionHub


async def assert_the_others_still_work(
    hub: SessionHub, clock: ManualClock, *, damaged_at_least: int
) -> None:
    # listings skip it (also when it ends a page), reads of it say what is wrong
    assert [s.id for s in (await hub.find()).items] == ["a", "b", "z"]
    page = await hub.find(limit=2)
    assert [s.id for s in page.items] == ["a", "b"]
    assert page.cursor is not None
    page = await hub.find(limit=1, cursor="b")
    assert (page.items, page.cursor) == ([], "poisoned")
    assert [s.id for s in (await hub.find(cursor="poisoned")).items] == ["z"]
    with pytest.raises(DamagedRecord, match="session poisoned"):
        await hub.get("poisoned")
    assert (await hub.get("a")).id == "a"
    assert await hub.data("a").items() == {"k": 1}
    with pytest.raises(DamagedRecord, match="data value deep of session a"):
        await hub.data("a").get("deep")
    assert [r.payload for r in await hub.history("a").read()] == [1]

    # expiry passes go on for the others, and do not pick the damaged record again
    clock.advance(61)
    assert await hub.expire_due() == 3
    assert await hub.expire_due() == 0
    assert hub.store.damaged_records >= damaged_at_least
