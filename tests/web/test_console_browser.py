"""The operator pages in a real headless Chromium, against real `gopherq web` and `gopherq run` subprocesses:
destinations (an open circuit on the overview; close it and reset the rate), schedules (run now, pause, resume),
run now / delete / cancel of one task behind their confirmations, the Redis page, the chart spans, dark mode,
and every tab and row action reachable at 390 px.

Set GOPHERQ_SCREENSHOTS=docs/img to (re)write the screenshots the documentation shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.common import wait_until, write_config
from tests.support.loopback import LoopbackServer
from tests.support.redis_servers import PrivateRedis
from tests.support.webkit import WebServer, browser, web_server  # noqa: F401  (fixtures)
from tests.support.workers import WorkerProcess
from tests.web.test_web_browser import DESKTOP, PHONE, Stack, config_text

WIDE = (1440, 900)
PAGES = ("/", "/workers", "/destinations", "/schedules", "/redis")


@pytest.fixture
def console(
    browser: Any,  # noqa: F811
    web_server: Callable[..., WebServer],  # noqa: F811
    worker_process: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
    queue_name: str,
    tmp_path: Path,
) -> Iterator[Callable[..., Stack]]:
    """A worker (optional) and a dashboard on a Redis of the test's own, with extra configuration (`extra`)."""
    clients: list[redis.Redis] = []

    def start(extra: str = "", worker: bool = True) -> Stack:
        server = private_redis()
        sync_redis = redis.Redis.from_url(server.url)
        clients.append(sync_redis)
        config = write_config(tmp_path, config_text(server.url, queue_name) + extra)
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
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


#: Opens the confirmation of an action (its summary's text) within a scope, in one step in the page (a live
#: fragment may swap between two WebDriver calls; an open confirmation is kept across swaps: hx-preserve).
OPEN_CONFIRM = """
const [scope, label] = arguments;
for (const summary of document.querySelectorAll(scope + ' details.confirm > summary')) {
  if (summary.textContent.trim() === label) { summary.click(); return summary.parentElement.id; }
}
return null;
"""


def confirm(s: Stack, scope: str, label: str) -> None:
    """Open the confirmation of the action labelled `label` in `scope`, check its question, then say yes."""
    found: list[str] = []
    wait_until(lambda: bool(found.append(s.driver.execute_script(OPEN_CONFIRM, scope, label)) or found[-1]), what=label)
    yes = s.css(f"#{found[-1]}[open] button.confirm-yes")
    assert yes.is_displayed() and yes.text == f"Yes, {label.lower()}"
    yes.click()


def js_click(s: Stack, selector: str) -> None:
    """Click the element in one step in the page (no reference to go stale across a live swap)."""
    wait_until(
        lambda: s.driver.execute_script(
            f"const e = document.querySelector({json.dumps(selector)}); if (e) e.click(); return !!e"
        ),
        what=selector,
    )


#: Run in the page at once (a live fragment may swap between two WebDriver calls): every nav link, tab, span and
#: row action scrolled to, then measured; returns what is not wholly inside the screen.
UNREACHABLE = """
const out = [];
const selector = '.bar nav a, .bar nav button, .tabs a, .spans a, details.confirm > summary, td.row-actions button';
for (const element of document.querySelectorAll(selector)) {
  if (element.closest('details:not([open]) > :not(summary)')) continue;
  element.scrollIntoView({block: 'center', inline: 'center'});
  const box = element.getBoundingClientRect();
  if (!(box.width > 0 && box.left >= 0 && box.right <= window.innerWidth)) out.push(element.textContent.trim());
}
if (document.documentElement.scrollWidth > window.innerWidth) out.push('the page scrolls sideways');
return out;
"""


def reachable_at_phone_width(s: Stack) -> None:
    """At 390 px: no sideways scrolling of the page, and every nav link, tab, span and row action inside the screen
    once scrolled to (a table scrolls within its own box)."""
    s.resize(*PHONE)
    try:
        assert s.driver.execute_script(UNREACHABLE) == []
    finally:
        s.resize(*DESKTOP)


HOSTS = """
[[plugins.http.hosts]]
match = "127.0.0.1"
rate = 200
circuit_failures = 3
circuit_cooldown = 600
slow_down = 0.5
"""


