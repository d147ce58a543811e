"""The executor owns the wire (issue 18, parts 1 and 6): a task cannot frame its own request, one task's request
never bleeds into another's on a pooled connection, and the Idempotency-Key is a safe header whatever the id.

Every request here goes to tests/wire_server.WireServer, a raw HTTP/1.1 server that parses pipelined requests by
RFC 9112 and records each one it parsed, so "the server never saw a request no task asked for" is checked on the
bytes, not inferred from results.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq import AsyncClient, Settings, TaskRejected, TaskStatus
from gopherq.core.executor import ExecutorEntry, run_attempt
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpPayload, HttpSettings
from gopherq.plugins.http.checks import FRAMING_HEADERS, idempotency_key
from gopherq.web import create_app
from tests.plugins.test_http_executor import context
from tests.support.common import write_config
from tests.support.loopback import LoopbackServer
from tests.support.plugins import ExecutorPlugin
from tests.support.wire_server import (
    ParsedRequest,
    WireServer,
)

TRANSPORTS = ["native", "aiohttp", "httpx"]


@pytest.fixture
def wire() -> Iterator[WireServer]:
    server = WireServer().start()
    yield server
    server.stop()


# -- framing and hop-by-hop headers are refused on every path ---------------------------------------------------

#: Each refused header, in a casing a producer might use, with a value that would do harm.
REFUSED = [
    ("Transfer-Encoding", "chunked"),
    ("content-length", "0"),
    ("Connection", "close"),
    ("Keep-Alive", "timeout=600"),
    ("Upgrade", "h2c"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Proxy-Connection", "keep-alive"),
    ("EXPECT", "100-continue"),
    ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
]


def test_every_framing_and_hop_by_hop_header_is_in_the_refused_list() -> None:
    assert {name.lower() for name, _ in REFUSED} | {"trailers"} == set(FRAMING_HEADERS)


@pytest.mark.parametrize(("name", "value"), REFUSED)
async def test_the_client_refuses_a_framing_header_naming_it(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, name: str, value: str
) -> None:
    settings = make_settings()
    async with AsyncClient(settings) as client:
        with pytest.raises(TaskRejected) as refused:
            await client.enqueue_http("http://127.0.0.1:9/", method="POST", headers={name: value}, body="x")
        assert refused.value.reason == "schema_invalid"
        assert f"header {name!r} is refused" in str(refused.value)
        # A value read from the environment does not help: the name alone is refused.
        with pytest.raises(TaskRejected, match=f"header {name!r} is refused"):
            await client.enqueue_http("http://127.0.0.1:9/", headers={name: {"env": "HOME"}})
    assert await aredis.llen(settings.queue.name) == 0


async def test_the_client_refuses_one_header_given_twice_in_different_cases(
    make_settings: Callable[..., Settings],
) -> None:
    async with AsyncClient(make_settings()) as client:
        with pytest.raises(TaskRejected, match=r"header 'host' is given twice \(as 'Host' and 'host'\)"):
            await client.enqueue_http("http://127.0.0.1:9/", headers={"Host": "a.example", "host": "b.example"})


async def test_the_api_answers_422_naming_the_header(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    server = TestServer(create_app(settings, aredis), host="127.0.0.1")
    await server.start_server()
    path = f"/v1/queues/{settings.queue.name}/tasks"
    task = {"url": "http://127.0.0.1:9/", "method": "POST", "headers": {"Transfer-Encoding": "chunked"}}
    answers = []
    try:
        async with ClientSession() as session:
            for body in (task, {"tasks": [{"url": "http://127.0.0.1:9/"}, task]}):
                async with session.post(server.make_url(path), json=body) as response:
                    answers.append((response.status, (await response.json())["error"]))
    finally:
        await server.close()
    [(status, error), (batch_status, batch_error)] = answers
    assert status == 422 and error["reason"] == "schema_invalid"
    assert "header 'Transfer-Encoding' is refused" in error["message"]
    assert batch_status == 422 and batch_error["index"] == 1
    assert await aredis.llen(settings.queue.name) == 0


def test_the_cli_refuses_a_framing_header_naming_it(
    run_gopherq: Callable[..., Any], tmp_path: Path, redis_url: str, queue_name: str, sync_redis: Any
) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))
    proc = run_gopherq(["enqueue", "-c", config, "--url", "http://127.0.0.1:9/", "-H", "Content-Length: 0"])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "header 'Content-Length' is refused" in proc.stderr and "Traceback" not in proc.stderr
    assert sync_redis.llen(queue_name) == 0


async def test_a_raw_push_with_a_framing_header_is_dead_lettered_schema_invalid_and_never_sent(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], wire: WireServer, aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    await start_worker(settings)
    raw = {"id": "te", "method": "POST", "url": wire.url("/te"), "header": {"transfer-encoding": "chunked"}}
    await aredis.rpush(settings.queue.name, json.dumps(raw))
    async with AsyncClient(settings) as client:
        record = await client.wait("te", 15)
        [entry] = await client.dead_letters.list()
    assert record is not None and record.status is TaskStatus.FAILED and record.dead_reason == "schema_invalid"
    assert entry["reason"] == "schema_invalid" and json.loads(entry["raw"]) == raw
    assert "header 'transfer-encoding' is refused" in entry["error"]["message"]
    assert wire.seen() == []


# -- smuggling: attackers and victims on one worker's pooled connection -------------------------------------------

SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

#: (method, headers, body) of requests that would desynchronise a pooled connection if their headers went out.
TRICKS: list[tuple[str, dict[str, str], str | None]] = [
    ("POST", {"Transfer-Encoding": "chunked"}, f"0\r\n\r\n{SMUGGLED}"),  # CL.TE: the tail is a second request
    ("POST", {"transfer-encoding": "chunked", "Transfer-Encoding": "identity"}, f"0\r\n\r\n{SMUGGLED}"),
    ("POST", {"TRANSFER-ENCODING": " chunked"}, f"0\r\n\r\n{SMUGGLED}"),
    ("POST", {"Content-Length": "0"}, SMUGGLED),  # the body is read as the next request
    ("POST", {"Content-Length": "4"}, f"abcd{SMUGGLED}"),
    ("GET", {"Content-Length": "60"}, None),  # the victim's request would be read as this one's body
    ("GET", {"Transfer-Encoding": "chunked"}, None),  # the server waits for chunks: the next request becomes one
    ("POST", {"Connection": "close"}, "x"),
    ("GET", {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"}, None),
    ("POST", {"Expect": "100-continue"}, "body"),
    ("GET", {"Keep-Alive": "timeout=600", "TE": "trailers", "Trailer": "X", "Proxy-Connection": "close"}, None),
    ("GET", {"X-A": "v\r\nTransfer-Encoding: chunked"}, None),  # header injection: refused by both transports
    ("GET", {"X-A": "v\nContent-Length: 50"}, None),
]


class Bypass:
    """An executor that hands tasks to the worker's own http executor (same pool) with a payload built without
    validation: the transports' own framing is all that stands between these headers and the wire."""

    def __init__(self) -> None:
        self.http: HttpExecutor | None = None

    async def execute(self, task: Any, context: Any) -> Any:
        assert self.http is not None
        fields = task.payload
        task.payload = HttpPayload.model_construct(
            method=fields["method"], url=fields["url"], headers=fields["headers"], body=fields.get("body")
        )
        return await self.http.execute(task, context)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_attackers_never_bleed_into_victims_on_one_pooled_connection(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    wire: WireServer,
    aredis: aioredis.Redis,
    transport: str,
) -> None:
    """Rounds of attacker tasks, interleaved with victims, on one worker of concurrency 1 (one pooled connection,
    reused by every task that may reuse it). Attackers come raw (RPUSH: dead-lettered unsent) and through an
    executor that skips validation (sent, framed by the transport). Every victim records its own answer, and the
    server parses no request that no task asked for, nor one framed two ways."""
    settings = make_settings(worker={"concurrency": 1, "task_timeout": 2.0}, plugins={"http": {"transport": transport}})
    bypass = Bypass()
    running = await start_worker(settings, extra_plugins={"bypass": ExecutorPlugin("bypass", bypass)})
    bypass.http = running.worker.plugins.executors["http"].executor
    victims: dict[str, str] = {}
    bypassed: dict[str, int] = {}
    pushed: list[str] = []
    for round_ in range(4):
        for number, (method, headers, body) in enumerate(TRICKS):
            name = f"{round_}-{number}"
            for kind in ("raw", "bypass"):
                task = {"id": f"{kind}-{name}", "method": method, "url": wire.url(f"/{kind}/{name}")}
                task |= {"headers": headers, "body": body}
                pushed.append(json.dumps({**task, "type": "bypass"} if kind == "bypass" else task))
            bypassed[f"bypass-{name}"] = number
            victims[f"victim-{name}"] = f"/victim/{name}"
            pushed.append(json.dumps({"id": f"victim-{name}", "url": wire.url(f"/victim/{name}")}))
    await aredis.rpush(settings.queue.name, *pushed)
    async with AsyncClient(settings) as client:
        deadline = time.monotonic() + 60  # one bound for all (a broken framing makes tasks time out in turn)
        records = {t: await client.wait(t, max(0.1, deadline - time.monotonic())) for t in [*victims, *bypassed]}
        dead = await client.dead_letters.list(limit=1000)
    for task_id, path in victims.items():
        record = records[task_id]
        assert record is not None and record.status is TaskStatus.SUCCEEDED, (task_id, record)
        assert record.result is not None and record.result["body"] == f"path={path}", (task_id, record.result)
    requests = wire.seen()
    asked = {f"/{kind}/{name}" for kind in ("victim", "bypass") for name in (t.split("-", 1)[1] for t in victims)}
    assert {request.target for request in requests} <= asked, "the server parsed a request no task asked for"
    assert not [request for request in requests if request.both_framings] and wire.rejected == []
    assert not [request for request in requests if request.header("transfer-encoding") is not None]
    for request in requests:
        assert request.header("connection") is None and request.header("expect") is None, request
    for task_id, number in bypassed.items():  # what was sent was framed by its body, and nothing else
        record = records[task_id]
        assert record is not None
        sent = [request for request in requests if request.target == f"/bypass/{task_id.split('-', 1)[1]}"]
        if "\n" in "".join(TRICKS[number][1].values()):
            assert record.error is not None and record.error.reason == "invalid_request" and not sent
            continue
        assert record.status is TaskStatus.SUCCEEDED and len(sent) == 1, (task_id, record, sent)
        assert sent[0].body == (TRICKS[number][2] or "").encode()
    assert {entry["id"] for entry in dead} >= {f"raw-{name}" for name in (t.split("-", 1)[1] for t in victims)}
    assert all(entry["reason"] == "schema_invalid" for entry in dead if entry["id"].startswith("raw-"))


