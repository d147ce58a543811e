"""Every id that is accepted can be delivered (issue 18, part 6, the id rule): a non-ASCII id is accepted by every
path and its task runs and is looked up by it; an id with a control character is refused at enqueue (see
test_hostile_rules.py) and, pushed raw, dead-lettered under an entry id of GoPherQ's own with the id shown escaped,
so it never writes a line of its own into the worker's log."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient, Settings
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.task import name_problem
from tests.support import function_targets as targets
from tests.support.common import GOPHERQ, async_wait_until, cli_env

ADD = {"type": "function", "function": "tests.support.function_targets:add"}
NON_ASCII = ["commande-café", "заказ-42", "注文-7", "emoji-🚀", "tab-free but spaced"]


def test_the_id_rule() -> None:
    for accepted in [*NON_ASCII, "a" * 200, "with space", "x\u00a0nbsp", "ß"]:
        assert name_problem(accepted) is None, accepted
    refused = ["", "a" * 201, 5, None, *(f"a{chr(code)}b" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)])]
    refused += ["a\u2028b", "a\u2029b"]
    for value in refused:
        assert name_problem(value) is not None, repr(value)


async def test_non_ascii_ids_are_delivered_on_every_path(
    settings: Settings, api: Callable[..., Any], start_worker: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    await start_worker(settings)
    queue = settings.queue.name
    async with AsyncClient(settings) as client:
        for n, task_id in enumerate(NON_ASCII):
            handle = await targets.add.with_options(id=f"py-{task_id}").aenqueue(n, 1)  # the client
            assert handle.id == f"py-{task_id}" and await handle.aresult(timeout=10) == n + 1
        await aredis.rpush(queue, *(codec.dumps({**ADD, "id": f"raw-{i}", "args": [1, 1]}) for i in NON_ASCII))
        status, answer = await api("POST", f"/v1/queues/{queue}/tasks", {**ADD, "id": "api-café", "args": [2, 2]})
        assert (status, answer) == (201, {"id": "api-café", "created": True})
        for task_id in [*(f"raw-{i}" for i in NON_ASCII), "api-café"]:
            record = await client.wait(task_id, timeout=10)
            assert record is not None and record.status.value == "succeeded", task_id
        status, answer = await api("GET", f"/v1/tasks/{quote('api-café')}?queue={queue}")
        assert status == 200 and answer["result"]["result"] == 4
    env = cli_env({"GOPHERQ_REDIS__URL": str(settings.redis.url), "GOPHERQ_QUEUE__NAME": "cli_" + queue})
    args = [GOPHERQ, "enqueue", "--url", "http://127.0.0.1:9/", "--id", "cli-café"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "cli-café", done.stderr
    await aredis.delete("cli_" + queue)


async def test_a_raw_id_with_a_newline_is_dead_lettered_escaped_and_forges_no_log_line(
    settings: Settings, start_worker: Callable[..., Any], aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gopherq")
    await start_worker(settings)
    queue = settings.queue.name
    forged = "order-1\n2026-01-01 00:00:00 INFO gopherq task order-1 succeeded"
    pushed = [codec.dumps({**ADD, "id": forged, "args": [1, 1]}), codec.dumps({**ADD, "id": "next", "args": [1, 1]})]
    await aredis.rpush(queue, *pushed)
    broker = Broker(aredis, queue)
    assert (await async_wait_until(lambda: broker.get_result("next")))["status"] == "succeeded"

    async def one_dead() -> bool:
        return int(await aredis.zcard(broker.keys.dead_index)) == 1

    await async_wait_until(one_dead, what="the forged id's dead letter")
    [(entry_id, raw_entry)] = (await aredis.hgetall(broker.keys.dead)).items()
    entry = codec.loads(raw_entry)
    assert entry_id.startswith(b"raw-") and entry["raw"].encode() == pushed[0]  # the bytes as received
    assert entry["task_id"] is None and entry["reason"] == "schema_invalid"
    assert repr(forged) in entry["error"]["message"] and "\n" not in entry["error"]["message"]
    assert await broker.get_result("order-1") is None and await broker.get_result(forged) is None
    assert any(repr(forged) in record.getMessage() for record in caplog.records)  # logged, escaped
    for record in caplog.records:
        assert "\n" not in record.getMessage(), record.getMessage()
