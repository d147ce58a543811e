"""The ready listing with fair keys, on a real Redis (`Inspector.ready`, which the CLI, the API and the dashboard
show): tasks waiting in fair keys' lists are listed with the keyless ones, each line naming its key, in the order
of core/inspect/ready_list.py; `total` is `QueueInfo.ready`; paging by offset and by cursor agree across the
boundaries between levels, plain lists and keys; parked keys come after the keys taking turns; with 1,000 keys a
page reads O(page) (counted by the server's own command statistics); a hostile cursor is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq import Settings
from gopherq.core import codec
from gopherq.core.broker import Broker, SpecialPush
from gopherq.core.fair import FairKeys
from gopherq.core.inspect import Inspector, ready_list
from gopherq.core.inspect.ready_list import ReadyCursor
from gopherq.core.keys import WAKE_MARKER
from tests.support.redis_servers import PrivateRedis


def push(task_id: str, key: str | None = None, priority: str | None = None) -> SpecialPush:
    body: dict[str, Any] = {"id": task_id, "type": "rec"}
    if key is not None:
        body["fair_key"] = key
    if priority is not None:
        body["priority"] = priority
    return SpecialPush(task_id, codec.dumps(body), priority=priority)


async def enqueue(broker: Broker, pushes: list[SpecialPush]) -> None:
    for start in range(0, len(pushes), 500):
        batch = pushes[start : start + 500]
        assert await broker.push_special(batch) == [None] * len(batch)


async def listing(inspector: Inspector, queue: str, limit: int, by_cursor: bool = True) -> list[tuple[Any, Any]]:
    """Every line of the listing, page after page (by cursor, or by offset)."""
    lines: list[tuple[Any, Any]] = []
    cursor = None
    while True:
        page = await inspector.ready(queue, len(lines), limit, cursor if by_cursor else None)
        assert page.offset == len(lines)
        lines += [(item.id, item.fair_key) for item in page.items]
        cursor = page.next_cursor
        if (cursor is None) if by_cursor else len(lines) >= page.total:
            return lines
        assert page.items or by_cursor, "an offset page short of the total came back empty"


#: Keyless and keyed tasks at every level, and the order the listing gives them.
MIXED = [
    push("p0"),
    push("a0", "acme"),
    push("h0", priority="high"),
    push("b0", "beta"),
    push("a1", "acme"),
    push("ah", "acme", "high"),
    push("p1"),
    push("zl", "zed", "low"),
    push("l0", priority="low"),
]
MIXED_ORDER = [
    ("h0", None),
    ("ah", "acme"),
    ("p0", None),
    ("p1", None),
    ("a0", "acme"),
    ("a1", "acme"),
    ("b0", "beta"),
    ("l0", None),
    ("zl", "zed"),
]


async def test_keyed_and_keyless_tasks_are_listed_with_their_keys_and_the_queues_count(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, MIXED)
    await aredis.lpush(broker.keys.ready, WAKE_MARKER)  # not a task: neither listed nor counted
    raw = codec.dumps({"id": "raw", "type": "rec", "fair_key": "acme"})
    await aredis.rpush(broker.keys.level("low"), raw)  # pushed raw: waits in the plain list until a claim sorts it
    inspector = Inspector(aredis, make_settings())

    page = await inspector.ready(queue_name, 0, 50)
    assert [(item.id, item.fair_key) for item in page.items] == [*MIXED_ORDER[:8], ("raw", "acme"), MIXED_ORDER[8]]
    assert page.total == (await inspector.queue(queue_name)).ready == len(MIXED) + 1
    assert page.next_cursor is None
    assert page.to_dict()["items"][1]["fair_key"] == "acme"


async def test_pages_by_offset_and_by_cursor_agree_across_levels_and_keys(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    await enqueue(Broker(aredis, queue_name, "w1"), MIXED)
    inspector = Inspector(aredis, make_settings())
    for limit in (1, 2, 3, 4):
        assert await listing(inspector, queue_name, limit) == MIXED_ORDER, limit
        assert await listing(inspector, queue_name, limit, by_cursor=False) == MIXED_ORDER, limit
        for offset in range(len(MIXED) + 1):  # every start, the boundaries between levels, lists and keys among them
            page = await inspector.ready(queue_name, offset, limit)
            assert [(item.id, item.fair_key) for item in page.items] == MIXED_ORDER[offset : offset + limit]
            assert page.total == len(MIXED) and page.offset == offset


async def test_parked_keys_come_after_the_keys_taking_turns(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, [push("a0", "acme"), push("a1", "acme"), push("a2", "acme"), push("b0", "beta")])
    await enqueue(broker, [push("b1", "beta"), push("c0", "cyan")])
    await FairKeys(aredis, queue_name, settings.fair).pause("beta")
    got = await broker.claim(2, 60000)  # acme's turn, then beta's: paused, so parked; then cyan's
    assert got is not None and [codec.loads(raw)["id"] for _, raw in got] == ["a0", "c0"]
    assert await aredis.zscore(broker.keys.fair_parked, "beta") is not None
    inspector = Inspector(aredis, settings)

    lines = await listing(inspector, queue_name, 2)
    assert lines == [("a1", "acme"), ("a2", "acme"), ("b0", "beta"), ("b1", "beta")]
    assert await listing(inspector, queue_name, 1) == lines  # a cursor in the parked set, at its score +inf
    assert (await inspector.ready(queue_name, 0, 10)).total == (await inspector.queue(queue_name)).ready == 4


async def test_a_thousand_keys_are_paged_through_reading_o_of_the_page(
    make_settings: Callable[..., Settings], private_redis: Callable[..., PrivateRedis]
) -> None:
    server = private_redis()
    redis = aioredis.Redis.from_url(server.url)
    queue = "many"
    try:
        broker = Broker(redis, queue, "w1")
        pushes = [push(f"k{n:04d}-{i}", f"key{n:04d}") for n in range(1000) for i in range(2)]
        pushes += [push(f"plain{i}") for i in range(30)] + [push(f"high{i}", priority="high") for i in range(5)]
        await enqueue(broker, pushes)
        inspector = Inspector(redis, make_settings())

        lines = await listing(inspector, queue, 25)
        assert len(lines) == len({line[0] for line in lines}) == len(pushes)
        assert (await inspector.queue(queue)).ready == len(pushes)
        assert lines[:5] == [(f"high{i}", None) for i in range(5)] and lines[35] == ("k0000-0", "key0000")
        assert lines[-1] == ("k0999-1", "key0999")

        # A page from a cursor deep among the keys: a handful of commands whatever the number of keys.
        deep = await inspector.ready(queue, 1200, 25)
        assert [(item.id, item.fair_key) for item in deep.items] == lines[1200:1225]
        assert deep.next_cursor is not None
        await redis.config_resetstat()
        page = await inspector.ready(queue, 0, 25, deep.next_cursor)
        stats = await redis.info("commandstats")
        assert [(item.id, item.fair_key) for item in page.items] == lines[1225:1250] and page.offset == 1225
        calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
        assert calls.get("llen", 0) <= 4 + 14 and calls.get("lrange", 0) <= 14, calls  # 4 for the counts, 14 keys
        assert calls.get("zrange", 0) <= 25 and calls.get("evalsha", 0) == 1, calls  # a binary search of 1,000
    finally:
        await redis.aclose()


async def test_a_walk_stopped_by_its_budget_goes_on_where_it_stopped(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enqueue(Broker(aredis, queue_name, "w1"), [push(f"t{n:02d}", f"key{n:02d}") for n in range(40)])
    inspector = Inspector(aredis, make_settings())
    whole = [(f"t{n:02d}", f"key{n:02d}") for n in range(40)]
    monkeypatch.setattr(ready_list, "KEYS_PER_CALL", 3)  # a call looks at three keys: pages take several calls
    assert await listing(inspector, queue_name, 5) == whole
    page = await inspector.ready(queue_name, 21, 4)  # 25 keys looked at: nine calls
    assert [(item.id, item.fair_key) for item in page.items] == whole[21:25]
    monkeypatch.setattr(ready_list, "CALLS", 2)  # and at most two calls a page: a short page, whose cursor goes on
    page = await inspector.ready(queue_name, 20, 4)
    assert page.items == [] and page.next_cursor is not None
    lines: list[tuple[Any, Any]] = []
    cursor: str | None = page.next_cursor
    while cursor is not None:
        page = await inspector.ready(queue_name, 0, 4, cursor)
        lines += [(item.id, item.fair_key) for item in page.items]
        cursor = page.next_cursor
    assert lines == whole[20:]


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "W10",  # []
        "x" * 5000,
        ReadyCursor(0, level=4).encode(),
        ReadyCursor(0, section=0).encode(),
        ReadyCursor(-1).encode(),
        ReadyCursor(0, score="nan").encode(),
        ReadyCursor(0, score="1) or 1").encode(),
        ReadyCursor(0, key=b"k" * 801).encode(),
    ],
)
async def test_a_cursor_not_made_by_a_ready_page_is_refused(
    cursor: str, make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await Inspector(aredis, make_settings()).ready(queue_name, 0, 10, cursor)


async def test_paging_while_workers_claim_skips_no_task_of_a_key(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """Between two pages claims take keys' heads and move their turns on: a key claimed behind the cursor comes
    round again (its tasks may show twice), and no task waiting in a key's list all along is missed."""
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, [push(f"k{n:02d}-{i}", f"key{n:02d}") for n in range(30) for i in range(3)])
    inspector = Inspector(aredis, make_settings())
    seen: set[str] = set()
    claimed: set[str] = set()
    cursor: str | None = None
    while True:
        page = await inspector.ready(queue_name, 0, 7, cursor)
        seen.update(item.id for item in page.items if item.id)
        got = await broker.claim(2, 60000)
        assert got is not None
        claimed.update(codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER)
        cursor = page.next_cursor
        if cursor is None:
            break
    waiting_all_along = {f"k{n:02d}-{i}" for n in range(30) for i in range(3)} - claimed
    assert waiting_all_along <= seen
