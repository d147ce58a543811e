"""The web server over real HTTP on loopback: health probes, authentication, CSRF, security headers, the Host check,
the bind check of `gopherq web`, every page and fragment rendering, and no secret of a task in any of them."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gopherq import AsyncClient
from gopherq.core.broker import Broker
from gopherq.core.keys import QUEUE_REGISTRY
from gopherq.core.settings import Settings
from gopherq.web import create_app
from tests.support.common import async_wait_until, free_port, write_config
from tests.support.loopback import LoopbackServer

SECRET = "s3cr3t-XYZZY-41"

Start = Callable[..., Any]


class Dashboard:
    """A running application and a browser-like session (cookies kept) against it."""

    def __init__(self, server: TestServer, session: ClientSession, settings: Settings) -> None:
        self.server = server
        self.session = session
        self.settings = settings

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        async with self.session.get(self.url(path), allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> tuple[int, str, Any]:
        async with self.session.post(self.url(path), data=data, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def csrf(self, path: str | None = None) -> str:
        """The CSRF token a page hands this browser in its forms (an HMAC of its cookie or session, not a copy)."""
        _, body, _ = await self.get(path or f"/queues/{self.settings.queue.name}")
        match = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert match, body[:500]
        return match.group(1)


@pytest.fixture
async def dashboard(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis
) -> AsyncIterator[Callable[..., Any]]:
    """`await dashboard(web={...})` serves the application on 127.0.0.1 (a real socket) on the test's Redis."""
    opened: list[tuple[TestServer, ClientSession]] = []

    async def start(redis_client: Any = None, **sections: Any) -> Dashboard:
        settings = make_settings(**sections)
        server = TestServer(create_app(settings, redis_client or aredis), host="127.0.0.1")
        await server.start_server()
        session = ClientSession(cookie_jar=CookieJar(unsafe=True))
        opened.append((server, session))
        return Dashboard(server, session, settings)

    yield start
    for server, session in opened:
        await session.close()
        await server.close()


async def test_health_probes(dashboard: Start) -> None:
    app = await dashboard()
    assert (await app.get("/healthz"))[:2] == (200, "ok\n")
    assert (await app.get("/readyz"))[:2] == (200, "ready\n")

    # Nothing listens there; no retries, so the test does not wait for backoffs.
    nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        down = await dashboard(redis_client=nowhere)
        assert (await down.get("/healthz"))[0] == 200
        status, body, _ = await down.get("/readyz")
        assert status == 503 and "Redis unavailable" in body
        status, body, _ = await down.get("/")
        assert status == 503 and body.startswith("503: Redis unavailable")
    finally:
        await nowhere.aclose()


async def test_security_headers_on_pages_errors_and_probes(dashboard: Start) -> None:
    app = await dashboard()
    for path in ("/", "/healthz", "/queues/no-such-queue/tasks/nope", "/queues/bad{name}"):
        _, _, headers = await app.get(path)
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    status, body, headers = await app.get("/")
    assert status == 200 and 'src="/static/htmx-2.0.11.min.js"' in body
    assert "<script>" not in body  # no inline script anywhere: the CSP forbids it
    status, body, headers = await app.get("/static/htmx-2.0.11.min.js")
    assert status == 200 and body.startswith("var htmx=")


async def test_without_auth_only_loopback_host_names_are_served(dashboard: Start) -> None:
    app = await dashboard()
    assert (await app.get("/", headers={"Host": "rebound.example"}))[0] == 421
    assert (await app.get("/", headers={"Host": f"localhost:{app.server.port}"}))[0] == 200
    assert (await app.get("/", headers={"Host": f"[::1]:{app.server.port}"}))[0] == 200


