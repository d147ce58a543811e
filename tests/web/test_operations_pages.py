"""The operator pages over real HTTP on loopback, with real workers and a real loopback endpoint: destinations
(rates, p95, circuit, rate factor; close circuit and reset rate), schedules (rule, next and last run, outcome; run
now, pause, resume), the Redis page, the chart spans, and run now / delete / cancel of one task (one waiting in
its fair key's list too)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient
from gopherq.core.keys import QueueKeys
from tests.support.loopback import LoopbackServer
from tests.web.test_web import Dashboard, Start, dashboard  # noqa: F401  (fixture)


@pytest.fixture
def console(dashboard: Start) -> Start:  # noqa: F811
    """The dashboard fixture of test_web.py: the application on a real loopback socket."""
    return dashboard


HOST_RULE = {"match": "127.0.0.1", "circuit_failures": 3, "circuit_cooldown": 600, "rate": 1000, "slow_down": 0.5}


def location(headers: Any) -> str:
    return str(headers["Location"])


async def test_destinations_show_rates_p95_circuit_and_rate_and_act_on_them(
    console: Start, aredis: aioredis.Redis, queue_name: str, start_worker: Any, loopback: LoopbackServer
) -> None:
    app: Dashboard = await console(
        plugins={"http": {"hosts": [HOST_RULE]}}, queue={"backoff_min": 30, "backoff_max": 60}
    )
    async with AsyncClient(app.settings) as client:
        worker = await start_worker(app.settings)
        # In phases, so the three 5xx are the last outcomes: an "ok" or a 429 after one of them would reset the
        # breaker's count of failures in a row.
        for path, count, extra in (
            ("/ok", 4, {}),
            ("/status/429", 1, {"max_attempts": 1}),
            ("/status/500", 3, {"max_attempts": 1}),
        ):
            ids = [await client.enqueue_http(loopback.url(path), **extra) for _ in range(count)]
            for task_id in ids:
                await client.wait(task_id, timeout=20)
        await worker.stop()

    status, body, _ = await app.get("/destinations")
    assert status == 200 and 'data-destination="127.0.0.1"' in body
    assert 'data-attempts="8"' in body
    assert 'data-rate="429">12.5 %' in body and 'data-rate="5xx">37.5 %' in body  # 1 and 3 of 8
    assert "50.0 %" in body  # success
    assert re.search(r"≤ \d+ ms", body)  # p95 of loopback calls
    assert 'data-circuit="open"' in body and "Close circuit now" in body  # three 5xx in a row opened it
    # the 429 halved the rate (regained since at `ramp_up` per second, so still under 1)
    assert re.search(r'data-factor="0\.\d+"', body) and "Reset rate" in body

    status, body, _ = await app.get("/")  # an open circuit shows on the overview
    assert 'data-circuit="127.0.0.1"' in body and "circuit open" in body

    token = await app.csrf("/destinations")
    form = {"csrf_token": token, "key": "127.0.0.1", "queue": queue_name, "next": "/destinations"}
    status, _, headers = await app.post("/destinations/close", form)
    assert status == 303 and "notice=circuit_closed" in location(headers)
    status, _, headers = await app.post("/destinations/reset", form)
    assert status == 303 and "notice=rate_reset" in location(headers)
    status, body, _ = await app.get(location(headers))
    assert 'data-circuit="closed"' in body and 'data-factor="1.0"' in body and "Rate reset" in body
    status, _, headers = await app.post("/destinations/close", {**form, "key": "nowhere.example"})
    assert "notice=unknown_key" in location(headers)
    assert (await app.post("/destinations/close", {"csrf_token": token}))[0] == 400


async def test_schedules_page_run_now_pause_and_resume(
    console: Start, aredis: aioredis.Redis, queue_name: str, start_worker: Any, loopback: LoopbackServer
) -> None:
    task = {"url": loopback.url("/ok")}
    schedule = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": task}
    app: Dashboard = await console(schedules=[schedule])
    keys = QueueKeys(queue_name)
    await aredis.hset(keys.schedules, "nightly", 1_700_000_000)  # a slot in the past, whose task succeeded
    await aredis.set(keys.result("nightly@1700000000"), json.dumps({"status": "succeeded"}))

    status, body, _ = await app.get("/schedules")
    assert status == 200 and 'data-schedule="nightly"' in body
    assert "cron &#39;0 3 * * *&#39; Europe/Berlin" in body and "<td>Europe/Berlin</td>" in body
    assert 'data-outcome="succeeded"' in body and "2023-11-14 22:13:20 UTC" in body  # last run, its outcome
    assert "late" in body  # the slot after it is long past: no worker ticked it

    token = await app.csrf("/schedules")
    status, _, headers = await app.post("/schedules/nightly/run", {"csrf_token": token, "next": "/schedules"})
    assert status == 303 and "notice=schedule_run" in location(headers)
    ready = await aredis.lrange(queue_name, 0, -1)
    assert len(ready) == 1 and json.loads(ready[0])["id"].startswith("nightly@")
    assert await aredis.hget(keys.schedules, "nightly") == b"1700000000"  # its slots untouched

    status, _, headers = await app.post("/schedules/nightly/pause", {"csrf_token": token})
    assert "notice=schedule_paused" in location(headers)
    status, body, _ = await app.get("/schedules")
    assert 'data-paused="1"' in body and "Resume" in body
    status, _, headers = await app.post("/schedules/nightly/resume", {"csrf_token": token})
    assert "notice=schedule_resumed" in location(headers)
    assert await aredis.hlen(keys.schedules_paused) == 0
    assert (await app.post("/schedules/nope/run", {"csrf_token": token}))[0] == 404


async def test_the_redis_page_says_version_role_memory_clients_and_persistence(console: Start) -> None:
    app: Dashboard = await console()
    status, body, _ = await app.get("/redis")
    assert status == 200
    for part in ("redis-server", "redis-memory", "redis-clients", "redis-persistence", 'data-role="master"'):
        assert part in body, part
    assert re.search(r"<dt>version</dt><dd>\w+ \d+\.\d+", body)
    assert re.search(r'data-policy="[a-z-]+"', body)


async def test_run_now_delete_and_cancel_one_task(
    console: Start, aredis: aioredis.Redis, queue_name: str, loopback: LoopbackServer
) -> None:
    app: Dashboard = await console()
    keys = QueueKeys(queue_name)
    async with AsyncClient(app.settings) as client:
        later = await client.enqueue_http(loopback.url("/ok"), delay=3600)
        first = await client.enqueue_http(loopback.url("/ok"))
        second = await client.enqueue_http(loopback.url("/ok"), unique_key="only-one")
        status, body, _ = await app.get(f"/queues/{queue_name}?tab=delayed")
        assert "Run now" in body and "Delete" in body and "Yes, run now" in body  # behind a confirmation
        token = await app.csrf()

        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{later}/run", {"csrf_token": token})
        assert status == 303 and "notice=task_run" in location(headers)
        assert await aredis.zcard(keys.delayed) == 0
        head = json.loads((await aredis.lrange(queue_name, 0, 0))[0])
        assert head["id"] == later and head["ready_at"] > head["created_at"]  # at the head, ready from now

        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{second}/delete", {"csrf_token": token})
        assert "notice=task_deleted" in location(headers)
        assert [json.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)] == [later, first]
        record = await client.result(second)
        assert record is not None and record.status.value == "cancelled"
        assert await aredis.get(keys.unique("only-one")) is None  # its uniqueness lock went with it
        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{second}/delete", {"csrf_token": token})
        assert "notice=not_waiting" in location(headers)

        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{first}/cancel", {"csrf_token": token})
        assert "notice=task_cancel_requested" in location(headers)
        assert await aredis.zscore(keys.cancels, first) is not None


async def test_run_now_and_delete_of_a_task_waiting_in_its_fair_keys_list(
    console: Start, aredis: aioredis.Redis, queue_name: str, loopback: LoopbackServer
) -> None:
    app: Dashboard = await console()
    keys = QueueKeys(queue_name)
    async with AsyncClient(app.settings) as client:
        first = await client.enqueue_http(loopback.url("/ok"), fair_key="tenant-a")
        second = await client.enqueue_http(loopback.url("/ok"), fair_key="tenant-a")
        status, body, _ = await app.get(f"/queues/{queue_name}/tasks/{second}")
        assert status == 200 and "Run now" in body and "Delete" in body
        token = await app.csrf()
        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{second}/run", {"csrf_token": token})
        assert status == 303 and "notice=task_run" in location(headers)
        listed = keys.fair_list("d", "tenant-a")
        assert [json.loads(raw)["id"] for raw in await aredis.lrange(listed, 0, -1)] == [second, first]
        status, _, headers = await app.post(f"/queues/{queue_name}/tasks/{first}/delete", {"csrf_token": token})
        assert "notice=task_deleted" in location(headers)
        assert [json.loads(raw)["id"] for raw in await aredis.lrange(listed, 0, -1)] == [second]


async def test_chart_spans_show_hourly_counts_and_timings(
    console: Start, aredis: aioredis.Redis, queue_name: str, start_worker: Any, loopback: LoopbackServer
) -> None:
    app: Dashboard = await console()
    async with AsyncClient(app.settings) as client:
        ids = [await client.enqueue_http(loopback.url("/ok?min_ms=20&max_ms=30")) for _ in range(3)]
        worker = await start_worker(app.settings)
        for task_id in ids:
            await client.wait(task_id, timeout=20)
        await worker.stop()
    for span, unit in (("1h", "minute"), ("24h", "hour"), ("7d", "hour")):
        status, body, _ = await app.get(f"/queues/{queue_name}?span={span}")
        assert status == 200 and f'data-span="{span}"' in body and f"per {unit}" in body, span
        assert "3 succeeded" in body and "series-duration" in body and "series-wait" in body, span
        assert re.search(r"mean duration \d+ ms, mean time in queue \d+ ms", body), span
    assert "retries included" in body  # what "failed" counts
    status, body, _ = await app.get(f"/fragments/queues/{queue_name}?tab=ready&span=7d")
    assert status == 200 and 'data-span="7d"' in body


async def test_the_api_of_the_operator_pages(
    console: Start, aredis: aioredis.Redis, queue_name: str, loopback: LoopbackServer
) -> None:
    task = {"url": loopback.url("/ok")}
    app: Dashboard = await console(schedules=[{"name": "beat", "every": 60, "task": task}])

    async def call(method: str, path: str) -> tuple[int, Any]:
        async with app.session.request(method, app.url(path), allow_redirects=False) as response:
            return response.status, await response.json()

    async with AsyncClient(app.settings) as client:
        later = await client.enqueue_http(loopback.url("/ok"), delay=3600)
    status, body = await call("GET", "/v1/destinations")  # none of this queue's (a shared Redis may hold others')
    assert status == 200 and all(q["queue"] != queue_name for row in body["destinations"] for q in row["queues"])
    status, body = await call("POST", "/v1/destinations/nowhere/close")
    assert status == 404 and body["error"]["reason"] == "not_found"
    status, body = await call("GET", "/v1/schedules")
    assert status == 200 and body["schedules"][0]["name"] == "beat"
    status, body = await call("POST", "/v1/schedules/beat/run")
    assert status == 201 and body["id"].startswith("beat@")
    assert (await call("POST", "/v1/schedules/beat/pause"))[1] == {"name": "beat", "paused": True}
    assert (await call("POST", "/v1/schedules/nope/pause"))[0] == 404
    status, body = await call("GET", "/v1/redis")
    assert status == 200 and body["replication"]["role"] == "master"
    status, body = await call("GET", f"/v1/queues/{queue_name}/history?span=7d")
    assert status == 200 and len(body["buckets"]) == 168
    assert (await call("GET", f"/v1/queues/{queue_name}/history?span=2d"))[0] == 400
    assert await call("POST", f"/v1/queues/{queue_name}/tasks/{later}/run") == (
        200,
        {"id": later, "outcome": "run_now"},
    )
    assert (await call("POST", f"/v1/queues/{queue_name}/tasks/{later}/delete"))[1]["outcome"] == "deleted"
    status, body = await call("POST", f"/v1/queues/{queue_name}/tasks/{later}/delete")
    assert status == 409 and body["error"]["reason"] == "not_waiting"