# -- the Idempotency-Key of an id that is not a safe header value ------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "key"),
    [
        ("task-001", "task-001"),
        ("a b", "a b"),
        ("commande-café", "UTF-8''commande-caf%C3%A9"),
        ("日本", "UTF-8''%E6%97%A5%E6%9C%AC"),
        (" padded ", "UTF-8''%20padded%20"),
        ("tab\there", "UTF-8''tab%09here"),
        ("100%", "100%"),
    ],
)
def test_the_idempotency_key_is_the_id_or_its_rfc_8187_encoding(task_id: str, key: str) -> None:
    assert idempotency_key(task_id) == key
    assert key.isascii()
    if key != task_id:  # the charset, an empty language tag, then the id's UTF-8 bytes percent-encoded
        charset, language, text = key.split("'")
        assert (charset, language, unquote(text)) == ("UTF-8", "", task_id)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_non_ascii_id_sends_its_derived_key_on_every_attempt(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], loopback: LoopbackServer, transport: str
) -> None:
    settings = make_settings(plugins={"http": {"transport": transport}})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        flaky = await client.enqueue_http(loopback.url("/flaky/1?retry_after=0"), id="commande-café")
        own = await client.enqueue_http(loopback.url("/ok"), id="reçu-1", headers={"idempotency-key": "mine"})
        plain = await client.enqueue_http(loopback.url("/ok"), id="order-7")
        records = [await client.wait(task_id, 15) for task_id in (flaky, own, plain)]
    assert all(r is not None and r.status is TaskStatus.SUCCEEDED for r in records), records
    assert records[0] is not None and records[0].attempts == 2
    assert loopback.count("UTF-8''commande-caf%C3%A9") == 2  # the same key on the retry
    assert loopback.count("mine") == 1 and loopback.count("order-7") == 1
    assert set(loopback.snapshot()) == {"UTF-8''commande-caf%C3%A9", "mine", "order-7"}