async def test_token_auth_bearer_and_login_session(dashboard: Start) -> None:
    app = await dashboard(web={"token": SECRET})
    status, body, _ = await app.get("/")
    assert status == 401
    status, body, _ = await app.get("/", headers={"Accept": "text/html"})
    assert status == 401 and 'action="/login"' in body  # a browser gets the login form
    assert (await app.get("/", headers={"Authorization": "Bearer wrong"}))[0] == 401
    assert (await app.get("/", headers={"Authorization": f"Bearer {SECRET}x"}))[0] == 401
    assert (await app.get("/", headers={"Authorization": f"Bearer {SECRET}"}))[0] == 200
    assert (await app.get("/workers", headers={"Authorization": f"Bearer {SECRET}"}))[0] == 200
    assert (await app.get("/healthz"))[0] == 200 and (await app.get("/readyz"))[0] == 200  # probes stay open

    status, body, _ = await app.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert status == 200 and token
    status, body, _ = await app.post("/login", {"token": "wrong", "csrf_token": token.group(1), "next": "/workers"})
    assert status == 401 and "Wrong token" in body
    assert (await app.get("/"))[0] == 401
    status, _, headers = await app.post("/login", {"token": SECRET, "csrf_token": token.group(1), "next": "/workers"})
    assert status == 303 and headers["Location"] == "/workers"
    assert (await app.get("/workers"))[0] == 200  # the session cookie does it now
    again = await app.csrf("/login")  # logged in, the forms carry the session's token
    status, _, headers = await app.post("/login", {"token": SECRET, "csrf_token": again, "next": "//evil"})
    assert headers["Location"] == "/"  # never an open redirect

    status, _, _ = await app.post("/logout", {"csrf_token": await app.csrf()})  # the session's own token
    assert status == 303
    assert (await app.get("/"))[0] == 401


