"""One rule per field, whatever the entry point (issue 18, part 7): every hostile envelope below is refused with
the same reason and message by the client (built from arguments, and raw), the HTTP API, `gopherq enqueue`, Python
functions and schedules, and dead-lettered by a worker when pushed raw; the fields GoPherQ keeps are refused by
every producer entry point; `unique_for` alone makes the same key on every path; `eta`, `deadline` and
`unique_for` stop at `queue.max_horizon`."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gopherq import AsyncClient, ConfigError, Settings, TaskRejected
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.deadletters import fresh_envelope
from gopherq.core.keys import QueueKeys
from gopherq.core.masking import MASK, Masker
from gopherq.core.schedules import Schedule, Scheduler
from gopherq.web import create_app
from gopherq.web.app import API_AREAS
from gopherq.web.openapi import OPENAPI
from tests.support import function_targets as targets
from tests.support.api_answers import PAGES_SCHEDULE, ask_key_routes, ask_page_routes, operator_routes
from tests.support.common import GOPHERQ, REPO, async_wait_until, cli_env, free_port
from tests.support.flows_api import ask_flow_routes
from tests.support.loopback import LoopbackServer
from tests.support.plugins import CaptureSink, SinkPlugin

#: A task every path accepts and a worker runs: a registered Python function (tests/support/function_targets.py).
ADD = {"type": "function", "function": "tests.support.function_targets:add", "args": [1, 2]}
HOOK = "http://127.0.0.1:9/hook"

#: name -> (envelope, reason, what the message must say): each is refused by every producer path and
#: dead-lettered by a worker that fetches it raw.
HOSTILE: dict[str, tuple[dict[str, Any], str, str]] = {
    "id_with_a_newline": (
        {**ADD, "id": "order-1\nINFO forged log line"},
        "schema_invalid",
        "field 'id' must not contain control characters (C0, DEL, C1, U+2028, U+2029), got 'order-1\\nINFO forged",
    ),
    "id_with_a_nul": ({**ADD, "id": "a\x00b"}, "schema_invalid", "got 'a\\x00b'"),
    "id_with_del": ({**ADD, "id": "a\x7fb"}, "schema_invalid", "got 'a\\x7fb'"),
    "id_with_a_c1_control": ({**ADD, "id": "a\x85b"}, "schema_invalid", "got 'a\\x85b'"),
    "id_with_a_line_separator": ({**ADD, "id": "a\u2028b"}, "schema_invalid", "got 'a\\u2028b'"),
    "unique_key_with_a_cr": (
        {**ADD, "unique_key": "k\r1"},
        "schema_invalid",
        "field 'unique_key' must not contain control characters",
    ),
    "fair_key_with_a_newline": (
        {**ADD, "fair_key": "tenant\nINFO forged"},
        "schema_invalid",
        "field 'fair_key' must not contain control characters",
    ),
    "fair_key_too_long": ({**ADD, "fair_key": "k" * 201}, "schema_invalid", "field 'fair_key'"),
    "queue_not_a_queue_name": ({**ADD, "queue": "a {b}"}, "schema_invalid", "field 'queue': invalid queue name"),
    "queue_not_a_string": ({**ADD, "queue": ["q"]}, "schema_invalid", "field 'queue' must be a string, got ['q']"),
    "eta_beyond_the_horizon": ({**ADD, "eta": 1e300}, "schema_invalid", "field 'eta' is more than queue.max_horizon"),
    "deadline_beyond_the_horizon": (
        {**ADD, "deadline": 1e300},
        "schema_invalid",
        "field 'deadline' is more than queue.max_horizon (3.16224e+07s) ahead, got 1e+300",
    ),
    "unique_for_beyond_the_horizon": (
        {**ADD, "unique_for": 1e300},
        "schema_invalid",
        "field 'unique_for' is longer than queue.max_horizon",
    ),
    "url_with_crlf": (
        {"type": "http", "url": "http://127.0.0.1:9/a\r\nX-Injected: 1"},
        "schema_invalid",
        "http task: field 'url': Value error, has a control character ('\\r') at position 20",
    ),
    "url_with_a_tab": ({"type": "http", "url": "http://127.0.0.1:9/a\tb"}, "schema_invalid", "('\\t')"),
    "url_with_a_nul": ({"type": "http", "url": "http://127.0.0.1:9/\x00"}, "schema_invalid", "('\\x00')"),
    "on_success_without_a_signing_secret": (
        {"type": "http", "url": "http://127.0.0.1:9/", "on_success": HOOK},
        "schema_invalid",
        "http task: field 'on_success' needs [plugins.http] signing_secret, which is not set",
    ),
    "on_failure_without_a_signing_secret": (
        {"type": "http", "url": "http://127.0.0.1:9/", "on_failure": HOOK},
        "schema_invalid",
        "field 'on_failure' needs [plugins.http] signing_secret",
    ),
    "sign_without_a_signing_secret": (
        {"type": "http", "url": "http://127.0.0.1:9/", "sign": True},
        "schema_invalid",
        "field 'sign' needs [plugins.http] signing_secret",
    ),
}

#: The fields GoPherQ keeps, each with a value a producer might try.
RESERVED = {
    "attempt": 2,
    "recoveries": 99,
    "last_error": {"reason": "x", "message": "y"},
    "ready_at": 1.0,
    "flow_slot": 1,
    "flow_member": {"flow": "f", "node": "n"},
    "waiting_for": {"reason": "retry"},
}
RESERVED_MESSAGE = "is kept by GoPherQ (attempts, recoveries and flow slots): a producer cannot set it"


def refusal(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(TaskRejected) as refused:
        call()
    return refused.value.reason, refused.value.message


async def producer_refusals(client: AsyncClient, api: Callable[..., Any], envelope: dict[str, Any]) -> set[Any]:
    """What the client (built and raw) and the API answer for `envelope`: one (reason, message) when they agree."""
    kwargs = {key: value for key, value in envelope.items() if key != "type"}
    built = refusal(lambda: client.task(envelope.get("type", "http"), **kwargs))
    with pytest.raises(TaskRejected) as refused:
        await client.enqueue_raw(codec.dumps(envelope))
    status, answer = await api("POST", f"/v1/queues/{client.queue}/tasks", envelope)
    assert status == 422, answer
    return {
        built,
        (refused.value.reason, refused.value.message),
        (answer["error"]["reason"], answer["error"]["message"]),
    }


async def test_every_producer_path_refuses_each_hostile_task_with_the_same_message(
    settings: Settings, api: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    async with AsyncClient(settings) as client:
        for name, (envelope, reason, message) in HOSTILE.items():
            [(said_reason, said)] = await producer_refusals(client, api, envelope)
            assert said_reason == reason and message in said, (name, said)
            assert "\n" not in said and "\r" not in said and "\x00" not in said, name  # shown escaped
        for field, value in RESERVED.items():
            [(said_reason, said)] = await producer_refusals(client, api, {**ADD, field: value})
            assert (said_reason, said) == ("schema_invalid", f"field '{field}' {RESERVED_MESSAGE}"), field
    assert await aredis.llen(settings.queue.name) == 0  # nothing reached Redis


def test_python_functions_and_gopherq_enqueue_refuse_them_too(settings: Settings) -> None:
    with pytest.raises(TaskRejected, match="field 'id' must not contain control characters"):
        targets.add.with_options(id="order-1\nforged").enqueue(1, 2)
    with pytest.raises(TaskRejected, match=re.escape(f"field 'recoveries' {RESERVED_MESSAGE}")):
        targets.add.with_options(recoveries=99).enqueue(1, 2)
    with pytest.raises(TaskRejected, match=r"field 'eta' is more than queue\.max_horizon"):
        targets.add.with_options(delay=1e300).enqueue(1, 2)
    targets.app.close()
    env = cli_env({"GOPHERQ_REDIS__URL": str(settings.redis.url), "GOPHERQ_QUEUE__NAME": settings.queue.name})
    cases = {
        ("--url", "http://127.0.0.1:9/", "--id", "order-1\nforged"): "field 'id' must not contain control characters",
        ("--url", "http://127.0.0.1:9/a\r\nX: 1"): "field 'url': Value error, has a control character ('\\r')",
        ("--url", "http://127.0.0.1:9/", "--delay", "1e300"): "field 'eta' is more than queue.max_horizon",
        ("--url", "http://127.0.0.1:9/", "--unique-key", "k\r1"): "field 'unique_key' must not contain control",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = pool.map(
            lambda args: subprocess.run(
                [GOPHERQ, "enqueue", *args], env=env, capture_output=True, text=True, timeout=60
            ),
            cases,
        )
    for done, message in zip(runs, cases.values(), strict=True):
        [line] = done.stderr.strip().splitlines()
        assert done.returncode == 2 and line.startswith("gopherq: error: schema_invalid: ") and message in line, line


@pytest.mark.parametrize(
    "name",
    [
        "unique_key_with_a_cr",
        "queue_not_a_queue_name",
        "eta_beyond_the_horizon",
        "unique_for_beyond_the_horizon",
        "url_with_crlf",
        "on_success_without_a_signing_secret",
    ],
)
async def test_a_schedule_with_a_hostile_task_stops_start_up(
    name: str, make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    envelope, _, message = HOSTILE[name]
    settings = make_settings(schedules=[{"name": "hostile", "every": 60, "task": envelope}])
    with pytest.raises(ConfigError, match="schedules: hostile: task: .*" + re.escape(message)):
        await start_worker(settings)


async def test_a_schedule_cannot_set_what_gopherq_keeps(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(schedules=[{"name": "kept", "every": 60, "task": {**ADD, "attempt": 3}}])
    with pytest.raises(ConfigError, match=re.escape(f"schedules: kept: task: field 'attempt' {RESERVED_MESSAGE}")):
        await start_worker(settings)


async def test_a_worker_dead_letters_each_hostile_task_pushed_raw(
    settings: Settings, start_worker: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    await start_worker(settings)
    queue = settings.queue.name
    pushed = {codec.dumps(envelope): name for name, (envelope, _, _) in HOSTILE.items()}
    await aredis.rpush(queue, *pushed, codec.dumps({**ADD, "id": "after"}))
    broker = Broker(aredis, queue)
    record = await async_wait_until(lambda: broker.get_result("after"), what="the healthy task after them")
    assert record["status"] == "succeeded" and record["result"] == 3

    async def all_dead() -> bool:
        return int(await aredis.zcard(broker.keys.dead_index)) == len(HOSTILE)

    await async_wait_until(all_dead, what="every hostile task dead-lettered")
    assert await aredis.zcard(broker.keys.delayed) == 0  # nothing parked for ever
    for entry_id, raw_entry in (await aredis.hgetall(broker.keys.dead)).items():
        entry = codec.loads(raw_entry)
        name = pushed[entry["raw"].encode()]
        _, reason, message = HOSTILE[name]
        assert entry["reason"] == reason and message in entry["error"]["message"], (name, entry)
        if name.startswith("id_"):  # an unusable id names nothing: no entry, record or event under it
            assert entry_id.startswith(b"raw-") and entry["task_id"] is None, name


async def test_fields_gopherq_keeps_are_read_from_a_raw_push(
    settings: Settings, start_worker: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    """A raw push cannot be told from GoPherQ's own moves of a task (a retry is the same bytes with `attempt`
    raised), so a worker reads these fields from it: the documented exception to the producer rule."""
    await start_worker(settings)
    await aredis.rpush(settings.queue.name, codec.dumps({**ADD, "id": "third-try", "attempt": 3}))
    record = await async_wait_until(lambda: Broker(aredis, settings.queue.name).get_result("third-try"))
    assert record["status"] == "succeeded" and record["attempts"] == 3


async def test_unique_for_alone_makes_one_key_on_every_path(
    settings: Settings,
    api: Callable[..., Any],
    aredis: aioredis.Redis,
    loopback: LoopbackServer,
    start_worker: Callable[..., Any],
) -> None:
    url = loopback.url("/ok")
    envelope = {"method": "GET", "url": url, "unique_for": 600}  # what `gopherq enqueue --url U --unique-for 600` makes
    queue = settings.queue.name
    async with AsyncClient(settings) as client:
        [first] = await client.submit([client.http(url, unique_for=600)])
        assert not first.duplicate
        assert await client.enqueue_raw(codec.dumps(envelope)) == first.id  # the holder's id: nothing enqueued
        answers = await asyncio.gather(*(api("POST", f"/v1/queues/{queue}/tasks", envelope) for _ in range(200)))
        assert set(json.dumps(answer) for answer in answers) == {json.dumps([200, {"id": first.id, "created": False}])}
        env = cli_env({"GOPHERQ_REDIS__URL": str(settings.redis.url), "GOPHERQ_QUEUE__NAME": queue})
        args = [GOPHERQ, "enqueue", "--url", url, "--unique-for", "600"]
        done = await asyncio.to_thread(subprocess.run, args, env=env, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == first.id and "already queued or running" in done.stderr
        schedule = Schedule(name="sync", every=1, task=envelope)
        scheduler = Scheduler([schedule], queue, {queue: Broker(aredis, queue)})
        assert await scheduler.tick(now=time.time()) == 0  # starts the schedule
        assert await scheduler.tick(now=time.time() + 2) == 0  # its slot is skipped: the key is held
        assert await aredis.llen(queue) == 1
        # The worker frees the lock of a task enqueued raw (it makes the key from the same bytes), so the same
        # task can be enqueued again once it has run.
        await start_worker(settings)
        await client.wait(first.id, timeout=15)
        raw_id = await client.enqueue_raw(codec.dumps(envelope))
        assert raw_id != first.id
        record = await client.wait(raw_id, timeout=15)
        assert record is not None and record.status.value == "succeeded"
        [again] = await client.submit([client.http(url, unique_for=600)])
        assert not again.duplicate


async def test_the_horizon_is_a_setting_and_holds_for_raw_pushes(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    settings = make_settings(
        queue={"max_horizon": 60}, plugins={"functions": {"modules": ["tests.support.function_targets"]}}
    )
    fields = {"function": ADD["function"], "args": [1, 2]}
    async with AsyncClient(settings) as client:
        reason, message = refusal(lambda: client.task("function", delay=120, **fields))
        assert reason == "schema_invalid" and message.startswith("field 'eta' is more than queue.max_horizon (60s)")
        reason, message = refusal(lambda: client.task("function", deadline=time.time() + 120, **fields))
        assert message.startswith("field 'deadline' is more than queue.max_horizon (60s)")
        assert refusal(lambda: client.task("function", unique_for=61, **fields))[0] == "schema_invalid"
        later = await client.enqueue("function", delay=30, deadline=time.time() + 59, unique_for=60, **fields)
        assert await aredis.zcard(Broker(aredis, settings.queue.name).keys.delayed) == 1  # accepted: it waits
        await start_worker(settings)
        await aredis.rpush(settings.queue.name, codec.dumps({**ADD, "id": "far", "eta": time.time() + 120}))
        record = await async_wait_until(lambda: client.result("far"), what="the far task dead-lettered")
        assert record.status.value == "dead" and record.error is not None
        assert record.error.message.startswith("field 'eta' is more than queue.max_horizon (60s)")
        assert await client.cancel(later) == "cancelled"  # it was waiting in the delayed set, accepted


async def test_a_signing_secret_makes_callbacks_and_signing_acceptable(
    make_settings: Callable[..., Settings],
) -> None:
    secret = "whsec_" + base64.b64encode(b"a-signing-key-for-the-rules-test").decode()
    settings = make_settings(plugins={"http": {"signing_secret": secret}})
    async with AsyncClient(settings) as client:
        for name in ("on_success", "on_failure", "sign"):
            envelope = HOSTILE[f"{name}_without_a_signing_secret"][0]
            client.check_envelope(codec.dumps(envelope))  # no TaskRejected


#: A URL whose secrets sit in a URL inside its query: its userinfo and its own secret parameter.
NESTED = "http://u:SECRET-PW@h.example/cb?token=SECRET-TOKEN"


def test_urls_nested_in_a_url_are_masked() -> None:
    masker = Masker()
    for url in (
        f"https://app.example/login?next={NESTED}",  # as is
        f"https://app.example/login?next={quote(NESTED, safe='')}&page=2",  # percent-encoded, the usual form
        f"https://app.example/login?next={quote(quote(NESTED, safe=''), safe='')}",  # encoded twice
        f"https://app.example/go/{NESTED}",  # in the path
        f"https://app.example/#next={NESTED}",  # in the fragment
        f"https://app.example/?a={quote('https://x.example/?b=' + quote(NESTED, safe=''), safe='')}",  # two levels
    ):
        masked = masker.url(url)
        assert "SECRET" not in masked and masked.startswith("https://app.example/"), (url, masked)
        assert masker.text(f"GET {url} answered 404") == f"GET {masked} answered 404"  # in free text
    assert masker.url("https://app.example/login?next=https%3A%2F%2Fok.example%2F&page=2") == (
        "https://app.example/login?next=https%3A%2F%2Fok.example%2F&page=2"  # nothing to mask: unchanged
    )
    deep = NESTED
    for _ in range(10):  # deeper than MAX_URL_NESTING: the innermost level is hidden whole, in bounded work
        deep = f"https://x.example/?n={quote(deep, safe='')}"
    assert "SECRET" not in masker.url(deep) and MASK in masker.url(deep)


async def test_nested_secrets_are_masked_in_results_dead_letters_and_events(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], loopback: LoopbackServer
) -> None:
    settings = make_settings(queue={"max_attempts": 1})
    sink = CaptureSink()
    await start_worker(settings, extra_plugins={"capture": SinkPlugin(sink)})
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(loopback.url(f"/status/404?next={quote(NESTED, safe='')}"))
        record = await client.wait(task_id, timeout=15)
        assert record is not None and record.error is not None and "HTTP 404" in record.error.message
        assert "SECRET" not in json.dumps(record.to_dict())
        [entry] = await client.dead_letters.list()
        assert entry["task_id"] == task_id and "SECRET" not in json.dumps(entry)
    [event] = await sink.wait_named("task.dead_lettered")
    assert "SECRET" not in json.dumps(event.to_dict(), default=str)


def documented_answers() -> dict[tuple[str, str], set[int]]:
    """docs/api.md's status-code table: (method, path) -> codes."""
    text = (REPO / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(GET|POST|PUT|DELETE) (/v1/\S+)` \| ((?:`\d{3}`,? ?)+) \|$", text, re.MULTILINE)
    return {(method, path): {int(code) for code in re.findall(r"\d{3}", codes)} for method, path, codes in rows}


async def test_docs_api_md_lists_every_answer_the_server_gives(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis
) -> None:
    documented = documented_answers()
    in_openapi = {
        (method.upper(), path.replace("{task_id}", "{id}")): {int(code) for code in operation["responses"]}
        for path, item in OPENAPI["paths"].items()
        for method, operation in item.items()
    }
    assert documented == in_openapi
    token = "rules-token-0123456789"
    settings = make_settings(web={"token": token}, api={"max_body_bytes": 1024}, schedules=[PAGES_SCHEDULE])
    open_settings = make_settings(schedules=[PAGES_SCHEDULE])
    viewer_settings = make_settings(web={"token": token + "-admin", "viewer_token": token})  # the same bearer: a viewer
    unreachable = aioredis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    servers = [
        TestServer(create_app(settings, aredis, areas=API_AREAS), host="127.0.0.1"),
        TestServer(create_app(open_settings, aredis, areas=API_AREAS), host="127.0.0.1"),
        TestServer(create_app(settings, unreachable, areas=API_AREAS), host="127.0.0.1"),
        TestServer(create_app(viewer_settings, aredis, areas=API_AREAS), host="127.0.0.1"),
    ]
    for server in servers:
        await server.start_server()
    authed, open_, down, viewer = servers
    queue = settings.queue.name
    tasks = f"/v1/queues/{queue}/tasks"
    answered: dict[tuple[str, str], set[int]] = {}

    async def ask(route: tuple[str, str], path: str, server: TestServer = authed, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", {})
        if server is not open_ and kwargs.pop("auth", True):
            headers["Authorization"] = f"Bearer {token}"
        async with ClientSession() as session:
            async with session.request(route[0], server.make_url(path), headers=headers, **kwargs) as response:
                answered.setdefault(route, set()).add(response.status)

    try:
        post, queue_info = ("POST", "/v1/queues/{queue}/tasks"), ("GET", "/v1/queues/{queue}")
        get_task, cancel = ("GET", "/v1/tasks/{id}"), ("DELETE", "/v1/tasks/{id}")
        schema = ("GET", "/v1/openapi.json")
        elsewhere = {"headers": {"Host": "attacker.example"}}
        for body in ({"id": "s1", "url": "http://127.0.0.1:9/"},) * 2:  # 201, then 200: the same id again
            await ask(post, tasks, json=body)
        await ask(post, tasks, json={"id": "d1", "url": "http://127.0.0.1:9/", "eta": time.time() + 60})
        await ask(post, tasks, data=b"{", headers={"Content-Type": "application/json"})
        await ask(post, tasks, json={"url": "http://127.0.0.1:9/"}, auth=False)
        await ask(post, tasks, json={"url": "http://127.0.0.1:9/", "body": "x" * 2000})
        await ask(post, tasks, data=b"url=x", headers={"Content-Type": "text/plain"})
        await ask(post, tasks, open_, json={"url": "http://127.0.0.1:9/"}, **elsewhere)
        await ask(post, tasks, json={"url": "ftp://127.0.0.1/"})
        await ask(post, tasks, down, json={"url": "http://127.0.0.1:9/"})
        queues = ("GET", "/v1/queues")
        for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere), (down, {})):
            await ask(queues, "/v1/queues", server, **extra)
            await ask(queue_info, f"/v1/queues/{queue}", server, **extra)
            await ask(get_task, f"/v1/tasks/s1?queue={queue}", server, **extra)
        await ask(queue_info, "/v1/queues/not%20a%20queue")
        await ask(get_task, f"/v1/tasks/s1?queue={queue}&events=many")
        await ask(get_task, f"/v1/tasks/never-seen?queue={queue}")
        await ask(cancel, f"/v1/tasks/d1?queue={queue}")  # delayed: cancelled (200)
        await ask(cancel, f"/v1/tasks/d1?queue={queue}")  # now finished (409)
        await ask(cancel, f"/v1/tasks/s1?queue={queue}")  # ready: requested (202)
        await ask(cancel, "/v1/tasks/s1?queue=not%20a%20queue")
        await ask(cancel, f"/v1/tasks/s1?queue={queue}", auth=False)
        await ask(cancel, f"/v1/tasks/s1?queue={queue}", open_, **elsewhere)
        await ask(cancel, f"/v1/tasks/s1?queue={queue}", down)
        for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere)):
            await ask(schema, "/v1/openapi.json", server, **extra)
        dead_raw = ("GET", "/v1/queues/{queue}/dead/{entry_id}/raw")
        await aredis.hset(QueueKeys(queue).dead, "dead-1", codec.dumps({"task_id": "dead-1", "raw": "{}"}))
        for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere), (down, {})):
            await ask(dead_raw, f"/v1/queues/{queue}/dead/dead-1/raw", server, **extra)
        await ask(dead_raw, f"/v1/queues/{queue}/dead/never-dead/raw")
        await ask(dead_raw, "/v1/queues/not%20a%20queue/dead/dead-1/raw")
        await ask(post, tasks, viewer, json={"url": "http://127.0.0.1:9/"})  # a viewer creates nothing: 403
        await ask(cancel, f"/v1/tasks/s1?queue={queue}", viewer)
        await ask(cancel, f"/v1/tasks/never-seen?queue={queue}")  # 404: nothing known, nothing recorded
        await operator_routes(ask, queue, aredis, (authed, open_, down, viewer), elsewhere)
        await ask_flow_routes(ask, queue, authed, open_, down, elsewhere)
        await ask_key_routes(ask, queue, (authed, open_, down, viewer), elsewhere)
        await ask_page_routes(ask, queue, aredis, (authed, open_, down, viewer), elsewhere)
    finally:
        for server in servers:
            await server.close()
        await unreachable.aclose()
    assert answered == documented


def test_a_requeued_dead_letter_carries_none_of_the_fields_gopherq_keeps() -> None:
    kept = codec.dumps({**ADD, "id": "t1", **RESERVED})
    # Requeued, it is ready again from the requeue on: `ready_at` is GoPherQ's stamp, not the one it carried. A flow
    # member stays one: succeeding after its requeue, it moves its flow on (docs/flows.md).
    member = {"flow_member": RESERVED["flow_member"]}
    assert codec.loads(fresh_envelope(kept, now=1234.5)) == {**ADD, "id": "t1", **member, "ready_at": 1234.5}
