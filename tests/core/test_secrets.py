"""The secret corpus: tasks carrying secrets in every place a secret goes (Authorization, Proxy-Authorization, Cookie,
a configured header, URL userinfo, a secret query parameter, a response's Set-Cookie) are run by a real worker
process, and every output is collected in one place and grepped: results (client and CLI), dead-letter listings
(CLI), events of every sink (logging, webhook, the Redis stream), logs, CLI output (result, dlq, config, events,
task) and the HTTP API's answers. None may hold a secret; the raw task in Redis keeps them (a retry needs them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gopherq.client import AsyncClient
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import load_settings
from gopherq.web import create_app
from tests.support.common import wait_until, write_config

SECRETS = {
    "authorization": "AUTHZ-5ecret-1111",
    "proxy": "PROXY-5ecret-2222",
    "cookie": "COOKIE-5ecret-3333",
    "api_key": "APIKEY-5ecret-4444",
    "password": "PASSWD-5ecret-5555",
    "token": "TOKEN-5ecret-6666",
    "set_cookie": "SETCOOKIE-5ecret-7777",
    "signing_secret": "c2lnbmluZy01ZWNyZXQtODg4OA==",  # base64 of signing-5ecret-8888
    "env_header": "ENVHEADER-5ecret-9999",
}


async def test_no_secret_reaches_any_output(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    http: HTTPServer,
    worker_process: Callable[..., Any],
    run_gopherq: Callable[..., Any],
) -> None:
    events: list[bytes] = []

    def receive(request: Request) -> Response:
        events.append(request.get_data())
        return Response("ok")

    set_cookie = {"Set-Cookie": f"session={SECRETS['set_cookie']}"}
    http.expect_request("/ok").respond_with_data("fine", headers=set_cookie)
    http.expect_request("/fail").respond_with_data("broken", status=500, headers=set_cookie)
    http.expect_request("/events").respond_with_handler(receive)
    http.expect_request("/callback").respond_with_data("thanks")
    config = write_config(
        tmp_path,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\nmax_attempts = 2\nbackoff_min = 0.05\n'
        "backoff_max = 0.1\n[worker]\npromote_interval = 0.05\n"
        '[masking]\nheaders = ["X-Api-Key"]\n[logging]\nlevel = "INFO"\n[plugins.logging]\nevents = ["*"]\n'
        f'[plugins.http]\nsigning_secret = "whsec_{SECRETS["signing_secret"]}"\n'
        f'[[plugins.webhook.endpoints]]\nurl = "{http.url_for("/events")}"\nbatch_size = 1\n',
    )
    settings = load_settings(str(config), environ={})
    port = http.port
    ok_task = {
        "id": "secret-ok",
        "url": f"http://user:{SECRETS['password']}@127.0.0.1:{port}/ok?token={SECRETS['token']}",
        "headers": {
            "Cookie": f"c={SECRETS['cookie']}",
            "X-Api-Key": SECRETS["api_key"],
            "X-Partner": {"env": "GOPHERQ_TEST_PARTNER"},  # read by the worker at send time: never in Redis
        },
        "sign": True,
        "on_success": f"http://127.0.0.1:{port}/callback?token={SECRETS['token']}",
    }
    failing_task = {
        "id": "secret-fail",
        "url": f"http://127.0.0.1:{port}/fail?token={SECRETS['token']}",
        "headers": {"Authorization": f"Bearer {SECRETS['authorization']}", "Proxy-Authorization": SECRETS["proxy"]},
    }
    corpus: list[str] = []

    # Enqueued through the HTTP API; its answers are outputs too.
    server = TestServer(create_app(settings, _async_redis(redis_url)), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:

            async def call(method: str, path: str, body: Any = None) -> str:
                async with session.request(method, server.make_url(path), json=body) as response:
                    return f"{response.status} {await response.text()}"

            corpus.append(await call("POST", f"/v1/queues/{queue_name}/tasks", {"tasks": [ok_task, failing_task]}))
            proc = worker_process(["run", "-c", str(config)], env={"GOPHERQ_TEST_PARTNER": SECRETS["env_header"]})
            keys = QueueKeys(queue_name)
            wait_until(lambda: sync_redis.get(keys.result("secret-ok.on_success")), timeout=30, what="the callback")
            wait_until(lambda: sync_redis.zcard(keys.dead_index) == 1, timeout=30, what="the failing task to die")
            for path in ("/v1/tasks/secret-ok", "/v1/tasks/secret-fail", f"/v1/queues/{queue_name}"):
                corpus.append(await call("GET", f"{path}?queue={queue_name}" if "tasks" in path else path))
    finally:
        await server.close()
    # The raw task in Redis keeps its secrets: a retry needs them (and the test would prove nothing otherwise).
    assert SECRETS["authorization"] in sync_redis.hget(keys.dead, "secret-fail").decode()
    sent = [entry[0] for entry in http.log if entry[0].path == "/ok"]
    assert sent[0].headers["X-Partner"] == SECRETS["env_header"] and "webhook-signature" in sent[0].headers
    assert any(entry[0].path == "/callback" for entry in http.log)

    async with AsyncClient(settings) as client:
        for task_id in ("secret-ok", "secret-fail", "secret-ok.on_success"):
            record = await client.result(task_id)
            assert record is not None
            corpus.append(json.dumps(record.to_dict()))
        corpus.append(json.dumps(await client.dead_letters.list()))
    for args in (
        ["result", "secret-ok"],
        ["result", "secret-ok", "--json"],
        ["result", "secret-fail", "--json"],
        ["dlq", "list"],
        ["dlq", "list", "--json"],
        ["dlq", "show", "secret-fail"],
        ["dlq", "show", "secret-fail", "--json"],
        ["config"],
        ["events", "-n", "500"],
        ["events", "-n", "500", "--json"],
        ["task", "secret-fail", "--json"],
        ["task", "secret-ok"],
    ):
        done = run_gopherq([*args, "-c", str(config)])
        corpus.append(f"{args}: {done.returncode} {done.stdout} {done.stderr}")

    wait_until(lambda: any(b"task.dead_lettered" in body for body in events), timeout=20, what="webhook events")
    proc.signal(2)
    proc.wait(20)
    corpus.append(proc.output)  # the worker's logs and the logging sink's event lines
    corpus.extend(body.decode() for body in events)
    stream = sync_redis.xrange(keys.events)  # the stream sink, as stored
    assert any(b"task.dead_lettered" in repr(entry).encode() for entry in stream)
    corpus.extend(repr(entry) for entry in stream)

    text = "\n".join(corpus)
    # The corpus is real: it holds both tasks' outcomes, the failure's HTTP answer and the masks themselves.
    expected_parts = ("secret-ok", "secret-fail", "on_success", "task.failed", "HTTP 500", "retries_exhausted", "201")
    for expected in (*expected_parts, "********"):
        assert expected in text, expected
    leaked = {name: value for name, value in SECRETS.items() if value in text}
    where = {name: [part[:120] for part in corpus if value in part] for name, value in leaked.items()}
    assert not leaked, f"secrets leaked: {where}"


def _async_redis(url: str) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url)