def test_destinations_open_circuit_on_the_overview_close_it_and_reset_the_rate(
    console: Callable[..., Stack], loopback: LoopbackServer
) -> None:
    s = console(HOSTS)
    for n in range(20):
        s.push({"id": f"ok-{n}", "url": loopback.url("/ok?min_ms=5&max_ms=80"), "max_attempts": 1})

    # A success resets the breaker's count: the failures come once the successes are settled, three in a row.
    def settled(*ids: str) -> bool:
        return all(s.redis.exists(f"gopherq:{{{s.queue}}}:result:{task_id}") for task_id in ids)

    wait_until(lambda: settled(*(f"ok-{n}" for n in range(20))), timeout=30, what="the successes")
    s.push({"id": "busy", "url": loopback.url("/status/429"), "max_attempts": 1})
    wait_until(lambda: settled("busy"), timeout=30, what="the 429")
    for n in range(3):
        s.push({"id": f"down-{n}", "url": loopback.url("/status/503"), "max_attempts": 1})
    s.open("/")
    wait_until(lambda: "circuit open" in s.text_of("#overview"), timeout=30, what="the open circuit on the overview")
    s.shot("overview-circuit", WIDE)

    s.open("/destinations")
    row = '[data-destination="127.0.0.1"]'
    wait_until(lambda: s.text_of(f"{row} [data-circuit]") == "open", timeout=15, what="the open circuit")
    wait_until(lambda: s.text_of('[data-rate="429"]') == "4.2 %", timeout=15, what="1 of 24 answered 429")
    assert s.text_of('[data-rate="5xx"]') == "12.5 %" and "≤" in s.text_of(row)
    reachable_at_phone_width(s)
    s.shot("destinations", WIDE)
    s.shot("destinations-phone", PHONE)

    confirm(s, row, "Close circuit now")
    wait_until(lambda: "Circuit closed" in s.text_of(".notice"), timeout=15, what="the notice")
    s.wait_text(f"{row} [data-circuit]", "closed")
    confirm(s, row, "Reset rate")
    wait_until(lambda: "Rate reset" in s.text_of(".notice"), timeout=15, what="the reset notice")
    assert s.css(f"{row} [data-factor]").get_attribute("data-factor") == "1.0"
    s.open("/")
    wait_until(lambda: "circuit open" not in s.text_of("#overview"), timeout=15, what="the overview to clear")


SCHEDULE = """
[[schedules]]
name = "heartbeat"
every = 2
timezone = "Europe/Berlin"
task = {{ url = "{url}" }}
"""


def test_schedules_run_now_pause_and_resume(console: Callable[..., Stack], loopback: LoopbackServer) -> None:
    s = console(SCHEDULE.format(url=loopback.url("/ok")))
    s.open("/schedules")
    row = '[data-schedule="heartbeat"]'
    wait_until(lambda: s.text_of(f"{row} [data-outcome]") == "succeeded", timeout=30, what="a slot's outcome")
    assert "every 2s" in s.text_of(row) and "Europe/Berlin" in s.text_of(row)
    reachable_at_phone_width(s)
    s.shot("schedules", WIDE)
    s.shot("schedules-phone", PHONE)

    confirm(s, row, "Run now")
    wait_until(lambda: "enqueued now" in s.text_of(".notice"), timeout=15, what="the run-now notice")

    def ran_now() -> bool:  # a run-now task is `<name>@<ms>`; a slot's is `<name>@<s>`
        return any(len(key.rpartition("@")[2]) == 13 for key in loopback.snapshot())

    wait_until(ran_now, timeout=15, what="the task to run")

    confirm(s, row, "Pause")
    wait_until(lambda: "Schedule paused" in s.text_of(".notice"), timeout=15, what="the pause notice")
    assert s.redis.hexists(f"gopherq:{{{s.queue}}}:schedules:paused", "heartbeat")
    wait_until(lambda: s.text_of(f"{row} [data-paused]") == "paused", timeout=15, what="the paused badge")
    js_click(s, f"{row} form[action$='/resume'] button")
    wait_until(lambda: "Schedule resumed" in s.text_of(".notice"), timeout=15, what="the resume notice")
    assert not s.redis.hexists(f"gopherq:{{{s.queue}}}:schedules:paused", "heartbeat")


