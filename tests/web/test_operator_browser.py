"""The operator's console in a real headless Chromium against real `gopherq web` and `gopherq run` subprocesses:
the retrying tab and "why is it waiting" on a task page, dead letters filtered, selected and requeued behind a
confirmation page, and a dead HTTP task copied as curl, then edited and requeued (the original kept).

Set GOPHERQ_SCREENSHOTS=docs/img to (re)write the screenshots the documentation shows.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer
from tests.support.webkit import browser, web_server  # noqa: F401  (fixtures)
from tests.web.test_web_browser import SECRET, Stack, stack  # noqa: F401  (the fixture)

RETRY_LATER = {"min": 600, "max": 600}


def test_the_retrying_tab_and_why_a_task_waits(stack: Callable[..., Stack], loopback: LoopbackServer) -> None:  # noqa: F811
    s = stack()
    url = loopback.url("/status/503")
    s.push({"id": "flaky-7", "method": "GET", "url": url, "max_attempts": 5, "backoff": RETRY_LATER})
    s.open(f"/queues/{s.queue}?tab=retrying")
    s.wait_text('[data-count="retrying"]', "1")
    wait_until(lambda: "HTTP 503" in s.text_of("td.error"), timeout=15, what="the last error on the retrying tab")
    assert s.fits_phone()
    s.shot("queue-retrying")
    s.click("td.id a")
    wait_until(lambda: "attempt 2 of 5" in s.text_of("#why"), timeout=15, what="why the task waits")
    assert "HTTP 503" in s.text_of("#why")
    assert 'data-waiting-for="retrying"' in s.driver.page_source
    s.shot("task-why")


def test_dead_letters_filtered_selected_and_requeued_after_a_confirmation(
    stack: Callable[..., Stack],  # noqa: F811
    loopback: LoopbackServer,
) -> None:
    s = stack()
    for n in range(3):
        s.push({"id": f"gone-{n}", "method": "GET", "url": loopback.url("/status/503"), "max_attempts": 1})
    for n in range(2):
        s.push({"id": f"missing-{n}", "method": "GET", "url": loopback.url("/status/404"), "max_attempts": 1})
    s.open(f"/queues/{s.queue}?tab=dead")
    s.wait_text('[data-count="dead"]', "5")
    s.open(f"/queues/{s.queue}?tab=dead&status=503")
    wait_until(lambda: s.text_of("nav.pager .muted") == "3 matching in this window", what="the filtered list")
    assert "missing-" not in s.text_of("tbody")
    assert s.fits_phone()
    s.shot("queue-dead-filtered")

    boxes = s.driver.find_elements("css selector", "input[type=checkbox][form=bulk-selected]")
    boxes[0].click()
    boxes[1].click()
    s.click("#requeue-selected")
    wait_until(lambda: "Requeue 2 dead letter(s)?" in s.text_of("#confirm"), timeout=15, what="the confirmation")
    assert s.redis.zcard(f"gopherq:{{{s.queue}}}:dead:index") == 5  # nothing done before the confirmation
    s.shot("dead-confirm")
    s.click("#confirm-button")
    wait_until(lambda: "Requeued 2 dead letter(s)." in s.text_of(".notice"), timeout=15, what="the notice")

    s.open(f"/queues/{s.queue}?tab=dead&status=404")
    s.click("#delete-matching")
    wait_until(lambda: "Delete 2 dead letter(s)?" in s.text_of("#confirm"), timeout=15, what="the confirmation")
    s.click("#confirm-button")
    wait_until(lambda: "Deleted 2 dead letter(s)." in s.text_of(".notice"), timeout=15, what="the notice")
    wait_until(
        lambda: s.redis.zcard(f"gopherq:{{{s.queue}}}:dead:index") == 3,
        timeout=15,
        what="2 requeued (they fail again) and 2 deleted",
    )


def test_copy_as_curl_then_edit_and_requeue_keeps_the_original(
    stack: Callable[..., Stack],  # noqa: F811
    loopback: LoopbackServer,
) -> None:
    s = stack()
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    broken = {"id": "order-77", "method": "POST", "url": loopback.url("/status/404"), "headers": headers}
    s.push({**broken, "body": {"order": 77}, "max_attempts": 1})
    s.open(f"/queues/{s.queue}?tab=dead")
    s.wait_text('[data-count="dead"]', "1")
    s.click("td.id a")
    wait_until(lambda: s.text_of("#command-title"), timeout=15, what="the curl command")
    command = s.css("#command").get_attribute("value")
    assert command.startswith("curl --request POST --header 'Authorization: ********'")
    assert SECRET not in s.driver.page_source

    s.click("#edit summary")
    field = s.css("#edit-task")
    edited = field.get_attribute("value").replace("/status/404", "/ok")
    field.clear()
    field.send_keys(edited)
    s.shot("dead-letter-edit")
    s.click("#edit-submit")
    wait_until(lambda: "/tasks/" in s.driver.current_url, timeout=15, what="the new task's page")
    s.wait_text("[data-state]", "succeeded")
    assert "The edit was enqueued as a new task" in s.text_of(".notice")
    assert s.redis.hexists(f"gopherq:{{{s.queue}}}:dead", "order-77")  # the original is kept
    wait_until(lambda: "operator.action" in s.text_of(".timeline"), timeout=15, what="the edit in the timeline")
