"""Bad input never stops a worker: every malformed task pushed raw is dead-lettered with the right reason and a
message naming the problem, and the next task runs. The client and `gopherq enqueue` refuse the same input
before it reaches Redis, with the same reason and message."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient, TaskRejected
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.jsontext import NESTED_TOO_DEEPLY, parse_json
from gopherq.core.settings import Settings
from tests.support.common import GOPHERQ, async_wait_until
from tests.support.loopback import LoopbackServer

LIMIT = 8192  # worker.max_payload_bytes in these tests
BIG = codec.dumps({"id": "big", "url": "http://127.0.0.1/", "body": "x" * LIMIT})

#: name -> (raw bytes as a producer might push them, dead-letter reason, what the message must say)
CASES: dict[str, tuple[bytes, str, str]] = {
    "too_large": (BIG, "too_large", f"task is {len(BIG)} bytes, over max_payload_bytes={LIMIT}"),
    "invalid_json": (b'{"id": "broken", "url": ', "parse_error", "invalid JSON: "),
    "not_utf8": (b'\xff\xfe{"id": 1}', "parse_error", "invalid JSON: "),
    "empty": (b"", "parse_error", "invalid JSON: "),
    "too_deep_to_read": (b"[" * 2000 + b"]" * 2000, "parse_error", NESTED_TOO_DEEPLY),
    "too_deep_to_write": (
        b'{"id": "deep", "url": "http://127.0.0.1/", "body": ' + b"[" * 300 + b"]" * 300 + b"}",
        "parse_error",
        NESTED_TOO_DEEPLY,
    ),
    "not_an_object": (b'["GET", "http://127.0.0.1/"]', "schema_invalid", "a task must be a JSON object, got list"),
    "missing_field": (b'{"id": "m", "method": "GET"}', "schema_invalid", "http task: field 'url' is required"),
    "wrong_field_type": (b'{"id": "w", "url": 5}', "schema_invalid", "http task: field 'url': Input should be"),
    "bad_url": (b'{"id": "u", "url": "ftp://127.0.0.1/"}', "schema_invalid", "field 'url': Value error, must be an"),
    "unknown_field": (b'{"id": "f", "url": "http://127.0.0.1/", "colour": 1}', "schema_invalid", "'colour'"),
    "bad_control_field": (
        b'{"id": "c", "url": "http://127.0.0.1/", "max_attempts": 0}',
        "schema_invalid",
        "field 'max_attempts' must be an integer >= 1, got 0",
    ),
    "bad_id": (b'{"id": {"a": 1}, "url": "http://127.0.0.1/"}', "schema_invalid", "field 'id' must be a non-empty"),
    "unknown_type": (b'{"id": "t", "type": "fax"}', "unknown_type", "no executor for task type 'fax' (registered: "),
    "negative_timeout": (
        b'{"id": "b6", "url": "http://127.0.0.1/", "timeout": -1}',
        "schema_invalid",
        "field 'timeout' must be a positive number of seconds, got -1",
    ),
    "nan_max_attempts": (
        b'{"id": "b7", "url": "http://127.0.0.1/", "max_attempts": "NaN"}',
        "schema_invalid",
        "field 'max_attempts' must be an integer >= 1, got 'NaN'",
    ),
    "crlf_in_header_value": (
        b'{"id": "h1", "url": "http://127.0.0.1/", "headers": {"X-A": "v\\r\\nX-Injected: 1"}}',
        "schema_invalid",
        "header 'X-A' has a CR or LF in its value",
    ),
    "crlf_in_header_name": (
        b'{"id": "h2", "url": "http://127.0.0.1/", "header": {"X-A\\r\\nX-Injected": "1"}}',
        "schema_invalid",
        "is not a valid HTTP token",
    ),
    "non_ascii_header_value": (
        '{"id": "h3", "url": "http://127.0.0.1/", "headers": {"X-A": "caf\u00e9"}}'.encode(),
        "schema_invalid",
        "header 'X-A' has a control or non-ASCII character in its value",
    ),
    "integer_host": (
        b'{"id": "n1", "url": "http://2130706433:8080/"}',
        "schema_invalid",
        "has a host '2130706433' that is not a canonical IPv4 address",
    ),
    "host_with_a_space": (
        b'{"id": "n2", "url": "http://exa mple.com/"}',
        "schema_invalid",
        "has a host 'exa mple.com' with characters a host name cannot have",
    ),
    "credentials_and_authorization": (
        b'{"id": "a1", "url": "http://u:p@127.0.0.1/", "headers": {"Authorization": "Bearer x"}}',
        "schema_invalid",
        "has credentials (user:password@) and the task also sets an Authorization header: give only one",
    ),
}


def producer_id(raw: bytes) -> str | None:
    """The id a producer gave, when the bytes are a JSON object with a string id: what the worker must keep."""
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError:
        return None
    return obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None


def bad_input_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(worker={"max_payload_bytes": LIMIT})


def stored_raw(entry: dict[str, Any]) -> bytes:
    return base64.b64decode(entry["raw_base64"]) if "raw_base64" in entry else entry["raw"].encode()


def received(entry: dict[str, Any]) -> str:
    """The SHA-256 of the bytes the worker received: of what the entry keeps, or the one kept beside the prefix
    of a task too large to keep whole."""
    return entry.get("raw_sha256") or sha256(stored_raw(entry))


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


async def test_each_bad_task_is_dead_lettered_with_its_reason_and_the_next_task_runs(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    settings = bad_input_settings(make_settings)
    running = await start_worker(settings)
    pushed: list[bytes] = []
    for name, (raw, _, _) in CASES.items():  # a healthy task after every bad one
        pushed += [raw, codec.dumps({"id": f"ok-after-{name}", "url": loopback.url("/ok")})]
    await aredis.rpush(queue_name, *pushed)
    broker = Broker(aredis, queue_name)
    for name in CASES:
        record = await async_wait_until(lambda n=name: broker.get_result(f"ok-after-{n}"), what=f"ok-after-{name}")
        assert record["status"] == "succeeded"

    async def all_dead() -> bool:
        return int(await aredis.zcard(broker.keys.dead_index)) == len(CASES)

    await async_wait_until(all_dead, what="every bad task in the dead-letter queue")
    entries = {}
    for entry_id, raw_entry in (await aredis.hgetall(broker.keys.dead)).items():
        entry = codec.loads(raw_entry)
        entries[received(entry)] = (entry_id.decode(), entry)
    for name, (raw, reason, message) in CASES.items():
        entry_id, entry = entries[sha256(raw)]  # the bytes as received, even when they are not UTF-8
        assert (entry["reason"], entry["error"]["reason"]) == (reason, reason), name
        assert message in entry["error"]["message"], name
        # The producer's id names the dead letter and the failed result record; only bytes without one (or too
        # large to be parsed at all) get a generated id.
        task_id = producer_id(raw) if reason != "too_large" else None
        if task_id is None:
            assert entry_id.startswith("raw-") and entry["task_id"] is None, name
            continue
        assert (entry_id, entry["task_id"]) == (task_id, task_id), name
        record = await broker.get_result(task_id)
        assert record is not None, name
        assert (record["status"], record["dead_reason"], record["error"]["reason"]) == ("dead", reason, reason), name
    assert not running.worker._fetcher.done()  # still fetching
    assert running.worker.stats["dead"] == len(CASES) and running.worker.stats["succeeded"] == len(CASES)


async def test_the_client_refuses_the_same_input_with_the_same_message(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = bad_input_settings(make_settings)
    await start_worker(settings)
    await aredis.rpush(queue_name, *(raw for raw, _, _ in CASES.values()))
    dead = Broker(aredis, queue_name).keys.dead

    async def all_dead() -> bool:
        return int(await aredis.hlen(dead)) == len(CASES)

    await async_wait_until(all_dead, what="every bad task dead")
    worker_said = {}
    for raw_entry in (await aredis.hgetall(dead)).values():
        entry = codec.loads(raw_entry)
        worker_said[received(entry)] = (entry["reason"], entry["error"]["message"])
    async with AsyncClient(settings) as client:
        for name, (raw, _, _) in CASES.items():
            with pytest.raises(TaskRejected) as refused:
                await client.enqueue_raw(raw)
            assert (refused.value.reason, refused.value.message) == worker_said[sha256(raw)], name
        # The same checks when the task is built from arguments.
        built: dict[str, tuple[Callable[[], Any], str]] = {
            "missing_field": (lambda: client.enqueue("http", method="GET"), "missing_field"),
            "wrong_field_type": (lambda: client.enqueue("http", url=5), "wrong_field_type"),
            "bad_url": (lambda: client.enqueue_http("ftp://127.0.0.1/"), "bad_url"),
            "unknown_type": (lambda: client.enqueue("fax"), "unknown_type"),
            "bad_control_field": (
                lambda: client.enqueue_http("http://127.0.0.1/", max_attempts=0),
                "bad_control_field",
            ),
        }
        for name, (call, case) in built.items():
            with pytest.raises(TaskRejected) as refused:
                await call()
            assert (refused.value.reason, refused.value.message) == worker_said[sha256(CASES[case][0])], name
        nested: Any = []
        for _ in range(300):
            nested = [nested]
        for call, reason, message in (
            (lambda: client.enqueue_http("http://127.0.0.1/", body=nested), "parse_error", NESTED_TOO_DEEPLY),
            (
                lambda: client.enqueue_http("http://127.0.0.1/", body="x" * LIMIT),
                "too_large",
                f"max_payload_bytes={LIMIT}",
            ),
        ):
            with pytest.raises(TaskRejected) as refused:
                await call()
            assert refused.value.reason == reason and message in refused.value.message
    assert await aredis.llen(queue_name) == 0  # nothing reached Redis


def enqueue_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME"))}
    assert settings.redis.url is not None
    env.update(
        {
            "GOPHERQ_REDIS__URL": settings.redis.url,
            "GOPHERQ_QUEUE__NAME": settings.queue.name,
            "GOPHERQ_WORKER__MAX_PAYLOAD_BYTES": str(LIMIT),
        }
    )
    return subprocess.run([GOPHERQ, "enqueue", *args], env=env, capture_output=True, text=True, timeout=30, check=False)


async def test_gopherq_enqueue_refuses_the_same_input_with_the_same_message(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = bad_input_settings(make_settings)
    async with AsyncClient(settings) as client:

        def client_says(raw: bytes) -> str:
            with pytest.raises(TaskRejected) as refused:
                client.check_envelope(raw)
            return f"{refused.value.reason}: {refused.value.message}"

        def parse_says(text: str) -> str:
            with pytest.raises(TaskRejected) as refused:
                parse_json(text)
            return f"{refused.value.reason}: {refused.value.message}"

        deep = "[" * 300 + "]" * 300
        cases: list[tuple[list[str], str]] = [
            (["--url", "ftp://127.0.0.1/"], client_says(CASES["bad_url"][0])),
            (["--url", "http://127.0.0.1/", "--max-attempts", "0"], client_says(CASES["bad_control_field"][0])),
            (["--url", "http://127.0.0.1/", "--method", "FETCH"], client_says(b'{"url":"http://x/","method":"FETCH"}')),
            (["--url", "http://127.0.0.1/", "--json-body", '{"a": '], parse_says('{"a": ')),
            (["--url", "http://127.0.0.1/", "--json-body", deep], f"parse_error: {NESTED_TOO_DEEPLY}"),
            (["--url", "http://2130706433:1/"], client_says(CASES["integer_host"][0])),
            (
                ["--url", "http://127.0.0.1/", "-H", "X-A: v\r\nX-Injected: 1"],
                client_says(CASES["crlf_in_header_value"][0]),
            ),
            (
                ["--url", "http://user:pw@127.0.0.1:1/x?token=t", "-H", "Authorization: Bearer abc"],
                "schema_invalid: http task: field 'headers': Value error, the url has credentials (user:password@)",
            ),
            (["--url", "http://127.0.0.1/", "--body", "x" * LIMIT], "too_large: task is"),
        ]
    results = await asyncio.gather(*(asyncio.to_thread(enqueue_cli, settings, *args) for args, _ in cases))
    for (args, expected), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"gopherq: error: {expected}"), (args, line)
    assert re.search(rf"too_large: task is \d+ bytes, over max_payload_bytes={LIMIT}$", results[-1].stderr.strip())
    assert await aredis.llen(queue_name) == 0 and await aredis.zcard(Broker(aredis, queue_name).keys.delayed) == 0
