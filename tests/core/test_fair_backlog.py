"""The fair keys' backlog set, on a real Redis: every script that puts a task into a key's list or takes one out
keeps the entry of a key with `BACKLOG_LISTED` or more tasks waiting equal to the tasks waiting in its lists (all
levels), a key with fewer has no entry, and the inspection layer reads the most backlogged keys from it in order,
ties by name, then keys with fewer from the turns, ordered by their lists, then keys that have settings but nothing
waiting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gopherq import Settings
from gopherq.core import codec
from gopherq.core.audit import Actor
from gopherq.core.broker import Broker, SpecialPush
from gopherq.core.fair import FairKeys
from gopherq.core.fairspec import BACKLOG_LISTED
from gopherq.core.inspect import Inspector
from gopherq.core.inspect.fair_keys import LEVELS
from gopherq.core.inspect.operations import Operator
from gopherq.core.inspect.reading import text
from gopherq.core.keys import WAKE_MARKER, QueueKeys
from gopherq.core.sections import FairSettings


def envelope(task_id: str, key: str | None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": task_id, "type": "rec", **fields}
    if key is not None:
        body["fair_key"] = key
    return codec.dumps(body)


async def enqueue(broker: Broker, items: list[tuple[str, str]], **fields: Any) -> None:
    level = fields.get("priority")
    pushes = [SpecialPush(task_id, envelope(task_id, key, **fields), priority=level) for task_id, key in items]
    assert await broker.push_special(pushes) == [None] * len(pushes)


async def backlog_set(aredis: aioredis.Redis, keys: QueueKeys) -> dict[str, int]:
    return {
        member.decode(): int(score) for member, score in await aredis.zrange(keys.fair_backlog, 0, -1, withscores=True)
    }


async def listed(aredis: aioredis.Redis, keys: QueueKeys, names: list[str]) -> dict[str, int]:
    """What the backlog set must hold: the keys with BACKLOG_LISTED or more tasks waiting, all levels."""
    return {name: n for name, n in (await lists(aredis, keys, names)).items() if n >= BACKLOG_LISTED}


async def lists(aredis: aioredis.Redis, keys: QueueKeys, names: list[str]) -> dict[str, int]:
    """What the keys' lists hold, all levels (keys with nothing waiting left out)."""
    counts = {}
    for name in names:
        n = sum([await aredis.llen(keys.fair_list(letter, name)) for letter in LEVELS.values()])
        if n:
            counts[name] = n
    return counts


