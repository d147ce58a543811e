"""The dashboard in a real headless Chromium, against real `gopherq web` and `gopherq run` subprocesses.

Set GOPHERQ_SCREENSHOTS=docs/img to (re)write the screenshots the documentation shows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.common import wait_until, write_config
from tests.support.loopback import LoopbackServer
from tests.support.redis_servers import PrivateRedis
from tests.support.webkit import WebServer, browser, web_server  # noqa: F401  (fixtures)
from tests.support.workers import FAST_WORKER, WorkerProcess

SECRET = "s3cr3t-BROWSER-77"
SHOTS = os.environ.get("GOPHERQ_SCREENSHOTS")
PHONE = (390, 844)
DESKTOP = (1280, 900)


def config_text(redis_url: str, queue: str, **web: str) -> str:
    worker = "\n".join(f"{key} = {value}" for key, value in FAST_WORKER.items())
    extra = "".join(f'{key} = "{value}"\n' for key, value in web.items())
    return (
        f'[redis]\nurl = "{redis_url}"\n\n[queue]\nname = "{queue}"\nbackoff_min = 0.1\nbackoff_max = 0.2\n\n'
        f"[worker]\n{worker}\n\n[web]\npoll_interval = 0.5\n{extra}"
    )


class Stack:
    """A worker and a dashboard on one queue, and a browser pointed at the dashboard."""

    def __init__(
        self,
        server: WebServer,
        driver: Any,
        queue: str,
        sync_redis: redis.Redis,
        spawn: Callable[[], WorkerProcess],
    ) -> None:
        self.server = server
        self.driver = driver
        self.queue = queue
        self.redis = sync_redis
        self.spawn = spawn
        self.workers: list[WorkerProcess] = []

    def start_worker(self) -> None:
        """Start one more `gopherq run` on the stack's config."""
        self.workers.append(self.spawn())

    def open(self, path: str) -> None:
        self.driver.get(self.server.url(path))

    def push(self, task: dict[str, Any]) -> None:
        """RPUSH, as a producer that knows nothing of GoPherQ would."""
        self.redis.rpush(self.queue, json.dumps(task))

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text_of(self, selector: str) -> str:
        """The element's text, or "" while it is not there (a fragment swap or a form's navigation may be under
        way). Chromium reports an element found just before its document was replaced either as a stale element
        or as an inspector error that its node "does not belong to the document": both mean "not there yet"."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            WebDriverException,
        )

        try:
            return str(self.css(selector).text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc.msg):
                return ""
            raise

    def wait_text(self, selector: str, expected: str, timeout: float = 30) -> None:
        wait_until(lambda: self.text_of(selector) == expected, timeout=timeout, what=f"{selector} to read {expected!r}")

    def click(self, selector: str) -> None:
        wait_until(lambda: self.text_of(selector) != "", timeout=15, what=f"{selector} on the page")
        self.css(selector).click()

    def shot(self, name: str, size: tuple[int, int] = DESKTOP) -> None:
        """Write docs/img/<name>.png when GOPHERQ_SCREENSHOTS names the directory: the whole page's height."""
        if not SHOTS:
            return
        self.resize(*size)
        height = self.driver.execute_script("return document.querySelector('footer').getBoundingClientRect().bottom")
        self.resize(size[0], min(max(int(height) + 8, 480), 2400))
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        self.resize(*DESKTOP)

    def resize(self, width: int, height: int) -> None:
        """Emulate a screen of that size (exactly: the browser's own window frame is left out)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        wait_until(lambda: self.driver.execute_script("return window.innerWidth") == width, what="the resize")

    def fits_phone(self) -> bool:
        """True when the page, laid out at phone width, needs no sideways scrolling."""
        self.resize(*PHONE)
        try:
            return bool(
                self.driver.execute_script(
                    "return document.documentElement.scrollWidth <= window.innerWidth"
                    " && document.documentElement.scrollWidth <= 400"
                )
            )
        finally:
            self.resize(*DESKTOP)


@pytest.fixture
def stack(
    browser: Any,  # noqa: F811
    web_server: Callable[..., WebServer],  # noqa: F811
    worker_process: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
    queue_name: str,
    tmp_path: Path,
) -> Iterator[Callable[..., Stack]]:
    """A Redis of the test's own (the overview shows every queue of a Redis: only this test's are there)."""
    clients: list[redis.Redis] = []

    def start(worker: bool = True, **web: str) -> Stack:
        server = private_redis()
        sync_redis = redis.Redis.from_url(server.url)
        clients.append(sync_redis)
        config = write_config(tmp_path, config_text(server.url, queue_name, **web))
        browser.delete_all_cookies()
        spawn = lambda: worker_process(["run", "-c", str(config)])  # noqa: E731
        stack = Stack(web_server(config), browser, queue_name, sync_redis, spawn)
        if worker:
            stack.start_worker()
        stack.resize(*DESKTOP)
        return stack

    yield start
    for client in clients:
        client.close()


def test_the_overview_follows_tasks_without_a_reload(stack: Callable[..., Stack], loopback: LoopbackServer) -> None:
    s = stack()
    s.open("/")
    card = f'[data-queue="{s.queue}"]'
    s.wait_text(f'{card} [data-stat="processed"]', "0")
    s.driver.execute_script("window.gopherqMarker = 42")  # gone if the page reloads

    for n in range(12):
        s.push({"id": f"ok-{n}", "method": "GET", "url": loopback.url("/ok?min_ms=5&max_ms=50"), "body": ""})
    for n in range(2):
        s.push({"id": f"bad-{n}", "method": "GET", "url": loopback.url("/status/500"), "max_attempts": 1})
    s.wait_text(f'{card} [data-stat="processed"]', "14")
    s.wait_text(f'{card} [data-stat="ready"]', "0")
    s.wait_text(f'{card} [data-stat="dead"]', "2")
    assert s.driver.execute_script("return window.gopherqMarker") == 42
    wait_until(lambda: "12 ok · 2 failed" in s.text_of(f"{card} .chart-head"), timeout=10, what="the chart's totals")
    assert s.fits_phone()
    s.shot("overview")
    s.shot("overview-phone", PHONE)

    s.open("/workers")
    wait_until(lambda: "alive" in s.text_of("#workers"), timeout=15, what="the worker on the workers page")
    assert s.fits_phone()
    s.shot("workers")
    # htmx ran under the strict CSP without tripping it (no inline script or style anywhere)
    problems = [entry["message"] for entry in s.driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems


def test_requeue_a_dead_letter_from_its_page_and_watch_it_succeed(
    stack: Callable[..., Stack], loopback: LoopbackServer
) -> None:
    s = stack()
    # The first request of each task id fails with 400 (permanent: dead-lettered), the next one succeeds.
    task = {
        "id": "order-1042",
        "method": "POST",
        "url": loopback.url("/flaky/1?status=400"),
        "headers": {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
        "body": {"order": 1042},
        "max_attempts": 1,
    }
    s.push(task)
    for n in range(3):
        s.push({**task, "id": f"order-{1043 + n}", "url": loopback.url("/ok")})
    s.open(f"/queues/{s.queue}?tab=dead")
    s.wait_text('[data-count="dead"]', "1")
    assert s.fits_phone()
    s.shot("queue-dead")

    s.click("td.id a")
    wait_until(lambda: "Task as received" in s.driver.page_source, timeout=15, what="the dead letter page")
    assert "400" in s.text_of("main")
    assert SECRET not in s.driver.page_source and "Bearer" not in s.driver.page_source
    assert '"Authorization": "********"' in s.text_of("#received")
    s.shot("dead-letter")

    s.click("form[action$='/dead/requeue'] button")
    wait_until(lambda: "/tasks/order-1042" in s.driver.current_url, timeout=15, what="the task page")
    s.wait_text("[data-state]", "succeeded")
    assert "Requeued 1 dead letter(s)." in s.text_of(".notice")
    for event in ("task.dead_lettered", "task.requeued", "task.succeeded"):  # the timeline, from the stream
        wait_until(lambda e=event: e in s.text_of(".timeline"), timeout=15, what=f"{event} in the timeline")
    assert SECRET not in s.driver.page_source
    assert s.fits_phone()
    s.shot("task")


def test_pause_and_resume_a_queue_from_its_page(stack: Callable[..., Stack], loopback: LoopbackServer) -> None:
    s = stack()
    paused_key = f"gopherq:{{{s.queue}}}:paused"
    s.open(f"/queues/{s.queue}")
    s.click("form[action$='/pause'] button")
    wait_until(lambda: s.redis.exists(paused_key), timeout=10, what="the paused key")
    assert "Queue paused" in s.text_of(".notice")

    for n in range(3):
        s.push({"id": f"held-{n}", "method": "GET", "url": loopback.url("/ok")})
    s.push({"id": "later", "method": "GET", "url": loopback.url("/ok")})
    s.wait_text('[data-count="ready"]', "4")
    s.shot("queue")

    s.click("form[action$='/resume'] button")
    wait_until(lambda: not s.redis.exists(paused_key), timeout=10, what="the paused key to go")
    s.wait_text('[data-count="ready"]', "0")
    wait_until(lambda: loopback.count("later") == 1, timeout=15, what="the held task to run")


def test_a_browser_logs_in_with_the_token(stack: Callable[..., Stack]) -> None:
    s = stack(worker=False, token=SECRET)
    s.open("/workers")
    field = "input[name='token']"
    wait_until(lambda: s.driver.find_elements("css selector", field), timeout=10, what="the login form")
    s.css(field).send_keys("not-the-token")
    s.css("form[action='/login'] button").click()
    wait_until(lambda: "Wrong token" in s.text_of("main"), timeout=10, what="the refusal")
    s.css(field).send_keys(SECRET)
    s.css("form[action='/login'] button").click()
    wait_until(lambda: s.driver.current_url.endswith("/workers"), timeout=10, what="the page asked for")
    assert s.text_of("h1") == "Workers"
    s.click("form[action='/logout'] button")
    wait_until(lambda: s.driver.find_elements("css selector", field), timeout=10, what="the login form again")


def test_a_killed_worker_shows_as_gone_and_its_task_is_recovered(
    stack: Callable[..., Stack], loopback: LoopbackServer
) -> None:
    """The newcomer's tour: a worker is SIGKILLed mid-task; the workers page says so, another worker recovers
    the task once its lease expires, and the task page follows it to success."""
    s = stack()
    s.push({"id": "long-1", "method": "GET", "url": loopback.url("/slow_once?seconds=60")})
    s.open("/workers")
    wait_until(lambda: "long-1" in s.text_of("#workers"), timeout=15, what="the running task on the workers page")
    first = s.workers[0]
    first.kill()
    wait_until(lambda: "gone" in s.text_of("#workers"), timeout=30, what="the killed worker to show as gone")
    s.open(f"/queues/{s.queue}?tab=running")  # held by nobody alive: orphaned until a worker of the queue runs
    wait_until(lambda: "orphaned" in s.text_of("#queue"), timeout=15, what="the task shown as orphaned")

    s.start_worker()
    s.open(f"/queues/{s.queue}/tasks/long-1")
    s.wait_text("[data-state]", "succeeded", timeout=60)
    wait_until(lambda: "task.recovered" in s.text_of(".timeline"), timeout=15, what="the recovery in the timeline")
    assert loopback.count("long-1") == 2
