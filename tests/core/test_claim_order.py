"""The order in which a worker's claim and settle reach Redis (core/settling.py, `Holdings.waiting_for_slot`).

When tasks end and free their slots, the next claim goes to Redis before their settle: Redis runs one script at a
time, and a claim queued behind the settle script would wait for it. The exception: a settle that may make a task
claimable (a counted fair key's freed place, a flow member's outcome) goes first, so that the claim sees it. Redis's
own MONITOR records the order in which the scripts ran."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from gopherq import AsyncClient, Settings
from gopherq.core.fair import FairKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.scripts import load_script
from gopherq.core.sections import FairSettings
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin, NoopExecutor


class ScriptOrder:
    """The claim and settle scripts run for one queue, in the order Redis ran them (MONITOR, on a connection of its
    own, read by a thread): ("claim", []) or ("settle", the ids of the tasks it settled)."""

    def __init__(self, redis_url: str, queue: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.names = {hashlib.sha1(load_script(name).encode()).hexdigest(): name for name in ("claim", "settle")}
        self.queue = queue
        self.seen: list[tuple[str, list[str]]] = []
        self._stop = threading.Event()
        self._monitor = self.client.monitor()
        self._monitor.__enter__()  # (returns once Redis has said OK: every later command is seen)
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        for info in self._monitor.listen():
            if self._stop.is_set():
                return
            command = info["command"]
            parts = command.split(maxsplit=2)
            if len(parts) > 1 and parts[0].upper() == "EVALSHA" and parts[1] in self.names and self.queue in command:
                self.seen.append((self.names[parts[1]], re.findall(r":result:(\S+)", command)))

    def names_seen(self) -> list[str]:
        return [name for name, _ in self.seen]

    def close(self) -> None:
        self._stop.set()
        self.client.ping()  # (a command for the monitor to see, so that its loop looks at `_stop`)
        self._thread.join(10)
        self._monitor.__exit__(None, None, None)
        self.client.close()


@pytest.fixture
def script_order(redis_url: str, queue_name: str) -> Iterator[ScriptOrder]:
    order = ScriptOrder(redis_url, queue_name)
    yield order
    order.close()


NOOP = {"noop": ExecutorPlugin("noop", NoopExecutor())}


async def run_all(
    settings: Settings, start_worker: Callable[..., Any], order: ScriptOrder, tasks: int, **fields: Any
) -> list[str]:
    """Enqueue `tasks` no-op tasks (with `fields`), run a worker until every one has succeeded, and return their ids
    in the order they were enqueued (and so claimed) once MONITOR has seen them settled."""
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=NOOP)) as client:
        ids = await client.enqueue_many([client.task("noop", **fields) for _ in range(tasks)])
        await start_worker(settings, extra_plugins=NOOP)
        for task_id in ids:
            record = await client.wait(task_id, timeout=15)
            assert record is not None and record.status.value == "succeeded"

    def all_settled() -> bool:
        return {task_id for name, done in order.seen if name == "settle" for task_id in done} >= set(ids)

    await async_wait_until(all_settled, what="MONITOR to see every settle")
    return ids


async def test_the_next_claim_runs_before_the_settle_of_the_tasks_that_freed_its_slots(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], script_order: ScriptOrder
) -> None:
    batch = 20
    settings = make_settings(worker={"concurrency": batch, "batch_size": batch})
    ids = await run_all(settings, start_worker, script_order, 10 * batch)
    position = {task_id: i for i, task_id in enumerate(ids)}
    claims, checked, in_order = 0, 0, 0
    for name, settled in script_order.seen:
        if name == "claim":
            claims += 1
            continue
        first = min(position[task_id] for task_id in settled) // batch  # the oldest batch this settle ends
        if first < 9:  # (the last batch has no next one)
            # Did the claim that followed batch `first` (claim number first + 2) run before its settle? In the other
            # order it runs after it. (A settle delayed, as the first one is by its new connection, only has more
            # claims before it.)
            checked += 1
            in_order += claims >= first + 2
    # One the other way round is tolerated: the fetcher counts its claim as sent just before redis-py checks out a
    # connection and writes it, and on a loaded machine the settle's write could still get there first.
    assert checked >= 4 and in_order >= checked - 1, script_order.names_seen()


async def test_a_settle_that_frees_a_counted_fair_keys_place_goes_before_the_claim(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    script_order: ScriptOrder,
    aredis: aioredis.Redis,
    queue_name: str,
) -> None:
    await FairKeys(aredis, queue_name, FairSettings()).set("one", concurrency=1)
    settings = make_settings(worker={"concurrency": 1})  # (its one slot frees as the key's task ends)
    await run_all(settings, start_worker, script_order, 6, fair_key="one")
    seen = script_order.names_seen()
    # Each settle frees the key's place before the next claim looks: that claim finds the key's next task (sent
    # first, it would find the key at its limit, come back empty and leave the worker waiting for a wake-up).
    assert seen[:4] == ["claim", "settle", "claim", "settle"], seen
