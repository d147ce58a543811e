"""What a task called (issue 20, part 2): the result record and the dead letter keep the `call` the executor describes
(for `http`: method, masked URL, masked headers, body size and SHA-256), shown by `gopherq result`, `gopherq task`,
GET /v1/tasks/{id} and the dashboard's task page; a record without one (an older version's) still reads; an
executor whose `describe_call` fails costs the task nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pytest_httpserver import HTTPServer

from gopherq import AsyncClient
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.results import TaskResult
from tests.support.faces import Faces, write_ops_config
from tests.support.plugins import ExecutorPlugin

Start = Callable[..., Any]
API_KEY = "APIKEY-5ecret-4444"
TOKEN = "TOKEN-5ecret-6666"
ENV_VALUE = "ENVVALUE-5ecret-9999"


async def test_the_call_is_kept_masked_and_shown_by_every_face(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    aredis: aioredis.Redis,
    http: HTTPServer,
    start_worker: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOPHERQ_TEST_CALL_HEADER", ENV_VALUE)
    http.expect_request("/hook").respond_with_data("fine")
    http.expect_request("/gone").respond_with_data("no", status=404)
    config = write_ops_config(tmp_path, redis_url, queue_name, '\n[masking]\nheaders = ["X-Api-Key"]\n')
    async with Faces(config, aredis) as faces:
        await start_worker(faces.settings)
        headers = {"X-Api-Key": API_KEY, "X-Plain": "shown", "X-From-Env": {"env": "GOPHERQ_TEST_CALL_HEADER"}}
        body = {"name": "Zoë", "n": 1}
        async with AsyncClient(faces.settings) as client:
            url = http.url_for(f"/hook?token={TOKEN}&page=2")
            await client.enqueue_http(url, method="POST", headers=headers, body=body, id="c1")
            await client.enqueue_http(http.url_for("/gone"), body="plain text", id="c2")
            record = await client.wait("c1", timeout=10)
            assert record is not None and record.status.value == "succeeded"
            dead = await client.wait("c2", timeout=10)
            assert dead is not None and dead.status.value == "dead"

        [(request, _)] = [(req, res) for req, res in http.log if req.path == "/hook"]
        sent = request.get_data()
        call = record.call
        assert call is not None
        assert call["method"] == "POST" and call["url"] == url.replace(TOKEN, "********")
        assert call["headers"] == {
            "X-Api-Key": "********",
            "X-Plain": "shown",
            "X-From-Env": "(from environment variable GOPHERQ_TEST_CALL_HEADER)",
        }
        assert call["body_bytes"] == len(sent) and call["body_sha256"] == hashlib.sha256(sent).hexdigest()
        assert dead.call is not None and dead.call["body_bytes"] == len(b"plain text")
        entry = codec.loads(await aredis.hget(QueueKeys(queue_name).dead, "c2"))
        assert entry["call"]["url"] == http.url_for("/gone") and entry["call"]["method"] == "GET"

        done = await faces.cli("result", "c1")
        assert done.returncode == 0 and "called: " in done.stderr and '"body_sha256"' in done.stderr
        done = await faces.cli("task", "c1", "--json")
        assert json.loads(done.stdout)["call"] == call
        assert "called:" in (await faces.cli("task", "c2")).stdout
        status, answer = await faces.get(f"/v1/tasks/c1?queue={queue_name}")
        assert status == 200 and answer["call"] == call and answer["result"]["call"] == call
        status, page = await faces.get(f"/queues/{queue_name}/tasks/c2")
        assert status == 200 and 'id="call"' in page and "body_sha256" in page
        for output in (done.stdout, json.dumps(answer), page):
            assert API_KEY not in output and TOKEN not in output and ENV_VALUE not in output


async def test_a_record_without_a_call_still_reads(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis
) -> None:
    old = {"id": "old1", "queue": queue_name, "type": "http", "status": "succeeded", "attempts": 1, "worker": "w"}
    old |= {"started_at": 1.0, "finished_at": 2.0, "duration": 1.0, "result": {"status_code": 200}, "error": None}
    await aredis.set(QueueKeys(queue_name).result("old1"), codec.dumps(old), ex=600)
    assert TaskResult.from_dict(old).call is None
    config = write_ops_config(tmp_path, redis_url, queue_name)
    async with Faces(config, aredis) as faces:
        done = await faces.cli("result", "old1")
        assert done.returncode == 0 and "called:" not in done.stdout + done.stderr
        status, answer = await faces.get(f"/v1/tasks/old1?queue={queue_name}")
        assert status == 200 and answer["state"] == "succeeded" and answer["call"] is None
        status, page = await faces.get(f"/queues/{queue_name}/tasks/old1")
        assert status == 200 and 'id="call"' not in page


class BadDescriber:
    """An executor whose description fails, or is huge: neither costs the task its record."""

    async def execute(self, task: Any, context: Any) -> str:
        return "done"

    def describe_call(self, task: Any) -> dict[str, Any]:
        if task.fields.get("fail"):
            raise RuntimeError("cannot describe")
        return {"target": "x" * 100_000, "many": list(range(10_000))}


async def test_a_failing_or_huge_description_costs_the_task_nothing(
    make_settings: Callable[..., Any], queue_name: str, start_worker: Start
) -> None:
    settings = make_settings()
    plugins = {"bad": ExecutorPlugin("bad", BadDescriber())}
    await start_worker(settings, extra_plugins=plugins)
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=plugins)) as client:
        await client.enqueue("bad", id="b1", fail=True)
        await client.enqueue("bad", id="b2")
        failed = await client.wait("b1", timeout=10)
        assert failed is not None and failed.status.value == "succeeded" and failed.call is None
        huge = await client.wait("b2", timeout=10)
        assert huge is not None and huge.status.value == "succeeded" and huge.call is not None
        assert len(codec.dumps(huge.call)) < 8 * 1024