async def test_basic_auth(dashboard: Start) -> None:
    app = await dashboard(web={"username": "ops", "password": SECRET})

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    status, _, headers = await app.get("/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert (await app.get("/", headers=basic("ops", "nope")))[0] == 401
    assert (await app.get("/", headers=basic("admin", SECRET)))[0] == 401
    assert (await app.get("/", headers={"Authorization": "Basic !!notbase64"}))[0] == 401
    assert (await app.get("/", headers=basic("ops", SECRET)))[0] == 200
    assert (await app.get("/", headers={"Authorization": f"Bearer {SECRET}"}))[0] == 401  # no token configured


async def test_state_changes_need_post_and_the_csrf_token(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str
) -> None:
    app = await dashboard()
    paused_key = Broker(aredis, queue_name).keys.paused
    path = f"/queues/{queue_name}/pause"

    assert (await app.get(path))[0] == 405  # not a GET
    assert (await app.post(path, {}))[0] == 403  # no cookie, no token
    token = await app.csrf()
    assert (await app.post(path, {}))[0] == 403  # cookie, no token
    assert (await app.post(path, {"csrf_token": "x" * 43}))[0] == 403  # wrong token
    assert not await aredis.exists(paused_key)

    status, _, headers = await app.post(path, {"csrf_token": token, "next": f"/queues/{queue_name}"})
    assert status == 303 and headers["Location"] == f"/queues/{queue_name}?notice=paused"
    assert await aredis.exists(paused_key)
    status, body, _ = await app.get(headers["Location"])
    assert "Queue paused" in body and ">Resume<" in body

    resume = f"/queues/{queue_name}/resume"
    assert (await app.post(resume, {}, headers={"X-CSRF-Token": token}))[0] == 303  # the header works too
    assert not await aredis.exists(paused_key)


async def test_a_bearer_token_call_needs_no_csrf_token(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str
) -> None:
    app = await dashboard(web={"token": SECRET})
    path = f"/queues/{queue_name}/pause"
    status, _, _ = await app.post(path, {}, headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 303 and await aredis.exists(Broker(aredis, queue_name).keys.paused)


def test_a_non_loopback_bind_without_auth_refuses_to_start(run_gopherq: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n')
    done = run_gopherq(["web", "-c", str(config), "--host", "0.0.0.0", "--port", str(free_port())], timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0  # one line
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr
    assert "web.token" in done.stderr


def test_a_port_in_use_is_one_line_and_exit_2(run_gopherq: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_gopherq(["web", "-c", str(config), "--port", str(port)], timeout=30)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"web: cannot listen on 127.0.0.1:{port}" in done.stderr


async def test_pages_and_dead_letter_actions(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str, start_worker: Any, loopback: LoopbackServer
) -> None:
    app = await dashboard()
    async with AsyncClient(app.settings) as client:
        bad = await client.enqueue_http(loopback.url("/status/400"), max_attempts=1)
        await client.enqueue_http(loopback.url("/ok"), delay=3600)
        worker = await start_worker(app.settings)
        await async_wait_until(lambda: client.dead_letters.count(), what="a dead letter")
        await worker.stop()
        waiting = await client.enqueue_http(loopback.url("/ok"))

    status, body, _ = await app.get("/")
    assert status == 200 and f'href="/queues/{queue_name}"' in body
    for tab, present in (("ready", waiting), ("scheduled", "GET http://127.0.0.1"), ("dead", bad)):
        status, body, _ = await app.get(f"/queues/{queue_name}?tab={tab}")
        assert status == 200 and present in body, tab
    status, body, _ = await app.get(f"/queues/{queue_name}?tab=running")
    assert status == 200 and "Nothing running" in body

    status, _, headers = await app.get(f"/queues/{queue_name}?task={bad}")  # the search box
    assert status == 303 and headers["Location"] == f"/queues/{queue_name}/tasks/{bad}"
    status, body, _ = await app.get(headers["Location"])
    assert status == 200 and "state-dead" in body and "HTTP status" in body and ">400<" in body
    status, body, _ = await app.get(f"/queues/{queue_name}/dead/{bad}")
    assert status == 200 and "http_status" in body
    assert (await app.get(f"/queues/{queue_name}/tasks/no-such-task"))[0] == 404
    assert (await app.get(f"/queues/{queue_name}/dead/no-such-entry"))[0] == 404

    token = await app.csrf()
    status, _, headers = await app.post(f"/queues/{queue_name}/dead/requeue", {"csrf_token": token})
    assert status == 400  # neither ids nor all
    status, _, headers = await app.post(f"/queues/{queue_name}/dead/requeue", {"csrf_token": token, "entry_id": bad})
    assert status == 303 and "notice=requeued&n=1" in headers["Location"]
    assert await aredis.llen(queue_name) == 2
    status, body, _ = await app.get(headers["Location"])
    assert "Requeued 1 dead letter(s)." in body

    letters = Broker(aredis, queue_name).keys
    async with AsyncClient(app.settings) as client:
        doomed = [await client.enqueue_http(loopback.url("/status/400"), max_attempts=1) for _ in range(3)]
        worker = await start_worker(app.settings)
        # the requeued task fails again: four dead letters
        await async_wait_until(lambda: _at_least(aredis.zcard(letters.dead_index), 4), what="4 dead letters")
        await worker.stop()
    delete = f"/queues/{queue_name}/dead/delete"
    status, _, headers = await app.post(delete, {"csrf_token": token, "entry_id": doomed[0]})
    assert status == 303 and "notice=deleted&n=1" in headers["Location"]
    status, _, headers = await app.post(delete, {"csrf_token": token, "entry_id": doomed[0]})
    assert "notice=deleted&n=0" in headers["Location"]  # already gone
    status, body, _ = await app.post(delete, {"csrf_token": token, "all": "1"})  # bulk: asks first
    assert status == 200 and "Delete 3 dead letter(s)?" in body and await aredis.zcard(letters.dead_index) == 3
    status, _, headers = await app.post(delete, {"csrf_token": token, "all": "1", "confirm": "1"})
    assert "notice=deleted&n=3" in headers["Location"] and await aredis.zcard(letters.dead_index) == 0


async def _at_least(count: Any, wanted: int) -> bool:
    return int(await count) >= wanted


async def test_a_secret_never_appears_in_any_page_or_fragment(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str, start_worker: Any, loopback: LoopbackServer
) -> None:
    """Secrets in a header masked by default, one masked by configuration, URL userinfo and a secret query
    parameter, in tasks that are ready, delayed, running, dead and done: no page or fragment shows any of them."""
    app = await dashboard(masking={"headers": ["X-Api-Key"]})
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "Cookie": f"sid={SECRET}"}

    other = {"X-Api-Key": SECRET, "Cookie": f"sid={SECRET}"}  # userinfo and Authorization do not go together

    def url(path: str, userinfo: bool = False) -> str:
        base = loopback.url(path) + f"&token={SECRET}"
        return base.replace("http://", f"http://user:{SECRET}@") if userinfo else base

    async with AsyncClient(app.settings) as client:
        ids = {
            "dead": await client.enqueue_http(url("/status/400?x=1"), headers=headers, max_attempts=1),
            "done": await client.enqueue_http(url("/ok?x=1"), headers=headers),
            "running": await client.enqueue_http(url("/slow?seconds=30"), headers=headers),
        }
        await start_worker(app.settings)
        await async_wait_until(lambda: client.dead_letters.count(), what="the dead letter")
        await async_wait_until(lambda: client.broker().get_result(ids["done"]), what="the done task")
        await async_wait_until(lambda: loopback.count(ids["running"]), what="the running task")
        ids["delayed"] = await client.enqueue_http(url("/ok?x=1", True), headers=other, delay=3600)
        await app.post(f"/queues/{queue_name}/pause", {"csrf_token": await app.csrf()})  # so one stays ready
        ids["ready"] = await client.enqueue_http(url("/ok?x=1", True), headers=other)

    paths = ["/", "/fragments/overview", "/workers", "/fragments/workers", f"/queues/{queue_name}/dead/{ids['dead']}"]
    for tab in ("ready", "delayed", "running", "dead"):
        paths += [f"/queues/{queue_name}?tab={tab}", f"/fragments/queues/{queue_name}?tab={tab}&offset=0"]
    for task_id in ids.values():
        paths += [f"/queues/{queue_name}/tasks/{task_id}", f"/fragments/queues/{queue_name}/tasks/{task_id}"]
    masks = 0
    for path in paths:
        status, body, _ = await app.get(path)
        assert status == 200, (path, body[:300])
        assert SECRET not in body, path
        masks += body.count("********")
    assert masks >= 10  # the secrets were there, masked


def test_the_throughput_chart_scales_to_the_busiest_minute() -> None:
    from gopherq.core.inspect import MinuteCounts
    from gopherq.web.chart import HEIGHT, throughput_chart

    minutes = [MinuteCounts(minute=60 * n) for n in range(58)]
    minutes += [
        MinuteCounts(minute=3480, succeeded=30, failed=10, retried=5, dead=5),
        MinuteCounts(minute=3540, succeeded=10),
    ]
    chart = throughput_chart(minutes)
    assert len(chart.bars) == 60 and chart.peak == 40
    assert (chart.total_ok, chart.total_bad) == (40, 10)
    busiest, last = chart.bars[-2], chart.bars[-1]
    assert busiest.ok_height + busiest.bad_height == pytest.approx(HEIGHT - 2)
    assert busiest.bad_y + busiest.bad_height == pytest.approx(busiest.ok_y)  # failures stacked on successes
    assert last.ok_height == pytest.approx((HEIGHT - 2) / 4) and last.bad_height == 0
    assert busiest.title == "00:58 UTC: 30 succeeded, 10 failed"
    assert throughput_chart([MinuteCounts(minute=0)] * 60).empty


async def test_metrics_are_served_behind_the_token_and_parse(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str, loopback: LoopbackServer
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app = await dashboard(web={"token": SECRET})
    async with AsyncClient(app.settings) as client:
        for _ in range(3):
            await client.enqueue_http(loopback.url("/ok"))
        await client.enqueue_http(loopback.url("/ok"), delay=3600)
    assert (await app.get("/metrics"))[0] == 401
    status, body, headers = await app.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (sample.name, sample.labels.get("queue")): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert samples[("gopherq_queue_ready_tasks", queue_name)] == 3
    assert samples[("gopherq_queue_delayed_tasks", queue_name)] == 1
    assert samples[("gopherq_queue_dead_tasks", queue_name)] == 0


async def test_a_queue_tab_is_paginated(dashboard: Start, aredis: aioredis.Redis, queue_name: str) -> None:
    from gopherq.web.pages import PAGE_SIZE

    app = await dashboard()
    await aredis.rpush(
        queue_name, *(f'{{"id":"t{n:03}","method":"GET","url":"http://127.0.0.1:9/"}}' for n in range(30))
    )
    _, first, _ = await app.get(f"/queues/{queue_name}?tab=ready")
    assert "t000" in first and f"t{PAGE_SIZE - 1:03}" in first and f"t{PAGE_SIZE:03}" not in first
    assert f"1\u2013{PAGE_SIZE} of 30" in first and "tab=ready&cursor=" in first  # the ready tab goes on by cursor
    _, second, _ = await app.get(f"/fragments/queues/{queue_name}?tab=ready&offset={PAGE_SIZE}")
    assert f"t{PAGE_SIZE:03}" in second and "t029" in second and "t000" not in second
    assert f"{PAGE_SIZE + 1}\u201330 of 30" in second and "Older" not in second and "Newer" in second


async def test_the_overview_and_workers_pages_serve_more_queues_than_the_redis_pool_has_connections(
    dashboard: Start, aredis: aioredis.Redis, queue_name: str
) -> None:
    """redis-py's pool holds 100 connections: a page that read every queue at once failed with more queues."""
    names = [f"{queue_name}-many-{i}" for i in range(130)]
    await aredis.zadd(QUEUE_REGISTRY, {name: int(time.time() * 1000) for name in names})
    try:
        app = await dashboard()
        for path in ("/", "/workers"):
            status, body, _ = await app.get(path)
            assert status == 200, (path, body[:200])
        assert names[-1] in (await app.get("/"))[1]
    finally:
        await aredis.zrem(QUEUE_REGISTRY, *names)