async def test_the_backlog_set_follows_every_move_and_an_idle_key_leaves_no_entry(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    operator = Operator(Inspector(aredis, settings), Actor("tester", "cli"))
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, ["acme", "beta", "cyan"]

    async def same() -> dict[str, int]:
        found = await backlog_set(aredis, keys)
        assert found == await listed(aredis, keys, names)
        return found

    await enqueue(broker, [(f"a{i}", "acme") for i in range(1, 7)] + [(f"b{i}", "beta") for i in range(1, 4)])
    await enqueue(broker, [("h1", "acme"), ("h2", "cyan")], priority="high")
    assert await same() == {"acme": 7}  # beta's 3 and cyan's 1: no entries
    await enqueue(broker, [("b4", "beta")])  # beta reaches BACKLOG_LISTED: its entry is made
    assert await same() == {"acme": 7, "beta": 4}
    assert await operator.run_now(queue_name, "a3") == "done"  # the same task, at its list's head
    assert await operator.delete_task(queue_name, "a2") == "done"
    assert await operator.delete_task(queue_name, "h2") == "done"  # cyan's last task
    assert await same() == {"acme": 6, "beta": 4}
    assert await operator.delete_task(queue_name, "b4") == "done"  # beta falls below: its entry goes
    assert await same() == {"acme": 6}
    await aredis.rpush(queue_name, envelope("c1", "cyan"))  # a raw push: the claim sorts it into its key's list
    got = await broker.claim(2, 60000)
    assert got is not None and [codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER] == ["h1", "a3"]
    assert await same() == {"acme": 4}
    while (got := await broker.claim(5, 60000)) is not None and got:
        await same()
    assert await aredis.exists(keys.fair_backlog) == 0


async def test_the_most_backlogged_keys_are_read_in_order_ties_by_name(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    inspect = Inspector(aredis, make_settings())
    broker = Broker(aredis, queue_name, "w1")
    sizes = {"a": 1, "b": 3, "c": 3, "d": 3, "e": 1, "f": 5}
    await enqueue(broker, [(f"{key}{i}", key) for key, n in sizes.items() for i in range(n)])
    await FairKeys(aredis, queue_name, FairSettings()).set("zz", weight=2.0)  # settings, nothing waiting

    async def top(limit: int) -> list[tuple[str, int]]:
        return [(info.key, info.backlog) for info in await inspect.fair_keys(queue_name, limit)]

    assert await top(1) == [("f", 5)]
    assert await top(3) == [("f", 5), ("b", 3), ("c", 3)]
    assert await top(5) == [("f", 5), ("b", 3), ("c", 3), ("d", 3), ("a", 1)]
    assert await top(10) == [("f", 5), ("b", 3), ("c", 3), ("d", 3), ("a", 1), ("e", 1), ("zz", 0)]
    [zz] = await inspect.fair_keys(queue_name, 1, only="zz")
    assert (zz.backlog, zz.limits.weight, zz.source) == (0, 2.0, "run-time")


async def test_one_level_claims_write_each_entry_as_its_list_length_and_keep_the_turns(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """With keyed tasks at one level only the claim writes each key's entry from its list's length, once per pass
    (not a ZINCRBY per turn), and takes its keys out of the turns in one step: the entries still equal the lists
    after every claim, whatever its size, the turns go round by name at two tasks a visit, and a raw push of
    another level sorted in by a claim (the levels mixed from then on) keeps them equal too."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, ["a", "b", "c", "d", "e"]
    await enqueue(broker, [(f"{key}{i}", key) for key in names for i in range(7)])
    got = await broker.claim(10, 60000)
    assert got is not None and [codec.loads(raw)["id"] for _, raw in got] == [
        f"{key}{i}" for key in names for i in (0, 1)
    ]
    assert await backlog_set(aredis, keys) == await listed(aredis, keys, names) == {key: 5 for key in names}
    await aredis.rpush(queue_name, envelope("h1", "c", priority="high"))  # sorted in by the next claim
    claimed = []
    for size in (3, 1, 4, 2, 7, 50):
        got = await broker.claim(size, 60000)
        assert got is not None
        claimed += [codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER]
        assert await backlog_set(aredis, keys) == await listed(aredis, keys, names)
    assert sorted(claimed) == sorted(["h1"] + [f"{key}{i}" for key in names for i in range(2, 7)])
    for key in names:  # each key's tasks in enqueue order
        mine = [task for task in claimed if task[0] == key and task != "h1"]
        assert mine == sorted(mine)
    assert await aredis.exists(keys.fair_backlog, keys.fair_active("d"), keys.fair_active("h")) == 0


async def test_keys_a_claim_takes_out_but_does_not_reach_go_back_to_their_turns(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """A claim takes its next keys out of the turns in one step; those it does not reach (its room filled by a
    heavier key, or a key served already coming round first) go back: after every claim the level's turns are
    exactly the keys with tasks waiting there, and every task is claimed once."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, ["big", "a", "b", "c"]
    await FairKeys(aredis, queue_name, FairSettings()).set("big", weight=4.0)  # 8 tasks a visit
    await enqueue(broker, [(f"{key}{i}", key) for key in names for i in range(12 if key == "big" else 4)])
    claimed: list[str] = []
    for size in [3, 5, 1, 2, 9, 3, 4, 50]:
        got = await broker.claim(size, 60000)
        assert got is not None
        claimed += [codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER]
        turns = {text(member) for member in await aredis.zrange(keys.fair_active("d"), 0, -1)}
        assert turns == set(await lists(aredis, keys, names))
        assert await backlog_set(aredis, keys) == await listed(aredis, keys, names)
    assert sorted(claimed) == sorted(f"{key}{i}" for key in names for i in range(12 if key == "big" else 4))


async def test_a_key_emptied_after_the_keyless_turn_sorted_a_raw_push_into_it_leaves_the_turns(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """The keyless turn sorts a raw push with a fair key into its key's list (which puts the key back in the
    turns); when the same pass then empties that key, it leaves the turns: nothing stays behind for an idle key."""
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [("k1", "kk")])
    await aredis.rpush(queue_name, envelope("p1", None), envelope("r1", "kk"), envelope("p2", None))
    got = await broker.claim(4, 60000)  # the room filled by that pass: no further look at the turns
    assert got is not None and sorted(codec.loads(raw)["id"] for _, raw in got) == ["k1", "p1", "p2", "r1"]
    assert await aredis.exists(keys.fair_active("d"), keys.fair_backlog, keys.fair_list("d", "kk")) == 0


def test_the_scripts_and_the_inspection_agree_on_which_keys_have_entries() -> None:
    source = (Path(__file__).parents[2] / "gopherq/core/lua/fair_base.lua").read_text()
    assert f"local FAIR_TOP = {BACKLOG_LISTED} " in source
    assert f"local FAIR_BELOW_TOP = '({BACKLOG_LISTED}'" in source


async def test_a_key_reaching_the_listed_backlog_across_levels_gets_its_entry_and_listings_fill_from_the_turns(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A push counts the key's tasks at every level: 2 waiting at default and 2 at high make an entry of 4 (the
    pushed level's list alone is 2). A listing with more room than the set has entries takes as many keys from each
    level's turns, shown by their lists' lengths, and keeps its limit."""
    inspect = Inspector(aredis, make_settings())
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, ["mix", "one", "two", "three"]
    await enqueue(broker, [("m1", "mix"), ("m2", "mix"), ("o1", "one"), ("t1", "two"), ("t2", "two")])
    await enqueue(broker, [("t3", "three"), ("t4", "three"), ("t5", "three")])
    await enqueue(broker, [("m3", "mix")], priority="high")
    assert await backlog_set(aredis, keys) == {}
    await enqueue(broker, [("m4", "mix")], priority="high")
    assert await backlog_set(aredis, keys) == await listed(aredis, keys, names) == {"mix": 4}

    async def top(limit: int) -> list[tuple[str, int]]:
        return [(info.key, info.backlog) for info in await inspect.fair_keys(queue_name, limit)]

    assert await top(1) == [("mix", 4)]
    # Room for 2 more: the next 2 in turn ("one", "three": the same virtual time, by name), by their backlogs.
    assert await top(3) == [("mix", 4), ("three", 3), ("one", 1)]
    assert await top(10) == [("mix", 4), ("three", 3), ("two", 2), ("one", 1)]


async def test_one_enqueue_call_counts_what_it_pushed_at_other_levels(aredis: aioredis.Redis, queue_name: str) -> None:
    """The level counts are read once per script call; the levels that call pushes to count from then on: 2 tasks
    of a key at default and 2 at high in one call make its entry of 4."""
    broker = Broker(aredis, queue_name, "w1")
    pushes = [
        SpecialPush(task_id, envelope(task_id, "mix", priority=level), priority=level)
        for task_id, level in [("d1", None), ("h1", "high"), ("h2", "high"), ("d2", None)]
    ]
    assert await broker.push_special(pushes) == [None] * 4
    assert await backlog_set(aredis, broker.keys) == {"mix": 4}