def test_run_now_delete_and_cancel_from_the_queue_and_task_pages(
    console: Callable[..., Stack], loopback: LoopbackServer
) -> None:
    s = console(worker=False)
    later = time.time() + 3600
    for n in range(3):
        s.push({"id": f"later-{n}", "url": loopback.url("/ok"), "eta": later})
    for n in range(3):
        s.push({"id": f"ready-{n}", "url": loopback.url("/ok")})
    s.redis.zadd(
        f"gopherq:{{{s.queue}}}:delayed",
        {s.redis.lpop(s.queue): later * 1000 for _ in range(3)},  # type: ignore[dict-item]
    )
    s.open(f"/queues/{s.queue}?tab=scheduled")
    s.wait_text('[data-count="scheduled"]', "3")
    reachable_at_phone_width(s)
    s.shot("queue-delayed", WIDE)
    s.shot("queue-delayed-phone", PHONE)
    confirm(s, "tbody tr:first-child", "Run now")
    wait_until(lambda: "head of its ready list" in s.text_of(".notice"), timeout=15, what="the run-now notice")
    s.wait_text('[data-count="scheduled"]', "2")
    assert json.loads(s.redis.lindex(s.queue, 0) or b"{}")["id"] == "later-0"

    s.open(f"/queues/{s.queue}?tab=ready")
    s.wait_text('[data-count="ready"]', "4")
    confirm(s, "tbody tr:last-child", "Delete")
    wait_until(lambda: "Task deleted" in s.text_of(".notice"), timeout=15, what="the delete notice")
    s.wait_text('[data-count="ready"]', "3")

    s.push({"id": "long-1", "url": loopback.url("/slow_once?seconds=60")})
    s.start_worker()
    s.open(f"/queues/{s.queue}/tasks/long-1")
    s.wait_text("[data-state]", "running", timeout=30)
    confirm(s, ".task-actions", "Cancel")
    wait_until(lambda: "Cancel requested" in s.text_of(".notice"), timeout=15, what="the cancel notice")
    s.wait_text("[data-state]", "cancelled", timeout=30)
    s.shot("task-cancelled", WIDE)


def test_the_redis_page_the_chart_spans_and_dark_mode(console: Callable[..., Stack], loopback: LoopbackServer) -> None:
    s = console()
    for n in range(10):
        s.push({"id": f"ok-{n}", "url": loopback.url("/ok?min_ms=5&max_ms=60")})
    s.push({"id": "bad", "url": loopback.url("/status/500"), "max_attempts": 2})
    s.open(f"/queues/{s.queue}?tab=ready")
    s.driver.get_log("browser")  # drained: what the earlier tests' pages logged once their servers stopped
    wait_until(lambda: "10 succeeded" in s.text_of(".history"), timeout=30, what="the chart's totals")
    for span, unit in (("24h", "hour"), ("7d", "hour"), ("1h", "minute")):
        js_click(s, f".spans a[href$='span={span}']")
        wait_until(lambda u=unit, sp=span: f"per {u}" in s.text_of(f'.history[data-span="{sp}"]'), what=span)
    titles = s.driver.execute_script(  # in one step: a live swap may replace the chart between two calls
        "return [...document.querySelectorAll('.history g.bucket title')].map(t => t.textContent)"
    )
    assert any("10 succeeded" in t or ("succeeded" in t and "mean duration" in t) for t in titles)
    assert s.driver.find_elements("css selector", ".history polyline.series-duration")
    s.shot("queue-chart", WIDE)

    s.open("/redis")
    wait_until(lambda: "master" in s.text_of("#redis-server"), timeout=15, what="the Redis page")
    assert "policy" in s.text_of("#redis-memory") and "connected" in s.text_of("#redis-clients")
    assert "append-only" in s.text_of("#redis-persistence")
    reachable_at_phone_width(s)
    s.shot("redis", WIDE)

    s.driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    )
    for path in PAGES:
        s.open(path)
        background = s.driver.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        assert background == "rgb(16, 21, 31)", (path, background)
        reachable_at_phone_width(s)
    s.open("/")
    s.shot("overview-dark", WIDE)
    s.open(f"/queues/{s.queue}")
    s.shot("queue-dark-phone", PHONE)
    problems = [entry["message"] for entry in s.driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems
