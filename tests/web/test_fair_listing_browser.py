"""The queue page's ready tab with fair keys in a real headless Chromium, against a real `gopherq web`: the tasks
waiting in their keys' lists are listed with their key, the page fits a phone, and a keyed task's own "Run now"
(behind its confirmation) moves it to the head of its key's list.

Set GOPHERQ_SCREENSHOTS=docs/img to write the screenshot (queue-ready-fair-keys.png).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from gopherq.core.broker import Broker, SpecialPush
from gopherq.core.keys import QueueKeys
from tests.support.common import wait_until
from tests.support.webkit import browser, web_server  # noqa: F401  (fixtures)
from tests.web.test_console_browser import confirm, console  # noqa: F401  (the fixture)
from tests.web.test_web_browser import Stack


def enqueue(url: str, queue: str, tasks: list[dict[str, Any]]) -> None:
    """Through the enqueue script, as the client does: a task with a fair key lands in its key's list."""
    import redis.asyncio as aioredis

    async def push() -> None:
        client = aioredis.Redis.from_url(url)
        pushes = [SpecialPush(task["id"], json.dumps(task).encode()) for task in tasks]
        assert await Broker(client, queue, "w1").push_special(pushes) == [None] * len(pushes)
        await client.aclose()

    asyncio.run(push())


def test_the_ready_tab_lists_keyed_tasks_and_runs_one_now(console: Callable[..., Stack]) -> None:  # noqa: F811
    s = console(worker=False)
    url = s.redis.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    tasks = [{"id": "plain-1", "method": "GET", "url": "https://partner.example/orders"}]
    for tenant, count in (("acme", 3), ("globex-enterprise-customer-with-a-long-name", 2)):
        tasks += [
            {"id": f"{tenant[:6]}-{n}", "method": "POST", "url": f"https://hooks.example/{tenant}", "fair_key": tenant}
            for n in range(count)
        ]
    enqueue(redis_url, s.queue, tasks)
    s.open(f"/queues/{s.queue}?tab=ready")
    wait_until(lambda: "acme-2" in s.text_of("tbody"), what="the keyed tasks on the ready tab")
    badges = [e.text for e in s.driver.find_elements("css selector", "tbody .badge.fair-key")]
    assert badges[:3] == ["acme"] * 3 and len(badges) == 5
    assert "1\u20136 of 6" in s.text_of("nav.pager")
    assert s.fits_phone()
    s.shot("queue-ready-fair-keys")

    confirm(s, 'tr:has(a[href$="/tasks/acme-2"])', "Run now")
    listed = QueueKeys(s.queue).fair_list("d", "acme")
    wait_until(lambda: s.redis.lindex(listed, 0) is not None and b'"acme-2"' in s.redis.lindex(listed, 0), what="run")
    assert [json.loads(raw)["id"] for raw in s.redis.lrange(listed, 0, -1)] == ["acme-2", "acme-0", "acme-1"]
