"""The claim's turns among many fair keys, on a real Redis: keys of the same virtual time taken out together (by
rank, without their scores), the lists of keys a visit took a full quantum from looked at in one step, and, through
both, the same bookkeeping as one key at a time: after every claim a level's turns are exactly the keys with tasks
waiting there, the backlog set is what the keys' lists hold, and every task is claimed once, in its key's order."""

from __future__ import annotations

from collections import Counter

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.fair import FairKeys
from gopherq.core.keys import WAKE_MARKER, QueueKeys
from gopherq.core.sections import FairSettings
from tests.core.test_fair_backlog import backlog_set, enqueue, listed

NAMES = [f"t{i:02d}" for i in range(30)]


def sizes(high: bool) -> dict[tuple[str, str], int]:
    """Key t<i> has 1 + i % 5 tasks at the default level, and, with `high`, every third key 1 + i % 3 more at high."""
    out = {(name, "d"): 1 + i % 5 for i, name in enumerate(NAMES)}
    if high:
        out.update({(name, "h"): 1 + i % 3 for i, name in enumerate(NAMES) if i % 3 == 0})
    return out


async def turns(aredis: aioredis.Redis, keys: QueueKeys, letter: str) -> set[str]:
    return {member.decode() for member in await aredis.zrange(keys.fair_active(letter), 0, -1)}


async def waiting_at(aredis: aioredis.Redis, keys: QueueKeys, letter: str) -> set[str]:
    return {name for name in NAMES if await aredis.llen(keys.fair_list(letter, name))}


async def drain(aredis: aioredis.Redis, queue_name: str, high: bool) -> list[list[str]]:
    """Enqueue `sizes(high)`, then claim in batches of several sizes (the first ones larger than the group of keys
    taken by rank needs), checking the turns and the backlog set after each; the ids each claim took."""
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    planned = sizes(high)
    for (name, letter), count in planned.items():
        await enqueue(broker, [(f"{name}.{letter}{i}", name) for i in range(count)],
                      **({"priority": "high"} if letter == "h" else {}))  # fmt: skip
    claims = []
    for size in (40, 17, 3, 60, 1, 100):
        got = await broker.claim(size, 60000)
        assert got is not None
        claims.append([codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER])
        for letter in ("h", "d"):
            assert await turns(aredis, keys, letter) == await waiting_at(aredis, keys, letter)
        assert await backlog_set(aredis, keys) == await listed(aredis, keys, NAMES)
    claimed = [task for claim in claims for task in claim]
    expected = [f"{name}.{letter}{i}" for (name, letter), count in planned.items() for i in range(count)]
    assert sorted(claimed) == sorted(expected)
    for name in NAMES:  # each key's tasks in enqueue order, level by level
        for letter in ("h", "d"):
            mine = [task for task in claimed if task.startswith(f"{name}.{letter}")]
            assert mine == sorted(mine, key=lambda task: int(task.split(letter)[-1]))
    assert await aredis.exists(keys.fair_backlog, keys.fair_active("d"), keys.fair_active("h")) == 0
    return claims


