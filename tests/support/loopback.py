"""Loopback HTTP servers for the tests that run HTTP tasks: an aiohttp server counting requests per task, and a
module-wide pytest-httpserver for the HTTP executor's tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer


class LoopbackServer:
    """An aiohttp server on 127.0.0.1, in its own thread, that serves many requests at once and records every
    request by its Idempotency-Key (the task id), so tests can count lost tasks and duplicates.

    Paths: `/ok?min_ms=&max_ms=` answers 200 after a random delay; `/status/<code>?retry_after=&body_size=`
    answers that status; `/flaky/<n>?status=503&retry_after=1` fails the first n requests of each task, then
    answers 200 (`retry_after=date:2` sends an HTTP date 2 s ahead); `/slow?seconds=` answers 200 after that
    long; `/slow_once?seconds=` does so only for the first request of each task.
    """

    def __init__(self) -> None:
        import threading

        self.requests: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-http", daemon=True)
        self.port = 0

    def _record(self, key: str) -> int:
        with self._lock:
            seen = self.requests.setdefault(key, [])
            seen.append(time.time())
            return len(seen)

    def _serve(self) -> None:
        import email.utils
        import random

        from aiohttp import web

        async def ok(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            low = float(request.query.get("min_ms", 0))
            high = float(request.query.get("max_ms", low))
            await asyncio.sleep(random.uniform(low, high) / 1000)
            return web.Response(text="ok")

        async def status(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            body = "x" * int(request.query.get("body_size", 0)) or "status"
            return web.Response(status=int(request.match_info["code"]), text=body, headers=headers)

        async def flaky(request: web.Request) -> web.Response:
            count = self._record(request.headers.get("Idempotency-Key", ""))
            if count <= int(request.match_info["failures"]):
                headers = {}
                retry_after = request.query.get("retry_after")
                if retry_after is not None and retry_after.startswith("date:"):  # an HTTP date that many s ahead
                    retry_after = email.utils.formatdate(time.time() + float(retry_after[5:]), usegmt=True)
                if retry_after is not None:
                    headers["Retry-After"] = retry_after
                return web.Response(status=int(request.query.get("status", 503)), text="not yet", headers=headers)
            return web.Response(text="ok")

        async def slow(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            await asyncio.sleep(float(request.query.get("seconds", 1)))
            return web.Response(text="slow ok")

        async def slow_once(request: web.Request) -> web.Response:
            if self._record(request.headers.get("Idempotency-Key", "")) == 1:
                await asyncio.sleep(float(request.query.get("seconds", 1)))
            return web.Response(text="ok")

        app = web.Application()
        app.add_routes(
            [
                web.route("*", "/ok", ok),
                web.route("*", "/status/{code}", status),
                web.route("*", "/flaky/{failures}", flaky),
                web.route("*", "/slow", slow),
                web.route("*", "/slow_once", slow_once),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        with contextlib.suppress(Exception):
            cleanup.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, key: str) -> int:
        with self._lock:
            return len(self.requests.get(key, ()))

    def times(self, key: str) -> list[float]:
        with self._lock:
            return list(self.requests.get(key, ()))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {key: len(times) for key, times in self.requests.items()}


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A started LoopbackServer; stopped at teardown."""
    server = LoopbackServer().start()
    yield server
    server.stop()


# -- a loopback HTTP server shared by the HTTP executor tests -------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    """A threaded server, so a handler that hangs (for the timeout tests) does not hold up the others."""
    httpd = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    httpd.start()
    yield httpd
    httpd.clear()
    httpd.stop()


@pytest.fixture
def http(server: HTTPServer) -> Iterator[HTTPServer]:
    """The module's server, with no expectations or log left from the previous test."""
    server.clear()
    yield server
    server.clear()