async def test_a_signed_task_and_its_callback_with_a_non_ascii_id(wire: WireServer) -> None:
    """The webhook-id of a signed request, and of the callback a task enqueues, are derived the same way."""
    secret = "whsec_" + base64.b64encode(b"callback-signing-key-0123456789").decode()
    executor = HttpExecutor(HttpSettings(signing_secret=secret), concurrency=1)
    entry = ExecutorEntry("http", executor, "http")
    task = task_from_dict({"id": "reçu", "url": wire.url("/signed"), "sign": True, "on_success": wire.url("/cb")})
    entry.validate(task)
    try:
        outcome = await run_attempt(entry, task, context())
    finally:
        await executor.close()
    assert outcome.failure is None, outcome.failure
    [request] = wire.seen()
    assert request.header("webhook-id") == request.header("idempotency-key") == "UTF-8''re%C3%A7u"
    [callback] = executor.followups(task, b'{"id": "re\\u00e7u"}', succeeded=True)
    callback_task = task_from_dict(json.loads(callback))
    entry.validate(callback_task)  # a valid task: its webhook-id header is ASCII
    assert callback_task.payload.headers["webhook-id"] == "UTF-8''re%C3%A7u.on_success"


def test_parsed_request_reads_headers_case_insensitively() -> None:
    request = ParsedRequest(1, "GET", "/", [("X-A", "1"), ("x-a", "2")], b"")
    assert request.header("x-A") == "1, 2" and request.header("missing") is None