async def test_many_keys_of_the_same_virtual_time_take_turns_a_quantum_each(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """30 keys of 1 to 5 tasks, all at the level's virtual time: the first claim (room for 20 keys at 2 tasks each)
    takes them together, each no more than its quantum, and the keys served go round again at their new times."""
    claims = await drain(aredis, queue_name, high=False)
    first = Counter(task.split(".")[0] for task in claims[0])
    assert len(claims[0]) == 40 and max(first.values()) == 2  # no key twice before the others had their turn
    assert set(first) == set(NAMES[: len(first)])  # ties in name order, as ZPOPMIN gives them


async def test_keys_waiting_at_two_levels_count_their_backlog_entry_per_turn(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """With keyed tasks at two levels a key's backlog entry is not one list's length: each turn counts what it
    took off the entry, and whether a key still waits at a level is still looked up for all its keys at once."""
    await drain(aredis, queue_name, high=True)


async def test_keys_of_different_weights_and_times_share_a_pass(aredis: aioredis.Redis, queue_name: str) -> None:
    """A key with a weight of its own (its settings asked for per key) among keys of the same time, and, after the
    first claims, keys at several virtual times: the claims still leave the turns and the backlog exact."""
    await FairKeys(aredis, queue_name, FairSettings()).set("t04", weight=3.0)  # 6 tasks a visit
    claims = await drain(aredis, queue_name, high=False)
    first = Counter(task.split(".")[0] for task in claims[0])
    assert first["t04"] == 5 and max(count for key, count in first.items() if key != "t04") == 2


async def test_many_keys_of_two_tasks_leave_the_turns_and_the_backlog_set_in_one_pass(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """24 keys of 2 tasks each (a visit empties a key): one claim's pass takes 20 of them together, finds with one
    look that none still waits, and takes them out of the turns; the 4 others stay (none has a backlog entry)."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, NAMES[:24]
    await enqueue(broker, [(f"{name}.{i}", name) for name in names for i in range(2)])
    await aredis.delete(queue_name)  # the wake marker (else the keyless share is one of the 20)
    got = await broker.claim(40, 60000)
    assert got is not None and len(got) == 40
    assert {codec.loads(raw)["fair_key"] for _, raw in got} == set(names[:20])
    assert await turns(aredis, keys, "d") == set(names[20:])
    assert await aredis.exists(keys.fair_backlog) == 0  # keys of fewer than BACKLOG_LISTED tasks: never an entry


async def test_keys_that_still_wait_stay_in_the_turns_when_their_backlog_is_counted_per_turn(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """A paused key's tasks wait at the high level, so the default level's keys count their backlog entries turn by
    turn: 20 keys of 7 or 5 tasks, each visited once by a claim of 40, all still waiting, all back in the turns at
    the time their visit moved them to; those left with fewer than BACKLOG_LISTED lose their backlog entries."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, NAMES[:20]
    await FairKeys(aredis, queue_name, FairSettings()).pause("held")
    await enqueue(broker, [("held.0", "held")], priority="high")
    await enqueue(broker, [(f"{name}.{i}", name) for n, name in enumerate(names) for i in range(7 if n < 10 else 5)])
    assert await backlog_set(aredis, keys) == {name: 7 if n < 10 else 5 for n, name in enumerate(names)}
    got = await broker.claim(40, 60000)
    assert got is not None
    assert Counter(codec.loads(raw)["fair_key"] for _, raw in got) == {name: 2 for name in names}
    assert dict(await aredis.zrange(keys.fair_active("d"), 0, -1, withscores=True)) == {
        name.encode(): 2.0 for name in names
    }
    assert await backlog_set(aredis, keys) == {name: 5 for name in names[:10]}


async def test_a_key_served_comes_round_again_before_the_keys_of_a_later_time(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """Keys a and b at virtual time 0, six others at 3: a claim's pass serves a and b (now at 2) and stops before
    the keys at 3, whose turn comes after a's and b's next one (a claim of 12: a and b twice, then two keys at 3)."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, ["a", "b", "c", "d", "e", "f", "g", "h"]
    await enqueue(broker, [(f"{name}.{i}", name) for name in names for i in range(10)])
    await aredis.zadd(keys.fair_active("d"), {name: 3 for name in names[2:]}, xx=True)
    got = await broker.claim(12, 60000)
    assert got is not None
    assert Counter(codec.loads(raw)["fair_key"] for _, raw in got) == {"a": 4, "b": 4, "c": 2, "d": 2}


async def test_a_virtual_time_that_is_not_whole_is_written_exactly(aredis: aioredis.Redis, queue_name: str) -> None:
    """Whole virtual times go to Redis as integers; any other as Redis itself writes a number (%.17g), so that a key
    of weight 0.3 moved on by one task is at exactly 1 / 0.3 (and one of weight 1 by two tasks at 2)."""
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await FairKeys(aredis, queue_name, FairSettings()).set("slow", weight=0.3)  # 1 task a visit
    await enqueue(broker, [(f"{name}.{i}", name) for name in ("slow", "x") for i in range(3)])
    got = await broker.claim(3, 60000)
    assert got is not None and len(got) == 3
    assert await aredis.zscore(keys.fair_active("d"), "slow") == 1 / 0.3
    assert await aredis.zscore(keys.fair_active("d"), "x") == 2.0


async def test_keys_taken_by_rank_but_not_reached_go_back_at_their_time(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """Eight keys at virtual time 0 (the first of weight 4: 8 tasks a visit) and eight at 1, ten tasks each: a claim
    of 16 takes the eight at 0 out together and fills its room with the first five; the three it did not reach go
    back at 0, ahead of the keys at 1."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, [f"k{i:02d}" for i in range(16)]
    await FairKeys(aredis, queue_name, FairSettings()).set("k00", weight=4.0)
    await enqueue(broker, [(f"{name}.{i}", name) for name in names for i in range(10)])
    await aredis.delete(queue_name)  # the wake marker
    await aredis.zadd(keys.fair_active("d"), {name: 1 for name in names[8:]}, xx=True)
    got = await broker.claim(16, 60000)
    assert got is not None
    assert Counter(codec.loads(raw)["fair_key"] for _, raw in got) == {"k00": 8, **{name: 2 for name in names[1:5]}}
    active = await aredis.zrange(keys.fair_active("d"), 0, -1, withscores=True)
    times = {member.decode(): score for member, score in active}
    assert times == {
        **{name: 2.0 for name in names[:5]},
        **{name: 0.0 for name in names[5:8]},
        **{name: 1.0 for name in names[8:]},
    }


async def times(aredis: aioredis.Redis, keys: QueueKeys) -> dict[str, float]:
    active = await aredis.zrange(keys.fair_active("d"), 0, -1, withscores=True)
    return {member.decode(): score for member, score in active}


def claimed_ids(got: list[tuple[str, bytes]] | None) -> list[str]:
    assert got is not None
    return [codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER]


async def test_a_pass_of_plain_keys_sets_each_key_by_what_its_visit_took(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """Nine keys at virtual time 0, no settings (the pass's visits are list pops and little else): a claim of 17
    takes 2 from each of the first eight and, its room then cut short, 1 from the ninth; the keys still waiting go
    back at 2, the ninth at 1 (so it comes first next time), the emptied ones leave, and the backlog set follows."""
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    plan = {"k0": 3, "k1": 2, "k2": 4, "k3": 5, "k4": 2, "k5": 6, "k6": 2, "k7": 2, "k8": 3}
    await enqueue(broker, [(f"{name}.{i}", name) for name, count in plan.items() for i in range(count)])
    await aredis.delete(queue_name)  # the wake marker (else the keyless share takes the first turn)
    first = claimed_ids(await broker.claim(17, 60000))
    assert first == [f"{name}.{i}" for name in list(plan)[:8] for i in range(2)] + ["k8.0"]
    assert await times(aredis, keys) == {"k0": 2.0, "k2": 2.0, "k3": 2.0, "k5": 2.0, "k8": 1.0}
    assert await backlog_set(aredis, keys) == {"k5": 4}
    assert claimed_ids(await broker.claim(4, 60000)) == ["k8.1", "k8.2", "k0.2", "k2.2"]


async def test_a_pass_of_plain_keys_goes_on_after_the_keyless_turn(aredis: aioredis.Redis, queue_name: str) -> None:
    """Keyless tasks and ten keys of three tasks, all at virtual time 0: the keyless share's turn comes first (its
    name sorts first), then the keys' visits go on in the same pass; every one served is back at 2, the key not
    reached stays at 0 and is served first by the next claim."""
    broker = Broker(aredis, queue_name, "w1")
    keys, names = broker.keys, [f"k{i}" for i in range(10)]
    await enqueue(broker, [(f"{name}.{i}", name) for name in names for i in range(3)])
    await aredis.rpush(queue_name, *[codec.dumps({"id": f"raw{i}", "type": "rec"}) for i in range(3)])
    first = claimed_ids(await broker.claim(20, 60000))
    assert first == ["raw0", "raw1"] + [f"{name}.{i}" for name in names[:9] for i in range(2)]
    assert await times(aredis, keys) == {"": 2.0, **{name: 2.0 for name in names[:9]}, "k9": 0.0}
    assert await backlog_set(aredis, keys) == {}
    assert claimed_ids(await broker.claim(2, 60000)) == ["k9.0", "k9.1"]


async def test_a_pass_sized_by_keys_of_one_task_puts_back_the_keys_it_did_not_reach(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """Ten keys of one task, then ten of two, all at virtual time 0: a claim of 16 reads 8 keys first (two tasks
    each counted on) and gets 8 tasks; its next pass is sized by what those visits gave (one each) and reads 8 more
    keys where 5 are enough (a8, a9, b0, b1, b2): the three read but not reached are back at their time, the emptied
    ones are gone, and the next claim starts with them, in order."""
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    plan = {**{f"a{i}": 1 for i in range(10)}, **{f"b{i}": 2 for i in range(10)}}
    await enqueue(broker, [(f"{name}.{i}", name) for name, count in plan.items() for i in range(count)])
    await aredis.delete(queue_name)  # the wake marker (else the keyless share takes the first turn)
    first = claimed_ids(await broker.claim(16, 60000))
    assert first == [f"a{i}.0" for i in range(10)] + [f"b{i}.{j}" for i in range(3) for j in range(2)]
    assert await times(aredis, keys) == {f"b{i}": 0.0 for i in range(3, 10)}
    assert await backlog_set(aredis, keys) == {}
    assert claimed_ids(await broker.claim(4, 60000)) == ["b3.0", "b3.1", "b4.0", "b4.1"]
