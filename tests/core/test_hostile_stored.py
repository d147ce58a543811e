"""What is stored and served is bounded: a 100 MB raw push becomes a dead letter of a few KiB (a prefix, the full
size and the SHA-256 of the whole), and no page, fragment or API answer grows with what a producer pushed or an
endpoint answered; the stored bytes are served whole (masked) by a download instead. Real Redis, a real worker
and the real web application over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from gopherq.core import codec
from gopherq.core.bounds import SHOWN_FIELD, SHOWN_TEXT, bounded, cut_bytes, cut_text, within
from gopherq.core.broker import Broker
from gopherq.core.deadletters import DeadLetters, masked_raw_text
from gopherq.core.errors import TaskRejected
from gopherq.core.events import Event
from gopherq.core.inspect import Inspector
from gopherq.core.keys import QueueKeys
from gopherq.core.masking import Masker, drop_cut_url
from gopherq.core.outcomes import DEAD_ERROR_LIMIT, RAW_PREFIX_BYTES, OutcomePolicy, capped_error, raw_for_storage
from gopherq.core.results import ErrorInfo
from gopherq.core.sections import QueueSettings
from gopherq.core.settings import Settings, load_settings
from gopherq.plugins.stream_sink import ENTRY_BYTES, entry_json
from gopherq.web import create_app
from tests.support.common import async_wait_until
from tests.support.loopback import LoopbackServer
from tests.support.redis_servers import PrivateRedis

SECRET = "s3cr3t-PLUGH-77"
MIB = 1024 * 1024

#: The bounds this test holds the faces to (bytes on the wire), for a task of any size.
DEAD_LETTER_BOUND = 8 * 1024  # a too_large dead letter as stored: 4 KiB of prefix, the error, the rest
PAGE_BOUND = 64 * 1024  # the dashboard's dead-letter page and task page of a too_large push
ANSWER_BOUND = 32 * 1024  # GET /v1/tasks/<id> of a too_large push
FIELDS_BOUND = 4 * SHOWN_FIELD  # any task page or answer: three stored fields and its events, each bounded


class Web:
    """The real application on loopback, and a browser-like session (the dashboard binds loopback: no login)."""

    def __init__(self, server: TestServer, session: ClientSession, settings: Settings) -> None:
        self.server = server
        self.session = session
        self.settings = settings
        self.queue = settings.queue.name

    async def get(self, path: str) -> tuple[int, bytes, Any]:
        async with self.session.get(self.server.make_url(path), allow_redirects=False) as response:
            return response.status, await response.read(), response.headers


@pytest.fixture
async def web_app(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[TestServer, ClientSession]] = []

    async def start(redis_client: Any, **sections: Any) -> Web:
        settings = make_settings(**sections)
        server = TestServer(create_app(settings, redis_client), host="127.0.0.1")
        await server.start_server()
        session = ClientSession(cookie_jar=CookieJar(unsafe=True))
        opened.append((server, session))
        return Web(server, session, settings)

    yield start
    for server, session in opened:
        await session.close()
        await server.close()


def oversized_push(size: int) -> bytes:
    """A task a producer might push by mistake: a valid-looking http task, secrets first, a huge body."""
    head = codec.dumps(
        {
            "id": "huge",
            "method": "POST",
            "url": f"http://user:{SECRET}@127.0.0.1/upload?token={SECRET}",
            "headers": {"Authorization": f"Bearer {SECRET}", "X-Trace": "t-1"},
        }
    )
    head = head[:-1] + b',"body":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def test_a_100_mb_push_is_a_bounded_dead_letter_page_answer_and_download(
    make_settings: Callable[..., Settings],
    private_redis: Callable[..., PrivateRedis],
    start_worker: Any,
    web_app: Callable[..., Any],
) -> None:
    server = private_redis()
    # 100 MB crosses the socket twice (push, claim): on two busy shared cores, more than redis-py's default 5 s.
    client = aioredis.Redis.from_url(server.url, socket_timeout=120)
    settings = make_settings(redis={"url": server.url})
    queue = settings.queue.name
    keys = QueueKeys(queue)
    big = oversized_push(100 * MIB)
    await client.rpush(queue, big)
    digest = hashlib.sha256(big).hexdigest()
    await start_worker(settings, redis_client=client)
    await async_wait_until(lambda: client.zcard(keys.dead_index), timeout=60, what="the dead letter")

    # Stored: the prefix, the full size and the SHA-256 of the whole; nothing else of it is left in Redis.
    [(entry_id, stored)] = (await client.hgetall(keys.dead)).items()
    entry_id = entry_id.decode()
    entry = codec.loads(stored)
    assert len(stored) < DEAD_LETTER_BOUND, len(stored)
    assert entry["reason"] == "too_large" and entry_id.startswith("raw-")
    assert entry["raw"].encode() == big[:RAW_PREFIX_BYTES] and entry["raw_truncated"] is True
    assert (entry["raw_size"], entry["raw_sha256"]) == (len(big), digest)
    assert await client.llen(queue) == 0 and await client.hlen(keys.inflight) == 0
    assert [key async for key in client.scan_iter(match=f"gopherq:{{{queue}}}:processing:*")] == []

    async def memory_freed() -> bool:  # the 100 MB is gone from Redis (a client's query buffer shrinks on a timer)
        return bool((await client.info("memory"))["used_memory"] < 20 * MIB)

    await async_wait_until(memory_freed, timeout=30, what="Redis's memory back under 20 MiB")

    app = await web_app(client, redis={"url": server.url})
    sizes: dict[str, int] = {}
    for name, path, bound in (
        ("dead-letter page", f"/queues/{queue}/dead/{entry_id}", PAGE_BOUND),
        ("task page", f"/queues/{queue}/tasks/{entry_id}", PAGE_BOUND),
        ("task fragment", f"/fragments/queues/{queue}/tasks/{entry_id}", PAGE_BOUND),
        ("dead tab", f"/queues/{queue}?tab=dead", PAGE_BOUND),
        ("API answer", f"/v1/tasks/{entry_id}?queue={queue}", ANSWER_BOUND),
    ):
        status, body, _ = await app.get(path)
        assert status == 200, (name, body[:300])
        assert len(body) < bound, (name, len(body))
        assert SECRET.encode() not in body, name
        sizes[name] = len(body)
    _, page, _ = await app.get(f"/queues/{queue}/dead/{entry_id}")
    assert digest.encode() in page and b"104\xe2\x80\x89857\xe2\x80\x89600 bytes" in page  # size, thin spaces
    assert b"Download raw" in page and b"********" in page
    _, answer, _ = await app.get(f"/v1/tasks/{entry_id}?queue={queue}")
    dead = json.loads(answer)["dead_letter"]
    assert (dead["raw_size"], dead["raw_sha256"], dead["reason"]) == (len(big), digest, "too_large")

    # The download: what is stored (the prefix), masked, as an attachment, from the dashboard and the API alike.
    for path in (f"/queues/{queue}/dead/{entry_id}/raw", f"/v1/queues/{queue}/dead/{entry_id}/raw"):
        status, raw, headers = await app.get(path)
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"] == f'attachment; filename="{entry_id}.raw"'
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert len(raw) <= RAW_PREFIX_BYTES and SECRET.encode() not in raw and b'"X-Trace":"t-1"' in raw
    assert (await app.get(f"/v1/queues/{queue}/dead/no-such/raw"))[0] == 404
    print(f"\n100 MB push: dead letter {len(stored)} B stored; served: {sizes}")
    await client.aclose()


async def test_a_too_large_dead_letter_is_not_requeued(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    """Only a prefix was kept: requeueing it would push bytes that are not the task. It stays, and is not counted."""
    settings = make_settings(worker={"max_payload_bytes": 1024})
    await aredis.rpush(queue_name, oversized_push(20_000), b"not json, small")
    running = await start_worker(settings)
    keys = QueueKeys(queue_name)
    await async_wait_until(lambda: _at_least(aredis.zcard(keys.dead_index), 2), what="two dead letters")
    await running.stop()
    letters = DeadLetters(Broker(aredis, queue_name))
    assert await letters.requeue() == 1  # the parse_error one
    left = [codec.loads(stored)["reason"] for stored in (await aredis.hgetall(keys.dead)).values()]
    assert left == ["too_large"]
    assert await aredis.lrange(queue_name, 0, -1) == [b"not json, small"]


async def _at_least(count: Any, wanted: int) -> bool:
    return int(await count) >= wanted


async def test_every_face_bounds_each_stored_field_and_says_what_it_cut(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
    web_app: Callable[..., Any],
) -> None:
    """Fields under every storage cap can still be big: a 900 KiB envelope, a 60 KB response body in the result
    record. Each face shows at most SHOWN_TEXT of a text and SHOWN_FIELD of a field, lists the cuts in
    `truncated`, and the download has the whole stored envelope."""
    settings = make_settings()
    body = "b" * (900 * 1024)
    envelope = {
        "id": "wide",
        "url": loopback.url(f"/status/400?body_size=60000&token={SECRET}"),
        "method": "POST",
        "headers": {"Authorization": f"Bearer {SECRET}"},
        "body": body,
    }
    await aredis.rpush(queue_name, codec.dumps(envelope))
    await start_worker(settings)
    keys = QueueKeys(queue_name)
    await async_wait_until(lambda: aredis.zcard(keys.dead_index), what="the dead letter")
    record = codec.loads(await aredis.get(keys.result("wide")))
    assert len(record["error"]["details"]["body"]) == 60000  # stored as the executor capped it

    app = await web_app(aredis)
    status, answer, _ = await app.get(f"/v1/tasks/wide?queue={queue_name}")
    assert status == 200 and len(answer) < FIELDS_BOUND and SECRET.encode() not in answer
    info = json.loads(answer)
    cut = info["truncated"]
    assert cut["envelope.body"] == {"bytes": len(body)}
    assert cut["result.error.details.body"] == {"bytes": 60000}
    assert "dead_letter.raw" in cut and cut["dead_letter.raw"]["bytes"] > len(body)
    assert len(info["envelope"]["body"]) == SHOWN_TEXT and info["envelope"]["headers"]["Authorization"] == "********"
    for path in (f"/queues/{queue_name}/tasks/wide", f"/fragments/queues/{queue_name}/tasks/wide"):
        status, page, _ = await app.get(path)
        assert status == 200 and len(page) < FIELDS_BOUND and SECRET.encode() not in page, path
        assert b"envelope.body" in page  # the note that says what was cut
    status, page, _ = await app.get(f"/queues/{queue_name}/dead/wide")
    assert status == 200 and len(page) < FIELDS_BOUND and SECRET.encode() not in page
    status, raw, _ = await app.get(f"/v1/queues/{queue_name}/dead/wide/raw")
    downloaded = codec.loads(raw)
    assert status == 200 and downloaded["body"] == body and downloaded["headers"]["Authorization"] == "********"

    # The stream keeps each event bounded too: the failed attempt's event carried the 60 KB body.
    entries = await aredis.xrange(keys.events, "-", "+")
    assert entries and max(len(fields[b"event"]) for _, fields in entries) <= ENTRY_BYTES + 512
    failed = [codec.loads(f[b"event"]) for _, f in entries if codec.loads(f[b"event"])["event"] == "task.failed"]
    assert failed[0]["truncated"]["error.details.body"] == {"bytes": 60000}


async def test_events_another_writer_made_big_are_bounded_when_read(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    inspector = Inspector(aredis, make_settings())
    key = QueueKeys(queue_name).events
    huge = {"event": "task.failed", "task_id": "x", "error": {"reason": "boom", "message": "m" * MIB}}
    await aredis.xadd(key, {"event": codec.dumps(huge)})
    [event] = await inspector.events(queue_name)
    assert len(event.error["message"]) == 4096 and event.to_dict()["truncated"] == {"error.message": {"bytes": MIB}}
    small = {"event": "task.succeeded", "task_id": "y"}
    await aredis.xadd(key, {"event": codec.dumps(small)})
    assert "truncated" not in (await inspector.events(queue_name, count=2))[1].to_dict()


# -- the pieces, without I/O -----------------------------------------------------------------------------------------


def test_a_text_is_cut_on_a_character_boundary_and_only_when_over() -> None:
    assert cut_text("abc", 3) == "abc" and cut_text("abcd", 3) == "abc"
    assert cut_text("é" * 4, 5) == "éé"  # 2 bytes each: never half of one
    assert cut_bytes("é".encode() * 4, 5) == "éé".encode()
    assert cut_bytes(b"\xf0\x9f\x98\x80" * 2, 6) == b"\xf0\x9f\x98\x80"
    text = "x" * 100
    assert cut_text(text, 100) is text


def test_bounded_cuts_texts_and_collections_and_records_each_cut() -> None:
    cuts: dict[str, dict[str, int]] = {}
    value = {"a": "x" * 100, "b": {"c": list(range(1000))}, "d": "short"}
    shown = bounded(value, text=10, total=200, path="f", cuts=cuts)
    assert shown["a"] == "x" * 10 and cuts["f.a"] == {"bytes": 100}
    assert len(shown["b"]["c"]) < 1000 and cuts["f.b.c"] == {"items": 1000}
    assert len(codec.dumps(shown)) < 400
    untouched: dict[str, dict[str, int]] = {}
    assert bounded({"k": [1, "two"]}, text=10, total=200, cuts=untouched) == {"k": [1, "two"]} and not untouched


def test_within_says_yes_only_when_bounded_would_cut_nothing() -> None:
    """`within` is the shortcut that lets an executor's small call description skip the walk: whenever it says
    yes, the walk would have returned the same value and recorded no cut."""
    call = {"method": "GET", "url": "http://h/x", "headers": {"A": "b"}, "body_bytes": 0, "body_sha256": "0" * 64}
    values = [call, {"k": [0] * 150}, {"k": [0] * 400}, {"t": "é" * 300}, {"t": "x" * 700}, [None, True, 1.5], {}]
    for value in values:
        cuts: dict[str, dict[str, int]] = {}
        shown = bounded(value, text=2048, total=4096, cuts=cuts)
        if within(value, text=2048, total=4096):
            assert shown == value and not cuts, value
    assert within(call, text=2048, total=4096)
    assert not within({1: "a"}, text=2048, total=4096), "a key orjson cannot encode: walked"
    assert not within({"t": "x" * 3000}, text=2048, total=100_000), "a text over the limit"


def test_a_url_a_cut_goes_through_is_dropped_whole() -> None:
    """The cut may take what tells the masker a part is secret (the `@` after a password)."""
    assert drop_cut_url('see "http://user:pass') == 'see "'
    assert drop_cut_url("see http://host/ and more") == "see http://host/ and more"
    cuts: dict[str, dict[str, int]] = {}
    assert bounded("go to https://user:hunter2@host/", text=20, total=100, cuts=cuts) == "go to "


def test_the_masker_finds_urls_in_linear_time_as_it_did_before() -> None:
    masker = Masker()
    assert masker.text("a 1http://u:p@h/x b") == "a 1http://u:********@h/x b"
    assert masker.text("&://k okhttp://u:p@h/?token=1 z") == "&://k okhttp://u:********@h/?token=******** z"
    # A long run of letters before a `://` took a quadratic regular expression minutes per megabyte.
    text = "://" + "a" * MIB + " http://u:p@h/"
    assert masker.text(text).endswith(" http://u:********@h/")


def test_the_prefix_of_a_too_large_task_is_masked_as_text() -> None:
    masker = Masker()
    prefix = '{"url":"http://u:pw@h/?token=t1","headers":{"Authorization":"Bearer abc","X-A":"1"},"body":"xx'
    shown = masked_raw_text(prefix + '","more":"http://u2:pw2', masker, cut=True)
    assert "pw" not in shown and "abc" not in shown and "t1" not in shown and '"X-A":"1"' in shown
    open_value = masked_raw_text('{"headers":{"Cookie":"sid=12', masker, cut=True)
    assert open_value == '{"headers":{"Cookie":"********'


def test_stored_raw_bytes_take_at_most_four_thirds_of_their_size() -> None:
    plain = b'{"id":"a","url":"http://127.0.0.1/"}'
    assert raw_for_storage(plain) == {"raw": plain.decode()}
    quotes = b'"' * 3000  # every byte would be escaped: stored as base64 instead
    stored = raw_for_storage(quotes)
    assert base64.b64decode(stored["raw_base64"]) == quotes and len(codec.dumps(stored)) < 3000 * 4 // 3 + 40
    big = b"\xff" + b"z" * 10_000
    kept = raw_for_storage(big, keep=100)
    assert base64.b64decode(kept["raw_base64"]) == big[:100]
    assert (kept["raw_size"], kept["raw_sha256"], kept["raw_truncated"]) == (
        len(big),
        hashlib.sha256(big).hexdigest(),
        True,
    )


def test_a_dead_letters_error_is_bounded_whatever_the_executor_said() -> None:
    error = ErrorInfo(
        "exception",
        "m" * 100_000,
        {"traceback": "t" * 100_000, "headers": {f"h{n}": "v" * 100 for n in range(10_000)}, "n": list(range(10**5))},
    )
    capped = capped_error(error)
    assert len(capped["message"]) == 4096 and capped["message_truncated"] is True
    assert capped["details"]["traceback_truncated"] is True
    assert len(codec.dumps(capped)) < DEAD_ERROR_LIMIT + 2 * 4096 + 1024
    policy = OutcomePolicy(queue_settings(), "w")
    decision = policy.dead_raw("7", b"x" * 50_000, TaskRejected("too_large", "task is 50000 bytes"), 1.0)
    assert len(decision.settlement.data) < RAW_PREFIX_BYTES + 1024


def test_an_event_over_the_entry_bound_is_cut_and_says_so() -> None:
    event = Event("task.failed", 1.0, "w", "q", "t", error={"reason": "http_status", "message": "x" * 50_000})
    line = entry_json(event, Masker())
    assert len(line) <= ENTRY_BYTES + 256
    assert codec.loads(line)["truncated"] == {"error.message": {"bytes": 50_000}}
    assert "truncated" not in codec.loads(entry_json(Event("task.succeeded", 1.0, "w", "q", "t"), Masker()))


def queue_settings() -> QueueSettings:
    return load_settings(None, {"queue": {"name": "q"}}, environ={}).queue
